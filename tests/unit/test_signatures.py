"""Signature schemes against real senders: the standardwebhooks and stripe libraries sign, the other
providers' signatures are computed exactly as their documentation describes (hmac + hashlib)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import standardwebhooks
import stripe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from hookbay.signatures import (
    SCHEMES,
    SignatureError,
    SignatureSpec,
    VerifyResult,
    generate_secret,
    sign_standard,
    validate_secret,
    verify,
)

NOW = 1_700_000_000
BODY = b'{"id":"evt_1","object":"event","type":"order.created","data":{"email":"a@b.co","n":"\xc3\xa9"}}'
STANDARD_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
HMAC_SPEC = SignatureSpec("hmac", header="X-Signature", algorithm="sha512", encoding="hex", prefix="sha512=")


def _hmac(secret: str, msg: bytes, algo: Callable[..., object] = hashlib.sha256) -> hmac.HMAC:
    return hmac.new(secret.encode(), msg, algo)  # type: ignore[arg-type]


def sign(scheme: str, secret: str, body: bytes, *, ts: int = NOW, msg_id: str = "msg_1") -> dict[str, str]:
    """Headers (lower-cased, as verify() receives them) the way each provider sends them."""
    if scheme == "standard":
        sig = Webhook(secret).sign(msg_id, datetime.fromtimestamp(ts, UTC), body.decode())
        return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sig}
    if scheme == "stripe":
        return {"stripe-signature": stripe.WebhookSignature.generate_signature_header(body.decode(), secret, ts)}
    if scheme == "github":  # docs.github.com: "Validating webhook deliveries"
        return {"x-hub-signature-256": "sha256=" + _hmac(secret, body).hexdigest()}
    if scheme == "shopify":  # shopify.dev: base64 of the HMAC-SHA256 digest of the raw body
        return {"x-shopify-hmac-sha256": base64.b64encode(_hmac(secret, body).digest()).decode()}
    if scheme == "woocommerce":  # WC_Webhook::generate_signature: base64(hash_hmac sha256, raw)
        return {"x-wc-webhook-signature": base64.b64encode(_hmac(secret, body).digest()).decode()}
    if scheme == "slack":  # api.slack.com/authentication/verifying-requests-from-slack
        return {"x-slack-request-timestamp": str(ts),
                "x-slack-signature": "v0=" + _hmac(secret, f"v0:{ts}:".encode() + body).hexdigest()}
    if scheme == "hmac":
        return {"x-signature": "sha512=" + _hmac(secret, body, hashlib.sha512).hexdigest()}
    raise AssertionError(scheme)


def spec_for(scheme: str) -> SignatureSpec:
    return HMAC_SPEC if scheme == "hmac" else SignatureSpec(scheme)


def secret_for(scheme: str, n: int = 0) -> str:
    if scheme == "standard":
        return "whsec_" + base64.b64encode(bytes([65 + n]) * 32).decode()
    return f"provider-secret-{scheme}-{n}"


def reason(spec: SignatureSpec, secrets: list[str], headers: dict[str, str], body: bytes, now: float = NOW) -> str:
    with pytest.raises(SignatureError) as e:
        verify(spec, secrets, headers, body, now=now)
    return e.value.reason


TIMED = ("standard", "stripe", "slack")


def passed(scheme: str, ts: int = NOW, msg_id: str = "msg_1") -> VerifyResult:
    """What a passed check returns: ``VerifyResult.ok`` is never False (a failure raises), so a
    test must compare the whole result, not ``.ok``."""
    return VerifyResult(timestamp=ts if scheme in TIMED else None,
                        event_id=msg_id if scheme == "standard" else None)


# --- every scheme: the same six checks -----------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_valid_signature_passes(scheme: str) -> None:
    s = secret_for(scheme)
    assert verify(spec_for(scheme), [s], sign(scheme, s, BODY), BODY, now=NOW) == passed(scheme)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("pos", [0, len(BODY) // 2, len(BODY) - 1])
def test_one_flipped_byte_fails(scheme: str, pos: int) -> None:
    s = secret_for(scheme)
    headers = sign(scheme, s, BODY)
    flipped = bytearray(BODY)
    flipped[pos] ^= 0x01
    assert reason(spec_for(scheme), [s], headers, bytes(flipped)) == "mismatch"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_wrong_secret_fails(scheme: str) -> None:
    headers = sign(scheme, secret_for(scheme, 1), BODY)
    assert reason(spec_for(scheme), [secret_for(scheme, 0)], headers, BODY) == "mismatch"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_missing_header_fails(scheme: str) -> None:
    s = secret_for(scheme)
    assert reason(spec_for(scheme), [s], {}, BODY) == "missing_header"
    assert reason(spec_for(scheme), [s], {k: "" for k in sign(scheme, s, BODY)}, BODY) == "missing_header"


@pytest.mark.parametrize("scheme", ["standard", "slack"])
def test_each_signature_header_is_required(scheme: str) -> None:
    s = secret_for(scheme)
    headers = sign(scheme, s, BODY)
    for name in headers:
        partial = {k: v for k, v in headers.items() if k != name}
        assert reason(spec_for(scheme), [s], partial, BODY) == "missing_header"


@pytest.mark.parametrize("scheme", TIMED)
def test_expired_timestamp_fails(scheme: str) -> None:
    s = secret_for(scheme)
    old = sign(scheme, s, BODY, ts=NOW - 301)
    assert reason(spec_for(scheme), [s], old, BODY) == "timestamp_expired"
    edge = sign(scheme, s, BODY, ts=NOW - 300)
    assert verify(spec_for(scheme), [s], edge, BODY, now=NOW).timestamp == NOW - 300
    # a replay keeps being refused however the tolerance is configured
    tight = SignatureSpec(scheme, tolerance_s=10)
    assert reason(tight, [s], sign(scheme, s, BODY, ts=NOW - 11), BODY) == "timestamp_expired"


@pytest.mark.parametrize("scheme", ["standard", "slack"])
def test_future_timestamp_fails_for_symmetric_schemes(scheme: str) -> None:
    s = secret_for(scheme)
    assert reason(spec_for(scheme), [s], sign(scheme, s, BODY, ts=NOW + 301), BODY) == "timestamp_expired"
    assert verify(spec_for(scheme), [s], sign(scheme, s, BODY, ts=NOW + 300), BODY, now=NOW) == passed(scheme, NOW + 300)


@pytest.mark.parametrize("scheme", TIMED)
def test_forged_old_message_is_a_mismatch_not_expired(scheme: str) -> None:
    """Signature is checked before freshness: ``timestamp_expired`` only ever means authentic but stale."""
    old = sign(scheme, secret_for(scheme, 1), BODY, ts=NOW - 3600)
    assert reason(spec_for(scheme), [secret_for(scheme, 0)], old, BODY) == "mismatch"


def _with_mac(scheme: str, headers: dict[str, str], change: Callable[[bytes], bytes]) -> dict[str, str]:
    """``headers`` with the MAC bytes replaced by ``change(mac)``, re-encoded the way the scheme sends it."""
    out = dict(headers)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    if scheme == "standard":
        out["webhook-signature"] = "v1," + b64(change(base64.b64decode(headers["webhook-signature"][3:])))
    elif scheme == "stripe":
        t, v1 = headers["stripe-signature"].split(",")
        out["stripe-signature"] = f"{t},v1={change(bytes.fromhex(v1[3:])).hex()}"
    elif scheme in ("shopify", "woocommerce"):
        name = next(iter(headers))
        out[name] = b64(change(base64.b64decode(headers[name])))
    else:
        name = {"github": "x-hub-signature-256", "slack": "x-slack-signature", "hmac": "x-signature"}[scheme]
        prefix, _, hexmac = headers[name].partition("=")
        out[name] = f"{prefix}={change(bytes.fromhex(hexmac)).hex()}"
    return out


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("keep", [0, 1, 16, -1])
def test_a_truncated_mac_fails(scheme: str, keep: int) -> None:
    """Issue #19 row 1: a signature compared as a prefix would accept a truncated MAC, down to
    ``webhook-signature: v1,`` with nothing after it. Every length but the full one must fail."""
    s = secret_for(scheme)
    headers = _with_mac(scheme, sign(scheme, s, BODY), lambda mac: mac[:keep])
    with pytest.raises(SignatureError) as e:
        verify(spec_for(scheme), [s], headers, BODY, now=NOW)
    assert e.value.reason in ("mismatch", "bad_format", "missing_header")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_an_extended_mac_fails(scheme: str) -> None:
    """Issue #19 row 1, the other way round: the right MAC with bytes after it is not the right MAC."""
    s = secret_for(scheme)
    headers = _with_mac(scheme, sign(scheme, s, BODY), lambda mac: mac + b"\x00")
    assert reason(spec_for(scheme), [s], headers, BODY) == "mismatch"


