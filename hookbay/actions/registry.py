"""Every action type, one line each. A new type is a module with its :class:`ActionConfig`
subclass plus its line here; the config model's ``actions`` union, the API's and CLI's action-type
choices and the docs check (tests/unit/test_registry.py) read this table."""

from __future__ import annotations

from typing import get_args

from hookbay.actions import email, forward, log, mailchimp
from hookbay.actions.base import ActionConfig


def _type_name(cls: type[ActionConfig]) -> str:
    (name,) = get_args(cls.model_fields["type"].annotation)
    return str(name)


ACTIONS: dict[str, type[ActionConfig]] = {_type_name(c): c for c in (
    email.EmailAction,
    mailchimp.MailchimpAction,
    forward.ForwardAction,
    log.LogAction,
)}
ACTION_TYPES = tuple(ACTIONS)
