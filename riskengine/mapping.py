"""Schema mappings: how a declaration table becomes training and scoring input.

The engine trains and scores on the native manifest schema (:mod:`riskengine.schema`) and on any
foreign declaration table described by a small YAML mapping: which column is the id, the date, the
label (with an optional rule), which columns are categorical or numeric, which entities get risk
profiles (including combinations such as importer × HS6), and a few declarative derived columns.

Example mapping (``datasets/kcs/mapping.yaml`` is a complete one)::

    name: kcs
    id: Declaration ID
    date: Date
    label: {column: Fraud, positive: [1]}
    categorical: [Office ID, Country of Origin]
    numeric: [Tax Rate, Net Mass, Item Price]
    derived:
      - {name: HS4, op: prefix, column: HS6 Code, chars: 4}
      - {name: unit_value, op: ratio, numerator: Item Price, denominator: Net Mass}
    entities:
      - Importer ID
      - {name: importer_x_hs6, columns: [Importer ID, HS6 Code], label: importer×HS6}
    relative:
      - {name: unit_value_vs_hs6, value: unit_value, group: HS6 Code, label: value per kg}

:meth:`Mapping.prepare` turns a raw table into the typed frame the feature builder reads, plus
the rejected rows with a reason each (never dropped silently).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

log = logging.getLogger(__name__)

# Internal columns added by :meth:`Mapping.prepare`.
ROW = "source_row"
DAY = "__day__"
LABEL = "__label__"
OUTCOME_DAY = "__outcome_day__"
MALFORMED = "_malformed"

_EPOCH = np.datetime64("1970-01-01", "D")
DERIVED_OPS = ("prefix", "ratio", "differs", "weekday")
_MAPPING_KEYS = {
    "name", "description", "kind", "id", "date", "date_format", "label", "labelled",
    "outcome_date", "value", "categorical", "numeric", "derived", "entities", "relative",
    "calibration_filter", "model",
}


def slug(text: str) -> str:
    """A feature-name-safe version of a column name: ``"Office ID"`` → ``"office_id"``."""
    s = re.sub(r"[^0-9a-zA-Z]+", "_", str(text)).strip("_").lower()
    return s or "col"


def days_since_epoch(dates: pd.Series) -> np.ndarray:
    """Whole days since 1970-01-01 (float, NaN for NaT) of a datetime series."""
    d = pd.to_datetime(dates).to_numpy(dtype="datetime64[D]")
    out = (d - _EPOCH).astype("float64")
    out[np.isnat(d)] = np.nan
    return out


@dataclass(frozen=True)
class Entity:
    """A party, code or combination whose history becomes a risk profile."""

    name: str
    columns: tuple[str, ...]
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "columns": list(self.columns), "label": self.label}


@dataclass(frozen=True)
class Derived:
    """A declarative derived column (no code in mappings)."""

    name: str
    op: str
    args: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "op": self.op, **self.args}


@dataclass(frozen=True)
class Relative:
    """A numeric value compared with its group's as-of typical value (log ratio and z-score)."""

    name: str
    value: str
    group: str
    label: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "group": self.group, "label": self.label}