def test_an_empty_standard_signature_fails() -> None:
    """Issue #19 row 1, as a sender would try it."""
    h = {**sign("standard", STANDARD_SECRET, BODY), "webhook-signature": "v1,"}
    with pytest.raises(SignatureError):
        verify(SignatureSpec("standard"), [STANDARD_SECRET], h, BODY, now=NOW)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_rotation_second_secret_passes(scheme: str) -> None:
    old, new = secret_for(scheme, 0), secret_for(scheme, 1)
    assert verify(spec_for(scheme), [old, new], sign(scheme, new, BODY), BODY, now=NOW) == passed(scheme)
    assert verify(spec_for(scheme), [old, new], sign(scheme, old, BODY), BODY, now=NOW) == passed(scheme)
    assert reason(spec_for(scheme), [old, new], sign(scheme, secret_for(scheme, 2), BODY), BODY) == "mismatch"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_error_never_names_a_secret(scheme: str) -> None:
    right, wrong = secret_for(scheme, 0), secret_for(scheme, 1)
    headers = sign(scheme, right, BODY)
    errors = []
    for secrets in ([wrong], [wrong, secret_for(scheme, 2)], [secret_for(scheme, 2), wrong]):
        with pytest.raises(SignatureError) as e:
            verify(spec_for(scheme), secrets, headers, BODY + b" ", now=NOW)
        errors.append((type(e.value), e.value.args, str(e.value)))
        assert right not in str(e.value) and wrong not in str(e.value)
    assert len(set(errors)) == 1  # the same error whichever secret (if any) came close
    assert errors[0][2] == "mismatch"


