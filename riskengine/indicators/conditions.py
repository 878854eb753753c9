"""Declarative indicator conditions: parsed from plain data, validated, evaluated column-wise.

A condition is a mapping, nestable to any depth (up to :data:`MAX_DEPTH`)::

    all:                                  # every child holds
      - {field: origin_country, in: [CO, EC, PE]}
      - any:                              # at least one child holds
          - {field: hs4, in: ["0803", "0804"]}
          - not: {field: is_reefer, eq: true}
      - {field: weight_discrepancy_ratio, between: [0.05, 0.5]}

A comparison names one ``field`` (see :data:`riskengine.indicators.fields.FIELDS`) and exactly one
operator: ``eq``, ``ne``, ``in``, ``not_in``, ``gt``, ``gte``, ``lt``, ``lte``, ``between``
(inclusive ``[low, high]``), ``prefix`` (a string or a list of strings), ``regex`` (Python
syntax, searched anywhere in the text; use ``(?i)`` for case-insensitive), ``is_null`` and
``not_null`` (``true``/``false``). Text values are compared exactly as normalised by
:func:`riskengine.schema.validate` (codes upper-case). Dates are ISO 8601 (naive = UTC).

Missing values: a missing value satisfies no comparison, ``ne`` and ``not_in`` included; only
``is_null`` matches it (blank text counts as missing). ``not`` is the plain complement of its
child, so ``not: {field: x, eq: a}`` holds on a missing ``x`` while ``{field: x, ne: a}`` does not.

Nothing is ever passed to ``eval``/``exec``: a condition is data, checked once when parsed.
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
import pandas as pd

from riskengine.derived import DERIVED_FIELDS, compute_derived_fields
from riskengine.indicators.fields import FIELDS, OPERATORS_BY_KIND

log = logging.getLogger(__name__)

__all__ = [
    "COMBINATORS",
    "MAX_DEPTH",
    "OPERATORS",
    "AllOf",
    "AnyOf",
    "Comparison",
    "Condition",
    "ConditionError",
    "FieldFrame",
    "Not",
    "evaluate_condition",
    "frame_for",
    "parse_condition",
    "parse_instant",
]

OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between", "prefix",
             "regex", "is_null", "not_null")
COMBINATORS = ("all", "any", "not")
MAX_DEPTH = 32
MAX_REGEX_CHARS = 1000
_KIND_WORDS = {"str": "text", "num": "number", "bool": "flag", "datetime": "date/time"}


class ConditionError(ValueError):
    """A condition that cannot be parsed; ``where`` is its path, e.g. ``condition.all[1]``."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(f"{message} (at {where})")
        self.reason = message
        self.where = where


# --------------------------------------------------------------------------------------------
# Operand helpers
# --------------------------------------------------------------------------------------------

def parse_instant(value: Any, what: str = "value") -> tuple[pd.Timestamp, bool]:
    """Parse a date or date-time (ISO 8601 string, ``datetime.date``/``datetime``) to a naive-UTC
    Timestamp. Returns ``(timestamp, date_only)``; ``date_only`` is True for a plain date.

    >>> parse_instant("2024-03-01")
    (Timestamp('2024-03-01 00:00:00'), True)
    """
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        raise ValueError(
            f"{what} must be a date or date-time such as 2024-03-01 or 2024-03-01T12:00:00Z, "
            f"got {type(value).__name__} {value!r}"
        )
    date_only = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    if isinstance(value, str):
        text = value.strip()
        date_only = re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) is not None
    else:
        text = value
    try:
        ts = pd.Timestamp(text)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{what} {value!r} is not a date or date-time; use ISO 8601, e.g. 2024-03-01 "
            "or 2024-03-01T12:00:00Z"
        ) from exc
    if ts is pd.NaT:
        raise ValueError(f"{what} is empty; use ISO 8601, e.g. 2024-03-01")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.as_unit("ns"), date_only


