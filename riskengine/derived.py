"""Derived manifest fields: the ratios, codes and timings that risk indicators are written on.

Every field is computed column-wise (pandas / NumPy, no loop over rows). A field whose inputs are
missing is NaN (numbers, text) or False (flags); it never raises. Inputs are the normalised
columns of :mod:`riskengine.schema`; raw frames work too (text, numbers and dates are coerced).

Time-based party history (``party_first_seen_days``, ``consignee_prior_shipments``,
``consignee_new_commodity``) is computed *as of* each row: only rows filed earlier (or earlier in
the frame when filed at the same instant) count, so a frame never leaks its future into its past.

Example
-------
>>> import pandas as pd
>>> df = pd.DataFrame({"hs_code": ["080390"], "container_type": ["45R1"]})
>>> out = add_derived_fields(df, fields=["hs4", "container_size_ft", "is_reefer"])
>>> out[["hs4", "container_size_ft", "is_reefer"]].iloc[0].tolist()
['0803', 40.0, True]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from riskengine.commodities import TARE_KG
from riskengine.schema import regex_replace

log = logging.getLogger(__name__)

__all__ = [
    "DERIVED_FIELDS",
    "DERIVED_FIELD_KINDS",
    "NEW_COMMODITY_MIN_PRIOR",
    "add_derived_fields",
    "compute_derived_fields",
    "first_seen_from_history",
]

# A consignee needs this many earlier shipments before a new HS chapter counts as "unusual".
NEW_COMMODITY_MIN_PRIOR = 3

# ISO 6346 size code (first character) -> nominal length in feet.
_SIZE_FT = {"1": 10.0, "2": 20.0, "3": 30.0, "4": 40.0, "B": 24.0, "C": 24.5, "G": 41.0,
            "H": 43.0, "L": 45.0, "M": 48.0, "N": 49.0}

# Typical tare (empty container mass, kg) by nominal length; high-cube (+150 kg) and reefer
# (machinery and insulation) adjustments below. Manufacturer spread is about +-5 %.
_TARE_KG = {10.0: 1300.0, 20.0: 2200.0, 24.0: 2600.0, 24.5: 2650.0, 30.0: 3000.0, 40.0: 3750.0,
            41.0: 3850.0, 43.0: 4100.0, 45.0: 4650.0, 48.0: 5000.0, 49.0: 5100.0}
_HIGH_CUBE_EXTRA_KG = 150.0
_REEFER_EXTRA_KG = {"short": 800.0, "long": 700.0}  # up to 30 ft / 40 ft and longer

# Catch-all wording that says nothing about the goods.
_CATCH_ALL = (
    r"\b(?:FAK|FREIGHT ALL KINDS|GENERAL CARGO|GENERAL MERCHANDISE|GENERAL GOODS|VARIOUS GOODS|"
    r"VARIOUS ITEMS|VARIOUS|MISC|MISCELLANEOUS|MIXED GOODS|MIXED CARGO|CONSOLIDATED CARGO|"
    r"CONSOLIDATED GOODS|ASSORTED GOODS|SUNDRIES|PERSONAL EFFECTS)\b"
)
# Clauses, packaging units and container words that carry no information about the goods; what
# is left after removing them (and digits, punctuation) is the actual description.
_FILLER = (
    r"\b(?:SAID TO CONTAIN|SAID TO BE|STC|SLAC|SLC|SHIPPERS LOAD STOW AND COUNT|"
    r"SHIPPERS LOAD AND COUNT|CONTAINING|CONTAINS|CONTAIN|PACKAGES|PACKAGE|PKGS|PKG|PCS|PIECES|"
    r"PIECE|PALLETS|PALLET|PLTS|PLT|CARTONS|CARTON|CTNS|CTN|BOXES|BOX|CASES|CASE|BAGS|BAG|SACKS|"
    r"SACK|BALES|BALE|DRUMS|DRUM|UNITS|UNIT|CONTAINERS|CONTAINER|CNTRS|CNTR|CTRS|CTR|FCL|LCL|HC|"
    r"HQ|DV|GP|FT|KGS|KG|NET|GROSS|WEIGHT|TOTAL|OF|X)\b"
)
# Generic nouns that name no goods when they stand alone ("SAID TO CONTAIN FOODSTUFF").
_GENERIC = (
    r"\b(?:GOODS|CARGO|MERCHANDISE|FOODSTUFFS|FOODSTUFF|FOOD|ITEMS|ITEM|PRODUCTS|PRODUCT|"
    r"MATERIALS|MATERIAL|SUPPLIES|COMMODITIES|COMMODITY|ARTICLES|STUFF|PARTS|EQUIPMENT|"
    r"ACCESSORIES|SAMPLES|GIFTS|GENERAL|MIXED|VARIOUS|SUNDRY|AND|WITH)\b"
)
# Fewer letters than this left after removing the filler: the description is too short to check.
_MIN_DESCRIPTION_LETTERS = 4
_EMPTY_DESCRIPTION = r"^\s*(?:EMPTY|MT)(?:\s+(?:CONTAINER|CONTAINERS|CNTR|CTR|BOX|UNIT))?\s*$"
_RISKY_PAYMENTS = ("cash", "third_party")


# --------------------------------------------------------------------------------------------
# Input coercion: tolerate raw frames and missing columns
# --------------------------------------------------------------------------------------------

def _text(df: pd.DataFrame, col: str) -> pd.Series:
    """Column as text with NaN for missing values (all-NaN when the column is absent)."""
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="str")
    s = df[col]
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    return s.astype("str")


def _number(df: pd.DataFrame, col: str) -> np.ndarray:
    """Column as float64 with NaN for missing or non-numeric values."""
    if col not in df.columns:
        return np.full(len(df), np.nan)
    s = df[col]
    if not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        s = pd.to_numeric(s.astype(object), errors="coerce")
    return s.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _datetime(df: pd.DataFrame, col: str) -> pd.Series:
    """Column as naive-UTC datetime64[ns] with NaT for missing or unparsable values."""
    if col not in df.columns:
        return pd.Series(pd.NaT, index=df.index, dtype="datetime64[ns]")
    s = df[col]
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    elif not pd.api.types.is_datetime64_dtype(s.dtype):
        s = pd.to_datetime(s.astype(object), errors="coerce", utc=True, format="ISO8601")
        s = s.dt.tz_localize(None)
    return s.astype("datetime64[ns]")


def _hours(delta: pd.Series) -> np.ndarray:
    return (delta / pd.Timedelta(hours=1)).to_numpy(dtype=np.float64, na_value=np.nan)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is missing or not positive."""
    out = np.full(len(num), np.nan)
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    out[ok] = num[ok] / den[ok]
    return out


