"""Reading any mapping document: a single-target mapping or one with several outputs.

The choice sits above both kinds so :mod:`hookbay.parsers.mapping` never needs
:mod:`hookbay.parsers.outputs`, which builds on its field machinery.
"""

from __future__ import annotations

from typing import Any

from hookbay.parsers import mapping, outputs
from hookbay.parsers.generic import ParseResult
from hookbay.parsers.mapping import Mapping


def from_dict(data: Any) -> Mapping:
    """An ``OutputsMapping`` for a document with ``outputs``, a single-target ``Mapping`` otherwise."""
    if isinstance(data, dict) and "outputs" in data:
        return outputs.OutputsMapping.from_dict(data)
    return Mapping.from_dict(data)


def parse_text(text: str) -> Mapping:
    """YAML or JSON text (JSON is tried first when the text starts with ``{``)."""
    return from_dict(mapping.load_text(text))


def parse(docs: list[Any], m: Mapping, default_region: str | None = None) -> ParseResult:
    """Every document through ``m``; ``default_region`` is for the contacts of a mapping with outputs
    (a single-target contact mapping's records go through the contact parser afterwards)."""
    if isinstance(m, outputs.OutputsMapping):
        return outputs.parse(docs, m.outputs, default_region=default_region)
    return mapping.parse(docs, m)