@dataclass(frozen=True)
class LabelRule:
    """How a label column maps to 0/1: ``positive`` values, or ``value >= threshold``."""

    column: str
    positive: tuple[Any, ...] | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"column": self.column}
        if self.positive is not None:
            d["positive"] = list(self.positive)
        if self.threshold is not None:
            d["threshold"] = self.threshold
        return d

    def apply(self, s: pd.Series) -> pd.Series:
        """0/1 as float, NaN where the label is missing."""
        if self.threshold is not None:
            num = pd.to_numeric(s, errors="coerce")
            out = (num >= self.threshold).astype("float64")
            return out.where(num.notna())
        positive = self.positive if self.positive is not None else (1,)
        as_text = s.astype("string").str.strip()
        present = as_text.notna() & (as_text != "")
        pos_text = {str(v).strip() for v in positive}
        # Numeric labels may arrive as "1.0" from some writers; compare numerically too.
        num = pd.to_numeric(as_text, errors="coerce")
        pos_num = [float(v) for v in positive if _is_number(v)]
        hit = as_text.isin(pos_text).fillna(False) | num.isin(pos_num).fillna(False)
        out = hit.astype("float64")
        return out.where(present.fillna(False).to_numpy(dtype=bool))


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class CalibrationFilter:
    """Prefer these labelled rows for calibration (e.g. randomly selected inspections)."""

    column: str
    equals: Any
    min_positives: int = 20

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Mapping:
    """Which columns of a declaration table play which role.

    ``kind="native"`` means the native manifest schema: rows are validated by
    :func:`riskengine.schema.validate`, enriched by :func:`riskengine.derived.add_derived_fields`,
    and indicator packs apply. ``kind="table"`` is any other table described by the mapping.
    """

    name: str
    id: str
    date: str
    label: LabelRule
    kind: str = "table"
    description: str = ""
    date_format: str | None = None
    labelled: str | None = None
    outcome_date: str | None = None
    value: str | None = None
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    derived: tuple[Derived, ...] = ()
    entities: tuple[Entity, ...] = ()
    relative: tuple[Relative, ...] = ()
    calibration_filter: CalibrationFilter | None = None
    model: dict[str, Any] = field(default_factory=dict, compare=False)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "mapping") -> Mapping:
        """Build a mapping from its dict form; unknown or missing keys raise a clear error."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a YAML mapping (key: value), got {type(d).__name__}.")
        unknown = sorted(set(d) - _MAPPING_KEYS)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; allowed keys are {sorted(_MAPPING_KEYS)}.")
        missing = [k for k in ("id", "date", "label") if not d.get(k)]
        if missing:
            raise ValueError(f"{source}: missing required key(s) {missing}; a mapping needs id, date and label.")
        label = d["label"]
        if isinstance(label, str):
            rule = LabelRule(column=label)
        elif isinstance(label, dict) and "column" in label:
            bad = sorted(set(label) - {"column", "positive", "threshold"})
            if bad:
                raise ValueError(f"{source}: label has unknown key(s) {bad}; use column, positive or threshold.")
            if "positive" in label and "threshold" in label:
                raise ValueError(f"{source}: label takes either 'positive' or 'threshold', not both.")
            pos = label.get("positive")
            if pos is not None and not isinstance(pos, list):
                pos = [pos]
            rule = LabelRule(
                column=str(label["column"]),
                positive=tuple(pos) if pos is not None else None,
                threshold=float(label["threshold"]) if label.get("threshold") is not None else None,
            )
        else:
            raise ValueError(f"{source}: label must be a column name or {{column: ..., positive: [...]}}, got {label!r}.")

        derived = tuple(_parse_derived(x, source) for x in d.get("derived") or ())
        entities = tuple(_parse_entity(x, source) for x in d.get("entities") or ())
        names = [e.name for e in entities]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{source}: entity names must be unique, repeated: {dup}.")
        relative = tuple(_parse_relative(x, source) for x in d.get("relative") or ())
        cf = d.get("calibration_filter")
        kind = d.get("kind", "table")
        if kind not in ("table", "native"):
            raise ValueError(f"{source}: kind must be 'table' or 'native', got {kind!r}.")
        return cls(
            name=str(d.get("name") or Path(source).stem),
            id=str(d["id"]),
            date=str(d["date"]),
            label=rule,
            kind=kind,
            description=str(d.get("description") or ""),
            date_format=d.get("date_format"),
            labelled=d.get("labelled"),
            outcome_date=d.get("outcome_date"),
            value=d.get("value"),
            categorical=tuple(map(str, d.get("categorical") or ())),
            numeric=tuple(map(str, d.get("numeric") or ())),
            derived=derived,
            entities=entities,
            relative=relative,
            calibration_filter=CalibrationFilter(**cf) if cf else None,
            model=_parse_model_params(d.get("model"), source),
        )

    @classmethod
    def from_yaml(cls, path: str | Path) -> Mapping:
        """Read a mapping YAML file."""
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"mapping file not found: {p}")
        try:
            d = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"{p}: not valid YAML: {exc}") from exc
        return cls.from_dict(d, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "description": self.description,
            "id": self.id,
            "date": self.date,
            "label": self.label.to_dict(),
            "categorical": list(self.categorical),
            "numeric": list(self.numeric),
            "derived": [x.to_dict() for x in self.derived],
            "entities": [e.to_dict() for e in self.entities],
            "relative": [r.to_dict() for r in self.relative],
        }
        for key in ("date_format", "labelled", "outcome_date", "value"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.calibration_filter is not None:
            d["calibration_filter"] = self.calibration_filter.to_dict()
        if self.model:
            d["model"] = dict(self.model)
        return d

    def to_yaml(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True), encoding="utf-8")
        return p

    # ---- columns ------------------------------------------------------------------------
    @property
    def derived_names(self) -> tuple[str, ...]:
        return tuple(x.name for x in self.derived)

    def input_columns(self, *, with_label: bool = False) -> list[str]:
        """Columns a raw table must have (the label only when training)."""
        if self.kind == "native":
            from riskengine.schema import REQUIRED_COLUMNS

            cols = list(REQUIRED_COLUMNS)
            if with_label:
                cols.append(self.label.column)
            return cols
        produced = set(self.derived_names)
        wanted: list[str] = [self.id, self.date, *self.categorical, *self.numeric]
        for e in self.entities:
            wanted.extend(e.columns)
        for r in self.relative:
            wanted.extend([r.value, r.group])
        for x in self.derived:
            wanted.extend(_derived_inputs(x))
        if with_label:
            wanted.append(self.label.column)
        out: list[str] = []
        for c in wanted:
            if c not in produced and c not in out:
                out.append(c)
        return out

    def string_columns(self) -> list[str]:
        """Columns treated as codes/strings (entities, categoricals, id)."""
        cols = [self.id, *self.categorical]
        for e in self.entities:
            cols.extend(e.columns)
        for r in self.relative:
            cols.append(r.group)
        for x in self.derived:
            if x.op == "prefix":
                cols.append(x.args["column"])
            elif x.op == "differs":
                cols.extend(x.args["columns"])
        produced = set(self.derived_names) | set(self.numeric)
        return list(dict.fromkeys(c for c in cols if c not in produced))

    def check_columns(self, columns: Iterable[str], *, with_label: bool = False) -> None:
        """Raise a ValueError naming every required column the table lacks."""
        have = set(map(str, columns))
        missing = [c for c in self.input_columns(with_label=with_label) if c not in have]
        if missing:
            raise ValueError(
                f"input is missing {len(missing)} column(s) that mapping '{self.name}' needs: "
                f"missing {missing}; the table has {sorted(have)[:30]}. "
                "Add the columns or fix the mapping."
            )

    # ---- preparing rows -----------------------------------------------------------------
    def prepare(self, df: pd.DataFrame, *, training: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Validate and type a raw table; returns ``(rows, rejects)``.

        ``rows`` keeps the mapping's columns, typed, plus ``source_row``, ``__day__`` (days since
        1970), ``__label__`` (0/1, NaN when unlabelled) and ``__outcome_day__`` (the day from which
        the label is known). ``rejects`` holds each rejected row as received with ``source_row``,
        ``reject_column`` and ``reject_reason``. ``len(rows) + len(rejects) == len(df)``.
        """
        if self.kind == "native":
            return _prepare_native(self, df, training=training)
        return _prepare_table(self, df, training=training)