def test_no_usable_secret_is_a_signature_error() -> None:
    s = secret_for("github")
    assert reason(SignatureSpec("github"), [], sign("github", s, BODY), BODY) == "no_secret"
    assert reason(SignatureSpec("github"), [""], sign("github", s, BODY), BODY) == "no_secret"
    # an unusable secret beside a good one does not stop the good one
    std = secret_for("standard")
    assert verify(SignatureSpec("standard"), ["whsec_", std], sign("standard", std, BODY), BODY,
                  now=NOW) == passed("standard")
    with pytest.raises(TypeError):
        verify(SignatureSpec("github"), s, sign("github", s, BODY), BODY, now=NOW)


# --- standard (Standard Webhooks / Svix) --------------------------------------------------------


def test_standard_interoperates_with_the_library_both_ways() -> None:
    wh = Webhook(STANDARD_SECRET)
    ts = int(time.time())
    # the library signs, we verify (with the real clock, no `now`)
    lib_sig = wh.sign("msg_2", datetime.fromtimestamp(ts, UTC), BODY.decode())
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(ts), "webhook-signature": lib_sig}
    assert verify(SignatureSpec("standard"), [STANDARD_SECRET], headers, BODY).event_id == "msg_2"
    # we sign, the library verifies
    ours = sign_standard(STANDARD_SECRET, "msg_3", ts, BODY)
    assert ours == wh.sign("msg_3", datetime.fromtimestamp(ts, UTC), BODY.decode())
    lib_headers = {"webhook-id": "msg_3", "webhook-timestamp": str(ts), "webhook-signature": ours}
    assert wh.verify(BODY, lib_headers) == standardwebhooks.Webhook(STANDARD_SECRET).verify(BODY, lib_headers)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        wh.verify(BODY + b" ", lib_headers)


