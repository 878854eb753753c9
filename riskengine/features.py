"""Features for the manifest risk model: entity risk profiles as of each row's date, ratios, codes.

The heart of this module is the *as-of* rule. A row's features use only what was known before its
own day: declarations filed on earlier days, and inspection outcomes known before the row's day
(``outcome known < row day``). Rows filed on the same day never see each other, and a row never
sees its own outcome. Labels exist only for inspected containers: an uninspected container is
unlabelled, not negative, so hit rates are taken over inspected rows only.

For each entity of the mapping (a party, an HS code, a route, a combination such as consignee ×
HS6) the profile features are:

``prof.<entity>.n_prior``        declarations seen on earlier days
``prof.<entity>.age_days``       days since the entity was first seen (0: new today)
``prof.<entity>.since_last_days`` days since it was last seen (NaN: never)
``prof.<entity>.n_labelled``     inspections whose outcome was known
``prof.<entity>.hit_rate``       smoothed hit rate ``(hits + prior·m) / (n_labelled + m)`` where the
                                 prior is the overall as-of hit rate and ``m`` is ``smoothing``

The history is kept as per-(key, day) increments; lookups are one binary search on a combined
``(key code, day)`` integer, so computing the as-of features of a whole training set is the same
vectorised operation as scoring a one-day batch. :meth:`FeatureBuilder.update` adds new
declarations or outcomes without refitting.

Example
-------
>>> from riskengine.mapping import Mapping
>>> m = Mapping.from_yaml("datasets/kcs/mapping.yaml")          # doctest: +SKIP
>>> rows, rejects = m.prepare(raw, training=True)                # doctest: +SKIP
>>> fb = FeatureBuilder(mapping=m).fit(rows)                     # doctest: +SKIP
>>> X = fb.transform(rows)      # as-of features of the training rows themselves   # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from riskengine.mapping import DAY, LABEL, OUTCOME_DAY, Mapping, native_mapping, slug

log = logging.getLogger(__name__)

_OFFSET = 1 << 21          # days are stored as day + _OFFSET, which must fit in 22 bits
_DAY_BITS = 22
_SENTINEL_DAY = -_OFFSET   # compacted history sits before every real day
KEY_SEP = "\x1f"
STATE_FILE = "state.json"
FORMAT_VERSION = 1


class NotFittedError(RuntimeError):
    """An estimator was used before ``fit``."""


# --------------------------------------------------------------------------------------------
# As-of history tables
# --------------------------------------------------------------------------------------------

class AsOfHistory:
    """Additive statistics per key and day, looked up strictly before a query day.

    ``stats`` are summed; ``first``/``last`` keep the first and last day a key was *seen*
    (outcome-only events do not move them). Lookups return the cumulative values over all events
    on days strictly before the query day.
    """

    def __init__(self, stats: Sequence[str]) -> None:
        self.stats = tuple(stats)
        self._frame = pd.DataFrame(
            {"key": pd.Series(dtype="string"), "day": pd.Series(dtype="int64"),
             **{s: pd.Series(dtype="float64") for s in self.stats},
             "first": pd.Series(dtype="float64"), "last": pd.Series(dtype="float64")}
        )
        self._rebuild()

    # -- building ---------------------------------------------------------------------------
    def add(self, keys: pd.Series | pa.Array, days: np.ndarray, values: dict[str, np.ndarray],
            seen: np.ndarray | None = None) -> None:
        """Add events: one per row with a non-missing key; ``seen`` marks declaration events."""
        keys = arrow_strings(keys)
        days = np.asarray(days, dtype="float64")
        ok = ~keys.is_null().to_numpy(zero_copy_only=False) & np.isfinite(days)
        if not ok.any():
            return
        kept = pd.Series(keys.filter(pa.array(ok)).to_pandas(), dtype="string")
        ev = pd.DataFrame({"key": kept.to_numpy(), "day": days[ok].astype(np.int64)})
        for s in self.stats:
            ev[s] = np.asarray(values.get(s, 0.0), dtype="float64")[ok] if s in values else 0.0
        seen_ok = np.ones(ok.sum(), dtype=bool) if seen is None else np.asarray(seen, dtype=bool)[ok]
        d = ev["day"].to_numpy(dtype="float64")
        ev["first"] = np.where(seen_ok, d, np.nan)
        ev["last"] = ev["first"]
        self._merge(ev)

    def _merge(self, ev: pd.DataFrame) -> None:
        both = ev if self._frame.empty else pd.concat([self._frame, ev], ignore_index=True)
        agg = {s: "sum" for s in self.stats}
        agg.update({"first": "min", "last": "max"})
        self._frame = both.groupby(["key", "day"], sort=True, observed=True).agg(agg).reset_index()
        self._rebuild()

    def compacted(self, cutoff_day: int) -> AsOfHistory:
        """A copy with everything up to ``cutoff_day`` collapsed into one row per key.

        Queries dated after ``cutoff_day`` get exactly the same answers as from the full history;
        queries on or before it see the whole collapsed history. Saved states stay small.
        """
        f = self._frame
        old = f["day"].to_numpy() <= cutoff_day
        agg = {s: "sum" for s in self.stats}
        agg.update({"first": "min", "last": "max"})
        head = f.loc[old].groupby("key", sort=True, observed=True).agg(agg).reset_index()
        head.insert(1, "day", np.int64(_SENTINEL_DAY))
        frame = pd.concat([head, f.loc[~old]], ignore_index=True) if len(head) else f.loc[~old]
        return AsOfHistory.from_frame(frame, self.stats)

    def _rebuild(self) -> None:
        f = self._frame
        self.keys_ = pd.Index(pd.unique(f["key"].to_numpy()))
        self._key_arrow = arrow_strings(pd.Series(self.keys_, dtype="string"))
        code = self.keys_.get_indexer(f["key"].to_numpy()).astype(np.int64)
        day = f["day"].to_numpy(dtype=np.int64)
        if len(day) and (day.min() < -_OFFSET or day.max() >= _OFFSET):
            raise ValueError("dates out of the supported range (years 1970 ± 5700)")
        self._code = code
        self._comb = (code << _DAY_BITS) | (day + _OFFSET)
        if len(self._comb) > 1 and not (np.diff(self._comb) > 0).all():
            order = np.argsort(self._comb, kind="stable")
            self._frame = f = f.iloc[order].reset_index(drop=True)
            self._code, self._comb = code[order], self._comb[order]
        grp = pd.Series(self._code)
        self._cum = {s: f[s].groupby(self._code, sort=False).cumsum().to_numpy(dtype="float64") for s in self.stats}
        first = f["first"].groupby(self._code, sort=False).cummin()
        last = f["last"].groupby(self._code, sort=False).cummax()
        self._first = first.groupby(grp.to_numpy(), sort=False).ffill().to_numpy(dtype="float64")
        self._last = last.groupby(grp.to_numpy(), sort=False).ffill().to_numpy(dtype="float64")

    # -- querying ---------------------------------------------------------------------------
    def lookup(self, keys: pd.Series | pa.Array, days: np.ndarray) -> dict[str, np.ndarray]:
        """Cumulative stats strictly before each row's day.

        Returns ``{stat: values, "first": ..., "last": ..., "key_missing": bool mask}``; rows whose
        key was never seen get 0 for stats and NaN for first/last.
        """
        keys = arrow_strings(keys)
        n = len(keys)
        days = np.asarray(days, dtype="float64")
        missing = keys.is_null().to_numpy(zero_copy_only=False) | ~np.isfinite(days)
        out: dict[str, np.ndarray] = {s: np.zeros(n) for s in self.stats}
        out["first"] = np.full(n, np.nan)
        out["last"] = np.full(n, np.nan)
        out["key_missing"] = missing
        if len(self._comb) == 0 or n == 0:
            return out
        # Arrow's hash lookup: no Python string objects for a large batch.
        codes = pc.fill_null(pc.index_in(keys, value_set=self._key_arrow), -1).to_numpy().astype(np.int64)
        known = (codes >= 0) & ~missing
        q = (codes[known] << _DAY_BITS) | (days[known].astype(np.int64) + _OFFSET)
        pos = np.searchsorted(self._comb, q, side="left") - 1
        hit = (pos >= 0) & (self._code[np.maximum(pos, 0)] == codes[known])
        rows = np.flatnonzero(known)[hit]
        p = pos[hit]
        for s in self.stats:
            out[s][rows] = self._cum[s][p]
        out["first"][rows] = self._first[p]
        out["last"][rows] = self._last[p]
        return out

    def total(self) -> dict[str, float]:
        """Sums of every stat over the whole history."""
        return {s: float(self._frame[s].sum()) for s in self.stats}

    @property
    def n_keys(self) -> int:
        return len(self.keys_)

    # -- persistence ------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        return self._frame.copy()

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, stats: Sequence[str]) -> AsOfHistory:
        h = cls(stats)
        need = ["key", "day", *stats, "first", "last"]
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise ValueError(f"history table lacks column(s) {missing}; it was not written by this version.")
        f = frame[need].copy()
        f["key"] = f["key"].astype("string")
        f["day"] = f["day"].astype(np.int64)
        h._frame = f
        h._rebuild()
        return h


def arrow_strings(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Values as one Arrow ``large_string`` array (nulls kept); no Python objects on the way."""
    if isinstance(values, pd.Series):
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype("string")
        arr = pa.array(values, from_pandas=True)
    else:
        arr = values
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if not pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.large_string())
    return arr


