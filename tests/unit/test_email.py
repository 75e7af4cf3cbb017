"""Email rendering and sending against a real aiosmtpd server on loopback."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from hookbay.actions.email import SmtpSettings, TemplateError, render_email, send_email


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Collector:
    """An aiosmtpd handler keeping every envelope it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def message(self, i: int = -1) -> EmailMessage:
        raw = self.envelopes[i].content
        assert isinstance(raw, bytes)
        # CRLF is the wire form; compare contents with plain newlines.
        msg = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"user" and auth_data.password == b"s3cret"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtpd() -> Iterator[tuple[Collector, int]]:
    handler = Collector()
    port = _free_port()
    ctl = Controller(handler, hostname="127.0.0.1", port=port, authenticator=_authenticator,
                     auth_require_tls=False)
    ctl.start()
    try:
        yield handler, port
    finally:
        ctl.stop()


async def test_sends_text_and_html_alternative(smtpd: tuple[Collector, int]) -> None:
    handler, port = smtpd
    smtp = SmtpSettings(host="127.0.0.1", port=port, sender="noreply@hookbay.test")
    subject, text, html = render_email(
        {"subject": "Hello {{ first_name }}", "text": "Hi {{ first_name }}!\n",
         "html": "<p>Hi {{ first_name }}!</p>"},
        {"first_name": "Ann <b>"},
    )
    resp = await send_email(smtp, "ann@example.com", subject, text, html)
    assert "accepted" in resp
    env = handler.envelopes[0]
    assert env.mail_from == "noreply@hookbay.test" and env.rcpt_tos == ["ann@example.com"]
    msg = handler.message()
    assert msg["To"] == "ann@example.com" and msg["Subject"] == "Hello Ann <b>"
    assert msg["From"] == "noreply@hookbay.test" and msg["Message-ID"] and msg["Date"]
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    rich = msg.get_body(("html",))
    assert plain is not None and rich is not None
    assert plain.get_content() == "Hi Ann <b>!\n"
    assert rich.get_content().strip() == "<p>Hi Ann &lt;b&gt;!</p>"


async def test_text_only_is_single_part(smtpd: tuple[Collector, int]) -> None:
    handler, port = smtpd
    await send_email(SmtpSettings("127.0.0.1", port), "bo@example.com", "S", "body\n", None)
    msg = handler.message()
    assert msg.get_content_type() == "text/plain" and msg.get_content() == "body\n"


async def test_login(smtpd: tuple[Collector, int]) -> None:
    handler, port = smtpd
    ok = SmtpSettings("127.0.0.1", port, username="user", password="s3cret")
    await send_email(ok, "a@example.com", "S", "t", None)
    assert len(handler.envelopes) == 1
    bad = SmtpSettings("127.0.0.1", port, username="user", password="wrong")
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await send_email(bad, "a@example.com", "S", "t", None)
    assert len(handler.envelopes) == 1


async def test_starttls_is_required_not_opportunistic(smtpd: tuple[Collector, int]) -> None:
    """A server without STARTTLS must not get the message in clear when STARTTLS was asked for."""
    handler, port = smtpd
    with pytest.raises(aiosmtplib.SMTPException):
        await send_email(SmtpSettings("127.0.0.1", port, security="starttls"), "a@example.com", "S", "t", None)
    assert handler.envelopes == []


async def test_connection_refused_is_an_aiosmtplib_error() -> None:
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await send_email(SmtpSettings("127.0.0.1", _free_port(), timeout=2), "a@example.com", "S", "t", None)


async def test_single_recipient_only(smtpd: tuple[Collector, int]) -> None:
    _, port = smtpd
    for to in ("a@example.com, b@example.com", "a@example.com\r\nBcc: b@example.com"):
        with pytest.raises(ValueError):
            await send_email(SmtpSettings("127.0.0.1", port), to, "S", "t", None)


def test_subject_is_one_line() -> None:
    subject, _, html = render_email({"subject": "Hi {{ n }}", "text": "x"}, {"n": "a\r\nBcc: evil@example.com"})
    assert subject == "Hi a Bcc: evil@example.com"
    assert html is None


@pytest.mark.parametrize(
    ("templates", "part", "needle"),
    [
        ({"subject": "Hi {{ missing }}", "text": "x"}, "subject", "'missing' is undefined"),
        ({"subject": "s", "text": "{{ contact.nope }}"}, "text", "nope"),
        ({"subject": "s", "text": "x", "html": "{% if %}"}, "html", "syntax error on line 1"),
        ({"subject": "s", "text": "{{ 1 / 0 }}"}, "text", "ZeroDivisionError"),
        ({"subject": "s", "text": "{{ ''.__class__.__mro__ }}"}, "text", "__class__"),
        ({"subject": "s", "text": "{{ 'a' * 10000000 }}"}, "text", "too large"),
        ({"subject": "s"}, "text", "missing"),
    ],
    ids=["undefined", "undefined-attr", "syntax", "runtime", "sandbox", "repeat-bomb", "no-text"],
)
def test_template_errors(templates: dict[str, str], part: str, needle: str) -> None:
    with pytest.raises(TemplateError) as ei:
        render_email(templates, {"contact": {"first_name": "Ann"}})
    assert ei.value.part == part
    assert str(ei.value).startswith(f"{part} template: ")
    assert needle in str(ei.value)


def test_password_not_in_repr() -> None:
    s = SmtpSettings("smtp.example.com", 587, username="u", password="hunter2-secret", security="starttls")
    r = repr(s)
    assert "hunter2-secret" not in r and "'***'" in r and "smtp.example.com" in r
    assert "hunter2-secret" not in str(s)
    assert "password=None" in repr(SmtpSettings("h", 25))


def test_unknown_security_refused() -> None:
    with pytest.raises(ValueError):
        SmtpSettings("h", 25, security="ssl")  # type: ignore[arg-type]