def test_standard_secret_without_prefix_is_base64_like_the_library() -> None:
    bare = STANDARD_SECRET.removeprefix("whsec_")
    headers = sign("standard", STANDARD_SECRET, BODY)
    assert verify(SignatureSpec("standard"), [bare], headers, BODY, now=NOW) == passed("standard")
    assert sign_standard(bare, "msg_1", NOW, BODY) == headers["webhook-signature"]


def test_standard_svix_header_aliases() -> None:
    h = sign("standard", STANDARD_SECRET, BODY, msg_id="msg_svix")
    svix = {"svix-id": h["webhook-id"], "svix-timestamp": h["webhook-timestamp"],
            "svix-signature": h["webhook-signature"]}
    assert verify(SignatureSpec("standard"), [STANDARD_SECRET], svix, BODY, now=NOW).event_id == "msg_svix"


def test_standard_multiple_signatures_and_versions() -> None:
    h = sign("standard", STANDARD_SECRET, BODY)
    other = sign("standard", secret_for("standard", 5), BODY)["webhook-signature"]
    # several space-separated signatures (sender mid-rotation), unknown versions ignored
    h["webhook-signature"] = f"v1a,AAAA {other} v2,{h['webhook-signature'][3:]} {h['webhook-signature']}"
    assert verify(SignatureSpec("standard"), [STANDARD_SECRET], h, BODY, now=NOW) == passed("standard")
    # only non-v1 entries: nothing to check
    h["webhook-signature"] = "v1a,AAAA v2,BBBB"
    assert reason(SignatureSpec("standard"), [STANDARD_SECRET], h, BODY) == "bad_format"


def test_standard_id_and_timestamp_are_signed() -> None:
    h = sign("standard", STANDARD_SECRET, BODY, msg_id="msg_1")
    assert reason(SignatureSpec("standard"), [STANDARD_SECRET], {**h, "webhook-id": "msg_2"}, BODY) == "mismatch"
    assert reason(SignatureSpec("standard"), [STANDARD_SECRET],
                  {**h, "webhook-timestamp": str(NOW + 1)}, BODY) == "mismatch"
    assert reason(SignatureSpec("standard"), [STANDARD_SECRET],
                  {**h, "webhook-timestamp": "soon"}, BODY) == "bad_format"


# --- stripe --------------------------------------------------------------------------------------


def test_stripe_accepts_exactly_what_the_stripe_library_accepts() -> None:
    secret = "whsec_stripe_test_secret"  # used as text by Stripe, not base64-decoded
    ts = int(time.time())
    header = stripe.WebhookSignature.generate_signature_header(BODY.decode(), secret, ts)
    assert verify(SignatureSpec("stripe"), [secret], {"stripe-signature": header}, BODY).timestamp == ts
    event = stripe.Webhook.construct_event(BODY, header, secret)
    assert event["id"] == "evt_1"
    # the documented scheme by hand: t=..., v1=hex(HMAC-SHA256("t.body")), extra v0/v1 entries ignored
    manual = _hmac(secret, f"{ts}.".encode() + BODY).hexdigest()
    assert manual == stripe.WebhookSignature._compute_signature(f"{ts}.{BODY.decode()}", secret)
    multi = f"t={ts},v1={'0' * 64},v1={manual},v0={'f' * 64}"
    assert verify(SignatureSpec("stripe"), [secret], {"stripe-signature": multi}, BODY) == passed("stripe", ts)
    assert stripe.Webhook.construct_event(BODY, multi, secret)["id"] == "evt_1"
    # and both refuse a stale one
    stale = stripe.WebhookSignature.generate_signature_header(BODY.decode(), secret, ts - 301)
    assert reason(SignatureSpec("stripe"), [secret], {"stripe-signature": stale}, BODY, now=ts) == "timestamp_expired"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(BODY, stale, secret)


