"""The source pages: the list with its "new source" form, a source's page (name, enabled, signing
secret, API key), the settings editor and the delete confirmation, through the same operations as
the admin API (:mod:`hookbay.ops.sources`).

The settings form shows every setting, but sends on only what the user changed: each field's text
as the page showed it travels in a hidden ``base``, and the fields that differ from it become a
JSON Merge Patch, as ``PATCH /api/v1/sources/{id}`` takes it. A field someone else changed
meanwhile is therefore left as they set it. A change that removes or loosens a check (the
signature, the IP allowlist, a required header...) is applied only once the user ticks it, and
the audit log records it as a weakening.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import quote

import orjson
import yaml
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from hookbay.actions.registry import ACTION_TYPES
from hookbay.changes import merge_patch, weakenings
from hookbay.console.base import NOTICES, Console, Ctx, pretty, validation_message
from hookbay.errors import HookbayError
from hookbay.models import Format, Method, Parser, RotateIn, SourceConfig, SourceCreate, SourceUpdate
from hookbay.ops import sources as source_ops
from hookbay.signatures.registry import REGISTRY as SIGNATURE_SCHEMES
from hookbay.store import RequestFilter

# the list page's "new source" form
FORMATS = get_args(Format)
PARSERS = tuple(p for p in get_args(Parser) if p != "mapping")  # a mapping needs more than a form
SCHEMES = tuple(n for n, s in SIGNATURE_SCHEMES.items() if not s.configurable)  # a form gives only name and secret
GRACE = ((0, "retire the old secrets now"), (3600, "keep old secrets 1 hour"),
         (86400, "keep old secrets 24 hours"), (7 * 86400, "keep old secrets 7 days"))
SIG_PARTS = ("header", "algorithm", "encoding", "prefix", "tolerance_s")


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # select, multi, int, float, text, bool, lines, headers, yaml, signature
    label: str
    hint: str = ""
    choices: tuple[str, ...] = ()
    admin_only: bool = False


FIELDS = (
    Field("format", "select", "Body format", choices=get_args(Format)),
    Field("parser", "select", "Parser", "mapping: edit the mapping on its own page", choices=get_args(Parser)),
    Field("methods", "multi", "Methods accepted", choices=get_args(Method)),
    Field("signature", "signature", "Signature check"),
    Field("allow_ips", "lines", "IP allowlist", "one address or CIDR a line; empty allows every address"),
    Field("required_headers", "headers", "Required headers", "one 'Name: exact value' a line"),
    Field("rate", "float", "Rate limit (requests/s)", "empty: no limit"),
    Field("burst", "int", "Burst", "token bucket size; empty: max(1, rate)"),
    Field("rate_per_ip", "float", "Rate limit per client address (requests/s)", "IPv6 per /64"),
    Field("burst_per_ip", "int", "Burst per client address"),
    Field("max_body_bytes", "int", "Body size limit (bytes)", "empty: the server's default"),
    Field("retention_days", "int", "Keep raw bodies (days)", "empty: the server's retention"),
    Field("relay", "bool", "Relay: queue every accepted request for `hookbay agent`"),
    Field("sync", "bool", "Parse before answering (as if every request had ?wait=1)"),
    Field("default_region", "text", "Default phone region", "two letters, e.g. GB"),
    Field("allowed_origins", "lines", "Browser origins allowed to post (CORS)", "one a line; * allows any site"),
    Field("redirect_url", "text", "After a form post, redirect to", "http(s) URL"),
    Field("honeypot_field", "text", "Honeypot form field"),
    Field("idempotency_key", "text", "Dedupe key",
          "a preset (stripe, shopify, github, woocommerce, standard), header:NAME or body:JMESPATH"),
    Field("idempotency_days", "int", "Remember dedupe keys (days)"),
    Field("idempotency_header", "text", "Extra delivery-id header"),
    Field("actions", "yaml", "Actions (YAML list, run in order for each record)",
          "types: " + ", ".join(ACTION_TYPES) + " (docs/actions.md)"),
    Field("response", "yaml", "Answer to accepted requests (YAML)", "docs/ingest-edge.md"),
    Field("handshake", "yaml", "Provider endpoint verification (YAML)", "docs/ingest-edge.md"),
    Field("allow_private_destinations", "bool", "Let forward/provider actions reach private addresses",
          admin_only=True),
)
BY_NAME = {f.name: f for f in FIELDS}
ACTION_EXAMPLE = "- type: forward\n  url: https://example.com/hook\n"


def _num(v: Any) -> str:
    return "" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def field_texts(cfg: SourceConfig, admin: bool) -> dict[str, str]:
    """Each field's text as the form shows it (the signature as its sub-fields, prefixed ``sig_``)."""
    d: dict[str, Any] = cfg.model_dump()
    out: dict[str, str] = {}
    for f in FIELDS:
        if f.admin_only and not admin:
            continue
        v: Any = d.get(f.name)
        if f.kind == "signature":
            sig = v or {}
            out["sig_scheme"] = sig.get("scheme", "")
            for part in SIG_PARTS:
                out[f"sig_{part}"] = _num(sig.get(part)) if sig else ""
        elif f.kind == "multi":
            out[f.name] = ",".join(v)
        elif f.kind == "bool":
            out[f.name] = "on" if v else ""
        elif f.kind == "lines":
            out[f.name] = "\n".join(v)
        elif f.kind == "headers":
            out[f.name] = "\n".join(f"{k}: {val}" for k, val in v.items())
        elif f.kind == "yaml":
            out[f.name] = yaml.safe_dump(v, sort_keys=False, allow_unicode=True) if v else ""
        else:
            out[f.name] = _num(v)
    return out


