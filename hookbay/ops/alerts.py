"""Alerts: rules an operator sets, evaluated periodically on the worker side, notified by email, a
signed webhook (Standard Webhooks, like the ``forward`` action) or a Slack incoming webhook.

An alert opens once per rule and subject (a source, or ``system`` for server-wide conditions), is
repeated at most every ``repeat_minutes`` while the condition holds, and resolves (with a message)
when it clears. Every decision is stored before a message is sent, and a lease in ``meta`` lets one
evaluator act at a time, so any number of ``serve``/``worker`` processes may run the loop.

Messages carry rule names, source names and ids, counts and ratios only: never request data, whose
fields (and delivery error texts quoting them) may be personal data.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from dataclasses import replace
from typing import Annotated, Any, Literal

import httpx
import orjson
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hookbay.actions.base import read_excerpt
from hookbay.actions.ssrf import check_destination, check_peer
from hookbay.ids import now_us, ulid
from hookbay.ops.health import Readiness
from hookbay.settings import Settings
from hookbay.signatures import generate_secret, sign_standard, validate_secret
from hookbay.store import StoredSource, StoreInterface
from hookbay.store.alert_rows import StoredAlert, StoredAlertRule
from hookbay.store.alerts import AlertStore, Transition
from hookbay.store.errors import describe
from hookbay.views import iso

log = structlog.get_logger("hookbay.alerts")

CONDITIONS = ("dead_letter", "error_ratio", "silence", "processing_lag", "relay_silent", "not_ready")
SYSTEM_CONDITIONS = frozenset({"processing_lag", "not_ready"})  # not about one client: admin rules only
SYSTEM = "system"
SEND_TIMEOUT_S = 10.0


class _Channel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmailChannel(_Channel):
    type: Literal["email"]
    to: str = Field(min_length=3, max_length=254, description="One address; sent with the HOOKBAY_SMTP_* settings")

    @field_validator("to")
    @classmethod
    def _one_address(cls, v: str) -> str:
        if "@" not in v or any(c in v for c in ",;\r\n <>"):
            raise ValueError("one plain email address")
        return v


class WebhookChannel(_Channel):
    type: Literal["webhook"]
    url: str = Field(max_length=2000)
    secret: str | None = Field(default=None, description="Standard Webhooks secret (whsec_…); generated if absent")

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: str | None) -> str | None:
        if v is not None:
            validate_secret("standard", v)
        return v


class SlackChannel(_Channel):
    type: Literal["slack"]
    url: str = Field(max_length=2000, description="A Slack incoming-webhook URL")


Channel = Annotated[EmailChannel | WebhookChannel | SlackChannel, Field(discriminator="type")]


class RuleDefinition(BaseModel):
    """What a rule watches and where it sends; which parameters apply depends on ``condition``."""

    model_config = ConfigDict(extra="forbid")

    condition: Literal["dead_letter", "error_ratio", "silence", "processing_lag", "relay_silent", "not_ready"]
    source_id: str | None = Field(default=None, max_length=40, description="Only this source (else every source "
                                  "of the rule's client, or of every client for a global rule)")
    minutes: float | None = Field(default=None, gt=0, le=525600, description=(
        "dead_letter: window (default 60); error_ratio: window (default 15); silence / relay_silent: "
        "minutes without a request / an agent pull"))
    threshold: float | None = Field(default=None, ge=0, le=1, description="error_ratio: alert above this ratio")
    count: Literal["rejected", "failed", "both"] = Field(default="both", description=(
        "error_ratio: what counts as bad: rejected requests, failed processing, or both"))
    min_requests: int = Field(default=1, ge=1, le=1_000_000_000, description="error_ratio: ignore windows with fewer requests")
    seconds: float | None = Field(default=None, gt=0, le=31_536_000, description="processing_lag: alert when the oldest due job "
                                  "has waited longer")
    repeat_minutes: float = Field(default=60, gt=0, le=525600, description="Repeat an open alert at most this often")
    channels: list[Channel] = Field(default_factory=list, max_length=10)
    allow_private_destinations: bool = Field(default=False, description=(
        "Let webhook/Slack channels reach loopback/private addresses (admin only)"))

    @model_validator(mode="after")
    def _needed(self) -> RuleDefinition:
        need = {"error_ratio": "threshold", "silence": "minutes", "relay_silent": "minutes",
                "processing_lag": "seconds"}.get(self.condition)
        if need and getattr(self, need) is None:
            raise ValueError(f"condition {self.condition} needs {need}")
        if self.condition in SYSTEM_CONDITIONS and self.source_id:
            raise ValueError(f"condition {self.condition} is server-wide: no source_id")
        try:
            orjson.dumps(self.model_dump())
        except TypeError:
            raise ValueError("text must be valid Unicode (no lone surrogates)") from None
        return self

    def with_secrets(self) -> RuleDefinition:
        """A webhook channel without a secret gets a generated one (shown in the rule)."""
        chans = [c.model_copy(update={"secret": generate_secret("standard")})
                 if isinstance(c, WebhookChannel) and c.secret is None else c for c in self.channels]
        return self.model_copy(update={"channels": chans})


def _minutes(v: float) -> str:
    return f"{v:g} min"


class AlertEvaluator:
    """The periodic loop: measure, decide (open / repeat / resolve), store, then notify."""

    def __init__(self, store: StoreInterface, settings: Settings, http: httpx.AsyncClient | None = None,
                 holder: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.alerts = AlertStore(store)
        self.http = http or httpx.AsyncClient(follow_redirects=False, timeout=SEND_TIMEOUT_S,
                                              headers={"User-Agent": "hookbay"})
        self._own_http = http is None
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:a{id(self):x}"
        self.readiness = Readiness(store, settings.ready_max_lag_seconds)

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("alert_evaluation_failed", **describe(e))
                await asyncio.sleep(self.settings.alert_interval_seconds)
        finally:
            if self._own_http:
                await self.http.aclose()

    async def run_once(self) -> list[Transition]:
        """One evaluation, when this process holds the lease (else another one is evaluating)."""
        lease = max(3 * self.settings.alert_interval_seconds, 10.0)
        if not await self.alerts.take_lease(self.holder, lease):
            return []
        now = now_us()
        rules = await self.alerts.list_rules(enabled_only=True)
        open_by_key = {(a.rule_id, a.subject): a for a in await self.alerts.open_alerts()}
        ctx = _Measurements(self, now)
        transitions: list[Transition] = []
        defs: dict[str, tuple[StoredAlertRule, RuleDefinition]] = {}
        for rule in rules:
            try:
                d = RuleDefinition.model_validate(rule.definition)
            except ValidationError:
                log.warning("alert_rule_invalid", rule_id=rule.id)
                continue
            defs[rule.id] = (rule, d)
            try:
                firing = await ctx.evaluate(rule, d)
            except Exception as e:  # cannot tell: its open alerts stay open, none is opened
                log.warning("alert_rule_failed", rule_id=rule.id, **describe(e))
                for key in [k for k in open_by_key if k[0] == rule.id]:
                    del open_by_key[key]
                continue
            repeat_us = int(d.repeat_minutes * 60e6)
            for subject, (summary, detail) in firing.items():
                cur = open_by_key.pop((rule.id, subject), None)
                if cur is None:
                    transitions.append(Transition("open", StoredAlert(
                        id="alt_" + ulid(), rule_id=rule.id, client_id=rule.client_id, subject=subject,
                        state="open", summary=summary, detail=detail, opened_at=now, resolved_at=None,
                        notified_at=now, notifications=1)))
                elif now - cur.notified_at >= repeat_us:
                    transitions.append(Transition("repeat", replace(cur, summary=summary, detail=detail,
                                                                    notified_at=now,
                                                                    notifications=cur.notifications + 1)))
            for (rid, _subject), cur in list(open_by_key.items()):
                if rid == rule.id:
                    del open_by_key[(rid, _subject)]
                    transitions.append(Transition("resolve", replace(cur, state="resolved", resolved_at=now,
                                                                     notified_at=now,
                                                                     notifications=cur.notifications + 1)))
        # open alerts of rules that are now disabled (or invalid) close quietly
        quiet = [Transition("resolve", replace(a, state="resolved", resolved_at=now))
                 for a in open_by_key.values() if a.rule_id not in defs]
        await self.alerts.apply(transitions + quiet)
        await asyncio.gather(*(self._notify(*defs[t.alert.rule_id], t) for t in transitions))
        return transitions

    # --- messages --------------------------------------------------------------------------

    async def _notify(self, rule: StoredAlertRule, d: RuleDefinition, t: Transition) -> None:
        event = {"open": "opened", "repeat": "repeated", "resolve": "resolved"}[t.kind]
        a = t.alert
        payload = alert_payload(rule, d, a, event)
        text = message_text(rule, a, event)
        errors = []
        for ch in d.channels:
            try:
                await self._send(ch, d, a, payload, text)
            except Exception as e:
                errors.append(f"{ch.type}: {type(e).__name__}: {e}"[:300])
        if d.channels:
            await self.alerts.record_error(a.id, "; ".join(errors) or None)
        log.info("alert_" + event, alert_id=a.id, rule_id=rule.id, subject=a.subject,
                 channels=len(d.channels), failed=len(errors))

    async def _send(self, ch: EmailChannel | WebhookChannel | SlackChannel, d: RuleDefinition, a: StoredAlert,
                    payload: dict[str, Any], text: str) -> None:
        if isinstance(ch, EmailChannel):
            await self._email(ch.to, text)
            return
        body = orjson.dumps(payload) if isinstance(ch, WebhookChannel) else orjson.dumps(slack_body(text, payload))
        headers = {"content-type": "application/json"}
        if isinstance(ch, WebhookChannel):
            msg_id = f"{a.id}.{a.notifications}"
            ts = int(time.time())
            headers.update({"webhook-id": msg_id, "webhook-timestamp": str(ts),
                            "webhook-signature": sign_standard(ch.secret or "", msg_id, ts, body)})
        await self._post(ch.url, body, headers, d.allow_private_destinations)

    async def _post(self, url: str, body: bytes, headers: dict[str, str], allow_private: bool) -> None:
        await check_destination(url, allow_private=allow_private)
        async with self.http.stream("POST", url, content=body, headers=headers, timeout=SEND_TIMEOUT_S) as r:
            check_peer(r, url, allow_private)
            excerpt = await read_excerpt(r)
        if r.status_code >= 300:
            raise RuntimeError(f"HTTP {r.status_code}: {excerpt[:100]}")

    async def _email(self, to: str, text: str) -> None:
        from hookbay.actions.email import SmtpSettings, send_email

        s = self.settings
        if not s.smtp_host:
            raise RuntimeError("HOOKBAY_SMTP_HOST is not configured")
        smtp = SmtpSettings(host=s.smtp_host, port=s.smtp_port, username=s.smtp_username or None,
                            password=s.smtp_password or None, security=s.smtp_security,  # type: ignore[arg-type]
                            timeout=s.smtp_timeout, sender=s.smtp_from)
        subject, _, rest = text.partition("\n")
        await send_email(smtp, to, subject, rest.strip() + "\n", None)


class _Measurements:
    """What the rules of one evaluation read, each measured at most once per evaluation."""

    def __init__(self, ev: AlertEvaluator, now: int) -> None:
        self.ev = ev
        self.now = now
        self._sources: list[StoredSource] | None = None
        self._cache: dict[Any, Any] = {}

    async def _once(self, key: Any, make: Any) -> Any:
        if key not in self._cache:
            self._cache[key] = await make()
        return self._cache[key]

    async def sources(self, rule: StoredAlertRule, d: RuleDefinition) -> list[StoredSource]:
        if self._sources is None:
            self._sources = await self.ev.alerts.sources()
        return [s for s in self._sources
                if (rule.client_id is None or s.client_id == rule.client_id)
                and (d.source_id is None or s.id == d.source_id)]

    async def evaluate(self, rule: StoredAlertRule, d: RuleDefinition) -> dict[str, tuple[str, dict[str, Any]]]:
        """Subjects for which the rule's condition holds now, each with a summary and details."""
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        now, st = self.now, self.ev.alerts
        if d.condition == "dead_letter":
            window = d.minutes or 60
            dead = await self._once(("dead", window), lambda: st.dead_letters_since(now - int(window * 60e6)))
            for s in await self.sources(rule, d):
                if (e := dead.get(s.id)) is not None:
                    out[s.id] = (f"{e['dead_letters']} dead letter(s) in the last {_minutes(window)} on source "
                                 f"{s.name!r} ({s.id})", {**e, "source_id": s.id, "window_minutes": window})
        elif d.condition == "error_ratio":
            window = d.minutes or 15
            counts = await self._once(("ratio", window), lambda: st.request_counts_since(now - int(window * 60e6)))
            for s in await self.sources(rule, d):
                c = counts.get(s.id)
                if not c or c["total"] < d.min_requests:
                    continue
                bad = c["rejected"] * (d.count != "failed") + c["failed"] * (d.count != "rejected")
                ratio = bad / c["total"]
                if ratio > (d.threshold or 0):
                    out[s.id] = (f"{bad} of {c['total']} requests {_bad_word(d.count)} ({ratio:.0%}, over "
                                 f"{d.threshold:.0%}) in the last {_minutes(window)} on source {s.name!r} "
                                 f"({s.id})", {**c, "ratio": round(ratio, 4), "threshold": d.threshold,
                                                  "source_id": s.id, "window_minutes": window})
        elif d.condition == "silence":
            srcs = [s for s in await self.sources(rule, d) if s.enabled]
            last = await st.last_received([s.id for s in srcs])
            for s in srcs:
                since = max(last.get(s.id, 0), s.created_at)
                quiet = (now - since) / 60e6
                if quiet > (d.minutes or 0):
                    out[s.id] = (f"source {s.name!r} ({s.id}) has received nothing for {quiet:.1f} min",
                                 {"source_id": s.id, "last_received_at": iso(last.get(s.id)),
                                  "silent_minutes": round(quiet, 2), "minutes": d.minutes})
        elif d.condition == "relay_silent":
            seen = await self._once("relay", st.relay_last_seen)
            for s in await self.sources(rule, d):
                if not (s.enabled and s.config.get("relay")):
                    continue
                since = max(seen.get(s.id, 0), s.created_at)
                quiet = (now - since) / 60e6
                if quiet > (d.minutes or 0):
                    out[s.id] = (f"no relay agent has pulled source {s.name!r} ({s.id}) for {quiet:.1f} min",
                                 {"source_id": s.id, "last_pull_at": iso(seen.get(s.id)),
                                  "silent_minutes": round(quiet, 2), "minutes": d.minutes})
        elif d.condition == "processing_lag":
            lag = await self._once("lag", self.ev.store.oldest_due_job_age)
            if lag > (d.seconds or 0):
                out[SYSTEM] = (f"processing is {lag:.0f} s behind (over {d.seconds:g} s)",
                               {"lag_seconds": round(lag, 1), "seconds": d.seconds})
        elif d.condition == "not_ready":
            why = await self._once("ready", self.ev.readiness.check)
            if why is not None:
                out[SYSTEM] = (f"readiness check fails: {why.message}", {"reason": why.reason, **why.detail})
        return out