def test_stripe_future_timestamp_is_like_the_library() -> None:
    """stripe.WebhookSignature.verify_header only refuses too-old timestamps; so do we."""
    s = secret_for("stripe")
    future = sign("stripe", s, BODY, ts=NOW + 3600)
    assert verify(SignatureSpec("stripe"), [s], future, BODY, now=NOW) == passed("stripe", NOW + 3600)


@pytest.mark.parametrize("header", [
    f"v1={'a' * 64}",  # no timestamp
    f"t={NOW}",  # no v1
    f"t={NOW},v0={'a' * 64}",  # only the legacy scheme
    f"t={NOW},t={NOW},v1={'a' * 64}",  # ambiguous timestamp
    f"t=now,v1={'a' * 64}",
    f"t={NOW},v1=not-hex",
])
def test_stripe_malformed_header(header: str) -> None:
    assert reason(SignatureSpec("stripe"), ["s"], {"stripe-signature": header}, BODY) == "bad_format"


# --- github, shopify, slack, hmac details --------------------------------------------------------


def test_github_needs_the_sha256_prefix_and_accepts_either_hex_case() -> None:
    s = secret_for("github")
    digest = _hmac(s, BODY).hexdigest()
    assert verify(SignatureSpec("github"), [s], {"x-hub-signature-256": "sha256=" + digest.upper()},
                  BODY) == passed("github")
    assert reason(SignatureSpec("github"), [s], {"x-hub-signature-256": digest}, BODY) == "bad_format"
    sha1 = {"x-hub-signature": "sha1=" + _hmac(s, BODY, hashlib.sha1).hexdigest()}
    assert reason(SignatureSpec("github"), [s], sha1, BODY) == "missing_header"  # SHA-1 header not enough


def test_shopify_malformed_base64() -> None:
    assert reason(SignatureSpec("shopify"), ["s"], {"x-shopify-hmac-sha256": "not base64!"}, BODY) == "bad_format"


def test_slack_wrong_version() -> None:
    s = secret_for("slack")
    h = sign("slack", s, BODY)
    h["x-slack-signature"] = "v1=" + h["x-slack-signature"][3:]
    assert reason(SignatureSpec("slack"), [s], h, BODY) == "bad_format"


@pytest.mark.parametrize(("algorithm", "encoding", "prefix"), [
    ("sha1", "hex", ""), ("sha256", "base64", ""), ("sha512", "base64", "sha512="), ("sha256", "hex", "sha256="),
])
def test_generic_hmac_variants(algorithm: str, encoding: str, prefix: str) -> None:
    spec = SignatureSpec("hmac", header="X-Sig", algorithm=algorithm, encoding=encoding, prefix=prefix)
    mac = hmac.new(b"k", BODY, getattr(hashlib, algorithm))
    value = mac.hexdigest().upper() if encoding == "hex" else base64.b64encode(mac.digest()).decode()
    assert verify(spec, ["k"], {"x-sig": prefix + value}, BODY) == passed("hmac")
    if prefix:  # a configured prefix is required
        assert reason(spec, ["k"], {"x-sig": value}, BODY) == "bad_format"
    wrong_algo = hmac.new(b"k", BODY, hashlib.md5).digest()
    bad = wrong_algo.hex() if encoding == "hex" else base64.b64encode(wrong_algo).decode()
    assert reason(spec, ["k"], {"x-sig": prefix + bad}, BODY) == "mismatch"