def posted_texts(form: dict[str, str], admin: bool) -> dict[str, str]:
    """The same texts from a posted form, for the fields it carries: a field it leaves out is not
    changed. Unticked checkboxes are never sent, so they count only when the form says it has
    them (``checkboxes=1``, always sent by the page). Textareas send CRLF."""
    out: dict[str, str] = {}
    boxes = form.get("checkboxes") == "1"
    for f in FIELDS:
        if f.admin_only and not admin:
            continue
        if f.kind == "signature":
            if "sig_scheme" in form:
                out["sig_scheme"] = form["sig_scheme"]
                for part in SIG_PARTS:
                    out[f"sig_{part}"] = form.get(f"sig_{part}", "").strip()
        elif f.kind == "multi":
            if boxes:
                out[f.name] = ",".join(m for m in f.choices if form.get(f"{f.name}_{m}") == "on")
        elif f.kind == "bool":
            if boxes:
                out[f.name] = "on" if form.get(f.name) == "on" else ""
        elif f.name not in form:
            continue
        elif f.kind in ("lines", "headers", "yaml"):
            out[f.name] = form[f.name].replace("\r\n", "\n").strip("\n")
        else:
            out[f.name] = form[f.name].strip()
    return out


def _changed_fields(base: dict[str, str], now: dict[str, str]) -> list[str]:
    out = []
    for f in FIELDS:
        keys = ["sig_scheme", *(f"sig_{p}" for p in SIG_PARTS)] if f.kind == "signature" else [f.name]
        if any(k in now and now[k].strip() != base.get(k, "").strip() for k in keys):
            out.append(f.name)
    return out


