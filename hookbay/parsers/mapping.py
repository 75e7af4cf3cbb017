"""Declarative mappings: target fields computed from JMESPath expressions over a decoded tree.

For bodies the generic and contact parsers cannot take as they are ("complex JSON", XML, CSV), a
source names each target field and where its value lives. Mappings are written by people and
versioned, so a bad mapping fails loudly (``MappingError``, naming the key at fault) while a bad
*document* never raises: it yields field-level errors and warnings on the receipt.

Format and examples: ``docs/mappings/README.md``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import jmespath
import orjson
import yaml
from jmespath.exceptions import JMESPathError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from hookbay.parsers.generic import ParseResult, format_path, json_kind

Entry = dict[str, Any]
_Model = TypeVar("_Model", bound=BaseModel)

TARGETS = ("contact", "record")
ROOT_PREFIX = "$."
MAX_MAPPING_CHARS = 1_000_000
MAX_MAPPING_NODES = 100_000
DEFAULT_DATE_TO = "%Y-%m-%d"

_TRUE = frozenset({"true", "yes", "1", "on"})
_FALSE = frozenset({"false", "no", "0", "off"})
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]+")


class MappingError(ValueError):
    """A mapping document that cannot be used; ``problems`` lists ``{"path", "message"}`` for UIs."""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [{"path": "$", "message": message}]


class ConvertError(Exception):
    """A converter refused a value; becomes a ``convert_failed`` error, never escapes ``apply``."""


# --- values -------------------------------------------------------------------------------------


_kind = json_kind


def _show(value: Any, limit: int = 60) -> str:
    """A short quotation of an input value for messages: documents can be huge or hostile."""
    if isinstance(value, str):
        text = json.dumps(value[:limit], ensure_ascii=False)
        return text if len(value) <= limit else text[:-1] + '…"'
    if isinstance(value, dict):
        return f"{{…}} ({len(value)} keys)"
    if isinstance(value, list | tuple):
        return f"[…] ({len(value)} items)"
    if value is None or isinstance(value, bool | float) or (isinstance(value, int) and abs(value) < 10**30):
        return json.dumps(value)
    return _kind(value)


def _check_json(value: Any) -> Any:
    """Constants and defaults must be JSON so records stay serialisable and digests canonical."""
    stack = [value]
    seen = 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > MAX_MAPPING_NODES:
            raise ValueError(f"value has more than {MAX_MAPPING_NODES} elements")
        if v is None or isinstance(v, bool | int | str):
            continue
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ValueError("numbers must be finite (no NaN or infinity)")
            continue
        if isinstance(v, list):
            stack.extend(v)
            continue
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise ValueError(f"object keys must be strings, got {_kind(k)} {k!r}")
                stack.append(item)
            continue
        raise ValueError(
            f"must be a JSON value (null, boolean, number, string, array, object), got {_kind(v)}"
        )
    return value


# --- converters ---------------------------------------------------------------------------------


def _need_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    hint = (
        "; put 'string' before it" if isinstance(value, int | float) and not isinstance(value, bool) else ""
    )
    raise ConvertError(f"expected a string, got {_kind(value)} {_show(value)}{hint}")


def _to_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise ConvertError(f"expected a number, got boolean {_show(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConvertError(f"{value!r} is not a finite number")
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        s = value.strip()
        if _INTEGER.fullmatch(s):
            try:
                return int(s)
            except ValueError:  # more digits than int() accepts
                raise ConvertError(f"{_show(value)} has too many digits") from None
        if _NUMBER.fullmatch(s):
            f = float(s)
            if not math.isfinite(f):
                raise ConvertError(f"{_show(value)} is out of range")
            return int(f) if f.is_integer() else f
        raise ConvertError(f"{_show(value)} is not a number")
    raise ConvertError(f"expected a number or numeric string, got {_kind(value)} {_show(value)}")


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        if value == 1:
            return True
        if value == 0:
            return False
        raise ConvertError(f"{_show(value)} is not a boolean (only 1 and 0 are)")
    if isinstance(value, str):
        s = value.strip().lower()
        if s in _TRUE:
            return True
        if s in _FALSE:
            return False
        raise ConvertError(f"{_show(value)} is not a boolean (true/false, yes/no, on/off, 1/0)")
    raise ConvertError(f"expected a boolean, got {_kind(value)} {_show(value)}")


def _to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            return str(value)
        except ValueError:
            raise ConvertError("integer has too many digits") from None
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
        except Exception:
            return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    raise ConvertError(f"cannot turn {_kind(value)} into a string")


def _elementwise(fn: Callable[[Any], Any], value: Any) -> Any:
    """Scalar converters map over arrays (one level) and let null through, so ``a[].b`` just works."""
    if value is None:
        return None
    if isinstance(value, list):
        out = []
        for i, item in enumerate(value):
            try:
                out.append(None if item is None else fn(item))
            except ConvertError as e:
                raise ConvertError(f"item {i}: {e}") from None
        return out
    return fn(value)


@dataclass(frozen=True)
class Converter:
    """One validated step of a ``convert`` list; ``spec()`` is its canonical written form."""

    name: str
    arg: Any = None

    def spec(self) -> Any:
        if self.name in _BARE:
            return self.name
        return {self.name: copy.deepcopy(self.arg)}

    def __call__(self, value: Any) -> Any:
        name, arg = self.name, self.arg
        if name == "trim":
            return _elementwise(lambda v: _need_str(v).strip(), value)
        if name == "lower":
            return _elementwise(lambda v: _need_str(v).lower(), value)
        if name == "upper":
            return _elementwise(lambda v: _need_str(v).upper(), value)
        if name == "number":
            return _elementwise(_to_number, value)
        if name == "boolean":
            return _elementwise(_to_boolean, value)
        if name == "string":
            return _elementwise(_to_string, value)
        if name == "date":
            return _elementwise(lambda v: _convert_date(v, arg["from"], arg["to"]), value)
        if name == "split":
            if isinstance(value, str):
                return value.split(arg) if value else []
            return value
        if name == "join":
            return _join(value, arg) if isinstance(value, list) else value
        if name == "default":
            return copy.deepcopy(arg) if value is None else value
        if name == "constant":
            return copy.deepcopy(arg)
        raise AssertionError(f"unhandled converter {name}")  # pragma: no cover


def _convert_date(value: Any, fmt_from: str, fmt_to: str) -> str:
    s = _need_str(value).strip()
    try:
        parsed = datetime.strptime(s, fmt_from)
    except ValueError:
        raise ConvertError(f"{_show(value)} does not match {fmt_from!r}") from None
    try:
        return parsed.strftime(fmt_to)
    except ValueError as e:
        raise ConvertError(f"cannot format {_show(value)} with {fmt_to!r}: {e}") from None


def _join(items: list[Any], sep: str) -> str:
    parts: list[str] = []
    for i, item in enumerate(items):
        if item is None:
            continue
        if isinstance(item, dict | list):
            raise ConvertError(f"item {i}: cannot join {_kind(item)} {_show(item)}")
        parts.append(_to_string(item))
    return sep.join(parts)


_BARE = ("trim", "lower", "upper", "number", "boolean", "string")
_WITH_ARG = ("split", "join", "date", "default", "constant")
_KNOWN = ", ".join(sorted(_BARE + _WITH_ARG))


def _check_strptime(fmt: str) -> None:
    """Reject formats strptime cannot use (``%s``, a stray ``%``) when the mapping is saved, not per request."""
    sample = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    try:
        datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError as e:
        raise ValueError(f"date 'from' format {fmt!r} is not usable by strptime: {e}") from None


def _parse_converter(raw: Any) -> Converter:
    if isinstance(raw, str):
        if raw in _BARE:
            return Converter(raw)
        if raw in _WITH_ARG:
            raise ValueError(f"converter {raw!r} needs an argument: write {{{raw}: ...}}")
        raise ValueError(f"unknown converter {raw!r}; known: {_KNOWN}")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ValueError(f"a converter is a name or a one-key object like {{split: ','}}, got {_show(raw)}")
    ((name, arg),) = raw.items()
    if name in _BARE:
        raise ValueError(f"converter {name!r} takes no argument; write it as the plain string {name!r}")
    if name not in _WITH_ARG:
        raise ValueError(f"unknown converter {name!r}; known: {_KNOWN}")
    if name == "split":
        if not isinstance(arg, str) or not arg:
            raise ValueError("split needs a non-empty string separator, e.g. {split: ','}")
        return Converter(name, arg)
    if name == "join":
        if not isinstance(arg, str):
            raise ValueError("join needs a string separator, e.g. {join: ', '}")
        return Converter(name, arg)
    if name == "date":
        if not isinstance(arg, dict):
            raise ValueError("date needs {from: STRPTIME_FORMAT, to: STRFTIME_FORMAT}")
        extra = sorted(set(arg) - {"from", "to"}, key=str)
        if extra:
            raise ValueError(f"date: unknown key {extra[0]!r}; allowed: from, to")
        fmt_from = arg.get("from")
        fmt_to = arg.get("to", DEFAULT_DATE_TO)
        if not isinstance(fmt_from, str) or not fmt_from:
            raise ValueError("date needs 'from', a strptime format such as '%d/%m/%Y'")
        if not isinstance(fmt_to, str) or not fmt_to:
            raise ValueError("date 'to' must be a strftime format such as '%m-%d-%Y'")
        _check_strptime(fmt_from)
        return Converter(name, {"from": fmt_from, "to": fmt_to})
    return Converter(name, _check_json(arg))  # default, constant


# --- expressions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """A JMESPath expression compiled once; ``root`` when written ``$.…`` (evaluate on the whole document)."""

    text: str
    compiled: Any
    root: bool

    def search(self, element: Any, document: Any) -> Any:
        return self.compiled.search(document if self.root else element)


def _jmespath_message(e: JMESPathError) -> str:
    first = str(e).split("\n", 1)[0]
    return first.removesuffix(":").removesuffix(", for expression").strip()


def _parse_expr(raw: Any) -> Expr:
    if not isinstance(raw, str):
        raise ValueError(f"a JMESPath expression must be a string, got {_kind(raw)}")
    root = raw.startswith(ROOT_PREFIX)
    body = raw[len(ROOT_PREFIX) :] if root else raw
    if not body.strip():
        raise ValueError("empty expression")
    try:
        compiled = jmespath.compile(body)
    except JMESPathError as e:
        raise ValueError(f"invalid JMESPath {body!r}: {_jmespath_message(e)}") from None
    return Expr(raw, compiled, root)


def _parse_optional_expr(raw: Any) -> Expr | None:
    return None if raw is None else _parse_expr(raw)


# --- the mapping document -----------------------------------------------------------------------

_FIELD_KEYS = ("expr", "constant", "default", "convert")
_TOP_KEYS = ("version", "target", "each", "fields")


class FieldSpec(BaseModel):
    """One target field: where its value comes from and how it is converted."""

    model_config = ConfigDict(extra="forbid")

    expr: Annotated[Expr | None, PlainValidator(_parse_optional_expr)] = None
    constant: Annotated[Any, PlainValidator(_check_json)] = None
    default: Annotated[Any, PlainValidator(_check_json)] = None
    convert: list[Annotated[Converter, PlainValidator(_parse_converter)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_source(self) -> FieldSpec:
        has_expr = "expr" in self.model_fields_set and self.expr is not None
        has_constant = "constant" in self.model_fields_set
        if has_expr == has_constant:
            which = "both" if has_expr else "neither"
            raise ValueError(f"a field needs exactly one of 'expr' or 'constant' ({which} given)")
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.expr is not None:
            out["expr"] = self.expr.text
        else:
            out["constant"] = copy.deepcopy(self.constant)
        if self.default is not None:
            out["default"] = copy.deepcopy(self.default)
        if self.convert:
            out["convert"] = [c.spec() for c in self.convert]
        return out


class MappingSpec(BaseModel):
    """The validated mapping document (see ``docs/mappings/README.md``)."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(strict=True, ge=1)]
    target: Literal["contact", "record"]
    each: Annotated[Expr | None, PlainValidator(_parse_optional_expr)] = None
    fields: Annotated[dict[str, FieldSpec], Field(min_length=1)]

    @field_validator("fields")
    @classmethod
    def _field_names(cls, fields: dict[str, FieldSpec], info: ValidationInfo) -> dict[str, FieldSpec]:
        seen: dict[str, str] = {}
        for name in fields:
            if not name.strip():
                raise ValueError("field names must not be empty")
            if info.data.get("target") == "contact":
                # the contact parser matches keys case-insensitively, so these would overwrite each other
                other = seen.setdefault(name.casefold(), name)
                if other != name:
                    raise ValueError(
                        f"fields {other!r} and {name!r} differ only in case; contact keys are case-insensitive"
                    )
        return fields