def entity_keys(rows: pd.DataFrame, columns: Sequence[str]) -> pa.Array:
    """One string key per row for an entity (columns joined; null when any part is missing)."""
    parts = [arrow_strings(rows[c]) for c in columns]
    if len(parts) == 1:
        return parts[0]
    return pc.binary_join_element_wise(*parts, pa.scalar(KEY_SEP, pa.large_string()))


# --------------------------------------------------------------------------------------------
# The feature builder
# --------------------------------------------------------------------------------------------

_ENTITY_STATS = ("n", "lab", "hits")
_GROUP_STATS = ("cnt", "s1", "s2")
PROFILE_FEATURES = ("n_prior", "age_days", "since_last_days", "n_labelled", "hit_rate")
_GLOBAL = "__all__"


class FeatureBuilder:
    """Turns prepared declaration rows into a numeric feature matrix, strictly as of each row's day.

    Parameters (keyword-only, stored as given; validated in :meth:`fit`):

    mapping
        The :class:`~riskengine.mapping.Mapping` of the rows (default: the native manifest schema).
    smoothing
        ``m`` in the smoothed hit rate ``(hits + prior·m) / (n + m)``.
    profiles
        Compute entity profiles (False gives plain categorical and numeric features only).
    min_group_rows
        Earlier rows a group needs before its typical value is used by relative features.
    max_levels, min_level_count
        Categorical columns keep at most ``max_levels`` levels seen at least ``min_level_count``
        times in the training rows; the rest share an "other" code.
    indicator_packs
        Indicator packs to evaluate as features (native schema); ``"default"`` loads the packs
        shipped with the engine, ``None`` uses none.
    """

    def __init__(
        self,
        *,
        mapping: Mapping | None = None,
        smoothing: float = 20.0,
        profiles: bool = True,
        min_group_rows: int = 5,
        max_levels: int = 100,
        min_level_count: int = 10,
        indicator_packs: Any = None,
    ) -> None:
        self.mapping = mapping
        self.smoothing = smoothing
        self.profiles = profiles
        self.min_group_rows = min_group_rows
        self.max_levels = max_levels
        self.min_level_count = min_level_count
        self.indicator_packs = indicator_packs

    # -- sklearn plumbing ---------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in (
            "mapping", "smoothing", "profiles", "min_group_rows", "max_levels", "min_level_count",
            "indicator_packs")}

    def set_params(self, **params: Any) -> FeatureBuilder:
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"unknown parameter {k!r}; valid: {sorted(self.get_params())}")
            setattr(self, k, v)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise NotFittedError("This FeatureBuilder is not fitted yet; call fit(history) first.")

    @property
    def mapping_(self) -> Mapping:
        return self._mapping

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, rows: pd.DataFrame) -> FeatureBuilder:
        """Learn category levels and the history of ``rows`` (prepared by ``Mapping.prepare``)."""
        m = self.mapping if self.mapping is not None else native_mapping()
        if not isinstance(m, Mapping):
            raise ValueError(f"mapping must be a riskengine.mapping.Mapping, got {type(m).__name__}.")
        if self.smoothing < 0:
            raise ValueError(f"smoothing must be >= 0, got {self.smoothing}.")
        if self.max_levels < 1 or self.min_level_count < 1 or self.min_group_rows < 1:
            raise ValueError("max_levels, min_level_count and min_group_rows must be >= 1.")
        self._mapping = m
        _check_prepared(rows)
        self._packs = _resolve_packs(self.indicator_packs) if m.kind == "native" else []

        self.levels_: dict[str, list[str]] = {}
        for col in m.categorical:
            if col not in rows.columns:
                raise ValueError(f"categorical column {col!r} of mapping '{m.name}' is not in the rows.")
            counts = rows[col].astype("string").value_counts(dropna=True)
            counts = counts[counts >= self.min_level_count].head(self.max_levels)
            # Sorted by count, then name, so the codes do not depend on row order.
            lv = sorted(counts.index.astype(str).tolist(), key=lambda v: (-int(counts[v]), v))
            self.levels_[col] = lv

        self.entities_ = list(m.entities) if self.profiles else []
        self.histories_: dict[str, AsOfHistory] = {e.name: AsOfHistory(_ENTITY_STATS) for e in self.entities_}
        self.global_ = AsOfHistory(_ENTITY_STATS)
        self.groups_: dict[str, AsOfHistory] = {r.name: AsOfHistory(_GROUP_STATS) for r in m.relative}
        self.n_history_rows_ = 0
        self.history_start_day_: float = float("nan")
        self.history_end_day_: float = float("nan")
        self.compacted_until_day_: float | None = None
        self._add_history(rows, seen=True)
        self._build_feature_info(rows)
        log.info("FeatureBuilder fitted on %d rows, %d features", len(rows), len(self.feature_names_))
        return self

    def update(self, rows: pd.DataFrame, *, seen: bool = True) -> FeatureBuilder:
        """Add new history without refitting (category levels stay as fitted).

        ``seen=True`` adds the rows as new declarations (and their outcomes where labelled);
        ``seen=False`` adds only the outcomes of rows that are already in the history (e.g. the
        results of today's inspections of containers scored last week).
        """
        self._check_fitted()
        _check_prepared(rows)
        self._add_history(rows, seen=seen)
        return self

    partial_fit = update

    def _add_history(self, rows: pd.DataFrame, *, seen: bool) -> None:
        m = self._mapping
        day = rows[DAY].to_numpy(dtype="float64")
        label = rows[LABEL].to_numpy(dtype="float64") if LABEL in rows.columns else np.full(len(rows), np.nan)
        oday = rows[OUTCOME_DAY].to_numpy(dtype="float64") if OUTCOME_DAY in rows.columns else day
        labelled = ~np.isnan(label)
        n_seen = len(rows) if seen else 0
        # Each row gives a "seen" event on its day and, when labelled, an outcome event on the day
        # its outcome became known; both arrays are stacked so one groupby builds the table.
        lab_days = oday[labelled]
        lab_hits = label[labelled]

        lab_mask = pa.array(labelled)

        def stacked(keys: pa.Array) -> tuple[pa.Array, np.ndarray, dict[str, np.ndarray], np.ndarray]:
            keys = arrow_strings(keys)
            k_seen = keys if seen else keys.slice(0, 0)
            k = pa.concat_arrays([k_seen, keys.filter(lab_mask)])
            d = np.concatenate([day[:n_seen], lab_days])
            vals = {
                "n": np.concatenate([np.ones(n_seen), np.zeros(len(lab_days))]),
                "lab": np.concatenate([np.zeros(n_seen), np.ones(len(lab_days))]),
                "hits": np.concatenate([np.zeros(n_seen), lab_hits]),
            }
            is_seen = np.concatenate([np.ones(n_seen, bool), np.zeros(len(lab_days), bool)])
            return k, d, vals, is_seen

        const = pa.array(np.full(len(rows), _GLOBAL, dtype=object), type=pa.large_string())
        self.global_.add(*stacked(const))
        for e in self.entities_:
            self.histories_[e.name].add(*stacked(entity_keys(rows, e.columns)))
        if seen:
            for r in m.relative:
                lv = _log_positive(rows[r.value])
                ok = np.isfinite(lv)
                g = pc.if_else(pa.array(ok), arrow_strings(rows[r.group]), pa.scalar(None, pa.large_string()))
                self.groups_[r.name].add(g, day, {"cnt": ok.astype(float), "s1": np.where(ok, lv, 0.0),
                                                  "s2": np.where(ok, lv * lv, 0.0)})
            self.n_history_rows_ += len(rows)
            if len(rows):
                lo, hi = float(np.nanmin(day)), float(np.nanmax(day))
                self.history_start_day_ = lo if np.isnan(self.history_start_day_) else min(lo, self.history_start_day_)
                self.history_end_day_ = hi if np.isnan(self.history_end_day_) else max(hi, self.history_end_day_)

    # -- transform ------------------------------------------------------------------------------
    def transform(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Feature matrix (float32, columns ``feature_names_``) for prepared rows, as of each row's day."""
        self._check_fitted()
        _check_prepared(rows)
        m = self._mapping
        missing = [c for c in self.required_columns_ if c not in rows.columns]
        if missing:
            raise ValueError(
                f"rows lack {len(missing)} column(s) the features need: missing {missing}. "
                "Prepare raw tables with Mapping.prepare (or the model's prepare) first."
            )
        n = len(rows)
        day = rows[DAY].to_numpy(dtype="float64")
        if self.compacted_until_day_ is not None and n:
            early = int((day <= self.compacted_until_day_).sum())
            if early:
                log.warning(
                    "%d row(s) are dated on or before the end of the saved history (%s); their "
                    "profiles include everything known at that date, not strictly as of their own day",
                    early, _day_str(self.compacted_until_day_))
        cols: dict[str, np.ndarray] = {}
        for col in m.categorical:
            cols[f"cat.{slug(col)}"] = _encode(rows[col], self.levels_[col])
        for col in m.numeric:
            cols[f"num.{slug(col)}"] = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype="float64")

        entity_lookups: dict[str, dict[str, np.ndarray]] = {}
        if self.entities_:
            g = self.global_.lookup(pa.array(np.full(n, _GLOBAL, dtype=object), type=pa.large_string()), day)
            with np.errstate(invalid="ignore", divide="ignore"):
                prior = np.where(g["lab"] > 0, g["hits"] / g["lab"], np.nan)
            msm = float(self.smoothing)
            for e in self.entities_:
                h = self.histories_[e.name].lookup(entity_keys(rows, e.columns), day)
                entity_lookups[e.name] = h
                miss = h["key_missing"]
                p = f"prof.{e.name}."
                n_prior = np.where(miss, np.nan, h["n"])
                age = np.where(np.isnan(h["first"]), 0.0, day - h["first"])
                since = day - h["last"]
                lab = h["lab"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    rate = (h["hits"] + prior * msm) / (lab + msm)
                cols[p + "n_prior"] = n_prior
                cols[p + "age_days"] = np.where(miss, np.nan, age)
                cols[p + "since_last_days"] = np.where(miss, np.nan, since)
                cols[p + "n_labelled"] = np.where(miss, np.nan, lab)
                cols[p + "hit_rate"] = np.where(miss, np.nan, rate)

        for r in m.relative:
            lv = _log_positive(rows[r.value])
            h = self.groups_[r.name].lookup(arrow_strings(rows[r.group]), day)
            cnt = h["cnt"]
            enough = cnt >= self.min_group_rows
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = h["s1"] / cnt
                std = np.sqrt(np.maximum(h["s2"] / cnt - mean * mean, 0.0))
                ratio = np.where(enough, lv - mean, np.nan)
                z = np.where(enough, np.clip(ratio / np.maximum(std, 0.01), -50, 50), np.nan)
            cols[f"rel.{r.name}.log_ratio"] = ratio
            cols[f"rel.{r.name}.z"] = z

        if self._packs:
            frame = rows.assign(**_history_fields(entity_lookups, day))
            cols.update(_indicator_features(self._packs, frame, self.indicator_ids_))

        X = pd.DataFrame({k: cols[k] for k in self.feature_names_}, index=rows.index)
        return X.astype("float32")

    def fit_transform(self, rows: pd.DataFrame) -> pd.DataFrame:
        """``fit(rows).transform(rows)``: the as-of features of the training rows themselves."""
        return self.fit(rows).transform(rows)

    # -- metadata -------------------------------------------------------------------------------
    def _build_feature_info(self, rows: pd.DataFrame) -> None:
        m = self._mapping
        info: dict[str, dict[str, Any]] = {}
        for col in m.categorical:
            info[f"cat.{slug(col)}"] = {"kind": "categorical", "column": col, "label": _words(col)}
        for col in m.numeric:
            info[f"num.{slug(col)}"] = {"kind": "numeric", "column": col, "label": _words(col)}
        for e in self.entities_:
            for stat in PROFILE_FEATURES:
                info[f"prof.{e.name}.{stat}"] = {"kind": "profile", "entity": e.name, "stat": stat,
                                                 "label": e.label}
        for r in m.relative:
            for stat in ("log_ratio", "z"):
                info[f"rel.{r.name}.{stat}"] = {"kind": "relative", "stat": stat, "label": r.label,
                                                "group": _words(r.group)}
        self.indicator_ids_: list[str] = []
        if self._packs:
            ind_info = _indicator_info(self._packs)
            self.indicator_ids_ = list(ind_info)
            for iid, meta in ind_info.items():
                info[f"ind.{iid}"] = {"kind": "indicator", "id": iid, **meta}
            info["ind._count"] = {"kind": "indicator_count", "label": "indicator hits"}
        self.feature_info_ = info
        self.feature_names_ = list(info)
        self.categorical_features_ = [f for f, v in info.items() if v["kind"] == "categorical"]
        req: list[str] = [DAY, *m.categorical, *m.numeric]
        for e in self.entities_:
            req.extend(e.columns)
        for r in m.relative:
            req.extend([r.value, r.group])
        self.required_columns_ = list(dict.fromkeys(req))

    def describe_history(self) -> dict[str, Any]:
        """Sizes of the fitted history (rows, window, keys per entity)."""
        self._check_fitted()
        return {
            "rows": int(self.n_history_rows_),
            "start": _day_str(self.history_start_day_),
            "end": _day_str(self.history_end_day_),
            "labelled": int(self.global_.total()["lab"]),
            "positives": int(self.global_.total()["hits"]),
            "keys": {name: h.n_keys for name, h in self.histories_.items()},
        }

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path, *, compact: bool = True) -> Path:
        """Write the fitted state to a folder: ``state.json`` plus one Parquet table per history.

        ``compact=True`` collapses the history up to its last declaration day into one row per
        key (outcomes known later stay separate), which keeps the folder small; rows scored later
        get exactly the same profiles.
        """
        self._check_fitted()
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        # Tables and packs of an earlier save would be read back with this state: remove them.
        for old in [*out.glob("*.parquet"), *(out / "packs").glob("*.yaml")]:
            old.unlink()
        cutoff = None if np.isnan(self.history_end_day_) else int(self.history_end_day_)
        tables = {"global": self.global_, **{f"entity_{k}": v for k, v in self.histories_.items()},
                  **{f"group_{k}": v for k, v in self.groups_.items()}}
        for name, h in tables.items():
            if compact and cutoff is not None:
                h = h.compacted(cutoff)
            h.to_frame().to_parquet(out / f"{name}.parquet", index=False, compression="zstd")
        compacted_until = self.compacted_until_day_
        if compact and cutoff is not None:
            compacted_until = float(cutoff if compacted_until is None else max(compacted_until, cutoff))
        pack_sha256 = _save_packs(self._packs, out / "packs") if self._packs else {}
        state = {
            "format_version": FORMAT_VERSION,
            "params": {k: v for k, v in self.get_params().items() if k not in ("mapping", "indicator_packs")},
            "mapping": self._mapping.to_dict(),
            "levels": self.levels_,
            "entities": [e.to_dict() for e in self.entities_],
            "feature_names": self.feature_names_,
            "feature_info": self.feature_info_,
            "categorical_features": self.categorical_features_,
            "required_columns": self.required_columns_,
            "indicator_ids": self.indicator_ids_,
            "n_history_rows": self.n_history_rows_,
            "history_start_day": _nan_to_none(self.history_start_day_),
            "history_end_day": _nan_to_none(self.history_end_day_),
            "compacted_until_day": compacted_until,
            "tables": sorted(tables),
            "pack_sha256": pack_sha256,
        }
        (out / STATE_FILE).write_text(json.dumps(state, indent=1, ensure_ascii=False), encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> FeatureBuilder:
        """Read a folder written by :meth:`save`."""
        p = Path(path)
        sf = p / STATE_FILE
        if not sf.exists():
            raise FileNotFoundError(f"no feature state in {p}: expected {sf} (written by FeatureBuilder.save).")
        state = json.loads(sf.read_text(encoding="utf-8"))
        if state.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{sf}: format version {state.get('format_version')} is not supported "
                             f"(expected {FORMAT_VERSION}); retrain the model with this version.")
        mapping = Mapping.from_dict(state["mapping"], source=str(sf))
        packs = _load_packs(p / "packs", state.get("pack_sha256")) if state["indicator_ids"] else []
        fb = cls(mapping=mapping, **state["params"], indicator_packs=packs or None)
        fb._mapping = mapping
        fb._packs = packs
        fb.levels_ = state["levels"]
        from riskengine.mapping import Entity

        fb.entities_ = [Entity(name=e["name"], columns=tuple(e["columns"]), label=e["label"]) for e in state["entities"]]
        fb.global_ = AsOfHistory.from_frame(pd.read_parquet(p / "global.parquet"), _ENTITY_STATS)
        fb.histories_ = {e.name: AsOfHistory.from_frame(pd.read_parquet(p / f"entity_{e.name}.parquet"), _ENTITY_STATS)
                         for e in fb.entities_}
        fb.groups_ = {r.name: AsOfHistory.from_frame(pd.read_parquet(p / f"group_{r.name}.parquet"), _GROUP_STATS)
                      for r in mapping.relative}
        fb.feature_names_ = state["feature_names"]
        fb.feature_info_ = state["feature_info"]
        fb.categorical_features_ = state["categorical_features"]
        fb.required_columns_ = state["required_columns"]
        fb.indicator_ids_ = state["indicator_ids"]
        fb.n_history_rows_ = state["n_history_rows"]
        fb.history_start_day_ = _none_to_nan(state["history_start_day"])
        fb.history_end_day_ = _none_to_nan(state["history_end_day"])
        fb.compacted_until_day_ = state["compacted_until_day"]
        if fb.indicator_ids_:
            in_force = _indicator_info(packs)
            every = {str(ind.id) for pack in packs for ind in pack.indicators}  # models saved before the merge
            if sorted(fb.indicator_ids_) not in (sorted(in_force), sorted(every)):
                raise ValueError(f"{p / 'packs'}: the saved indicator packs do not match the features "
                                 f"({len(fb.indicator_ids_)} indicators expected); the model folder is incomplete.")
            for iid, meta in in_force.items():  # models saved before markings were recorded
                fb.feature_info_.get(f"ind.{iid}", {}).setdefault("tlp", meta["tlp"])
        return fb


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _check_prepared(rows: pd.DataFrame) -> None:
    if not isinstance(rows, pd.DataFrame):
        raise ValueError(f"expected a pandas DataFrame of prepared rows, got {type(rows).__name__}.")
    if DAY not in rows.columns:
        raise ValueError(
            f"rows have no '{DAY}' column: pass rows prepared by Mapping.prepare(raw) "
            "(which validates them and adds the day, label and outcome-day columns)."
        )


