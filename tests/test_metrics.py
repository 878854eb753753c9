"""Metrics on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from riskengine import metrics

Y = [0, 1, 1, 0, 0]
S = [0.1, 0.9, 0.2, 0.8, 0.3]


def test_precision_and_recall_at_k_by_hand():
    # 40% of 5 rows = 2 rows: scores 0.9 (hit) and 0.8 (miss).
    assert metrics.precision_at_k(Y, S, 40) == 0.5
    assert metrics.recall_at_k(Y, S, 40) == 0.5
    # 100%: every row, precision = base rate, recall = 1.
    assert metrics.precision_at_k(Y, S, 100) == pytest.approx(0.4)
    assert metrics.recall_at_k(Y, S, 100) == 1.0
    # A tiny budget still selects one row.
    assert metrics.precision_at_k(Y, S, 1) == 1.0


def test_ties_are_broken_by_input_order():
    # Equal scores: the first row in input order is selected.
    assert metrics.precision_at_k([1, 0], [0.5, 0.5], 50) == 1.0
    assert metrics.precision_at_k([0, 1], [0.5, 0.5], 50) == 0.0


def test_revenue_at_k_by_hand():
    value = [10, 100, 50, 5, 1]
    # Positives hold 100 + 50 = 150; the top 2 catch the 100.
    assert metrics.revenue_at_k(Y, S, value, 40) == pytest.approx(100 / 150)


def test_roc_auc_by_hand():
    # Positive 0.9 beats all three negatives, 0.2 beats only 0.1: 4 of 6 pairs.
    assert metrics.roc_auc(Y, S) == pytest.approx(4 / 6)
    assert metrics.roc_auc([1, 0], [0.5, 0.5]) == 0.5
    assert metrics.roc_auc([1, 0], [0.9, 0.1]) == 1.0


def test_pr_auc_by_hand_and_against_sklearn():
    # Ranked: 1, 0, 0, 1, 0 -> precision at the positives 1/1 and 2/4 -> AP = 0.75.
    assert metrics.pr_auc(Y, S) == pytest.approx(0.75)
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200), 1)  # many ties
    assert metrics.pr_auc(y, s) == pytest.approx(average_precision_score(y, s))


def test_brier_by_hand():
    assert metrics.brier([1, 0], [0.8, 0.4]) == pytest.approx((0.2**2 + 0.4**2) / 2)
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        metrics.brier([1, 0], [1.5, 0.0])


def test_reliability_curve_by_hand():
    curve = metrics.reliability_curve([0, 1, 1, 1], [0.1, 0.2, 0.7, 0.9], n_bins=2, strategy="uniform")
    assert curve["count"].tolist() == [2, 2]
    assert curve["mean_predicted"].tolist() == pytest.approx([0.15, 0.8])
    assert curve["observed_rate"].tolist() == pytest.approx([0.5, 1.0])
    assert curve["positives"].tolist() == [1, 2]
    q = metrics.reliability_curve(np.r_[np.zeros(50), np.ones(50)], np.linspace(0, 1, 100), n_bins=4)
    assert q["count"].sum() == 100 and len(q) == 4


def test_plot_reliability_writes_png(tmp_path):
    curve = metrics.reliability_curve([0, 1, 0, 1], [0.2, 0.6, 0.3, 0.9], n_bins=2, strategy="uniform")
    out = metrics.plot_reliability({"model": curve}, tmp_path / "rel.png", title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000


def test_summary_keys_and_values():
    out = metrics.summary(Y, S, k_pcts=(40,), value=[10, 100, 50, 5, 1], probabilities=True)
    assert out["precision_at_40"] == 0.5
    assert out["revenue_at_40"] == pytest.approx(2 / 3)
    assert out["roc_auc"] == pytest.approx(4 / 6)
    assert out["rows"] == 5 and out["positives"] == 2


def test_bad_input_messages():
    with pytest.raises(ValueError, match="missing label"):
        metrics.precision_at_k([1, np.nan], [0.1, 0.2], 50)
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="percentage in"):
        metrics.precision_at_k([0, 1], [0.1, 0.2], 0)
    with pytest.raises(ValueError, match="3 values but the labels have 2"):
        metrics.precision_at_k([0, 1], [0.1, 0.2, 0.3], 50)
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc([1, 1], [0.1, 0.2])