def _parse_model_params(x: Any, source: str) -> dict[str, Any]:
    """``model:`` holds RiskModel parameters chosen for this table (e.g. ``smoothing: 5``)."""
    if x is None:
        return {}
    if not isinstance(x, dict):
        raise ValueError(f"{source}: 'model' must map parameter names to values, got {x!r}.")
    from riskengine.model import RiskModel

    valid = set(RiskModel().get_params()) - {"mapping"}
    unknown = sorted(set(x) - valid)
    if unknown:
        raise ValueError(f"{source}: unknown model parameter(s) {unknown}; valid: {sorted(valid)}.")
    return dict(x)


def _derived_inputs(x: Derived) -> list[str]:
    if x.op == "prefix":
        return [x.args["column"]]
    if x.op == "ratio":
        return [x.args["numerator"], x.args["denominator"]]
    if x.op == "differs":
        return list(x.args["columns"])
    if x.op == "weekday":
        return [x.args["column"]]
    return []


def _parse_derived(x: Any, source: str) -> Derived:
    if not isinstance(x, dict) or "name" not in x or "op" not in x:
        raise ValueError(f"{source}: each derived entry needs name and op, got {x!r}.")
    op = x["op"]
    args = {k: v for k, v in x.items() if k not in ("name", "op")}
    need = {
        "prefix": {"column", "chars"},
        "ratio": {"numerator", "denominator"},
        "differs": {"columns"},
        "weekday": {"column"},
    }
    if op not in need:
        raise ValueError(f"{source}: derived '{x['name']}' has unknown op {op!r}; valid ops are {list(DERIVED_OPS)}.")
    missing = sorted(need[op] - set(args))
    extra = sorted(set(args) - need[op])
    if missing or extra:
        raise ValueError(
            f"{source}: derived '{x['name']}' (op {op}) needs keys {sorted(need[op])}; "
            f"missing {missing}, unexpected {extra}."
        )
    if op == "differs" and (not isinstance(args["columns"], list) or len(args["columns"]) != 2):
        raise ValueError(f"{source}: derived '{x['name']}' (differs) needs exactly two columns.")
    return Derived(name=str(x["name"]), op=op, args=args)