def _bad_word(count: str) -> str:
    return {"rejected": "rejected", "failed": "failed processing", "both": "rejected or failed"}[count]


def alert_payload(rule: StoredAlertRule, d: RuleDefinition, a: StoredAlert, event: str) -> dict[str, Any]:
    """The signed webhook body; also what ``GET /api/v1/alerts`` shows of an alert."""
    return {"type": f"hookbay.alert.{event}", "alert": {
        "id": a.id, "rule_id": rule.id, "rule_name": rule.name, "client_id": a.client_id,
        "condition": d.condition, "subject": a.subject, "state": a.state, "summary": a.summary,
        "detail": a.detail, "opened_at": iso(a.opened_at), "resolved_at": iso(a.resolved_at),
        "notification": a.notifications}}


def message_text(rule: StoredAlertRule, a: StoredAlert, event: str) -> str:
    """First line: the subject (email) / headline (Slack); then the details."""
    head = {"opened": "ALERT", "repeated": "STILL FIRING", "resolved": "RESOLVED"}[event]
    lines = [f"[hookbay] {head}: {rule.name}: {a.summary}"]
    if event == "resolved":
        lines.append("The condition has cleared.")
    lines += [f"Rule: {rule.name} ({rule.id})", f"Alert: {a.id}", f"Opened: {iso(a.opened_at)}"]
    if event == "resolved":
        lines.append(f"Resolved: {iso(a.resolved_at)}")
    if a.client_id:
        lines.append(f"Client: {a.client_id}")
    return "\n".join(lines)


def slack_body(text: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Slack's incoming-webhook format: ``text`` (the fallback and notification line) plus blocks."""
    head, _, rest = text.partition("\n")
    a = payload["alert"]
    return {"text": head, "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": head[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": rest or head}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{a['condition']} · {a['state']} · {a['id']}"}]},
    ]}