def _type_name(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _scalar(kind: str, value: Any, what: str) -> Any:
    """Check one operand against the field kind; return its normalised form."""
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            hint = " YAML reads unquoted NO, YES, ON, OFF as booleans: quote codes (e.g. \"NO\")."
        elif isinstance(value, (int, float)):
            hint = " Quote codes in YAML (e.g. '0803') so that leading zeros survive."
        else:
            hint = ""
        raise ValueError(f"{what} must be a string, got {_type_name(value)} {value!r}.{hint}")
    if kind == "num":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{what} must be a number, got {_type_name(value)} {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{what} must be a finite number, got {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{what} must be true or false, got {_type_name(value)} {value!r}")
        return value
    ts, _ = parse_instant(value, what)
    return ts


def _dump_scalar(value: Any) -> Any:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# --------------------------------------------------------------------------------------------
# Field values, prepared once per frame
# --------------------------------------------------------------------------------------------

class FieldFrame:
    """Column access for evaluation: each field is coerced to its kind once and cached.

    ``df`` holds the manifests; ``extra`` optional derived columns computed separately (looked up
    first). A field absent from both is treated as all-missing (and logged once).
    """

    def __init__(self, df: pd.DataFrame, extra: pd.DataFrame | None = None) -> None:
        self.df = df
        self.extra = extra
        self._cache: dict[str, tuple[Any, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.df)

    def _column(self, name: str) -> pd.Series | None:
        if self.extra is not None and name in self.extra.columns:
            return self.extra[name]
        if name in self.df.columns:
            return self.df[name]
        return None

    def values(self, name: str) -> tuple[Any, np.ndarray]:
        """(values, missing mask) for a field; values are a str Series, float64, bool or
        datetime64[ns] array by kind."""
        if name in self._cache:
            return self._cache[name]
        kind = FIELDS[name].kind
        col = self._column(name)
        n = len(self.df)
        if col is None:
            log.warning("field %r is not in the data; conditions on it see missing values", name)
            col = pd.Series(np.nan, index=self.df.index, dtype=object)
        if kind == "str":
            if isinstance(col.dtype, pd.CategoricalDtype):
                col = col.astype(object)
            # pandas < 3 turns None/NaN into the strings "None"/"nan" here: keep them missing.
            text = col.astype("str").where(col.notna().to_numpy())
            missing = (text.isna() | (text.str.strip() == "")).to_numpy(dtype=bool)
            prepared: tuple[Any, np.ndarray] = (text, missing)
        elif kind == "num":
            if not pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
                col = pd.to_numeric(col.astype(object), errors="coerce")
            arr = col.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
            prepared = (arr, np.isnan(arr))
        elif kind == "bool":
            missing = col.isna().to_numpy(dtype=bool)
            if pd.api.types.is_bool_dtype(col.dtype):
                arr = col.to_numpy(dtype=bool, na_value=False)
            else:
                present = col[~missing]
                ok = present.isin([True, False, 0, 1]).to_numpy(dtype=bool)
                if not ok.all():
                    raise ValueError(
                        f"field {name!r} must hold true/false values, got e.g. "
                        f"{present[~ok].head(3).tolist()}; fix the column or drop it so that it "
                        "is recomputed"
                    )
                arr = np.zeros(n, dtype=bool)
                arr[~missing] = present.astype(bool).to_numpy(dtype=bool)
            prepared = (arr, missing)
        else:
            if isinstance(col.dtype, pd.DatetimeTZDtype):
                col = col.dt.tz_convert("UTC").dt.tz_localize(None)
            elif not pd.api.types.is_datetime64_dtype(col.dtype):
                col = pd.to_datetime(col.astype(object), errors="coerce", utc=True,
                                     format="ISO8601").dt.tz_localize(None)
            arr = col.to_numpy(dtype="datetime64[ns]")
            prepared = (arr, np.isnat(arr))
        self._cache[name] = prepared
        return prepared


# --------------------------------------------------------------------------------------------
# Condition nodes
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """``{field: NAME, OP: operand}``; ``operand`` is normalised (floats, Timestamps, tuples)."""

    field: str
    op: str
    operand: Any
    _regex: re.Pattern | None = dc_field(default=None, compare=False, repr=False)

    def fields(self) -> set[str]:
        return {self.field}

    def to_dict(self) -> dict:
        value = self.operand
        if isinstance(value, tuple):
            value = [_dump_scalar(v) for v in value]
        else:
            value = _dump_scalar(value)
        return {"field": self.field, self.op: value}

    def evaluate(self, frame: FieldFrame) -> np.ndarray:
        values, missing = frame.values(self.field)
        op, v = self.op, self.operand
        if op == "is_null":
            return missing.copy() if v else ~missing
        if op == "not_null":
            return ~missing if v else missing.copy()
        kind = FIELDS[self.field].kind
        if kind == "str":
            return self._evaluate_text(values, missing)
        if kind == "datetime" and op in ("eq", "ne", "gt", "gte", "lt", "lte"):
            v = np.datetime64(v.as_unit("ns").to_datetime64())
        elif kind == "datetime" and op == "between":
            v = tuple(np.datetime64(x.as_unit("ns").to_datetime64()) for x in v)
        with np.errstate(invalid="ignore"):
            if op == "eq":
                out = values == v
            elif op == "ne":
                out = values != v
            elif op == "in":
                out = np.isin(values, np.asarray(v))
            elif op == "not_in":
                out = ~np.isin(values, np.asarray(v))
            elif op == "gt":
                out = values > v
            elif op == "gte":
                out = values >= v
            elif op == "lt":
                out = values < v
            elif op == "lte":
                out = values <= v
            else:  # between
                out = (values >= v[0]) & (values <= v[1])
        return np.asarray(out, dtype=bool) & ~missing

    def _evaluate_text(self, text: pd.Series, missing: np.ndarray) -> np.ndarray:
        op, v = self.op, self.operand
        if op == "eq":
            out = (text == v).to_numpy(dtype=bool)
        elif op == "ne":
            out = (text != v).to_numpy(dtype=bool)
        elif op == "in":
            out = text.isin(list(v)).to_numpy(dtype=bool)
        elif op == "not_in":
            out = ~text.isin(list(v)).to_numpy(dtype=bool)
        elif op == "prefix":
            out = text.str.startswith(tuple(v)).fillna(False).to_numpy(dtype=bool)
        else:  # regex: Python semantics on the distinct values, mapped back to rows
            codes, uniques = pd.factorize(text)
            with warnings.catch_warnings():  # groups in a pattern are fine for a yes/no search
                warnings.filterwarnings("ignore", "This pattern is interpreted", UserWarning)
                found = pd.Series(uniques.to_numpy(dtype=object), dtype=object).str.contains(
                    self._regex, regex=True, na=False).to_numpy(dtype=bool)
            out = np.zeros(len(text), dtype=bool)
            known = codes >= 0
            out[known] = found[codes[known]]
        return out & ~missing


@dataclass(frozen=True)
class AllOf:
    """Holds where every child holds."""

    children: tuple[Condition, ...]

    def fields(self) -> set[str]:
        return set().union(*(c.fields() for c in self.children))

    def to_dict(self) -> dict:
        return {"all": [c.to_dict() for c in self.children]}

    def evaluate(self, frame: FieldFrame) -> np.ndarray:
        out = np.ones(len(frame), dtype=bool)
        for child in self.children:
            out &= child.evaluate(frame)
        return out


@dataclass(frozen=True)
class AnyOf:
    """Holds where at least one child holds."""

    children: tuple[Condition, ...]

    def fields(self) -> set[str]:
        return set().union(*(c.fields() for c in self.children))

    def to_dict(self) -> dict:
        return {"any": [c.to_dict() for c in self.children]}

    def evaluate(self, frame: FieldFrame) -> np.ndarray:
        out = np.zeros(len(frame), dtype=bool)
        for child in self.children:
            out |= child.evaluate(frame)
        return out


@dataclass(frozen=True)
class Not:
    """The complement of its child."""

    child: Condition

    def fields(self) -> set[str]:
        return self.child.fields()

    def to_dict(self) -> dict:
        return {"not": self.child.to_dict()}

    def evaluate(self, frame: FieldFrame) -> np.ndarray:
        return ~self.child.evaluate(frame)


Condition = Comparison | AllOf | AnyOf | Not


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

def _unknown(name: str, valid: Sequence[str], what: str) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}.{hint} Valid {what}s: {', '.join(valid)}"


def _parse_operand(name: str, kind: str, op: str, value: Any) -> tuple[Any, re.Pattern | None]:
    what = f"operand of {op!r} on {_KIND_WORDS[kind]} field {name!r}"
    if op in ("is_null", "not_null"):
        if not isinstance(value, bool):
            raise ValueError(f"{what} must be true or false, got {_type_name(value)} {value!r}")
        return value, None
    if op in ("eq", "ne", "gt", "gte", "lt", "lte"):
        if isinstance(value, (list, tuple, Mapping)):
            raise ValueError(f"{what} must be a single value, got a {_type_name(value)}; "
                             "use 'in'/'not_in' for a list")
        return _scalar(kind, value, what), None
    if op in ("in", "not_in"):
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{what} must be a non-empty list, got {_type_name(value)} {value!r}")
        return tuple(_scalar(kind, v, f"{what}, item {i}") for i, v in enumerate(value)), None
    if op == "between":
        if not isinstance(value, (list, tuple)) or len(value) != 2:
            raise ValueError(f"{what} must be a list of two values [low, high], got "
                             f"{_type_name(value)} {value!r}")
        low, high = (_scalar(kind, v, f"{what}, {end}") for v, end in zip(value, ("low", "high"), strict=True))
        if low > high:
            raise ValueError(f"{what}: low {value[0]!r} is greater than high {value[1]!r}")
        return (low, high), None
    if op == "prefix":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not items:
            raise ValueError(f"{what} must be a string or a non-empty list of strings, got "
                             f"{_type_name(value)} {value!r}")
        out = tuple(_scalar(kind, v, f"{what}, item {i}") for i, v in enumerate(items))
        if any(v == "" for v in out):
            raise ValueError(f"{what} contains an empty prefix, which would match everything")
        return out, None
    # regex
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {_type_name(value)} {value!r}")
    if len(value) > MAX_REGEX_CHARS:
        raise ValueError(f"{what} is {len(value)} characters long; the limit is {MAX_REGEX_CHARS}")
    try:
        return value, re.compile(value)
    except (re.error, OverflowError, RecursionError) as exc:
        # OverflowError: a repeat count above 2**32 - 1; RecursionError: groups nested too deep.
        raise ValueError(f"{what} {value!r} is not a valid regular expression: {exc}") from exc


def _parse(node: Any, where: str, depth: int) -> Condition:
    if depth > MAX_DEPTH:
        raise ConditionError(f"conditions are nested deeper than {MAX_DEPTH} levels", where)
    if not isinstance(node, Mapping):
        raise ConditionError(
            "expected a mapping: {field: NAME, OPERATOR: value} or one of "
            f"{{all: [...]}}, {{any: [...]}}, {{not: {{...}}}}; got {_type_name(node)} {node!r}",
            where)
    keys = [str(k) for k in node]
    combinators = [k for k in keys if k in COMBINATORS]
    if combinators:
        if len(keys) != 1:
            raise ConditionError(
                f"{combinators[0]!r} must be the only key of its mapping, got keys {keys}; "
                "put sibling conditions inside an 'all' list", where)
        key = combinators[0]
        body = node[key]
        if key == "not":
            return Not(_parse(body, f"{where}.not", depth + 1))
        if not isinstance(body, (list, tuple)) or not body:
            raise ConditionError(
                f"{key!r} takes a non-empty list of conditions, got {_type_name(body)} {body!r}",
                where)
        children = tuple(_parse(c, f"{where}.{key}[{i}]", depth + 1) for i, c in enumerate(body))
        return AllOf(children) if key == "all" else AnyOf(children)
    if "field" not in node:
        raise ConditionError(
            f"a condition needs 'field' and one operator, or one of {list(COMBINATORS)}; "
            f"got keys {keys}", where)
    name = node["field"]
    if not isinstance(name, str):
        raise ConditionError(f"'field' must be a field name, got {_type_name(name)} {name!r}",
                             where)
    if name not in FIELDS:
        raise ConditionError(_unknown(name, sorted(FIELDS), "field"), where)
    ops = [k for k in keys if k != "field"]
    if len(ops) != 1:
        raise ConditionError(
            f"a comparison on {name!r} needs exactly one operator, got {ops or 'none'}; "
            f"valid operators: {', '.join(OPERATORS)}", where)
    op = ops[0]
    if op not in OPERATORS:
        raise ConditionError(_unknown(op, list(OPERATORS), "operator"), where)
    kind = FIELDS[name].kind
    allowed = OPERATORS_BY_KIND[kind]
    if op not in allowed:
        raise ConditionError(
            f"operator {op!r} does not apply to {_KIND_WORDS[kind]} field {name!r}; "
            f"{_KIND_WORDS[kind]} fields take: {', '.join(allowed)}", where)
    try:
        operand, regex = _parse_operand(name, kind, op, node[op])
    except ValueError as exc:
        raise ConditionError(str(exc), where) from exc
    return Comparison(name, op, operand, regex)


def parse_condition(node: Any, *, where: str = "condition") -> Condition:
    """Parse and validate a condition from plain data (as loaded from YAML or JSON).

    Raises :class:`ConditionError` (a ``ValueError``) naming the place of the first problem,
    e.g. an unknown field or operator (listing the valid ones) or an operand of the wrong type.

    >>> parse_condition({"field": "hs4", "in": ["0803", "0804"]}).to_dict()
    {'field': 'hs4', 'in': ['0803', '0804']}
    """
    return _parse(node, where, 0)


def evaluate_condition(
    condition: Condition | Mapping,
    df: pd.DataFrame,
    *,
    first_seen: Mapping[str, pd.Timestamp] | None = None,
) -> pd.Series:
    """Evaluate one condition on every row of ``df``; a bool Series aligned with ``df``.

    Derived fields the condition needs and ``df`` lacks are computed (see
    :func:`riskengine.derived.add_derived_fields`; ``first_seen`` is passed on).
    """
    cond = parse_condition(condition) if isinstance(condition, Mapping) else condition
    frame = frame_for(df, cond.fields(), first_seen=first_seen)
    return pd.Series(cond.evaluate(frame), index=df.index, dtype=bool)


def frame_for(
    df: pd.DataFrame,
    fields: set[str],
    *,
    first_seen: Mapping[str, pd.Timestamp] | None = None,
) -> FieldFrame:
    """A :class:`FieldFrame` over ``df`` with the derived ``fields`` it lacks computed."""
    todo = sorted(f for f in fields if f in DERIVED_FIELDS and f not in df.columns)
    extra = compute_derived_fields(df, first_seen=first_seen, fields=todo) if todo else None
    return FieldFrame(df, extra)