def _parse_entity(x: Any, source: str) -> Entity:
    if isinstance(x, str):
        return Entity(name=slug(x), columns=(x,), label=x)
    if isinstance(x, list) and x and all(isinstance(c, str) for c in x):
        return Entity(name="_x_".join(slug(c) for c in x), columns=tuple(x), label="×".join(x))
    if isinstance(x, dict) and "columns" in x:
        cols = x["columns"]
        cols = [cols] if isinstance(cols, str) else list(cols)
        name = x.get("name") or "_x_".join(slug(c) for c in cols)
        return Entity(name=slug(name), columns=tuple(map(str, cols)), label=str(x.get("label") or "×".join(cols)))
    raise ValueError(f"{source}: an entity is a column name, a list of columns or {{columns: [...]}}, got {x!r}.")


def _parse_relative(x: Any, source: str) -> Relative:
    if not isinstance(x, dict) or not {"value", "group"} <= set(x):
        raise ValueError(f"{source}: each relative entry needs value and group, got {x!r}.")
    name = x.get("name") or f"{slug(x['value'])}_vs_{slug(x['group'])}"
    return Relative(name=slug(name), value=str(x["value"]), group=str(x["group"]),
                    label=str(x.get("label") or x["value"]))


# --------------------------------------------------------------------------------------------
# Preparing a foreign table
# --------------------------------------------------------------------------------------------

def _clean_text(s: pd.Series) -> pd.Series:
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    out = s.astype("string").str.strip()
    # Numbers read as floats would print as "440890.0": codes must stay as written.
    if pd.api.types.is_float_dtype(s.dtype):
        whole = s.notna() & (s == np.floor(s))
        out = out.mask(whole, s[whole].astype("int64").astype("string"))
    return out.mask(out == "", pd.NA)


def _quote(s: pd.Series) -> pd.Series:
    return "'" + s.astype("string").fillna("").str.slice(0, 60) + "'"


class _Rejects:
    def __init__(self, n: int) -> None:
        self.column = np.full(n, None, dtype=object)
        self.reason = np.full(n, None, dtype=object)

    def add(self, mask: np.ndarray, column: str, reason: pd.Series | str) -> None:
        mask = np.asarray(mask, dtype=bool)
        new = mask & (self.reason == None)  # noqa: E711 - elementwise on an object array
        if not new.any():
            return
        self.column[new] = column
        self.reason[new] = reason if isinstance(reason, str) else np.asarray(reason, dtype=object)[new]

    @property
    def mask(self) -> np.ndarray:
        return self.reason != None  # noqa: E711


