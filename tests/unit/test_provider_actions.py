"""The port of #16 onto the action plug-ins: ``on:`` on every action type (YAML's boolean ``on``
too), the planner's per-kind choice with one delivery per order, and provider connections run as
ordinary actions."""

from __future__ import annotations

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from hookbay.actions.acoustic import AcousticAction
from hookbay.actions.email import EmailAction
from hookbay.actions.mailchimp import MailchimpAction
from hookbay.actions.planner import plan
from hookbay.models import Action
from hookbay.processing.provider_push import gone
from hookbay.providers import connection_action
from hookbay.settings import Settings
from hookbay.store.deliveries import ClaimedDelivery

ACTION = TypeAdapter(Action)
SETTINGS = Settings(smtp_host="mail.example")
CONTACT = {"contact": {"email": "ada@example.com"}}
ORDER = {"order": {"id": "ord_1", "external_id": "1001"}}
FREE = {"fields": {"x": 1}}


@pytest.mark.parametrize("doc", ["type: log\non: order\n", "type: log\n'on': order\n"])
def test_on_is_read_from_yaml_quoted_or_not(doc: str) -> None:
    assert ACTION.validate_python(yaml.safe_load(doc)).on == "order"


def test_on_takes_only_the_three_kinds() -> None:
    with pytest.raises(ValidationError):
        ACTION.validate_python({"type": "log", "on": "refund"})


def test_actions_choose_their_records_and_an_order_makes_one_delivery_per_action() -> None:
    actions = [ACTION.validate_python(a) for a in (
        {"type": "log", "name": "any"}, {"type": "log", "name": "orders", "on": "order"},
        {"type": "log", "name": "free", "on": "record"})]
    got = [(d.record_idx, d.action_name, d.once_key)
           for d in plan([CONTACT, ORDER, FREE], actions, SETTINGS)]
    assert got == [(0, "any", None), (1, "orders", "order:ord_1|orders"), (2, "any", None), (2, "free", None)]


def test_an_order_email_is_transactional_unless_it_says_marketing() -> None:
    base = {"type": "email", "subject": "s", "text": "t"}
    assert EmailAction.model_validate(base).is_marketing
    assert not EmailAction.model_validate({**base, "on": "order"}).is_marketing
    assert EmailAction.model_validate({**base, "on": "order", "marketing": True}).is_marketing


def test_a_connection_runs_its_providers_action_under_the_provider_name() -> None:
    mc = connection_action("mailchimp", "HOOKBAY_PROVIDER_MC", None)
    assert isinstance(mc, MailchimpAction) and mc.api_key_env == "HOOKBAY_PROVIDER_MC" and mc.list_ids == []
    ac = connection_action("acoustic", "HOOKBAY_PROVIDER_AC", "eu-1")
    assert isinstance(ac, AcousticAction) and (ac.key_env, ac.pod) == ("HOOKBAY_PROVIDER_AC", "eu-1")
    assert [a.display_name(-7) for a in (mc, ac)] == ["provider:mailchimp", "provider:acoustic"]


def test_a_push_without_its_connection_says_so() -> None:
    def claimed(idx: int, type_: str) -> ClaimedDelivery:
        return ClaimedDelivery(id="dlv_1", request_id="req_1", record_idx=0, action_idx=idx, source_id="src_1",
                               client_id="acme", action_type=type_, action_name="a", destination="d",
                               state="running", attempts=1, run_after=0, locked_until=1, locked_by="w",
                               last_status=None, last_error=None, created_at=0, updated_at=0, once_key=None)

    assert gone(claimed(-7, "acoustic")) == "provider push: client acme has no acoustic connection any more"
    assert "action was removed" in gone(claimed(0, "log"))