def _flag(values: pd.Series | np.ndarray) -> np.ndarray:
    """Boolean array, missing -> False."""
    if isinstance(values, pd.Series):
        return values.fillna(False).to_numpy(dtype=bool)
    return np.asarray(values, dtype=bool)


def _on_distinct(df: pd.DataFrame, col: str,
                 fn: Callable[[pd.DataFrame], pd.Series | np.ndarray]) -> np.ndarray:
    """Compute a function of one column on its distinct values only and spread the result back
    to the rows: codes, names and descriptions repeat a lot, so text work shrinks by orders of
    magnitude. ``fn`` gets a small frame with just ``col`` (plus one missing value)."""
    if col not in df.columns:
        res = fn(df)
        return res.to_numpy(dtype=object, na_value=np.nan) if _is_text(res) else np.asarray(res)
    codes, uniques = pd.factorize(df[col])
    small = pd.DataFrame({col: pd.Series([*uniques.tolist(), None], dtype=object)})
    res = fn(small)
    if _is_text(res):
        values = res.to_numpy(dtype=object, na_value=np.nan)
    else:
        values = np.asarray(res)
    return values[codes]  # code -1 (missing) picks the appended missing value


def _is_text(res: pd.Series | np.ndarray) -> bool:
    return isinstance(res, pd.Series) and not (
        pd.api.types.is_bool_dtype(res.dtype) or pd.api.types.is_numeric_dtype(res.dtype))


