"""The ``email`` action: render a record into a message with Jinja2 and send it over SMTP.

Templates come from operators but the data comes from webhook senders, so rendering runs in a
sandbox with ``StrictUndefined`` (a missing field is an error, not a silently blank email).
Sending errors are left as aiosmtplib exceptions: the delivery layer decides what is retryable.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal

import aiosmtplib
import jinja2
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from pydantic import Field, model_validator

from hookbay.actions.base import EXCERPT, ActionConfig, ActionResult, ActionRun, Permanent
from hookbay.actions.planner import condition_view
from hookbay.orders import order_template
from hookbay.settings import Settings

Security = Literal["none", "starttls", "tls"]
MAX_OUTPUT_CHARS = 1_000_000
_MAX_REPEAT = 100_000
_LINEBREAKS = re.compile(r"[\r\n\t\v\f\x85\u2028\u2029]+")


class TemplateError(Exception):
    """A template that does not compile or does not render with this record."""

    def __init__(self, part: str, message: str) -> None:
        super().__init__(f"{part} template: {message}")
        self.part = part


@dataclass(repr=False)
class SmtpSettings:
    """Where and how to send; ``security`` is "none", "starttls" (required, not opportunistic) or "tls"."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    security: Security = "none"
    timeout: float = 10
    sender: str = "hookbay@localhost"

    def __post_init__(self) -> None:
        if self.security not in ("none", "starttls", "tls"):
            raise ValueError(f"unknown SMTP security {self.security!r} (none, starttls, tls)")

    def __repr__(self) -> str:
        # Settings end up in logs and tracebacks: never show the password.
        pw = "'***'" if self.password else "None"
        return (f"SmtpSettings(host={self.host!r}, port={self.port!r}, username={self.username!r}, "
                f"password={pw}, security={self.security!r}, timeout={self.timeout!r}, sender={self.sender!r})")


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox already blocks unsafe attributes and caps ``range``; also cap ``*`` and ``**``
    so a template cannot build a gigantic string or number from record data."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise SecurityError("exponent too large")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > _MAX_REPEAT:
                    raise SecurityError("repetition too large")
        return super().call_binop(context, operator, left, right)