def _problem_message(err: Any) -> str:
    kind = err["type"]
    loc = err["loc"]
    if kind == "extra_forbidden" and loc and loc[0] == "outputs":
        return f"unknown key {loc[-1]!r}"
    if kind == "extra_forbidden":
        allowed = _FIELD_KEYS if len(loc) == 3 and loc[0] == "fields" else _TOP_KEYS
        return f"unknown key {loc[-1]!r}; allowed: {', '.join(allowed)}"
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    if kind == "too_short" and loc == ("fields",):
        return "a mapping needs at least one field"
    return str(err["msg"])


def _from_validation_error(exc: ValidationError) -> MappingError:
    problems = []
    for err in exc.errors():
        parts = tuple(p if isinstance(p, int | str) else str(p) for p in err["loc"])
        if parts and parts[-1] == "[key]":  # pydantic's marker for a bad dict key
            parts = parts[:-1]
        problems.append({"path": format_path(parts), "message": _problem_message(err)})
    text = "; ".join(f"{p['path']}: {p['message']}" for p in problems)
    return MappingError(f"invalid mapping: {text}", problems)


# --- loading text -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML where ``2024-01-31`` stays a string (dates are for converters) and duplicate keys are errors."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)


class _DuplicateKey(ValueError):
    pass


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_text(text: str) -> Any:
    if len(text) > MAX_MAPPING_CHARS:
        raise MappingError(f"mapping is larger than {MAX_MAPPING_CHARS} characters")
    if not text.strip():
        raise MappingError("mapping is empty")
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_json_object, parse_constant=_reject_constant)
        except _DuplicateKey as e:
            raise MappingError(f"invalid mapping JSON: {e}") from None
        except (ValueError, RecursionError):
            pass  # not strict JSON: YAML flow style is a superset, try that
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as e:
        where = (
            f" at line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}"
            if e.problem_mark
            else ""
        )
        raise MappingError(f"invalid mapping YAML{where}: {e.problem or e}") from None
    except RecursionError:
        raise MappingError("mapping is nested too deeply") from None
    except (yaml.YAMLError, ValueError) as e:
        raise MappingError(f"invalid mapping YAML: {type(e).__name__}: {e}") from None


