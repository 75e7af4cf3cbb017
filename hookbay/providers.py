"""Providers chosen by the payload: a contact's ``ProviderType`` number names the marketing
platform it goes to, through the connection its client's admin set up.

The numbers come from the contact format (3 = Mailchimp, 7 = Acoustic). To add one, map its number
to a name here and give :func:`connection_action` the action a connection runs (the deliverer
runs it like any other action); a number not in the table is a receipt warning, never a silent drop.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hookbay.actions.acoustic import AcousticAction, base_url_for_pod
from hookbay.actions.base import ActionConfig
from hookbay.actions.mailchimp import MailchimpAction
from hookbay.results import PlannedDelivery, ProcessResult

PROVIDER_TYPES: dict[int, str] = {3: "mailchimp", 7: "acoustic"}
ProviderName = Literal["mailchimp", "acoustic"]


class ConnectionIn(BaseModel):
    """A client's connection to one provider: which environment variable holds its key (never the key)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1, max_length=100)
    type: ProviderName
    key_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$", max_length=200, description=(
        "Environment variable on the server holding the key, under HOOKBAY_SECRET_ENV_PREFIX. Mailchimp: the "
        "API key; Acoustic: client_id:client_secret:refresh_token"))
    pod: str | None = Field(default=None, max_length=10, description="Acoustic only: the pod of the API host, "
                            "e.g. us-1 for api-campaign-us-1.goacoustic.com")

    @model_validator(mode="after")
    def _pod(self) -> ConnectionIn:
        if self.type == "acoustic":
            if not self.pod:
                raise ValueError("an Acoustic connection needs its pod (us-1, eu-1, ...)")
            base_url_for_pod(self.pod)
        elif self.pod is not None:
            raise ValueError("pod is for Acoustic connections only")
        return self


def route(res: ProcessResult, connected: set[str]) -> None:
    """Add a provider push to ``res.deliveries`` for each contact record with a ``ProviderType``
    its client is connected to; a warning on the receipt for the others. A push delivery's action
    index is minus the provider number (source actions count from 0)."""
    for i, rec in enumerate(res.records):
        contact = rec.get("contact")
        if not isinstance(contact, dict) or contact.get("provider_type") is None:
            continue
        n = contact["provider_type"]
        name = PROVIDER_TYPES.get(n)
        known = ", ".join(f"{k} = {v}" for k, v in sorted(PROVIDER_TYPES.items()))
        if name is None:
            problem = ("unknown_provider_type", f"ProviderType {n} is not a known provider ({known}); "
                                                "the contact was stored but not pushed anywhere")
        elif name not in connected:
            problem = ("no_provider_connection", f"ProviderType {n} ({name}): this client has no {name} connection "
                                                 "(hookbay providers add); the contact was stored but not pushed")
        elif not contact.get("list_ids"):
            problem = ("no_list_ids", f"ProviderType {n} ({name}) needs ListIds; the contact was not pushed")
        else:
            res.deliveries.append(PlannedDelivery(
                record_idx=i, action_idx=-n, action_type=name, action_name=f"provider:{name}",
                destination=f"{name}:{res.client_id}"[:300]))
            continue
        res.receipt.warnings.append({"path": "$.ProviderType", "code": problem[0], "message": problem[1],
                                     "record": i})


def connection_action(provider: str, key_env: str, pod: str | None) -> ActionConfig:
    """The action a push through a stored connection runs: the provider's action type with the
    connection's key variable, named ``provider:<name>`` in deliveries."""
    name = f"provider:{provider}"
    if provider == "acoustic":
        return AcousticAction(type="acoustic", name=name, key_env=key_env, pod=pod or "")
    return MailchimpAction(type="mailchimp", name=name, api_key_env=key_env)