_TEXT_ENV = _Sandbox(autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_HTML_ENV = _Sandbox(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _render(part: str, source: str, context: dict[str, Any]) -> str:
    env = _HTML_ENV if part == "html" else _TEXT_ENV
    try:
        out = env.from_string(source).render(context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(part, f"syntax error on line {e.lineno}: {e.message}") from e
    except jinja2.UndefinedError as e:
        raise TemplateError(part, f"{e.message} (the record has no such field)") from e
    except jinja2.TemplateError as e:
        raise TemplateError(part, e.message or type(e).__name__) from e
    except Exception as e:  # e.g. {{ 1 / 0 }} or a type error on record data
        raise TemplateError(part, f"{type(e).__name__}: {e}") from e
    if len(out) > MAX_OUTPUT_CHARS:
        raise TemplateError(part, f"output is larger than {MAX_OUTPUT_CHARS} characters")
    return out


def check_templates(templates: dict[str, str | None]) -> None:
    """Compile each template so a syntax error is refused when the action is saved, not at send time."""
    for part, source in templates.items():
        if source is None:
            continue
        env = _HTML_ENV if part == "html" else _TEXT_ENV
        try:
            env.parse(source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(part, f"syntax error on line {e.lineno}: {e.message}") from e


def render_email(templates: dict[str, str], context: dict[str, Any]) -> tuple[str, str, str | None]:
    """Render ``subject``, ``text`` and optional ``html`` templates into ``(subject, text, html)``.

    Only HTML is autoescaped. The subject is folded onto one line: record data must not be able to
    inject headers.
    """
    for part in ("subject", "text"):
        if not isinstance(templates.get(part), str):
            raise TemplateError(part, "missing")
    subject = _LINEBREAKS.sub(" ", _render("subject", templates["subject"], context)).strip()
    text = _render("text", templates["text"], context)
    html_src = templates.get("html")
    html = _render("html", html_src, context) if html_src else None
    return subject, text, html


def build_message(sender: str, to: str, subject: str, text: str, html: str | None) -> EmailMessage:
    """text/plain, or multipart/alternative with an HTML part when ``html`` is given."""
    if _LINEBREAKS.search(to) or "," in to:
        raise ValueError("the recipient must be a single address")
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    domain = sender.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    return msg


async def send_email(smtp: SmtpSettings, to: str, subject: str, text: str, html: str | None) -> str:
    """Send one message to ``to`` and return the server's final response text (logged as the excerpt).

    The envelope recipient is exactly ``to``; aiosmtplib exceptions propagate unchanged.
    """
    msg = build_message(smtp.sender, to, subject, text, html)
    _, response = await aiosmtplib.send(
        msg,
        sender=smtp.sender,
        recipients=[to],
        hostname=smtp.host,
        port=smtp.port,
        username=smtp.username,
        password=smtp.password,
        use_tls=smtp.security == "tls",
        start_tls=smtp.security == "starttls",
        timeout=smtp.timeout,
    )
    return response


def smtp_settings(s: Settings) -> SmtpSettings:
    """The server's HOOKBAY_SMTP_* settings as what :func:`send_email` takes."""
    return SmtpSettings(host=s.smtp_host, port=s.smtp_port, username=s.smtp_username or None,
                        password=s.smtp_password or None, security=s.smtp_security,  # type: ignore[arg-type]
                        timeout=s.smtp_timeout, sender=s.smtp_from)


class EmailAction(ActionConfig):
    """Render Jinja2 templates with the record and profile and send over SMTP (HOOKBAY_SMTP_*)."""

    type: Literal["email"]
    to: str = Field(default="{{ contact.email }}", description="Recipient template")
    subject: str
    text: str
    html: str | None = None
    marketing: bool | None = Field(default=None, description=(
        "Marketing mail is not sent when the profile's current email consent is opt-out at send time; "
        "default true, but false for `on: order` (a receipt is transactional mail)"))

    @property
    def is_marketing(self) -> bool:
        return self.marketing if self.marketing is not None else self.on != "order"

    @model_validator(mode="after")
    def _templates_compile(self) -> EmailAction:
        try:
            check_templates({"to": self.to, "subject": self.subject, "text": self.text, "html": self.html})
        except TemplateError as e:
            raise ValueError(str(e)) from None
        return self

    def destination(self, settings: Settings) -> str:
        return f"smtp:{settings.smtp_host or '-'}"

    async def execute(self, run: ActionRun) -> ActionResult:
        s = run.settings
        if not s.smtp_host:
            raise Permanent("email action: HOOKBAY_SMTP_HOST is not configured")
        consent = run.consent
        if self.is_marketing and consent.get("email") is False:
            return ActionResult(skipped=True, excerpt="not sent: the profile's email consent is opt-out")
        context = template_context(run)
        try:
            subject, text, html = render_email({"subject": self.subject, "text": self.text,
                                                **({"html": self.html} if self.html else {})}, context)
            to = render_email({"subject": self.to, "text": ""}, context)[0]
        except TemplateError as e:
            raise Permanent(str(e)) from None
        if not to or "@" not in to:
            raise Permanent(f"email action: no recipient address (to renders as {to!r})")
        try:
            response = await send_email(smtp_settings(s), to, subject, text, html)
        except ValueError as e:
            raise Permanent(f"email action: {e}") from None
        return ActionResult(None, f"{to}: {response}"[:EXCERPT])


def template_context(run: ActionRun) -> dict[str, Any]:
    """What templates see: ``record``, ``contact``, ``profile`` (current values), ``consent``,
    ``request_id`` and ``source``; for an order also ``order`` and ``lines``, and ``contact`` is
    then the buyer's profile."""
    profile = run.profile or {}
    out = {"record": run.record, "contact": condition_view(run.record), "profile": profile.get("fields", {}),
           "consent": run.consent, "request_id": run.request_id,
           "source": {"id": run.source.id, "name": run.source.name, "client_id": run.source.client_id}}
    if "order" in run.record:
        out["order"] = order_template(run.record["order"])
        out["lines"] = out["order"]["lines"]
        out["contact"] = profile.get("fields", {})
    return out