def _encode(s: pd.Series, levels: list[str]) -> np.ndarray:
    """Codes 0..L-1 for known levels, L for any other value, NaN for missing."""
    text = arrow_strings(s)
    value_set = pa.array(levels, type=pa.large_string())
    idx = pc.fill_null(pc.index_in(text, value_set=value_set), -1).to_numpy().astype("float64")
    idx[idx < 0] = len(levels)
    idx[text.is_null().to_numpy(zero_copy_only=False)] = np.nan
    return idx


def _log_positive(s: pd.Series) -> np.ndarray:
    v = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(v)
    out[~(v > 0) | ~np.isfinite(out)] = np.nan
    return out


def _words(col: str) -> str:
    return str(col).replace("_", " ")


def _day_str(day: float | None) -> str | None:
    if day is None or (isinstance(day, float) and np.isnan(day)):
        return None
    return str(np.datetime64("1970-01-01") + np.timedelta64(int(day), "D"))


def _nan_to_none(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def _none_to_nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


# --------------------------------------------------------------------------------------------
# indicator packs (native schema)
# --------------------------------------------------------------------------------------------

def _history_fields(lookups: dict[str, dict[str, np.ndarray]], day: np.ndarray) -> dict[str, np.ndarray]:
    """Party-history fields for the indicator packs, taken from the fitted history.

    :mod:`riskengine.derived` can only compute these from the rows of one frame, which makes every
    consignee of a one-day batch look new; the as-of history gives the same values at training
    and at scoring time.
    """
    from riskengine.derived import NEW_COMMODITY_MIN_PRIOR

    out: dict[str, np.ndarray] = {}
    c = lookups.get("consignee")
    if c is None:
        return out
    miss = c["key_missing"]
    first_days = np.where(np.isnan(c["first"]), 0.0, day - c["first"])
    out["party_first_seen_days"] = np.where(miss, np.nan, first_days)
    out["consignee_prior_shipments"] = np.where(miss, np.nan, c["n"])
    pair = lookups.get("consignee_x_hs2")
    if pair is not None:
        new = (c["n"] >= NEW_COMMODITY_MIN_PRIOR) & (pair["n"] == 0) & ~pair["key_missing"]
        out["consignee_new_commodity"] = new & ~miss
    return out


def _resolve_packs(spec: Any) -> list[Any]:
    if spec is None:
        return []
    from riskengine import indicators

    if isinstance(spec, str):
        if spec != "default":
            raise ValueError(f"indicator_packs must be 'default', None or a list of packs, got {spec!r}.")
        return list(indicators.default_packs())
    return list(spec)


def _indicator_info(packs: list[Any]) -> dict[str, dict[str, Any]]:
    """Indicator id → {label, title, rationale, pack, tlp} of the indicators in force.

    The indicators are those the evaluation uses (packs merged: the highest version of a pack,
    the highest version of an indicator), each with the TLP marking of the pack version it came
    from, so a reason never names an indicator by the title of another version.
    """
    from riskengine.indicators import IndicatorPack, merge_packs

    if packs and all(isinstance(p, IndicatorPack) for p in packs):
        in_force = list(merge_packs(packs).indicators)
    else:  # duck-typed packs (tests): every indicator, the last one of an id wins
        in_force = [ind for pack in packs for ind in pack.indicators]
    info: dict[str, dict[str, Any]] = {}
    for ind in in_force:
        info[str(ind.id)] = {
            "label": f"indicator {ind.id}",
            "title": str(getattr(ind, "title", "") or ""),
            "rationale": str(getattr(ind, "rationale", "") or ""),
            "pack": str(getattr(ind, "pack_id", "")),
            "tlp": str(getattr(ind, "pack_tlp", "RED")),
        }
    return info


def _indicator_features(packs: list[Any], rows: pd.DataFrame, ids: list[str]) -> dict[str, np.ndarray]:
    from riskengine.indicators import evaluate

    hits = evaluate(packs, rows)
    mat = hits.matrix
    out: dict[str, np.ndarray] = {}
    count = np.zeros(len(rows))
    for iid in ids:
        v = mat[iid].to_numpy(dtype="float64") if iid in mat.columns else np.zeros(len(rows))
        out[f"ind.{iid}"] = v
        count += v
    out["ind._count"] = count
    return out


def _save_packs(packs: list[Any], folder: Path) -> dict[str, str]:
    """Write the packs; return file name → SHA-256 of the written bytes (checked at load)."""
    from riskengine import indicators
    from riskengine.indicators.signing import pack_file_digests

    folder.mkdir(parents=True, exist_ok=True)
    files = [indicators.dump_pack(pack, folder / f"{i:02d}_{slug(str(getattr(pack, 'id', 'pack')))}.yaml")
             for i, pack in enumerate(packs)]
    return pack_file_digests(files)


def _load_packs(folder: Path, recorded: dict[str, str] | None) -> list[Any]:
    """The model's packs, checked against the digests recorded at save (``None``: not recorded,
    loaded with a warning)."""
    from riskengine.indicators.signing import load_model_packs

    return load_model_packs(folder, recorded)
