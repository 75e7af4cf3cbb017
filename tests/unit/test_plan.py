"""Which deliveries a record makes: conditions over contact and generic records, destinations."""

from __future__ import annotations

from hookbay.actions.base import ActionConfig
from hookbay.actions.planner import condition_view, plan
from hookbay.models import SourceConfig
from hookbay.parsers import contact, generic
from hookbay.settings import Settings


def _actions(actions: list[dict]) -> list[ActionConfig]:
    return SourceConfig.model_validate({"actions": actions}).actions


SETTINGS = Settings(smtp_host="mail.example.com", mailchimp_base_url="https://us6.api.mailchimp.com/3.0")


def test_contact_permission_flags_are_visible_to_conditions() -> None:
    rec = contact.parse([{"SourceName": "W", "SourceType": "F", "Email": "a@b.co", "EmailPermission": False,
                          "ProviderType": 3}]).records[0]
    view = condition_view(rec)
    assert view["EmailPermission"] is False and view["provider_type"] == 3
    actions = _actions([{"type": "email", "subject": "s", "text": "t", "when": "EmailPermission == true"},
                        {"type": "mailchimp", "when": "ProviderType == 3"},
                        {"type": "forward", "url": "https://crm.example.com:8443/in", "name": "crm"}])
    planned = plan([rec], actions, SETTINGS)
    assert [(d.action_idx, d.action_type, d.action_name, d.destination) for d in planned] == [
        (1, "mailchimp", "mailchimp-2", "mailchimp:us6.api.mailchimp.com"),
        (2, "forward", "crm", "http:crm.example.com:8443"),
    ]


def test_generic_records_match_on_their_fields_and_every_record_counts() -> None:
    recs = generic.parse([{"kind": "order", "total": 12}, {"kind": "refund"}]).records
    actions = _actions([{"type": "forward", "url": "http://h/x", "when": "kind == 'order' and total > 10"}])
    assert [d.record_idx for d in plan(recs, actions, SETTINGS)] == [0]
    assert plan(recs, [], SETTINGS) == []


def test_destinations_group_by_host() -> None:
    cfg = SourceConfig.model_validate({"actions": [
        {"type": "forward", "url": "http://h/a"}, {"type": "forward", "url": "http://h:80/b"},
        {"type": "email", "subject": "s", "text": "t"}]})
    a, b, e = (x.destination(SETTINGS) for x in cfg.actions)
    assert a == b == "http:h:80" and e == "smtp:mail.example.com"
