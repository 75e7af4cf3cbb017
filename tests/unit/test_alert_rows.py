"""Stored alert rules and alerts as the layers above the store see them, and their API views."""

from hookbay.ops.alert_rules import alert_out, rule_out
from hookbay.store.alert_rows import StoredAlert, StoredAlertRule

AT = 1_764_000_000_000_000
RULE = {"id": "alr_1", "client_id": None, "name": "dead", "enabled": 1,
        "definition": '{"condition":"dead_letter","repeat_minutes":60}', "created_at": AT, "updated_at": AT}
ALERT = {"id": "alt_1", "rule_id": "alr_1", "client_id": "acme", "subject": "src_1", "state": "open",
         "summary": "s", "detail": None, "opened_at": AT, "resolved_at": None, "notified_at": AT,
         "notifications": 1, "last_error": None}


def test_a_rule_row_becomes_typed_with_its_definition_parsed_and_shown_flat() -> None:
    rule = StoredAlertRule.of(RULE)
    assert rule.enabled is True  # SQLite hands back 1
    assert rule.definition == {"condition": "dead_letter", "repeat_minutes": 60}
    out = rule_out(rule)
    assert list(out) == ["id", "name", "client_id", "enabled", "condition", "repeat_minutes", "created_at",
                         "updated_at"]
    assert out["created_at"].startswith("2025-11-24") and out["client_id"] is None


def test_an_alert_row_becomes_typed_and_its_api_view_keeps_every_field() -> None:
    alert = StoredAlert.of(ALERT)
    assert alert.detail == {}  # an empty stored detail reads as no details
    out = alert_out(alert)
    assert list(out) == ["id", "rule_id", "client_id", "subject", "state", "summary", "detail", "opened_at",
                         "resolved_at", "notified_at", "notifications", "last_error"]
    assert (out["resolved_at"], out["notifications"]) == (None, 1) and out["opened_at"].startswith("2025-11-24")
