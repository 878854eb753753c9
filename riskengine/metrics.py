"""Metrics for risk scores: how well does a score rank and how honest are its probabilities.

A targeting centre can inspect only a small share of the containers, so the headline metrics are
taken at a budget: ``precision_at_k(y, s, 5)`` is the share of hits among the 5% highest scores.
``k_pct`` is always a percentage (5 means 5%). The top ``k`` rows are the ``round(n * k_pct / 100)``
highest scores (at least one); ties are broken by input order, so results are deterministic.

Example
-------
>>> precision_at_k([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], 50)
0.5
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ArrayLike = Sequence[float] | np.ndarray | pd.Series

__all__ = [
    "brier",
    "plot_reliability",
    "pr_auc",
    "precision_at_k",
    "recall_at_k",
    "reliability_curve",
    "revenue_at_k",
    "roc_auc",
    "summary",
    "top_k_mask",
]


def _labels(y: ArrayLike, name: str = "y") -> np.ndarray:
    arr = np.asarray(y, dtype="float64").ravel()
    if np.isnan(arr).any():
        raise ValueError(
            f"{name} has {int(np.isnan(arr).sum())} missing label(s); metrics need 0/1 labels. "
            "Drop unlabelled rows (e.g. uninspected containers) before computing metrics."
        )
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        raise ValueError(
            f"{name} must hold only 0 and 1, got {np.unique(arr[bad])[:5].tolist()}; "
            "map the label to 0/1 first."
        )
    return arr.astype(np.int8)


def _scores(s: ArrayLike, n: int, name: str = "s") -> np.ndarray:
    arr = np.asarray(s, dtype="float64").ravel()
    if len(arr) != n:
        raise ValueError(f"{name} has {len(arr)} values but the labels have {n}; pass one score per row.")
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{name} has {int((~np.isfinite(arr)).sum())} missing or infinite value(s); "
            "every row needs a finite score."
        )
    return arr


def _k_rows(n: int, k_pct: float) -> int:
    if not 0 < k_pct <= 100:
        raise ValueError(f"k_pct is a percentage in (0, 100], got {k_pct}.")
    return max(1, int(round(n * k_pct / 100.0)))


def top_k_mask(s: ArrayLike, k_pct: float) -> np.ndarray:
    """Boolean mask of the ``k_pct`` percent highest scores (ties broken by input order)."""
    arr = np.asarray(s, dtype="float64").ravel()
    if len(arr) == 0:
        raise ValueError("no scores given; metrics need at least one row.")
    k = _k_rows(len(arr), k_pct)
    # A stable sort of the negated scores keeps equal scores in input order.
    order = np.argsort(-arr, kind="stable")
    mask = np.zeros(len(arr), dtype=bool)
    mask[order[:k]] = True
    return mask


def precision_at_k(y: ArrayLike, s: ArrayLike, k_pct: float) -> float:
    """Share of positives among the ``k_pct`` percent highest-scored rows.

    >>> precision_at_k([0, 1, 1, 0, 0], [0.1, 0.9, 0.2, 0.8, 0.3], 40)
    0.5
    """
    yy = _labels(y)
    mask = top_k_mask(_scores(s, len(yy)), k_pct)
    return float(yy[mask].mean())


def recall_at_k(y: ArrayLike, s: ArrayLike, k_pct: float) -> float:
    """Share of all positives found among the ``k_pct`` percent highest-scored rows."""
    yy = _labels(y)
    if yy.sum() == 0:
        raise ValueError("recall needs at least one positive label; the labels are all 0.")
    mask = top_k_mask(_scores(s, len(yy)), k_pct)
    return float(yy[mask].sum() / yy.sum())


def revenue_at_k(y: ArrayLike, s: ArrayLike, value: ArrayLike, k_pct: float) -> float:
    """Share of the value at stake on positive rows that the top ``k_pct`` percent recover.

    ``value`` is the amount recovered when a positive row is caught (e.g. the duty or the declared
    value). ``sum(value[top & y]) / sum(value[y])``.
    """
    yy = _labels(y)
    vv = np.asarray(value, dtype="float64").ravel()
    if len(vv) != len(yy):
        raise ValueError(f"value has {len(vv)} entries but the labels have {len(yy)}; pass one value per row.")
    vv = np.nan_to_num(vv, nan=0.0)
    total = float(vv[yy == 1].sum())
    if total <= 0:
        raise ValueError("revenue needs positive rows with a positive value; their total value is 0.")
    mask = top_k_mask(_scores(s, len(yy)), k_pct)
    return float(vv[mask & (yy == 1)].sum() / total)


def roc_auc(y: ArrayLike, s: ArrayLike) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative.

    Ties count one half (Mann-Whitney U with average ranks).
    """
    yy = _labels(y)
    ss = _scores(s, len(yy))
    n_pos = int(yy.sum())
    n_neg = len(yy) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC-AUC needs both classes; got {n_pos} positive and {n_neg} negative rows.")
    ranks = pd.Series(ss).rank(method="average").to_numpy()
    u = ranks[yy == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_auc(y: ArrayLike, s: ArrayLike) -> float:
    """Area under the precision-recall curve as average precision.

    ``sum_k (R_k - R_{k-1}) * P_k`` over the distinct score thresholds, highest first (rows with
    equal scores enter together), as in scikit-learn's ``average_precision_score``.
    """
    yy = _labels(y)
    ss = _scores(s, len(yy))
    n_pos = int(yy.sum())
    if n_pos == 0:
        raise ValueError("average precision needs at least one positive label; the labels are all 0.")
    order = np.argsort(-ss, kind="stable")
    ys, ss = yy[order], ss[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1 - ys)
    # Keep the last position of each run of equal scores: a threshold takes the whole run.
    last = np.r_[ss[1:] != ss[:-1], True]
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def brier(y: ArrayLike, p: ArrayLike) -> float:
    """Mean squared error of probabilities against 0/1 outcomes (lower is better)."""
    yy = _labels(y)
    pp = _scores(p, len(yy), "p")
    if (pp < 0).any() or (pp > 1).any():
        raise ValueError("brier needs probabilities in [0, 1]; got values outside. Calibrate the score first.")
    return float(np.mean((pp - yy) ** 2))


def reliability_curve(
    y: ArrayLike, p: ArrayLike, *, n_bins: int = 10, strategy: str = "quantile"
) -> pd.DataFrame:
    """Observed positive rate against the mean predicted probability, per bin.

    ``strategy="uniform"`` cuts [0, 1] into equal-width bins; ``"quantile"`` puts about the same
    number of rows in each bin (better when most probabilities are small, as for rare events).
    Returns one row per non-empty bin: ``bin_low``, ``bin_high``, ``mean_predicted``,
    ``observed_rate``, ``count``, ``positives``.
    """
    yy = _labels(y)
    pp = _scores(p, len(yy), "p")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}.")
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(pp, np.linspace(0.0, 1.0, n_bins + 1)))
        if len(edges) == 1:
            edges = np.array([edges[0], edges[0]])
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}.")
    # Bin i holds edges[i] <= p < edges[i+1]; the last bin also takes p == edges[-1].
    idx = np.clip(np.searchsorted(edges, pp, side="right") - 1, 0, len(edges) - 2)
    frame = pd.DataFrame({"bin": idx, "p": pp, "y": yy})
    g = frame.groupby("bin", sort=True)
    out = pd.DataFrame({
        "mean_predicted": g["p"].mean(),
        "observed_rate": g["y"].mean(),
        "count": g["y"].size(),
        "positives": g["y"].sum(),
    })
    out.insert(0, "bin_high", edges[out.index.to_numpy() + 1])
    out.insert(0, "bin_low", edges[out.index.to_numpy()])
    return out.reset_index(drop=True)


