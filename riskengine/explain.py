"""Reasons an officer can read: which features pushed a manifest's risk up, in words.

LightGBM's ``pred_contrib=True`` splits each raw score (log-odds) into one contribution per feature
plus a bias; the contributions of a row sum to its raw score. :func:`top_reasons` keeps the ``k``
largest *positive* contributions per row (features that lower the risk are not reasons to inspect)
and turns each into a sentence with a template per kind of feature, e.g.

- ``consignee first seen 12 days ago``
- ``origin×HS hit rate 8% over 40 inspections``
- ``indicator REEFER-FRUIT-SOURCE: fruit in a reefer from a source country``

Everything is vectorised over rows: one ``argsort`` on the contribution matrix, then each
template formats all the rows that use that feature at once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping as TMapping
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

REASON_SEP = " | "

# Sentences for numeric fields of the native schema whose raw value needs words. "{v}" is the
# formatted value, "{pct}" the value as a percentage; flags use the text for 1.
NUMERIC_TEXT: dict[str, str] = {
    "transshipment_count": "{v} transshipment port(s) on the route",
    "weight_discrepancy_ratio": "declared weight plus tare differs from the VGM by {pct}",
    "container_size_ft": "{v} ft container",
    "value_per_kg": "declared value of {v} per kg",
    "freight_to_value_ratio": "freight is {v}× the declared value",
    "gate_in_minutes_before_cut_off": "gate-in {v} minutes before the cut-off",
    "days_filed_before_arrival": "manifest filed {v} day(s) before arrival",
    "hours_amended_before_arrival": "manifest amended {v} hour(s) before arrival",
    "declared_value": "declared value {v}",
    "gross_weight_kg": "gross weight {v} kg",
    "packages": "{v} package(s)",
}
FLAG_TEXT: dict[str, tuple[str, str]] = {
    "seal_mismatch": ("seal number at the gate differs from the manifest", "seal numbers match"),
    "is_reefer": ("reefer container", "not a reefer container"),
    "vague_description": ("vague goods description", "specific goods description"),
    "departure_differs_from_origin": ("country of departure differs from the country of origin",
                                      "departure country is the origin country"),
    "is_empty_declared": ("declared empty", "not declared empty"),
    "freight_payment_risky": ("freight paid in cash or by a third party", "freight prepaid or collect"),
}


def top_contributions(contrib: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest positive feature contributions per row.

    ``contrib`` is LightGBM's ``pred_contrib`` output (last column = bias, ignored). Returns
    ``(idx, val)`` of shape ``(n, k)``; ``idx`` is -1 where a row has fewer than ``k`` positive
    contributions. Ties keep feature order.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}.")
    c = np.asarray(contrib, dtype="float64")
    if c.ndim != 2 or c.shape[1] < 2:
        raise ValueError(f"expected an (n, features + 1) contribution matrix, got shape {c.shape}.")
    feats = c[:, :-1]
    k = min(k, feats.shape[1])
    if k == 0 or len(feats) == 0:
        return np.full((len(feats), k), -1, dtype=np.int64), np.zeros((len(feats), k))
    order = np.argsort(-feats, axis=1, kind="stable")[:, :k]
    val = np.take_along_axis(feats, order, axis=1)
    idx = np.where(val > 0, order, -1).astype(np.int64)
    return idx, np.where(val > 0, val, 0.0)


def _num(v: np.ndarray, decimals: int = 0) -> pd.Series:
    """Numbers as short strings ("12", "3.5"), vectorised."""
    s = pd.Series(np.round(np.asarray(v, dtype="float64"), decimals))
    if decimals == 0:
        out = s.fillna(0).astype("int64").astype(str)
    else:
        out = s.astype(str).str.replace(r"\.0+$", "", regex=True)
    return out.where(s.notna(), "?")


def _sig(v: np.ndarray) -> pd.Series:
    """About three significant digits: 12345, 123, 12.3, 1.23, 0.123."""
    v = np.asarray(v, dtype="float64")
    a = np.abs(v)
    decimals = np.select([a >= 100, a >= 10, a >= 1], [0, 1, 2], 3)
    out = np.full(len(v), "?", dtype=object)
    for d in (0, 1, 2, 3):
        sel = (decimals == d) & np.isfinite(v)
        if sel.any():
            out[sel] = _num(v[sel], d).to_numpy(dtype=object)
    return pd.Series(out, dtype=object)


def _pct(v: np.ndarray) -> pd.Series:
    v = np.asarray(v, dtype="float64") * 100
    out = np.where(v < 10, _num(v, 1).to_numpy(), _num(v, 0).to_numpy())
    return pd.Series(out, dtype=object) + "%"


def _texts_for(feature: str, info: dict[str, Any], X: pd.DataFrame, rows: np.ndarray,
               levels: TMapping[str, list[str]]) -> np.ndarray:
    """Sentences for one feature on the given rows (vectorised)."""
    v = X[feature].to_numpy(dtype="float64")[rows]
    kind = info.get("kind")
    label = str(info.get("label", feature))
    nan = np.isnan(v)
    if kind == "profile":
        stat = info["stat"]
        base = feature.rsplit(".", 1)[0]
        if stat == "n_prior":
            txt = np.where(v == 0, f"{label} not seen before",
                           (f"{label} seen " + _num(v) + " time(s) before").to_numpy())
        elif stat == "age_days":
            txt = np.where(v == 0, f"new {label}: first seen today",
                           (f"{label} first seen " + _num(v) + " days ago").to_numpy())
        elif stat == "since_last_days":
            txt = np.where(nan, f"{label} not seen before",
                           (f"{label} last seen " + _num(v) + " days ago").to_numpy())
        elif stat == "n_labelled":
            txt = np.where(v == 0, f"{label} never inspected",
                           (f"{label}: " + _num(v) + " earlier inspection(s)").to_numpy())
        else:  # hit_rate
            nl_col = base + ".n_labelled"
            nl = X[nl_col].to_numpy(dtype="float64")[rows] if nl_col in X.columns else np.full(len(rows), np.nan)
            with_hist = (f"{label} hit rate " + _pct(v) + " over " + _num(nl) + " inspection(s)").to_numpy()
            no_hist = (f"{label} never inspected (base rate " + _pct(v) + ")").to_numpy()
            txt = np.where(nl > 0, with_hist, no_hist)
        return np.where(nan & (stat != "since_last_days"), f"{label} unknown", txt)
    if kind == "categorical":
        lv = list(levels.get(info.get("column", ""), []))
        names = np.array([*lv, "a rare value"], dtype=object)
        code = np.where(nan, 0, v).astype(np.int64).clip(0, len(lv))
        txt = (f"{label} = " + pd.Series(names[code])).to_numpy()
        return np.where(nan, f"{label} missing", txt)
    if kind == "numeric":
        col = str(info.get("column", ""))
        if col in FLAG_TEXT:
            on, off = FLAG_TEXT[col]
            return np.where(nan, f"{label} missing", np.where(v >= 0.5, on, off))
        template = NUMERIC_TEXT.get(col, label + " = {v}")
        if "{pct}" in template:
            head, _, tail = template.partition("{pct}")
            txt = (head + _pct(v) + tail).to_numpy()
        else:
            head, _, tail = template.partition("{v}")
            txt = (head + _sig(v) + tail).to_numpy()
        return np.where(nan, f"{label} missing", txt)
    if kind == "relative":
        group = str(info.get("group", "group"))
        if info.get("stat") == "z":
            side = np.where(v >= 0, "above", "below")
            txt = (f"{label} " + _num(np.abs(v), 1) + " standard deviations " + pd.Series(side)
                   + f" the usual for its {group}").to_numpy()
        else:
            r = np.exp(np.abs(v))
            side = np.where(v >= 0, "above", "below")
            txt = (f"{label} " + _num(r, 1) + "× " + pd.Series(side)
                   + f" the usual for its {group}").to_numpy()
        return np.where(nan, f"{label}: no reference for its {group} yet", txt)
    if kind == "indicator":
        from riskengine.indicators.tlp import ROLE_DEFAULT_CLEARANCE, tlp_allows

        # Reasons are shown to every officer: the title of an indicator marked above the
        # officers' clearance stays out of them (unknown marking: the model predates markings,
        # its packs were loaded as they were saved and the marking set from them at load).
        tlp = str(info.get("tlp", "CLEAR"))
        if tlp_allows(ROLE_DEFAULT_CLEARANCE["officer"], tlp):
            title = info.get("title") or info.get("rationale") or ""
            hit = f"indicator {info.get('id')}" + (f": {title}" if title else "")
            miss = f"indicator {info.get('id')} not hit"
        else:
            hit = f"indicator of pack {info.get('pack')} (TLP:{tlp}; ask an analyst)"
            miss = f"indicator of pack {info.get('pack')} (TLP:{tlp}) not hit"
        return np.where(v >= 0.5, hit, miss)
    if kind == "indicator_count":
        return (_num(v) + " indicator hit(s)").to_numpy()
    return (f"{feature} = " + _sig(v)).to_numpy()


def reason_texts(
    idx: np.ndarray,
    X: pd.DataFrame,
    feature_info: TMapping[str, dict[str, Any]],
    *,
    levels: TMapping[str, list[str]] | None = None,
) -> np.ndarray:
    """An ``(n, k)`` object array of sentences for the feature indices ``idx`` (None where -1)."""
    levels = levels or {}
    names = list(X.columns)
    out = np.full(idx.shape, None, dtype=object)
    if idx.size == 0:
        return out
    flat = idx.ravel()
    used = np.unique(flat[flat >= 0])
    row_of = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
    out_flat = out.ravel()
    for j in used:
        where = np.flatnonzero(flat == j)
        feature = names[j]
        out_flat[where] = _texts_for(feature, dict(feature_info.get(feature, {})), X, row_of[where], levels)
    return out_flat.reshape(idx.shape)


def join_reasons(texts: np.ndarray, sep: str = REASON_SEP) -> pd.Series:
    """Join each row's sentences with ``sep`` (rows without a reason get an empty string)."""
    n, k = texts.shape if texts.ndim == 2 else (len(texts), 0)
    out = pd.Series(np.full(n, "", dtype=object))
    for r in range(k):  # a loop over ranks, not rows: positive reasons form a prefix per row
        col = pd.Series(texts[:, r])
        has = col.notna().to_numpy()
        first = has & (out.to_numpy() == "")
        out[first] = col[first]
        later = has & ~first
        out[later] = out[later] + sep + col[later]
    return out


def top_reasons(
    contrib: np.ndarray,
    X: pd.DataFrame,
    feature_info: TMapping[str, dict[str, Any]],
    *,
    k: int = 3,
    levels: TMapping[str, list[str]] | None = None,
) -> pd.DataFrame:
    """The top-``k`` reasons per row in long form.

    Returns one row per (input row, rank) with a positive contribution: ``row`` (position in
    ``X``), ``rank`` (1 = strongest), ``feature``, ``contribution`` (log-odds) and ``text``.
    """
    idx, val = top_contributions(contrib, k)
    texts = reason_texts(idx, X, feature_info, levels=levels)
    rows, ranks = np.nonzero(idx >= 0)
    names = np.asarray(list(X.columns), dtype=object)
    return pd.DataFrame({
        "row": rows,
        "rank": ranks + 1,
        "feature": names[idx[rows, ranks]],
        "contribution": val[rows, ranks],
        "text": texts[rows, ranks],
    })