# --- woocommerce ping ----------------------------------------------------------------------------


def test_woocommerce_ping_accepted() -> None:
    r = verify(SignatureSpec("woocommerce"), ["s"], {"content-type": "application/x-www-form-urlencoded"},
               b"webhook_id=42")
    assert r == VerifyResult(ping=True, timestamp=None, event_id=None)


@pytest.mark.parametrize("body", [
    b"webhook_id=", b"webhook_id=42\n", b" webhook_id=42", b"webhook_id=42&x=1", b"webhook_id=abc",
    b"webhook_id=4 2", b"Webhook_id=42", BODY, b"",
])
def test_woocommerce_non_ping_without_signature_rejected(body: bytes) -> None:
    assert reason(SignatureSpec("woocommerce"), ["s"], {}, body) == "missing_header"


def test_woocommerce_ping_body_with_bad_signature_rejected() -> None:
    ping = b"webhook_id=42"
    bad = {"x-wc-webhook-signature": base64.b64encode(_hmac("other", ping).digest()).decode()}
    assert reason(SignatureSpec("woocommerce"), ["s"], bad, ping) == "mismatch"
    good = {"x-wc-webhook-signature": base64.b64encode(_hmac("s", ping).digest()).decode()}
    assert verify(SignatureSpec("woocommerce"), ["s"], good, ping) == VerifyResult()  # signed: not a ping


def test_ping_is_woocommerce_only() -> None:
    assert reason(SignatureSpec("shopify"), ["s"], {}, b"webhook_id=42") == "missing_header"


# --- spec, signing helpers, secrets --------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"scheme": "nope"},
    {"scheme": "hmac"},
    {"scheme": "hmac", "header": "Bad Header"},
    {"scheme": "hmac", "header": "X-Sig", "algorithm": "md5"},
    {"scheme": "hmac", "header": "X-Sig", "encoding": "base32"},
    {"scheme": "hmac", "header": "X-Sig", "prefix": "sha 256="},
    {"scheme": "stripe", "tolerance_s": 0},
])
def test_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SignatureSpec(**kwargs)  # type: ignore[arg-type]


def test_generate_secret() -> None:
    std = generate_secret("standard")
    assert std.startswith("whsec_") and len(base64.b64decode(std[6:])) == 24
    Webhook(std)  # the library accepts it
    other = generate_secret("github")
    assert len(base64.urlsafe_b64decode(other + "=")) == 32
    assert generate_secret("github") != other
    for scheme in SCHEMES:
        s = generate_secret(scheme)
        validate_secret(scheme, s)
        assert verify(spec_for(scheme), [s], sign(scheme, s, BODY), BODY, now=NOW) == passed(scheme)
    with pytest.raises(ValueError):
        generate_secret("nope")


def test_validate_secret() -> None:
    validate_secret("standard", STANDARD_SECRET)
    validate_secret("stripe", "whsec_anything at all")
    for scheme, bad in (("standard", "whsec_"), ("standard", "whsec_a"), ("github", "")):
        with pytest.raises(ValueError):
            validate_secret(scheme, bad)


# --- properties ----------------------------------------------------------------------------------

_NAMES = ["webhook-id", "webhook-timestamp", "webhook-signature", "svix-id", "svix-timestamp", "svix-signature",
          "stripe-signature", "x-hub-signature-256", "x-shopify-hmac-sha256", "x-wc-webhook-signature",
          "x-slack-signature", "x-slack-request-timestamp", "x-signature"]
_VALUES = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="tv01=,. abcdefABCDEF0123456789+/sha256whsec_", max_size=120),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.sampled_from(["t=1700000000,v1=", "v1,", "v0=", "sha256=", "sha512=", "9" * 5000, "\x00", "é", "\ud800"]),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(scheme=st.sampled_from(SCHEMES), headers=st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=6),
       body=st.binary(max_size=200))