def _parse_dates(s: pd.Series, fmt: str | None) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_convert("UTC").dt.tz_localize(None)
        return s.astype("datetime64[ns]")
    text = _clean_text(s)
    if fmt:
        return pd.to_datetime(text, errors="coerce", format=fmt)
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")


def _prepare_table(m: Mapping, df: pd.DataFrame, *, training: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    m.check_columns(df.columns, with_label=training)
    raw = df.reset_index(drop=True)
    n = len(raw)
    rows = (pd.to_numeric(raw[ROW], errors="coerce").fillna(-1).astype(np.int64).to_numpy()
            if ROW in raw.columns else np.arange(1, n + 1))
    rej = _Rejects(n)
    if MALFORMED in raw.columns:
        rej.add(raw[MALFORMED].notna().to_numpy(), "(line)", raw[MALFORMED].astype("string").fillna(""))

    out = pd.DataFrame(index=raw.index)
    out[ROW] = rows
    for col in m.string_columns():
        out[col] = _clean_text(raw[col])
    ids = out[m.id]
    rej.add(ids.isna().to_numpy(), m.id, f"{m.id} is missing (required)")
    produced = set(m.derived_names)
    for col in m.numeric:
        if col in produced:
            continue
        s = raw[col]
        if not pd.api.types.is_numeric_dtype(s.dtype):
            s = _clean_text(s).str.replace(",", "", regex=False)
        num = pd.to_numeric(s, errors="coerce").astype("float64")
        bad = s.notna().to_numpy() & num.isna().to_numpy()
        rej.add(bad, col, col + " " + _quote(s) + " is not a number")
        rej.add(np.isinf(num.to_numpy()), col, f"{col} is infinite")
        out[col] = num
    for col in {r.value for r in m.relative} | {c for x in m.derived if x.op == "ratio"
                                                 for c in (x.args["numerator"], x.args["denominator"])}:
        if col in out.columns or col in m.derived_names:
            continue
        s = raw[col]
        if not pd.api.types.is_numeric_dtype(s.dtype):
            s = _clean_text(s).str.replace(",", "", regex=False)
        num = pd.to_numeric(s, errors="coerce").astype("float64")
        rej.add(s.notna().to_numpy() & num.isna().to_numpy(), col, col + " " + _quote(s) + " is not a number")
        out[col] = num

    dates = _parse_dates(raw[m.date], m.date_format)
    given = raw[m.date].notna().to_numpy()
    rej.add(given & dates.isna().to_numpy(), m.date,
            m.date + " " + _quote(raw[m.date]) + " is not a date"
            + (f" in the format {m.date_format!r}" if m.date_format else " (use ISO 8601, e.g. 2021-03-01)"))
    rej.add(~given, m.date, f"{m.date} is missing (required)")
    out[m.date] = dates
    out[DAY] = days_since_epoch(dates)

    # Labels: present only where the label column exists (training, or evaluation data).
    if m.label.column in raw.columns:
        label = m.label.apply(raw[m.label.column])
        if m.label.positive is None and m.label.threshold is None:
            num = pd.to_numeric(_clean_text(raw[m.label.column]), errors="coerce")
            bad = label.notna().to_numpy() & ~num.isin([0, 1]).to_numpy()
            rej.add(bad, m.label.column,
                    m.label.column + " " + _quote(raw[m.label.column]) +
                    " is not 0 or 1 (give the mapping a label rule: positive: [...] or threshold: ...)")
        if m.labelled and m.labelled in raw.columns:
            lab = pd.to_numeric(_clean_text(raw[m.labelled]), errors="coerce").fillna(0).to_numpy() > 0
            label = label.where(lab)
        out[LABEL] = label.to_numpy(dtype="float64")
    else:
        out[LABEL] = np.nan
    if m.outcome_date and m.outcome_date in raw.columns:
        od = days_since_epoch(_parse_dates(raw[m.outcome_date], m.date_format))
        out[OUTCOME_DAY] = np.where(np.isnan(od), out[DAY].to_numpy(), np.maximum(od, out[DAY].to_numpy()))
    else:
        out[OUTCOME_DAY] = out[DAY].to_numpy()

    _add_derived(m, out, rej)

    dup = ids.notna().to_numpy() & ids.duplicated(keep="first").to_numpy()
    rej.add(dup, m.id, "duplicate " + m.id + " " + _quote(ids))
    if training and out[LABEL].notna().sum() == 0:
        raise ValueError(
            f"no labelled rows: label column '{m.label.column}' is empty for every row "
            "(training needs rows with a known outcome)."
        )
    return _split(raw, out, rej, rows)


def _add_derived(m: Mapping, out: pd.DataFrame, rej: _Rejects) -> None:
    for x in m.derived:
        if x.op == "prefix":
            s = out[x.args["column"]] if x.args["column"] in out.columns else pd.Series(pd.NA, index=out.index, dtype="string")
            chars = int(x.args["chars"])
            pref = s.str.slice(0, chars)
            out[x.name] = pref.mask(s.str.len() < chars, pd.NA)
        elif x.op == "ratio":
            a = out[x.args["numerator"]].to_numpy(dtype="float64")
            b = out[x.args["denominator"]].to_numpy(dtype="float64")
            with np.errstate(divide="ignore", invalid="ignore"):
                r = a / b
            r[~np.isfinite(r)] = np.nan
            out[x.name] = r
        elif x.op == "differs":
            c1, c2 = x.args["columns"]
            a, b = out[c1], out[c2]
            both = (a.notna() & b.notna()).to_numpy(dtype=bool)
            diff = (a != b).fillna(False).to_numpy(dtype=bool)
            out[x.name] = np.where(both, diff.astype("float64"), np.nan)
        elif x.op == "weekday":
            col = x.args["column"]
            d = out[col] if col in out.columns else pd.Series(pd.NaT, index=out.index)
            out[x.name] = pd.to_datetime(d).dt.day_of_week.astype("float64")


def _split(raw: pd.DataFrame, out: pd.DataFrame, rej: _Rejects, rows: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    bad = rej.mask
    valid = out.loc[~bad].reset_index(drop=True)
    idx = np.flatnonzero(bad)
    rejects = raw.iloc[idx].drop(columns=[MALFORMED], errors="ignore").reset_index(drop=True)
    rejects[ROW] = rows[idx]
    rejects["reject_column"] = rej.column[idx]
    rejects["reject_reason"] = rej.reason[idx]
    if len(idx):
        log.info("prepare: %d valid row(s), %d rejected", len(valid), len(idx))
    return valid, rejects


# --------------------------------------------------------------------------------------------
# The native manifest schema
# --------------------------------------------------------------------------------------------

def _prepare_native(m: Mapping, df: pd.DataFrame, *, training: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    from riskengine.commodities import cargo_family
    from riskengine.derived import add_derived_fields
    from riskengine.schema import validate

    if training and m.label.column not in df.columns:
        raise ValueError(
            f"training data has no '{m.label.column}' column: the native schema needs the inspection "
            "outcome (1 = illicit found) for the inspected rows."
        )
    res = validate(df)
    valid = add_derived_fields(res.valid, fields=NATIVE_DERIVED_FIELDS)
    valid["cargo_family"] = cargo_family(valid["hs_code"], valid["goods_description"]).to_numpy()
    valid[DAY] = days_since_epoch(valid[m.date])
    if m.label.column in valid.columns:
        label = m.label.apply(valid[m.label.column])
        if m.labelled and m.labelled in valid.columns:
            label = label.where(pd.to_numeric(valid[m.labelled], errors="coerce").fillna(0).to_numpy() > 0)
        valid[LABEL] = label.to_numpy(dtype="float64")
    else:
        valid[LABEL] = np.nan
    if m.outcome_date and m.outcome_date in valid.columns:
        od = days_since_epoch(valid[m.outcome_date])
        day = valid[DAY].to_numpy()
        valid[OUTCOME_DAY] = np.where(np.isnan(od), day, np.maximum(od, day))
    else:
        valid[OUTCOME_DAY] = valid[DAY].to_numpy()
    for col in m.string_columns():
        if col in valid.columns:
            valid[col] = _clean_text(valid[col])
    rej = res.rejects
    if "reject_reasons" in rej.columns:
        rej = rej.drop(columns=["reject_reasons"])
    if training and valid[LABEL].notna().sum() == 0:
        raise ValueError(
            "no labelled rows: no valid row has an inspection outcome "
            f"('{m.label.column}' on rows with {m.labelled or 'any'} = 1)."
        )
    return valid, rej


# Derived fields computed when preparing native rows. The party-history fields of
# riskengine.derived (first seen, prior shipments, new commodity) are left out: the feature builder
# supplies them from its as-of history, which a single batch cannot provide.
NATIVE_DERIVED_FIELDS: tuple[str, ...] = (
    "transshipment_count", "route", "pol_country", "hs2", "hs4", "hs6", "container_size_ft",
    "is_reefer", "is_empty_declared", "tare_estimate_kg", "weight_discrepancy_ratio", "value_per_kg",
    "freight_to_value_ratio", "seal_mismatch", "gate_in_minutes_before_cut_off",
    "days_filed_before_arrival", "hours_amended_before_arrival", "vague_description",
    "freight_payment_risky",
)


def native_mapping() -> Mapping:
    """The mapping for the native manifest schema (after derived fields are added)."""
    return Mapping.from_dict(_NATIVE, source="native manifest schema")


_NATIVE: dict[str, Any] = {
    "name": "native-manifest",
    "kind": "native",
    "description": "Native container manifest schema (riskengine.schema) with derived fields.",
    "id": "manifest_id",
    "date": "filed_at",
    "label": {"column": "is_illicit", "positive": [1]},
    "labelled": "inspected",
    "outcome_date": "outcome_at",
    "value": "declared_value",
    "calibration_filter": {"column": "selection", "equals": "random", "min_positives": 20},
    "categorical": [
        "container_type", "carrier", "origin_country", "port_of_loading", "freight_payment",
        "currency", "terminal", "hs2", "cargo_family",
    ],
    "numeric": [
        "packages", "gross_weight_kg", "vgm_kg", "declared_value", "freight_charges",
        "transshipment_count", "container_size_ft", "is_reefer", "is_empty_declared",
        "weight_discrepancy_ratio", "value_per_kg",
        "freight_to_value_ratio", "seal_mismatch", "gate_in_minutes_before_cut_off",
        "days_filed_before_arrival", "hours_amended_before_arrival", "vague_description",
        "freight_payment_risky",
    ],
    "entities": [
        {"name": "shipper", "columns": ["shipper"], "label": "shipper"},
        {"name": "consignee", "columns": ["consignee"], "label": "consignee"},
        {"name": "notify_party", "columns": ["notify_party"], "label": "notify party"},
        {"name": "carrier", "columns": ["carrier"], "label": "carrier"},
        {"name": "hs2", "columns": ["hs2"], "label": "HS chapter"},
        {"name": "hs4", "columns": ["hs4"], "label": "HS heading"},
        {"name": "hs6", "columns": ["hs6"], "label": "HS6 code"},
        {"name": "origin", "columns": ["origin_country"], "label": "origin country"},
        {"name": "pol", "columns": ["port_of_loading"], "label": "port of loading"},
        {"name": "route", "columns": ["route"], "label": "route"},
        {"name": "origin_x_hs", "columns": ["origin_country", "hs6"], "label": "origin×HS"},
        {"name": "consignee_x_hs", "columns": ["consignee", "hs6"], "label": "consignee×HS"},
        {"name": "consignee_x_hs2", "columns": ["consignee", "hs2"], "label": "consignee×HS chapter"},
    ],
    "relative": [
        {"name": "value_per_kg_vs_hs6", "value": "value_per_kg", "group": "hs6", "label": "value per kg"},
    ],
}
