"""The fields an indicator condition may test: manifest schema columns plus derived fields.

Ground-truth and history columns (``is_illicit``, ``modus_operandi``, ...) are deliberately not
fields: an indicator must be computable on a manifest before arrival.
"""

from __future__ import annotations

from dataclasses import dataclass

from riskengine.derived import DERIVED_FIELD_KINDS, DERIVED_FIELDS
from riskengine.schema import COLUMNS

__all__ = ["FIELDS", "FieldSpec", "KINDS", "OPERATORS_BY_KIND"]

KINDS = ("str", "num", "bool", "datetime")
"""Field kinds: text, number, flag, date/time (naive UTC)."""

_SCHEMA_KIND = {"str": "str", "int": "num", "float": "num", "datetime": "datetime",
                "date": "datetime", "flag": "bool"}

OPERATORS_BY_KIND: dict[str, tuple[str, ...]] = {
    "str": ("eq", "ne", "in", "not_in", "prefix", "regex", "is_null", "not_null"),
    "num": ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "is_null",
            "not_null"),
    "bool": ("eq", "ne", "is_null", "not_null"),
    "datetime": ("eq", "ne", "gt", "gte", "lt", "lte", "between", "is_null", "not_null"),
}
"""Which comparison operators apply to which kind of field."""


@dataclass(frozen=True)
class FieldSpec:
    """A field conditions can test: its name, kind, whether it is derived, and a description."""

    name: str
    kind: str
    derived: bool
    description: str

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "derived": self.derived,
                "description": self.description}


def _catalogue() -> dict[str, FieldSpec]:
    fields = {c.name: FieldSpec(c.name, _SCHEMA_KIND[c.kind], False, c.description)
              for c in COLUMNS}
    for name, kind in DERIVED_FIELD_KINDS.items():
        fields[name] = FieldSpec(name, kind, True, DERIVED_FIELDS[name])
    return fields


FIELDS: dict[str, FieldSpec] = _catalogue()
"""Every field a condition may name: schema columns and :data:`riskengine.derived.DERIVED_FIELDS`."""