def test_arbitrary_input_only_ever_raises_signature_error(scheme: str, headers: dict[str, str], body: bytes) -> None:
    try:
        r = verify(spec_for(scheme), [secret_for(scheme), secret_for(scheme, 1)], headers, body, now=NOW)
    except SignatureError as e:
        assert e.reason in ("missing_header", "bad_format", "timestamp_expired", "mismatch")
    else:  # nothing random gets through except the unsigned WooCommerce ping
        assert scheme == "woocommerce" and r.ping


@settings(max_examples=100)
@given(scheme=st.sampled_from(SCHEMES), body=st.binary(min_size=1, max_size=300), data=st.data())
def test_any_body_round_trips_and_any_flip_fails(scheme: str, body: bytes, data: st.DataObject) -> None:
    s = secret_for(scheme)
    text_schemes = ("standard", "stripe")  # their libraries sign text
    if scheme in text_schemes:
        body = body.decode("utf-8", "replace").encode()
    headers = sign(scheme, s, body)
    assert verify(spec_for(scheme), [s], headers, body, now=NOW) == passed(scheme)
    i = data.draw(st.integers(0, len(body) - 1))
    bit = data.draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128]))
    flipped = bytearray(body)
    flipped[i] ^= bit
    with pytest.raises(SignatureError) as e:
        verify(spec_for(scheme), [s], headers, bytes(flipped), now=NOW)
    assert e.value.reason == "mismatch"


# --- issue #19: what the mutation run found untested ----------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scheme": "nope"}, "unknown signature scheme 'nope'; expected one of standard, "),
    ({"scheme": ["standard"]}, "unknown signature scheme ['standard']; expected one of standard, "),
    ({"scheme": "hmac", "header": "x-sig", "algorithm": "md4"}, "unknown algorithm 'md4'; expected one of sha1, "),
    ({"scheme": "hmac", "header": "x-sig", "encoding": "b32"}, "unknown encoding 'b32'; expected one of hex, "),
    ({"scheme": "standard", "tolerance_s": 0}, "tolerance_s must be a positive number of seconds"),
    ({"scheme": "standard", "tolerance_s": True}, "tolerance_s must be a positive number of seconds"),
    ({"scheme": "hmac", "header": "x-sig", "prefix": "sha 1="}, "prefix must be printable ASCII without spaces"),
    ({"scheme": "hmac"}, "scheme 'hmac' needs a header name"),
    ({"scheme": "hmac", "header": "x sig"}, "'x sig' is not a valid header name"),
])
def test_a_bad_spec_says_what_is_wrong(kwargs: dict, message: str) -> None:
    """These messages are the API's 422 answer to a source's signature config: they must name the
    field and the allowed values, not be empty."""
    with pytest.raises(ValueError) as e:
        SignatureSpec(**kwargs)
    assert str(e.value).startswith(message)


def test_a_tolerance_of_one_second_is_allowed() -> None:
    assert SignatureSpec("standard", tolerance_s=1).tolerance_s == 1


@pytest.mark.parametrize(("scheme", "secret", "message"), [
    ("standard", "whsec_a", "a Standard Webhooks secret must be base64 (optionally prefixed 'whsec_')"),
    ("standard", "whsec_", "a Standard Webhooks secret may not be empty"),
    ("github", b"bytes", "a signing secret must be text"),
    ("github", "\ud800", "a signing secret must be valid text"),
    ("github", "", "a signing secret may not be empty"),
    ("nope", "x", "unknown signature scheme 'nope'"),
])
def test_a_bad_secret_says_what_is_wrong(scheme: str, secret: object, message: str) -> None:
    """validate_secret's message is what the operator sees when saving a secret."""
    with pytest.raises(ValueError) as e:
        validate_secret(scheme, secret)  # type: ignore[arg-type]
    assert str(e.value) == message


def test_unknown_scheme_for_a_new_secret_is_named() -> None:
    with pytest.raises(ValueError) as e:
        generate_secret("nope")
    assert str(e.value) == "unknown signature scheme 'nope'"