def _distinct(col: str, fn: Callable[[pd.DataFrame, _Context], pd.Series | np.ndarray]
              ) -> Callable[[pd.DataFrame, _Context], np.ndarray]:
    """A derived field that depends on ``col`` only, computed on its distinct values."""
    def compute(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
        return _on_distinct(df, col, lambda small: fn(small, ctx))
    return compute


def _text_on_distinct(df: pd.DataFrame, col: str, fn: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``fn`` applied to the text of ``col``, computed per distinct value."""
    values = _on_distinct(df, col, lambda small: fn(_text(small, col)))
    return pd.Series(values, index=df.index, dtype="str")


def _key_codes(df: pd.DataFrame, cols: list[str], fn: Callable[[pd.Series], pd.Series]
               ) -> list[np.ndarray]:
    """Integer codes of the normalised text ``fn(text)`` of each column in ``cols``, in one code
    space shared by the columns (so equal normalised values get equal codes across columns);
    -1 where the value is missing or normalises to missing. Work is done per distinct value."""
    raw_codes, uniques = [], []
    for col in cols:
        if col in df.columns:
            codes, u = pd.factorize(df[col])
            u = u.tolist()
        else:
            codes, u = np.full(len(df), -1, dtype=np.int64), []
        raw_codes.append(np.asarray(codes, dtype=np.int64))
        uniques.append(u)
    offsets = np.cumsum([0] + [len(u) for u in uniques])
    every = pd.DataFrame({"v": pd.Series([v for u in uniques for v in u] + [None], dtype=object)})
    normalised = fn(_text(every, "v"))
    norm_codes, _ = pd.factorize(normalised)  # missing -> -1; the appended None is last
    norm_codes = np.asarray(norm_codes, dtype=np.int64)
    out = []
    for codes, offset in zip(raw_codes, offsets[:-1], strict=True):
        out.append(np.where(codes >= 0, norm_codes[np.maximum(codes, 0) + offset], -1))
    return out


def _cumcount(codes: np.ndarray) -> np.ndarray:
    """For each position: how many earlier positions hold the same code (NaN where code < 0)."""
    out = np.full(len(codes), np.nan)
    valid = np.flatnonzero(codes >= 0)
    if not len(valid):
        return out
    c = codes[valid]
    order = np.argsort(c, kind="stable")
    sc = c[order]
    starts = np.r_[0, np.flatnonzero(sc[1:] != sc[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(sc)]))
    counts = np.empty(len(sc))
    counts[order] = np.arange(len(sc)) - run_start
    out[valid] = counts
    return out


def _party_key(s: pd.Series) -> pd.Series:
    """Normalised party name for matching: upper case, single spaces; blank -> NaN."""
    key = regex_replace(s.str.upper().str.strip(), r"\s+", " ")
    return key.mask(key == "")


def _hs_digits(df: pd.DataFrame) -> pd.Series:
    return regex_replace(_text(df, "hs_code"), r"\D", "")


def _hs_prefix(df: pd.DataFrame, n: int) -> pd.Series:
    def prefix(text: pd.Series) -> pd.Series:
        digits = regex_replace(text, r"\D", "")
        return digits.str.slice(0, n).where(digits.str.len() >= n)
    return _text_on_distinct(df, "hs_code", prefix)


def _time_order(filed: pd.Series) -> np.ndarray:
    """Positions sorted by filing time, frame order breaking ties; NaT rows last."""
    ns = filed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    ns = np.where(filed.isna().to_numpy(), np.iinfo(np.int64).max, ns)
    return np.argsort(ns, kind="stable")


# --------------------------------------------------------------------------------------------
# The fields
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Context:
    first_seen: Mapping[str, pd.Timestamp] | None


def _transshipment_count(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    return _text(df, "transshipment_ports").str.count(r"[^;\s]+").to_numpy(dtype=np.float64, na_value=np.nan)


def _route(df: pd.DataFrame, ctx: _Context) -> pd.Series:
    pol = _text_on_distinct(df, "port_of_loading", lambda t: t.str.strip())
    pod = _text_on_distinct(df, "port_of_discharge", lambda t: t.str.strip())
    ts = _text_on_distinct(df, "transshipment_ports", lambda t: (
        regex_replace(regex_replace(t, r"\s+", ""), r";+", ";").str.strip(";")
        .str.replace(";", ">", regex=False)))
    via = (">" + ts).where(ts != "", "")
    route = pol + via + ">" + pod
    missing = pol.isna() | pod.isna() | ts.isna() | (pol == "") | (pod == "")
    return route.mask(missing)


def _pol_country(df: pd.DataFrame, ctx: _Context) -> pd.Series:
    pol = _text(df, "port_of_loading").str.strip().str.upper()
    ok = pol.str.fullmatch(r"[A-Z]{2}[A-Z2-9]{3}").fillna(False).astype(bool)
    return pol.str.slice(0, 2).where(ok)


def _container_size_ft(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    code = _text(df, "container_type").str.strip().str.upper().str.slice(0, 1)
    return code.map(_SIZE_FT).to_numpy(dtype=np.float64, na_value=np.nan)


def _is_reefer(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    # ISO 6346 type group R: thermal containers, refrigerated and/or heated (R0..R9).
    code = _text(df, "container_type").str.strip().str.upper()
    return _flag(code.str.fullmatch(r"[0-9A-Z]{2}R[0-9A-Z]"))


def _is_empty_declared(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    by_text = _on_distinct(df, "goods_description", lambda d: _flag(
        _text(d, "goods_description").str.upper().str.contains(_EMPTY_DESCRIPTION, regex=True)))
    hs_blank = _on_distinct(df, "hs_code", lambda d: _flag(_hs_digits(d) == ""))
    by_codes = hs_blank & (_number(df, "packages") == 0)
    return by_text | by_codes


def _tare_estimate_kg(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    code = _text(df, "container_type").str.strip().str.upper()
    size = _container_size_ft(df, ctx)
    tare = pd.Series(size).map(_TARE_KG).to_numpy(dtype=np.float64, na_value=np.nan)
    high_cube = _flag(code.str.slice(1, 2).isin(["5", "6", "E", "F"]))
    reefer = _is_reefer(df, ctx)
    extra = np.where(size <= 30, _REEFER_EXTRA_KG["short"], _REEFER_EXTRA_KG["long"])
    estimate = tare + high_cube * _HIGH_CUBE_EXTRA_KG + reefer * extra
    # Common type codes have a typical tare in the commodity table; the rule above covers the rest.
    known = code.map(TARE_KG).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(known), estimate, known)


def _weight_discrepancy_ratio(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    # The manifest gross weight is the cargo's; the VGM (SOLAS) also includes the container's
    # tare, so the declared cargo plus the estimated tare is what the VGM should confirm.
    gross, vgm = _number(df, "gross_weight_kg"), _number(df, "vgm_kg")
    expected = gross + _on_distinct(df, "container_type", lambda d: _tare_estimate_kg(d, ctx))
    return _safe_ratio(np.abs(expected - vgm), vgm)


def _value_per_kg(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    return _safe_ratio(_number(df, "declared_value"), _number(df, "gross_weight_kg"))


def _freight_to_value_ratio(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    return _safe_ratio(_number(df, "freight_charges"), _number(df, "declared_value"))


def _seal_key(s: pd.Series) -> pd.Series:
    key = regex_replace(s.str.upper(), r"[\s\-_./]", "")
    return key.mask(key == "")


def _seal_mismatch(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    manifest, gate = _key_codes(df, ["seal_number", "seal_number_gate"], _seal_key)
    return (gate >= 0) & (gate != manifest)


def _gate_in_minutes_before_cut_off(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    return _hours(_datetime(df, "cut_off_at") - _datetime(df, "gate_in_at")) * 60.0


def _days_filed_before_arrival(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    return _hours(_datetime(df, "arrival_date") - _datetime(df, "filed_at")) / 24.0


def _hours_amended_before_arrival(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    return _hours(_datetime(df, "arrival_date") - _datetime(df, "last_amended_at"))


def _normalised_first_seen(first_seen: Mapping[str, pd.Timestamp]) -> pd.Series:
    """The history mapping keyed like :func:`_party_key`; duplicates keep the earliest date."""
    if not isinstance(first_seen, Mapping):
        raise TypeError(
            f"first_seen must be a mapping consignee -> first-seen timestamp, got {type(first_seen).__name__}"
        )
    if not first_seen:
        return pd.Series(dtype="datetime64[ns]")
    names = pd.Series(list(first_seen.keys()), dtype=object).astype("str")
    when = pd.Series(list(first_seen.values()), dtype=object)
    frame = pd.DataFrame({"when": when})
    stamps = _datetime(frame, "when")
    bad = stamps.isna() & when.notna()
    if bad.any():
        examples = when[bad].head(3).tolist()
        raise ValueError(
            f"first_seen has {int(bad.sum())} value(s) that are not timestamps, e.g. {examples}; "
            "give pandas Timestamps, datetimes or ISO 8601 strings"
        )
    hist = pd.Series(stamps.to_numpy(), index=_party_key(names).to_numpy())
    hist = hist[hist.index.notna() & hist.notna().to_numpy()]
    return hist.groupby(level=0).min()


def _party_first_seen_days(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    filed = _datetime(df, "filed_at")
    (key,) = _key_codes(df, ["consignee"], _party_key)
    # The earliest filing of the consignee in the frame is never later than the row itself, so
    # the group minimum is the first appearance among earlier rows (the row itself when first).
    first = filed.groupby(key).transform("min")  # key -1 (no consignee) is masked below
    first = pd.Series(first.to_numpy(dtype="datetime64[ns]"), index=df.index).where(key >= 0)
    if ctx.first_seen is not None:
        hist = _normalised_first_seen(ctx.first_seen)
        names = _text_on_distinct(df, "consignee", _party_key)
        from_history = pd.Series(names.map(hist).to_numpy(dtype="datetime64[ns]"), index=df.index)
        first = first.where(from_history.isna() | (first <= from_history), from_history)
    return _hours(filed - first) / 24.0


def _consignee_history(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row (frame order): earlier shipments of the consignee, earlier shipments of the same
    consignee in the same HS chapter, and whether the row has the keys to count at all."""
    filed = _datetime(df, "filed_at")
    (key,) = _key_codes(df, ["consignee"], _party_key)
    (chapter,) = _key_codes(df, ["hs_code"], lambda t: _hs_prefix(pd.DataFrame({"hs_code": t}), 2))
    key = np.where(filed.notna().to_numpy(), key, -1)  # no filing time: cannot be ordered
    order = _time_order(filed)
    pair = np.where((key >= 0) & (chapter >= 0), key * (chapter.max() + 1) + chapter, -1)
    out_prior = np.full(len(df), np.nan)
    out_pair = np.full(len(df), np.nan)
    out_prior[order] = _cumcount(key[order])
    out_pair[order] = _cumcount(pair[order])
    return out_prior, out_pair, key >= 0


def _consignee_prior_shipments(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    prior, _, _ = _consignee_history(df)
    return prior


def _consignee_new_commodity(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    prior, prior_pair, _ = _consignee_history(df)
    with np.errstate(invalid="ignore"):
        return (prior >= NEW_COMMODITY_MIN_PRIOR) & (prior_pair == 0)


def _vague_description(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    raw = _text(df, "goods_description")
    up = regex_replace(raw.str.upper(), r"[.']", "")
    up = regex_replace(up, r"[^A-ZÀ-ÖØ-Þ]+", " ")
    catch_all = _flag(up.str.contains(_CATCH_ALL, regex=True))
    rest = regex_replace(regex_replace(regex_replace(up, _FILLER, " "), _GENERIC, " "), r"\s+", "")
    too_short = _flag(rest.str.len() < _MIN_DESCRIPTION_LETTERS)
    return (catch_all | too_short) & raw.notna().to_numpy()


def _freight_payment_risky(df: pd.DataFrame, ctx: _Context) -> np.ndarray:
    fp = _text(df, "freight_payment").str.strip().str.lower().str.replace(r"[\s-]+", "_", regex=True)
    return _flag(fp.isin(_RISKY_PAYMENTS))


@dataclass(frozen=True)
class _Derived:
    kind: str  # "str" | "num" | "bool"
    description: str
    compute: Callable[[pd.DataFrame, _Context], np.ndarray | pd.Series]


_REGISTRY: dict[str, _Derived] = {
    "transshipment_count": _Derived(
        "num", "Number of transshipment ports between loading and discharge (0 when direct).",
        _distinct("transshipment_ports", _transshipment_count)),
    "route": _Derived(
        "str", "Port sequence loading>transshipments>discharge, e.g. COCTG>PAMIT>NLRTM.", _route),
    "pol_country": _Derived(
        "str", "Country of the port of loading (first two letters of its UN/LOCODE).",
        _distinct("port_of_loading", _pol_country)),
    "hs2": _Derived("str", "HS chapter: first 2 digits of hs_code.",
                    lambda df, ctx: _hs_prefix(df, 2)),
    "hs4": _Derived("str", "HS heading: first 4 digits of hs_code.",
                    lambda df, ctx: _hs_prefix(df, 4)),
    "hs6": _Derived("str", "HS subheading: first 6 digits of hs_code.",
                    lambda df, ctx: _hs_prefix(df, 6)),
    "container_size_ft": _Derived(
        "num", "Nominal container length in feet from the ISO 6346 size code (20, 40, 45, ...).",
        _distinct("container_type", _container_size_ft)),
    "is_reefer": _Derived(
        "bool", "Refrigerated container (ISO 6346 type group R, e.g. 22R1, 45R1).",
        _distinct("container_type", _is_reefer)),
    "is_empty_declared": _Derived(
        "bool", "Declared empty: 'EMPTY CONTAINER' description, or no HS code and 0 packages.",
        _is_empty_declared),
    "tare_estimate_kg": _Derived(
        "num", "Typical empty mass of the container: from riskengine.commodities.TARE_KG for "
               "common type codes (e.g. 45R1), else from the ISO 6346 size, height and reefer "
               "group (e.g. 4800 kg for L5G1).",
        _distinct("container_type", _tare_estimate_kg)),
    "weight_discrepancy_ratio": _Derived(
        "num", "|gross_weight_kg + tare_estimate_kg - vgm_kg| / vgm_kg: how far the declared "
               "cargo weight plus the container's typical tare is from the verified gross mass "
               "(NaN without a positive VGM or a known container type).",
        _weight_discrepancy_ratio),
    "value_per_kg": _Derived(
        "num", "declared_value / gross_weight_kg, in the declared currency (no conversion).",
        _value_per_kg),
    "freight_to_value_ratio": _Derived(
        "num", "freight_charges / declared_value (NaN without freight or a positive value).",
        _freight_to_value_ratio),
    "seal_mismatch": _Derived(
        "bool", "A seal number was read at the gate and differs from the manifest seal "
                "(compared without case, spaces or dashes).", _seal_mismatch),
    "gate_in_minutes_before_cut_off": _Derived(
        "num", "Minutes from gate-in to the vessel cut-off (negative when gated in after it).",
        _gate_in_minutes_before_cut_off),
    "days_filed_before_arrival": _Derived(
        "num", "Days from filing to the arrival day (midnight); negative when filed after.",
        _days_filed_before_arrival),
    "hours_amended_before_arrival": _Derived(
        "num", "Hours from the last amendment to the arrival day (midnight); NaN if never amended.",
        _hours_amended_before_arrival),
    "party_first_seen_days": _Derived(
        "num", "Days since the consignee was first seen, at this row's filed_at. With a "
               "first_seen history the earlier of history and frame counts; without, the first "
               "appearance among earlier rows of the frame (0 for its first row).",
        _party_first_seen_days),
    "consignee_prior_shipments": _Derived(
        "num", "Earlier rows of the same consignee in the frame (as of filed_at; frame only).",
        _consignee_prior_shipments),
    "consignee_new_commodity": _Derived(
        "bool", f"The consignee has at least {NEW_COMMODITY_MIN_PRIOR} earlier rows in the frame "
                "and none in this HS chapter: goods that do not fit its history (frame only; "
                "long-term trader profiles come from riskengine.features).",
        _consignee_new_commodity),
    "vague_description": _Derived(
        "bool", "Goods description that says nothing: FAK, GENERAL CARGO, VARIOUS, or fewer than "
                f"{_MIN_DESCRIPTION_LETTERS} letters left after removing 'said to contain'/STC "
                "clauses, packaging words and numbers.",
        _distinct("goods_description", _vague_description)),
    "freight_payment_risky": _Derived(
        "bool", "Freight paid in cash or by a third party.",
        _distinct("freight_payment", _freight_payment_risky)),
}

DERIVED_FIELDS: dict[str, str] = {name: d.description for name, d in _REGISTRY.items()}
"""Derived field name -> description."""

DERIVED_FIELD_KINDS: dict[str, str] = {name: d.kind for name, d in _REGISTRY.items()}
"""Derived field name -> kind: "str" (text), "num" (float, NaN when unknown) or "bool"."""


def _check_fields(fields: Iterable[str] | None) -> list[str]:
    if fields is None:
        return list(_REGISTRY)
    if isinstance(fields, str):
        fields = [fields]
    wanted = list(dict.fromkeys(fields))
    unknown = [f for f in wanted if f not in _REGISTRY]
    if unknown:
        raise KeyError(
            f"unknown derived field(s) {unknown}; valid derived fields: {sorted(_REGISTRY)}"
        )
    return wanted


def compute_derived_fields(
    df: pd.DataFrame,
    *,
    first_seen: Mapping[str, pd.Timestamp] | None = None,
    fields: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Compute derived fields only: a frame with one column per field, index aligned with ``df``.

    ``fields`` selects a subset (default: all of :data:`DERIVED_FIELDS`).
    """
    names = _check_fields(fields)
    ctx = _Context(first_seen=first_seen)
    columns: dict[str, pd.Series] = {}
    for name in names:
        spec = _REGISTRY[name]
        values = spec.compute(df, ctx)
        if spec.kind == "bool":
            series = pd.Series(np.asarray(values, dtype=bool), index=df.index)
        elif spec.kind == "num":
            series = pd.Series(np.asarray(values, dtype=np.float64), index=df.index)
        else:
            series = pd.Series(values, index=df.index).astype("str")
        columns[name] = series
    log.debug("computed %d derived field(s) on %d row(s)", len(columns), len(df))
    return pd.DataFrame(columns, index=df.index)


def first_seen_from_history(history: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """Consignee -> earliest ``filed_at`` in a history of manifests, for ``first_seen``.

    Names are normalised the way they are matched (upper case, single spaces); rows without a
    consignee or a parsable ``filed_at`` are ignored.

    >>> first_seen_from_history(pd.DataFrame({"consignee": ["Acme", "ACME "],
    ...                                       "filed_at": ["2024-02-01", "2024-01-01"]}))
    {'ACME': Timestamp('2024-01-01 00:00:00')}
    """
    missing = [c for c in ("consignee", "filed_at") if c not in history.columns]
    if missing:
        raise KeyError(f"history needs the columns consignee and filed_at; missing {missing}")
    names = _text_on_distinct(history, "consignee", _party_key)
    filed = _datetime(history, "filed_at")
    ok = (names.notna() & filed.notna()).to_numpy()
    first = filed[ok].groupby(names[ok].to_numpy()).min()
    return {str(k): pd.Timestamp(v) for k, v in first.items()}


def add_derived_fields(
    df: pd.DataFrame,
    *,
    first_seen: Mapping[str, pd.Timestamp] | None = None,
    fields: Iterable[str] | None = None,
) -> pd.DataFrame:
    """Return a new frame: ``df`` plus the derived fields (existing columns of the same name are
    replaced). ``df`` is not modified.

    Args:
        df: manifests, ideally as returned by :func:`riskengine.schema.validate`.
        first_seen: consignee name -> first-seen timestamp from history (names are matched
            without case or extra spaces). Without it, ``party_first_seen_days`` is computed as of
            each row from earlier rows of ``df`` only, which makes every consignee look new at the
            start of the frame; pass the history when scoring a short batch.
        fields: only these derived fields (default: all of :data:`DERIVED_FIELDS`).

    Example:
        >>> add_derived_fields(pd.DataFrame({"transshipment_ports": ["PAMIT;ESALG", ""]}),
        ...                    fields=["transshipment_count"])["transshipment_count"].tolist()
        [2.0, 0.0]
    """
    derived = compute_derived_fields(df, first_seen=first_seen, fields=fields)
    out = df.drop(columns=[c for c in derived.columns if c in df.columns])
    return pd.concat([out, derived], axis=1)