def plot_reliability(
    curves: pd.DataFrame | dict[str, pd.DataFrame],
    path: str | Path,
    *,
    title: str = "Reliability",
) -> Path:
    """Save a reliability diagram (PNG or SVG by extension) of one or several curves.

    ``curves`` is a frame from :func:`reliability_curve` or a dict ``{label: frame}``. The point
    size follows the number of rows in the bin; the diagonal is perfect calibration.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    if isinstance(curves, pd.DataFrame):
        curves = {"model": curves}
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    top = 0.0
    for label, c in curves.items():
        sizes = 20 + 180 * c["count"] / max(float(c["count"].max()), 1.0)
        ax.plot(c["mean_predicted"], c["observed_rate"], "-", lw=1.2, label=label)
        ax.scatter(c["mean_predicted"], c["observed_rate"], s=sizes, alpha=0.6)
        top = max(top, float(c["mean_predicted"].max()), float(c["observed_rate"].max()))
    lim = min(1.0, max(0.05, top * 1.1))
    ax.plot([0, lim], [0, lim], "k--", lw=0.8, label="perfect calibration")
    ax.set_xlim(0, lim)
    ax.set_ylim(0, lim)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed rate")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def summary(
    y: ArrayLike,
    s: ArrayLike,
    *,
    k_pcts: Iterable[float] = (1, 2, 5, 10),
    value: ArrayLike | None = None,
    probabilities: bool = True,
) -> dict[str, Any]:
    """All headline metrics in one dict (keys like ``precision_at_5``, ``roc_auc``, ``brier``).

    ``probabilities=False`` skips the Brier score for scores that are not probabilities.
    """
    yy = _labels(y)
    ss = _scores(s, len(yy))
    out: dict[str, Any] = {"rows": int(len(yy)), "positives": int(yy.sum())}
    out["positive_rate"] = float(yy.mean()) if len(yy) else float("nan")
    for k in k_pcts:
        tag = f"{k:g}".replace(".", "_")
        out[f"precision_at_{tag}"] = precision_at_k(yy, ss, k)
        out[f"recall_at_{tag}"] = recall_at_k(yy, ss, k) if yy.sum() else float("nan")
        if value is not None:
            out[f"revenue_at_{tag}"] = revenue_at_k(yy, ss, value, k)
    has_both = 0 < yy.sum() < len(yy)
    out["roc_auc"] = roc_auc(yy, ss) if has_both else float("nan")
    out["pr_auc"] = pr_auc(yy, ss) if yy.sum() else float("nan")
    if probabilities:
        out["brier"] = brier(yy, ss)
    return out
