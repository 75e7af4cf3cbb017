"""Mappings with several outputs: one request becomes a contact, orders with their lines, and free records.

A mapping written with ``outputs`` instead of ``target``/``fields`` (see ``docs/orders.md``)::

    version: 1
    outputs:
      contact: {fields: {Email: {expr: "billing.email"}, SourceName: {constant: "Shop"}}}
      order:
        fields: {id: {expr: "id"}, currency: {expr: "currency"}, total: {expr: "total"}}
        lines: {each: "line_items", fields: {sku: {expr: "sku"}, quantity: {expr: "quantity"}}}
      record: {fields: {note: {expr: "customer_note"}}}

Each output reuses the field machinery of :mod:`hookbay.parsers.mapping`; problems carry the path
``$.outputs.<name>.…`` so a receipt says which output they belong to.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator

from hookbay import orders
from hookbay.parsers import contact
from hookbay.parsers import mapping as _m
from hookbay.parsers.generic import ParseResult

OUTPUT_NAMES = ("contact", "order", "record")


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    each: Annotated[_m.Expr | None, PlainValidator(_m._parse_optional_expr)] = None
    fields: Annotated[dict[str, _m.FieldSpec], Field(min_length=1)]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.each is not None:
            out["each"] = self.each.text
        out["fields"] = {name: f.to_dict() for name, f in self.fields.items()}
        return out


class LinesSpec(OutputSpec):
    @model_validator(mode="after")
    def _known(self) -> LinesSpec:
        _only(self.fields, orders.LINE_FIELDS, "a line")
        return self


class OrderSpec(OutputSpec):
    lines: LinesSpec | None = None
    amounts: Literal["major", "minor"] = "major"

    @model_validator(mode="after")
    def _known(self) -> OrderSpec:
        _only(self.fields, orders.ORDER_FIELDS, "an order")
        missing = [f for f in orders.ORDER_REQUIRED if f not in self.fields]
        if missing:
            raise ValueError(f"an order needs the fields {', '.join(missing)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.lines is not None:
            out["lines"] = self.lines.to_dict()
        if self.amounts != "major":
            out["amounts"] = self.amounts
        return out


def _only(fields: dict[str, Any], allowed: tuple[str, ...], what: str) -> None:
    extra = [f for f in fields if f not in allowed]
    if extra:
        raise ValueError(f"unknown field {extra[0]!r} of {what}; allowed: {', '.join(allowed)}")


class Outputs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    contact: OutputSpec | None = None
    order: OrderSpec | None = None
    record: OutputSpec | None = None

    @model_validator(mode="after")
    def _some(self) -> Outputs:
        if self.contact is None and self.order is None and self.record is None:
            raise ValueError(f"outputs needs at least one of {', '.join(OUTPUT_NAMES)}")
        return self


class OutputsSpec(BaseModel):
    """The validated multi-output mapping document."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(strict=True, ge=1)]
    outputs: Outputs

    def to_dict(self) -> dict[str, Any]:
        outs = {name: spec.to_dict() for name in OUTPUT_NAMES
                if (spec := getattr(self.outputs, name)) is not None}
        return {"version": self.version, "outputs": outs}

    def field_names(self) -> list[str]:
        return [f"{name}.{f}" for name in OUTPUT_NAMES
                if (spec := getattr(self.outputs, name)) is not None for f in spec.fields]


class OutputsMapping(_m.Mapping):
    """A compiled mapping with several outputs. It is a ``Mapping`` (version, digest, equality, ``to_dict``,
    ``field_names``, ``apply``) so a source holds either kind; its own spec is an empty ``record`` one."""

    __slots__ = ("_outputs",)

    def __init__(self, spec: OutputsSpec) -> None:
        super().__init__(_m.MappingSpec.model_construct(version=spec.version, target="record", each=None,
                                                        fields={}))
        self._outputs = spec

    @classmethod
    def from_dict(cls, data: Any) -> OutputsMapping:
        return cls(_m.validate(OutputsSpec, data))

    @property
    def target(self) -> str:
        return "outputs"

    @property
    def outputs(self) -> OutputsSpec:
        return self._outputs

    @property
    def field_names(self) -> list[str]:
        return self._outputs.field_names()

    def to_dict(self) -> dict[str, Any]:
        return self._outputs.to_dict()

    def apply(self, doc: Any, document: int = 0) -> tuple[list[dict[str, Any]], list[_m.Entry], list[_m.Entry]]:
        res = parse([doc], self._outputs)
        for e in (*res.errors, *res.warnings):
            e["document"] = document
        return res.records, res.errors, res.warnings


def _sub(version: int, target: str, each: _m.Expr | None, fields: dict[str, _m.FieldSpec]) -> _m.Mapping:
    return _m.Mapping(_m.MappingSpec.model_construct(version=version, target=target, each=each, fields=fields))


