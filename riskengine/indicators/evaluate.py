"""Evaluating indicators on manifests, column-wise, and summarising the hits."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from riskengine.indicators.conditions import frame_for
from riskengine.indicators.merge import MergeConflict, MergedIndicators, merge_packs
from riskengine.indicators.pack import Indicator, IndicatorPack

log = logging.getLogger(__name__)

__all__ = ["IndicatorHits", "evaluate", "resolve_indicators"]


def _join_ids(matrix: np.ndarray, ids: list[str]) -> np.ndarray:
    """";"-joined ids of the true columns per row. Rows share few distinct hit patterns, so the
    strings are built once per distinct pattern and spread back to the rows."""
    n, k = matrix.shape
    if n == 0:
        return np.array([], dtype=object)
    if k == 0:
        return np.full(n, "", dtype=object)
    packed = np.packbits(matrix, axis=1)
    if packed.shape[1] <= 8:  # up to 64 indicators: one integer per row, hashed (fast)
        as_int = np.zeros((n, 8), dtype=np.uint8)
        as_int[:, : packed.shape[1]] = packed
        inverse, uniq = pd.factorize(as_int.view(np.uint64).reshape(-1))
        patterns = np.asarray(uniq, dtype=np.uint64).view(np.uint8).reshape(-1, 8)
    else:
        patterns, inverse = np.unique(packed, axis=0, return_inverse=True)
    names = np.asarray(ids, dtype=object)
    bits = np.unpackbits(patterns, axis=1)[:, :k].astype(bool)
    labels = np.array([";".join(names[row]) for row in bits], dtype=object)
    return labels[np.asarray(inverse).reshape(-1)]


@dataclass(frozen=True, eq=False)
class IndicatorHits:
    """Which indicator fired on which row.

    ``matrix``: bool frame, one column per indicator id, index aligned with the manifests.
    ``hit_ids``: the ids that fired per row joined by ";" ("" when none).
    ``indicators``: the indicators evaluated (their rationale is what an officer reads).
    ``conflicts``: merge conflicts between the packs, if any.
    """

    matrix: pd.DataFrame
    hit_ids: pd.Series
    indicators: tuple[Indicator, ...]
    conflicts: tuple[MergeConflict, ...] = ()

    def __len__(self) -> int:
        return len(self.matrix)

    def indicator(self, indicator_id: str) -> Indicator:
        for ind in self.indicators:
            if ind.id == indicator_id:
                return ind
        raise KeyError(f"no indicator {indicator_id!r}; evaluated: {list(self.matrix.columns)}")

    def counts(self) -> pd.Series:
        """Rows hit per indicator (int, indexed by indicator id, in evaluation order)."""
        return self.matrix.sum(axis=0).astype(np.int64).rename("hits")

    def n_hits(self) -> pd.Series:
        """Number of indicators that fired per row."""
        return self.matrix.sum(axis=1).astype(np.int64).rename("n_hits")

    def any_hit(self) -> pd.Series:
        """True where at least one indicator fired."""
        return self.matrix.any(axis=1).rename("any_hit")

    def max_severity(self) -> pd.Series:
        """Highest severity score (0..10) among the indicators that fired per row, 0 when none."""
        scores = np.array([i.severity.score for i in self.indicators], dtype=np.float64)
        m = self.matrix.to_numpy(dtype=bool)
        out = np.where(m, scores, 0.0).max(axis=1) if m.shape[1] else np.zeros(len(m))
        return pd.Series(out, index=self.matrix.index, name="max_severity")

    def reasons(self, label) -> list[Indicator]:
        """The indicators that fired on the row with index ``label``, most severe first."""
        row = self.matrix.loc[label]
        if isinstance(row, pd.DataFrame):
            raise KeyError(f"index label {label!r} is not unique; reset the index of the manifests")
        fired = [self.indicator(i) for i in row.index[row.to_numpy(dtype=bool)]]
        return sorted(fired, key=lambda i: -i.severity.score)

    def summary(self, truth: pd.Series | None = None) -> pd.DataFrame:
        """One row per indicator: hits and hit rate; with ``truth`` (1 = illicit, 0 = licit,
        missing = unlabelled, aligned with the manifests) also the hit rate on illicit and on
        licit rows and the precision (share of labelled hits that are illicit; NaN with no
        labelled hit)."""
        n = len(self.matrix)
        counts = self.counts()
        out = pd.DataFrame({
            "title": [i.title for i in self.indicators],
            "severity": [str(i.severity) for i in self.indicators],
            "severity_score": [i.severity.score for i in self.indicators],
            "pack": [i.pack_id for i in self.indicators],
            "version": [str(i.version) for i in self.indicators],
            "hits": counts.to_numpy(),
            "hit_rate": counts.to_numpy() / n if n else np.full(len(counts), np.nan),
        }, index=pd.Index(list(self.matrix.columns), name="id"))
        if truth is not None:
            pos, neg = self._labels(truth)
            m = self.matrix.to_numpy(dtype=bool)
            hit_pos = m[pos].sum(axis=0)
            hit_neg = m[neg].sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                out["illicit_hit_rate"] = hit_pos / pos.sum() if pos.any() else np.nan
                out["licit_hit_rate"] = hit_neg / neg.sum() if neg.any() else np.nan
                labelled_hits = hit_pos + hit_neg
                out["precision"] = np.where(labelled_hits > 0, hit_pos / np.maximum(labelled_hits, 1), np.nan)
        return out

    def coverage(self, truth: pd.Series | None = None) -> dict:
        """Rows with at least one hit; with ``truth`` also the share of illicit rows caught (recall
        of "any indicator"), of licit rows flagged, and the precision of "any indicator"."""
        any_hit = self.any_hit().to_numpy(dtype=bool)
        n = len(any_hit)
        out: dict = {"rows": n, "hits": int(any_hit.sum()),
                     "hit_rate": float(any_hit.mean()) if n else float("nan")}
        if truth is not None:
            pos, neg = self._labels(truth)
            hp, hn = int(any_hit[pos].sum()), int(any_hit[neg].sum())
            out.update({
                "illicit_rows": int(pos.sum()),
                "licit_rows": int(neg.sum()),
                "illicit_hit_rate": hp / pos.sum() if pos.any() else float("nan"),
                "licit_hit_rate": hn / neg.sum() if neg.any() else float("nan"),
                "precision": hp / (hp + hn) if hp + hn else float("nan"),
            })
        return out

    def _labels(self, truth: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        if len(truth) != len(self.matrix):
            raise ValueError(f"truth has {len(truth)} rows but the hits have {len(self.matrix)}; "
                             "pass the label column of the same manifests")
        t = pd.to_numeric(pd.Series(np.asarray(truth, dtype=object)), errors="coerce").to_numpy(dtype=float)
        bad = ~np.isnan(t) & ~np.isin(t, (0.0, 1.0))
        if bad.any():
            raise ValueError(f"truth must be 0 (licit), 1 (illicit) or missing; got e.g. "
                             f"{sorted(set(t[bad].tolist()))[:5]}")
        return t == 1.0, t == 0.0


def resolve_indicators(
    packs: IndicatorPack | MergedIndicators | Iterable[IndicatorPack],
    *,
    strict: bool = False,
) -> MergedIndicators:
    """Turn a pack, several packs or an already merged set into :class:`MergedIndicators`."""
    if isinstance(packs, MergedIndicators):
        return packs
    if isinstance(packs, IndicatorPack):
        packs = [packs]
    return merge_packs(packs, strict=strict)


def evaluate(
    packs: IndicatorPack | MergedIndicators | Iterable[IndicatorPack],
    df: pd.DataFrame,
    *,
    first_seen: Mapping[str, pd.Timestamp] | None = None,
    strict: bool = False,
) -> IndicatorHits:
    """Evaluate every indicator on every row of ``df`` (vectorised).

    Derived fields the indicators need and ``df`` lacks are computed (``first_seen`` is passed to
    :func:`riskengine.derived.add_derived_fields`); ``df`` is not modified. An indicator outside
    its ``valid_from``/``valid_until`` window at a row's ``filed_at`` does not fire there.
    Several packs are merged first (see :func:`merge_packs`; ``strict`` makes conflicts errors).

    >>> from riskengine.indicators import default_packs
    >>> hits = evaluate(default_packs(), manifests)                    # doctest: +SKIP
    >>> hits.counts().head()                                           # doctest: +SKIP
    """
    merged = resolve_indicators(packs, strict=strict)
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"evaluate expects a pandas DataFrame of manifests, got {type(df).__name__}")
    indicators = merged.indicators
    needed: set[str] = set().union(*(i.fields() for i in indicators)) if indicators else set()
    windows = any(i.has_window for i in indicators)
    if windows:
        needed.add("filed_at")
    frame = frame_for(df, needed, first_seen=first_seen)
    filed = frame.values("filed_at")[0] if windows else None
    columns: dict[str, np.ndarray] = {}
    for ind in indicators:
        hit = ind.condition.evaluate(frame)
        if ind.has_window:
            hit = hit & ind.active_at(filed)
        columns[ind.id] = hit
    ids = [i.id for i in indicators]
    matrix = pd.DataFrame(columns, index=df.index, columns=ids)
    matrix = matrix.astype(bool) if ids else matrix
    hit_ids = pd.Series(_join_ids(matrix.to_numpy(dtype=bool), ids), index=df.index,
                        name="hit_ids", dtype="str")
    log.info("evaluated %d indicator(s) on %d row(s): %d row(s) with a hit", len(ids), len(df),
             int((hit_ids != "").sum()))
    return IndicatorHits(matrix=matrix, hit_ids=hit_ids, indicators=indicators,
                         conflicts=merged.conflicts)