def _value(f: Field, texts: dict[str, str]) -> Any:
    """The config value of one field from its text; a ValueError names what is wrong."""
    t = texts.get(f.name, "")
    if f.kind == "signature":
        scheme = texts.get("sig_scheme", "")
        if not scheme:
            return None
        sig: dict[str, Any] = {"scheme": scheme}
        s = SIGNATURE_SCHEMES.get(scheme)
        for part in SIG_PARTS:
            v = texts.get(f"sig_{part}", "")
            if not v or (part != "tolerance_s" and not (s and s.configurable)):
                continue
            sig[part] = int(v) if part == "tolerance_s" else v
        return sig
    if f.kind == "multi":
        return [m for m in t.split(",") if m]
    if f.kind == "bool":
        return t == "on"
    if f.kind == "lines":
        return [line.strip() for line in t.splitlines() if line.strip()]
    if f.kind == "headers":
        headers: dict[str, str] = {}
        for line in t.splitlines():
            if not line.strip():
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"expected 'Name: value', got {line.strip()!r}")
            headers[name.strip()] = value.strip()
        return headers
    if f.kind == "yaml":
        if not t.strip():
            return [] if f.name == "actions" else None
        try:
            return yaml.safe_load(t)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            raise ValueError("not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None
    if not t:
        return None
    if f.kind == "int":
        try:
            return int(t)
        except ValueError:
            raise ValueError("a whole number") from None
    if f.kind == "float":
        try:
            return float(t)
        except ValueError:
            raise ValueError("a number") from None
    return t


def _replacing(old: Any, new: Any) -> Any:
    """A merge-patch value that makes ``old`` into ``new``: an object patch only adds and changes
    keys, so the keys the user deleted (a required header, say) are named with ``None``."""
    if isinstance(old, dict) and isinstance(new, dict):
        return {**{k: None for k in old if k not in new}, **{k: _replacing(old.get(k), v) for k, v in new.items()}}
    return new


def build_patch(base: dict[str, str], now: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The config merge patch for the fields the user changed (``None`` removes a setting), and
    the fields whose text is not a value at all."""
    patch: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name in _changed_fields(base, now):
        try:
            value = _value(BY_NAME[name], now)
        except ValueError as e:
            errors[name] = str(e)
            continue
        try:
            patch[name] = _replacing(_value(BY_NAME[name], base), value)
        except ValueError:  # the page showed what was stored, so this is only a forged base
            patch[name] = value
    return patch, errors


def _field_of(path: list[Any]) -> str:
    """A validation path (``config.actions.0.url``) as the form field that holds it."""
    parts = [str(p) for p in path if p not in ("body", "config")]
    return parts[0] if parts and parts[0] in BY_NAME else ""


def validation_errors(e: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for err in e.errors():
        loc = list(err.get("loc", ()))
        name = _field_of(loc) or "_form"
        inner = ".".join(str(p) for p in loc[2:]) if name != "_form" and len(loc) > 2 else ""
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out[name] = "; ".join(x for x in (out.get(name), f"{inner}: {msg}" if inner else msg) if x)
    return out


def hookbay_errors(e: HookbayError) -> dict[str, str]:
    """A refused config (403/422 with a ``detail`` list of paths) as messages at the fields."""
    out: dict[str, str] = {}
    if isinstance(e.detail, list):
        for d in e.detail:
            if isinstance(d, dict) and "path" in d:
                path = str(d["path"]).split(".")
                name = _field_of(path) or "_form"
                inner = ".".join(path[2:])
                msg = f"{inner}: {d.get('message')}" if inner else str(d.get("message"))
                out[name] = "; ".join(x for x in (out.get(name), msg) if x)
    if not out:
        out["_form"] = e.message
    return out


# --- pages: the list, a new source, its page and the quick changes there; the settings editor ---


async def settings_page(console: Console, request: Request, ctx: Ctx, *, status: int = 200,
                        texts: dict[str, str] | None = None, base: dict[str, str] | None = None,
                        errors: dict[str, str] | None = None, weakened: dict[str, str] | None = None,
                        shown_secret: str | None = None) -> Response:
    sid = request.path_params["source_id"]
    src = await source_ops.get_source(console.store, console.settings.base_url, ctx.principal, sid)
    current = field_texts(src.config, ctx.principal.is_admin)
    notice = "Saved." if request.query_params.get("notice") == "saved" else None
    return console.render(
        ctx, "sources_settings.html", status=status, src=src, fields=FIELDS, schemes=tuple(SIGNATURE_SCHEMES),
        configurable=[n for n, s in SIGNATURE_SCHEMES.items() if s.configurable], action_example=ACTION_EXAMPLE,
        texts=texts or current, base=orjson.dumps(base or current).decode(), errors=errors or {},
        weakened=weakened or {}, shown_secret=shown_secret, notice=notice,
        canonical=f"/ui/sources/{quote(src.id)}/settings")


async def save_settings(console: Console, request: Request, ctx: Ctx) -> Response:
    """Apply the changed fields as the API's PATCH does; a weakening needs its box ticked."""
    form = await console.form(request, ctx)
    sid = request.path_params["source_id"]
    admin = ctx.principal.is_admin
    src = await source_ops.get_source(console.store, console.settings.base_url, ctx.principal, sid)
    try:
        base = {k: str(v) for k, v in orjson.loads(form.get("base") or "{}").items()}
    except (orjson.JSONDecodeError, AttributeError):
        base = {}
    now = posted_texts(form, admin)
    again: dict[str, Any] = {"texts": now, "base": base}
    patch, errors = build_patch(base, now)
    if not patch and not errors:
        return RedirectResponse(f"/ui/sources/{quote(src.id)}/settings?notice=saved", status_code=303)
    old = src.config
    try:
        new = SourceConfig.model_validate(merge_patch(old.model_dump(), patch))
    except ValidationError as e:
        errors = {**validation_errors(e), **errors}
    if errors:  # every field's problem at once, and nothing saved
        return await settings_page(console, request, ctx, status=422, errors=errors, **again)
    weak = weakenings(old, new)
    confirmed = set(form.get("confirm_weaken", "").split(","))
    if weak and not set(weak) <= confirmed:
        return await settings_page(console, request, ctx, status=409, weakened=weak, **again,
                                   errors={k: f"{v}: tick the box below to do it on purpose" for k, v in weak.items()})
    try:
        out = await source_ops.patch_source(console.store, console.cache, console.settings.base_url, ctx.principal,
                                            src.id, {"config": patch}, settings=console.settings)
    except ValidationError as e:
        return await settings_page(console, request, ctx, status=422, errors=validation_errors(e), **again)
    except HookbayError as e:
        if e.status == 404:
            raise
        return await settings_page(console, request, ctx, status=e.status, errors=hookbay_errors(e), **again)
    scheme_changed = "signature" in patch and new.signature is not None and (
        old.signature is None or old.signature.scheme != new.signature.scheme)
    if scheme_changed:  # the old scheme's secrets mean nothing to the new one
        given = form.get("sig_secret", "").strip() or None
        try:
            rotated = await source_ops.rotate_secret(console.store, console.cache, console.settings.base_url,
                                                     ctx.principal, out.id, secret=given, grace_seconds=0)
        except HookbayError as e:
            return await settings_page(console, request, ctx, status=e.status,
                                       errors={"signature": f"Saved, but the secret was refused: {e.message}"})
        if rotated.secret:
            return await settings_page(console, request, ctx, shown_secret=rotated.secret)
    return RedirectResponse(f"/ui/sources/{quote(out.id)}/settings?notice=saved", status_code=303)


async def confirm_delete(console: Console, request: Request, ctx: Ctx) -> Response:
    src = await source_ops.get_source(console.store, console.settings.base_url, ctx.principal,
                                      request.path_params["source_id"])
    n = await source_ops.stored_requests(console.store, ctx.principal, src.id)
    return console.render(ctx, "sources_delete.html", src=src, requests=n,
                          canonical=f"/ui/sources/{quote(src.id)}/delete")


async def delete(console: Console, request: Request, ctx: Ctx) -> Response:
    form = await console.form(request, ctx)
    src = await source_ops.get_source(console.store, console.settings.base_url, ctx.principal,
                                      request.path_params["source_id"])
    if form.get("confirm_name", "").strip() != src.name:
        n = await source_ops.stored_requests(console.store, ctx.principal, src.id)
        return console.render(ctx, "sources_delete.html", status=400, src=src, requests=n,
                              error="Type the source's name exactly to delete it.")
    await source_ops.delete_source(console.store, console.cache, ctx.principal, src.id)
    return RedirectResponse("/ui/sources?notice=deleted", status_code=303)


async def sources(console: Console, request: Request, ctx: Ctx, *, status: int = 200, error: str | None = None,
                  values: dict[str, str] | None = None) -> Response:
    items = await source_ops.list_sources(console.store, console.settings.base_url, ctx.principal)
    return console.render(ctx, "sources.html", status=status, items=items, formats=FORMATS, parsers=PARSERS,
                          schemes=SCHEMES, form_error=error, values=values or {}, canonical="/ui/sources",
                          notice=NOTICES.get(request.query_params.get("notice", "")))


async def create_source(console: Console, request: Request, ctx: Ctx) -> Response:
    form = await console.form(request, ctx)
    client = ctx.principal.client_id or form.get("client_id", "").strip()
    body: dict[str, Any] = {"name": form.get("name", "").strip(), "client_id": client,
                            "api_key": form.get("api_key") == "on",
                            "config": {"format": form.get("format") or "auto",
                                       "parser": form.get("parser") or "generic"}}
    if form.get("signature"):
        body["config"]["signature"] = {"scheme": form["signature"]}
        if form.get("secret", "").strip():
            body["secret"] = form["secret"].strip()
    try:
        out = await source_ops.create_source(console.store, console.cache, console.settings.base_url, ctx.principal,
                                             SourceCreate.model_validate(body), settings=console.settings)
    except ValidationError as e:
        return await sources(console, request, ctx, status=400, error=validation_message(e), values=form)
    except HookbayError as e:
        if e.status == 404:
            raise
        return await sources(console, request, ctx, status=e.status, error=e.message, values=form)
    return await _source(console, ctx, out.id, created=True, shown_api_key=out.api_key, shown_secret=out.secret)


async def _source(console: Console, ctx: Ctx, source_id: str, *, status: int = 200, **extra: Any) -> Response:
    src = await source_ops.get_source(console.store, console.settings.base_url, ctx.principal, source_id)
    recent = await console.tail_items(RequestFilter(source_id=src.id, client_id=ctx.client, limit=10), ctx)
    values = {"created": False, "shown_api_key": None, "shown_secret": None, "form_error": None, **extra}
    return console.render(ctx, "source.html", status=status, src=src, recent=recent, grace=GRACE,
                          canonical=f"/ui/sources/{quote(src.id)}",
                          config_json=pretty(src.config.model_dump(exclude_defaults=True)), **values)


async def source_page(console: Console, request: Request, ctx: Ctx) -> Response:
    return await _source(console, ctx, request.path_params["source_id"],
                                 notice=NOTICES.get(request.query_params.get("notice", "")))


async def edit_source(console: Console, request: Request, ctx: Ctx) -> Response:
    form = await console.form(request, ctx)
    sid = request.path_params["source_id"]
    try:
        body = SourceUpdate.model_validate({"name": form.get("name", "").strip(),
                                            "enabled": form.get("enabled") == "true"})
        await source_ops.update_source(console.store, console.cache, console.settings.base_url, ctx.principal, sid,
                                       body, settings=console.settings)
    except ValidationError as e:
        return await _source(console, ctx, sid, status=400, form_error=validation_message(e))
    except HookbayError as e:
        if e.status == 404:
            raise
        return await _source(console, ctx, sid, status=e.status, form_error=e.message)
    return RedirectResponse(f"/ui/sources/{quote(sid)}?notice=saved", status_code=303)


async def rotate_secret(console: Console, request: Request, ctx: Ctx) -> Response:
    """A new signing secret (the provider's, or generated and shown once); the old ones stay
    valid for the chosen grace period."""
    form = await console.form(request, ctx)
    sid = request.path_params["source_id"]
    try:
        grace = int(form.get("grace_seconds") or 86400)
        body = RotateIn(secret=form.get("secret", "").strip() or None, grace_seconds=grace)
        out = await source_ops.rotate_secret(console.store, console.cache, console.settings.base_url, ctx.principal,
                                             sid, secret=body.secret, grace_seconds=body.grace_seconds)
    except (ValueError, ValidationError) as e:
        msg = validation_message(e) if isinstance(e, ValidationError) else "Invalid grace period"
        return await _source(console, ctx, sid, status=400, form_error=msg)
    except HookbayError as e:
        if e.status == 404:
            raise
        return await _source(console, ctx, sid, status=e.status, form_error=e.message)
    return await _source(console, ctx, sid, shown_secret=out.secret,
                                 notice="New signing secret added." if not out.secret else None)


async def api_key(console: Console, request: Request, ctx: Ctx) -> Response:
    """Issue a new API key (shown once; the old one stops working now) or drop the requirement."""
    form = await console.form(request, ctx)
    sid = request.path_params["source_id"]
    remove = form.get("action") == "remove"
    out = await source_ops.update_source(console.store, console.cache, console.settings.base_url, ctx.principal, sid,
                                         SourceUpdate(rotate_api_key=not remove, remove_api_key=remove),
                                         settings=console.settings)
    if remove:
        return RedirectResponse(f"/ui/sources/{quote(sid)}?notice=api-key-removed", status_code=303)
    return await _source(console, ctx, sid, shown_api_key=out.api_key)


def routes(console: Console) -> list[Route]:
    r = console.route
    return [
        Route("/ui/sources", r(lambda rq, c: sources(console, rq, c)), methods=["GET"]),
        Route("/ui/sources", r(lambda rq, c: create_source(console, rq, c)), methods=["POST"]),
        Route("/ui/sources/{source_id}", r(lambda rq, c: source_page(console, rq, c)), methods=["GET"]),
        Route("/ui/sources/{source_id}", r(lambda rq, c: edit_source(console, rq, c)), methods=["POST"]),
        Route("/ui/sources/{source_id}/rotate", r(lambda rq, c: rotate_secret(console, rq, c)), methods=["POST"]),
        Route("/ui/sources/{source_id}/api-key", r(lambda rq, c: api_key(console, rq, c)), methods=["POST"]),
        Route("/ui/sources/{source_id}/settings", r(lambda rq, c: settings_page(console, rq, c)), methods=["GET"]),
        Route("/ui/sources/{source_id}/settings", r(lambda rq, c: save_settings(console, rq, c)), methods=["POST"]),
        Route("/ui/sources/{source_id}/delete", r(lambda rq, c: confirm_delete(console, rq, c)), methods=["GET"]),
        Route("/ui/sources/{source_id}/delete", r(lambda rq, c: delete(console, rq, c)), methods=["POST"]),
    ]