def _under(entries: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    for e in entries:
        e["path"] = prefix + e["path"].removeprefix("$")
    return entries


def parse(docs: list[Any], spec: OutputsSpec, default_region: str | None = None) -> ParseResult:
    """Every output of every document. Contacts go through the contact parser; an order's record is
    ``{"order": {...}, "contact_idx": i}``, ``i`` pointing at the contact made from the same document
    (its profile becomes the buyer's)."""
    result = ParseResult()
    outs = spec.outputs
    for document, doc in enumerate(docs):
        contact_idx: int | None = None
        if outs.contact is not None:
            m = _sub(spec.version, "contact", outs.contact.each, outs.contact.fields)
            recs, errs, warns = _safe_apply(m, doc, document)
            parsed = contact.parse(recs, default_region=default_region)
            result.errors.extend(_under(errs, "$.outputs.contact"))
            result.warnings.extend(_under(warns, "$.outputs.contact"))
            for e in parsed.errors:
                e["document"] = document
            result.errors.extend(_under(parsed.errors, "$.outputs.contact"))
            result.warnings.extend(_under(parsed.warnings, "$.outputs.contact"))
            if parsed.records:
                contact_idx = len(result.records)
            result.records.extend(parsed.records)
        if outs.order is not None:
            for rec in _orders(spec.version, outs.order, doc, document, result):
                if contact_idx is not None:
                    rec["contact_idx"] = contact_idx
                result.records.append(rec)
        if outs.record is not None:
            m = _sub(spec.version, "record", outs.record.each, outs.record.fields)
            recs, errs, warns = _safe_apply(m, doc, document)
            result.records.extend({"fields": r, "mapping_version": spec.version} for r in recs)
            result.errors.extend(_under(errs, "$.outputs.record"))
            result.warnings.extend(_under(warns, "$.outputs.record"))
    return result


def _safe_apply(m: _m.Mapping, doc: Any, document: int) -> tuple[list[dict[str, Any]], list[_m.Entry], list[_m.Entry]]:
    try:
        return m.apply(doc, document)
    except Exception as e:  # the batch must survive one bad document
        return [], [{"path": "$", "code": "parse_failed", "message": f"{type(e).__name__}: {e}",
                     "document": document}], []


def _elements(each: _m.Expr | None, doc: Any, path: str, document: int, result: ParseResult,
              what: str) -> list[Any]:
    if each is None:
        return [doc]
    try:
        found = each.compiled.search(doc)
    except Exception as e:
        result.errors.append({"path": f"{path}.each", "code": "each_failed", "message": f"{each.text!r}: {e}",
                              "document": document})
        return []
    if found is None or found == []:
        result.warnings.append({"path": f"{path}.each", "code": "each_empty",
                                "message": f"{each.text!r} matched nothing; no {what}", "document": document})
        return []
    return found if isinstance(found, list) else [found]


def _orders(version: int, spec: OrderSpec, doc: Any, document: int, result: ParseResult) -> list[dict[str, Any]]:
    """Orders of one document: ``each`` picks the order elements (the document itself without it),
    the lines' ``each`` is evaluated on the order element; ``$.`` always reads the whole document."""
    prefix = "$.outputs.order"
    order_m = _sub(version, "record", None, spec.fields)
    lines_m = _sub(version, "record", None, spec.lines.fields) if spec.lines is not None else None
    out = []
    for i, element in enumerate(_elements(spec.each, doc, prefix, document, result, "orders")):
        where = f"order {i}: " if spec.each is not None else ""
        fields, errs, warns = order_m.record_for(element, doc, document, where)
        result.errors.extend(_under(errs, prefix))
        result.warnings.extend(_under(warns, prefix))
        lines: list[dict[str, Any]] = []
        if lines_m is not None and spec.lines is not None:
            for j, line_el in enumerate(_elements(spec.lines.each, element, f"{prefix}.lines", document, result,
                                                  "lines")):
                line, errs, warns = lines_m.record_for(line_el, doc, document, f"{where}line {j}: ")
                result.errors.extend(_under(errs, f"{prefix}.lines"))
                result.warnings.extend(_under(warns, f"{prefix}.lines"))
                lines.append(line)
        order, problems = orders.normalize(fields, lines, minor=spec.amounts == "minor")
        for field, message in problems:
            path = f"{prefix}.lines.fields.{field.split('.', 1)[1]}" if field.startswith("lines[") \
                else f"{prefix}.fields.{field}"
            result.errors.append({"path": path, "code": "invalid_order_value",
                                  "message": f"{where}{field}: {message}", "document": document})
        if order:
            out.append({"order": order})
    return out