def test_a_lone_string_of_secrets_is_a_type_error_that_says_so() -> None:
    with pytest.raises(TypeError) as e:
        verify(SignatureSpec("github"), "secret", {}, BODY)  # type: ignore[arg-type]
    assert str(e.value) == "secrets must be a sequence of strings, not a string"


def _reason(spec: SignatureSpec, headers: dict, body: bytes = BODY, secret: str = "k") -> str:
    with pytest.raises(SignatureError) as e:
        verify(spec, [secret], headers, body, now=time.time())
    assert str(e.value) == e.value.reason
    return e.value.reason


def _gh_hex(body: bytes = BODY, key: bytes = b"k") -> str:
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def test_a_header_value_that_is_not_text_is_bad_format() -> None:
    assert _reason(SignatureSpec("github"), {"x-hub-signature-256": b"sha256=00"}) == "bad_format"


@pytest.mark.parametrize("value", ["abc", "zz", "0g" * 32, _gh_hex()[:-1]])
def test_odd_length_or_non_hex_digits_are_bad_format(value: str) -> None:
    """Never passed to unhexlify (which would raise something other than SignatureError)."""
    assert _reason(SignatureSpec("github"), {"x-hub-signature-256": "sha256=" + value}) == "bad_format"


def test_github_needs_its_own_prefix() -> None:
    """A right MAC under another 7-character prefix is not a GitHub signature."""
    assert _reason(SignatureSpec("github"), {"x-hub-signature-256": "sha512=" + _gh_hex()}) == "bad_format"
    assert verify(SignatureSpec("github"), ["k"], {"x-hub-signature-256": "sha256=" + _gh_hex()}, BODY).ok


def test_base64_with_foreign_characters_is_refused_not_cleaned() -> None:
    """A lenient decoder drops characters outside the alphabet, so ``v1,<mac>$`` would verify;
    the strict one refuses it."""
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    ts = int(time.time())
    good = base64.b64encode(hmac.new(key, f"msg_1.{ts}.".encode() + BODY, hashlib.sha256).digest()).decode()
    spec = SignatureSpec("standard")
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts)}
    assert verify(spec, [secret], {**headers, "webhook-signature": "v1," + good}, BODY).ok
    for bad in ("v1," + good[:4] + "$" + good[4:], "v1," + good + "!"):
        assert _reason(spec, {**headers, "webhook-signature": bad}, secret=secret) == "bad_format"
    assert _reason(spec, {**headers, "webhook-signature": "v1a," + good}, secret=secret) == "bad_format"
    wrong = {**headers, "x-shopify-hmac-sha256": base64.b64encode(hmac.new(b"k", BODY, hashlib.sha256).digest()).decode() + "*"}
    assert _reason(SignatureSpec("shopify"), wrong) == "bad_format"


def test_stripe_skips_items_without_an_equals_sign() -> None:
    """Stripe's own parser ignores such items; so does hookbay (the rest still verifies)."""
    ts = int(time.time())
    mac = hmac.new(b"whsec_k", f"{ts}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert verify(SignatureSpec("stripe"), ["whsec_k"], {"stripe-signature": f"junk,t={ts},v1={mac}"}, BODY).ok


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_a_body_of_any_bytes_like_type_verifies(kind: type) -> None:
    body = kind(BODY)
    assert verify(SignatureSpec("github"), ["k"], {"x-hub-signature-256": "sha256=" + _gh_hex()}, body).ok


@pytest.mark.parametrize("msg_id", ["msg 1", "msg_\u00e9"])
def test_a_standard_message_id_outside_printable_ascii_is_bad_format(msg_id: str) -> None:
    """The id is signed content: only printable ASCII has one unambiguous byte form."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(time.time())), "webhook-signature": "v1,AAAA"}
    assert _reason(SignatureSpec("standard"), headers, secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == "bad_format"