def _check_size(data: Any) -> None:
    """YAML aliases can make a tiny text expand enormously; refuse before validating or hashing it."""
    stack = [data]
    count = 0
    while stack:
        v = stack.pop()
        count += 1
        if count > MAX_MAPPING_NODES:
            raise MappingError(f"mapping has more than {MAX_MAPPING_NODES} values (after expanding aliases)")
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


@dataclass(frozen=True, slots=True)
class _Failed:
    """A cached expression failure, raised again for every element that uses it."""

    error: Exception


# --- the mapping --------------------------------------------------------------------------------


def _entry(name: str, code: str, message: str, document: int) -> Entry:
    return {"path": format_path(("fields", name)), "code": code, "message": message, "document": document}


def validate(model: type[_Model], data: Any) -> _Model:
    """``model`` validated from a mapping document, its problems as a ``MappingError``; shared with
    :mod:`hookbay.parsers.outputs` so both kinds of document fail the same way."""
    _check_size(data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise _from_validation_error(e) from None
    except RecursionError:
        raise MappingError("mapping is nested too deeply") from None


class Mapping:
    """A validated, compiled single-target mapping; apply to decoded trees. A document that may also
    be a mapping with several outputs is read with :mod:`hookbay.parsers.compile`."""

    __slots__ = ("_spec",)

    def __init__(self, spec: MappingSpec) -> None:
        self._spec = spec

    @classmethod
    def from_dict(cls, data: Any) -> Mapping:
        if not isinstance(data, dict):
            raise MappingError(
                f"a mapping is an object with {', '.join(_TOP_KEYS)}; got {_kind(data)}",
            )
        return cls(validate(MappingSpec, data))

    @classmethod
    def parse_text(cls, text: str) -> Mapping:
        """YAML or JSON text (JSON is tried first when the text starts with ``{``)."""
        return cls.from_dict(load_text(text))

    @property
    def version(self) -> int:
        return self._spec.version

    @property
    def target(self) -> str:
        """``contact`` or ``record``."""
        return self._spec.target

    @property
    def each(self) -> str | None:
        return self._spec.each.text if self._spec.each is not None else None

    @property
    def field_names(self) -> list[str]:
        return list(self._spec.fields)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form: defaults filled in (``date.to``), empty parts left out; round-trips."""
        out: dict[str, Any] = {"version": self._spec.version, "target": self._spec.target}
        if self._spec.each is not None:
            out["each"] = self._spec.each.text
        out["fields"] = {name: f.to_dict() for name, f in self._spec.fields.items()}
        return out

    def digest(self) -> str:
        """sha256 of canonical JSON, so the same mapping written differently has one identity."""
        canonical = json.dumps(
            self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self.digest() == other.digest()

    def __hash__(self) -> int:
        return hash(self.digest())

    def __repr__(self) -> str:
        return f"Mapping(version={self.version}, target={self.target!r}, fields={self.field_names!r})"

    def apply(self, doc: Any, document: int = 0) -> tuple[list[dict[str, Any]], list[Entry], list[Entry]]:
        """(records, errors, warnings) for one decoded document; never raises on the document's content."""
        records: list[dict[str, Any]] = []
        errors: list[Entry] = []
        warnings: list[Entry] = []
        each = self._spec.each
        if each is None:
            records.append(self._record(doc, doc, "", document, errors, warnings))
            return records, errors, warnings
        try:
            found = each.compiled.search(doc)
        except Exception as e:
            errors.append(
                {
                    "path": "$.each",
                    "code": "each_failed",
                    "message": f"{each.text!r}: {e}",
                    "document": document,
                }
            )
            return records, errors, warnings
        if found is None or found == []:
            warnings.append(
                {
                    "path": "$.each",
                    "code": "each_empty",
                    "message": f"{each.text!r} matched nothing; no records",
                    "document": document,
                }
            )
            return records, errors, warnings
        # XML turns a lone repeated element into an object, not a one-item list: treat it as one element
        elements = found if isinstance(found, list) else [found]
        roots: dict[str, Any] = {}
        for i, element in enumerate(elements):
            records.append(self._record(element, doc, f"element {i}: ", document, errors, warnings, roots))
        return records, errors, warnings

    def record_for(self, element: Any, doc: Any, document: int, prefix: str = ""
                   ) -> tuple[dict[str, Any], list[Entry], list[Entry]]:
        """One record from one element, ``$.`` expressions reading ``doc``: for callers that choose the
        elements themselves (the order and line outputs)."""
        errors: list[Entry] = []
        warnings: list[Entry] = []
        return self._record(element, doc, prefix, document, errors, warnings), errors, warnings

    def _record(
        self, element: Any, doc: Any, prefix: str, document: int, errors: list[Entry], warnings: list[Entry],
        roots: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``roots`` keeps each ``$.`` expression's result for the document, so it is evaluated once,
        not once per element (n elements times a search over the whole document was quadratic)."""
        out: dict[str, Any] = {}
        for name, spec in self._spec.fields.items():
            if spec.expr is None:
                value = copy.deepcopy(spec.constant)
                produced = True
            else:
                try:
                    if spec.expr.root and roots is not None:
                        if name not in roots:
                            try:
                                roots[name] = spec.expr.search(element, doc)
                            except Exception as e:
                                roots[name] = _Failed(e)
                        value = roots[name]
                        if isinstance(value, _Failed):
                            raise value.error
                    else:
                        value = spec.expr.search(element, doc)
                except Exception as e:
                    errors.append(_entry(name, "expr_failed", f"{prefix}{spec.expr.text!r}: {e}", document))
                    continue
                produced = value is not None
            try:
                for conv in spec.convert:
                    value = conv(value)
            except ConvertError as e:
                errors.append(_entry(name, "convert_failed", f"{prefix}{conv.name}: {e}", document))
                continue
            except Exception as e:  # a converter bug must not lose the rest of the record
                errors.append(
                    _entry(name, "convert_failed", f"{prefix}{conv.name}: {type(e).__name__}: {e}", document)
                )
                continue
            if value is None:
                value = copy.deepcopy(spec.default)
            if value is None:
                if not produced and spec.expr is not None:
                    warnings.append(
                        _entry(
                            name,
                            "missing",
                            f"{prefix}{spec.expr.text!r} matched nothing; field omitted",
                            document,
                        )
                    )
                continue
            out[name] = value
        return out


def parse(docs: list[Any], mapping: Mapping) -> ParseResult:
    """Apply a single-target ``mapping`` to every document; ``record`` targets are wrapped with the mapping
    version for replay."""
    result = ParseResult()
    for document, doc in enumerate(docs):
        try:
            records, errors, warnings = mapping.apply(doc, document)
        except Exception as e:  # the batch must survive one bad document
            result.errors.append(
                {
                    "path": "$",
                    "code": "parse_failed",
                    "message": f"{type(e).__name__}: {e}",
                    "document": document,
                }
            )
            continue
        if mapping.target == "record":
            result.records.extend({"fields": r, "mapping_version": mapping.version} for r in records)
        else:
            result.records.extend(records)
        result.errors.extend(errors)
        result.warnings.extend(warnings)
    return result
