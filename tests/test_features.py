"""As-of feature profiles: no leakage, outcome timing, unlabelled rows, updates, persistence."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from riskengine.features import FeatureBuilder, NotFittedError
from riskengine.mapping import Mapping

MAPPING = {
    "name": "toy",
    "id": "decl_id",
    "date": "date",
    "label": {"column": "fraud", "positive": [1]},
    "labelled": "inspected",
    "outcome_date": "outcome_date",
    "categorical": ["origin"],
    "numeric": ["mass"],
    "derived": [{"name": "unit_value", "op": "ratio", "numerator": "price", "denominator": "mass"}],
    "entities": ["importer", ["importer", "hs6"]],
    "relative": [{"name": "uv_vs_hs6", "value": "unit_value", "group": "hs6", "label": "value per kg"}],
}


def toy_table(n: int = 600, days: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    date = pd.Timestamp("2024-01-01") + pd.to_timedelta(np.sort(rng.integers(0, days, n)), unit="D")
    inspected = rng.random(n) < 0.6
    return pd.DataFrame({
        "decl_id": [f"D{i:05d}" for i in range(n)],
        "date": date.strftime("%Y-%m-%d"),
        "importer": rng.choice([f"IMP{i}" for i in range(30)], n),
        "hs6": rng.choice(["080390", "401110", "847130", "610910"], n),
        "origin": rng.choice(["EC", "CN", "DE", "CO"], n),
        "mass": rng.uniform(100, 20000, n).round(1),
        "price": rng.uniform(1000, 90000, n).round(2),
        "inspected": inspected.astype(int),
        "fraud": np.where(inspected, (rng.random(n) < 0.2).astype(int), 0),
        "outcome_date": (date + pd.to_timedelta(rng.integers(0, 5, n), unit="D")).strftime("%Y-%m-%d"),
    })


def prepared(df: pd.DataFrame, training: bool = False) -> pd.DataFrame:
    rows, rejects = Mapping.from_dict(MAPPING).prepare(df, training=training)
    assert len(rejects) == 0
    return rows


def builder() -> FeatureBuilder:
    return FeatureBuilder(mapping=Mapping.from_dict(MAPPING), smoothing=10.0)


def asof_columns(X: pd.DataFrame) -> list[str]:
    return [c for c in X.columns if c.startswith(("prof.", "rel.", "num."))]


def test_no_leakage_when_later_rows_are_added():
    full = toy_table()
    cut = full["date"] < "2024-02-10"
    early = full[cut]
    X_early = builder().fit_transform(prepared(early))
    X_full = builder().fit_transform(prepared(full))
    cols = asof_columns(X_early)
    assert len(cols) >= 10
    pd.testing.assert_frame_equal(X_early[cols].reset_index(drop=True),
                                  X_full.loc[cut.to_numpy(), cols].reset_index(drop=True))
    # Adding later rows really changes later features (the test can fail).
    assert not X_full.loc[~cut.to_numpy(), "prof.importer.n_prior"].eq(0).all()


def test_hand_computed_profile_same_day_and_outcome_timing():
    df = pd.DataFrame({
        "decl_id": ["a", "b", "c", "d", "e"],
        "date": ["2024-01-01", "2024-01-01", "2024-01-02", "2024-01-04", "2024-01-10"],
        "importer": ["X", "X", "X", "X", "X"],
        "hs6": ["080390"] * 5,
        "origin": ["EC"] * 5,
        "mass": [1000.0] * 5,
        "price": [5000.0] * 5,
        "inspected": [1, 1, 0, 1, 1],
        "fraud": [1, 0, 0, 1, 0],
        # a's outcome is known on day 1 (same day), b's only on day 5.
        "outcome_date": ["2024-01-01", "2024-01-05", "", "2024-01-04", "2024-01-10"],
    })
    X = builder().fit_transform(prepared(df))
    p = "prof.importer."
    # Rows of the same day never see each other.
    assert X[p + "n_prior"].tolist() == [0, 0, 2, 3, 4]
    assert X[p + "age_days"].tolist() == [0, 0, 1, 3, 9]
    assert np.isnan(X[p + "since_last_days"].iloc[0])
    assert X[p + "since_last_days"].iloc[3] == 2
    # The uninspected row c is unlabelled, not a negative; b's outcome arrives on day 5.
    assert X[p + "n_labelled"].tolist() == [0, 0, 1, 1, 3]
    # Day 2: one known outcome (a: hit); prior is the overall as-of rate (1/1), m = 10.
    assert X[p + "hit_rate"].iloc[2] == pytest.approx((1 + 1.0 * 10) / (1 + 10))
    # Day 10: outcomes a (1), b (0), d (1) known; prior = 2/3.
    assert X[p + "hit_rate"].iloc[4] == pytest.approx((2 + 2 / 3 * 10) / (3 + 10), rel=1e-6)
    # Before any outcome is known there is no prior: hit rate is missing, not zero.
    assert np.isnan(X[p + "hit_rate"].iloc[0])


def test_missing_entity_gives_missing_features_not_a_shared_profile():
    df = toy_table(50)
    df.loc[10:, "importer"] = ""
    X = builder().fit_transform(prepared(df))
    assert X["prof.importer.n_prior"].iloc[10:].isna().all()
    assert X["prof.importer_x_hs6.n_prior"].iloc[10:].isna().all()


def test_update_equals_fitting_on_the_longer_history():
    full = toy_table(900, days=90, seed=1)
    a = full[full["date"] < "2024-02-15"]
    b = full[(full["date"] >= "2024-02-15") & (full["date"] < "2024-03-10")]
    later = full[full["date"] >= "2024-03-10"]
    fb = builder().fit(prepared(a))
    fb.update(prepared(b))
    X_upd = fb.transform(prepared(later))
    X_ref = builder().fit(prepared(pd.concat([a, b]))).transform(prepared(later))
    cols = [c for c in X_upd.columns if c.startswith(("prof.", "rel."))]
    pd.testing.assert_frame_equal(X_upd[cols], X_ref[cols])


def test_outcomes_only_update_does_not_count_declarations_twice():
    df = toy_table(200, days=20, seed=2).assign(inspected=0, fraud=0)
    fb = builder().fit(prepared(df))
    later = prepared(toy_table(10, days=1, seed=3).assign(date="2024-03-01", outcome_date="2024-03-01"))
    before = fb.transform(later)
    outcomes = df.assign(inspected=1, fraud=1, outcome_date="2024-02-01")
    fb.update(prepared(outcomes), seen=False)
    after = fb.transform(later)
    pd.testing.assert_series_equal(before["prof.importer.n_prior"], after["prof.importer.n_prior"])
    assert (after["prof.importer.n_labelled"] >= before["prof.importer.n_labelled"]).all()
    assert after["prof.importer.n_labelled"].sum() > 0


def test_unfitted_builder_says_call_fit():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        builder().transform(prepared(toy_table(20)))


def test_raw_rows_are_refused_with_a_hint():
    with pytest.raises(ValueError, match="Mapping.prepare"):
        builder().fit(toy_table(20))


def test_categorical_levels_other_and_missing():
    df = toy_table(300)
    df.loc[0, "origin"] = ""
    fb = FeatureBuilder(mapping=Mapping.from_dict(MAPPING), min_level_count=1).fit(prepared(df))
    new = prepared(toy_table(3, seed=9).assign(origin=["ZZ", "EC", ""]))
    codes = fb.transform(new)["cat.origin"]
    assert codes.iloc[0] == len(fb.levels_["origin"])  # unseen level -> "other"
    assert fb.levels_["origin"][int(codes.iloc[1])] == "EC"
    assert np.isnan(codes.iloc[2])


def test_save_load_gives_identical_features_for_later_rows(tmp_path, caplog):
    full = toy_table(800, days=80, seed=4)
    hist, later = full[full["date"] < "2024-03-01"], full[full["date"] >= "2024-03-01"]
    fb = builder().fit(prepared(hist))
    fb.save(tmp_path / "fb")
    fb2 = FeatureBuilder.load(tmp_path / "fb")
    pd.testing.assert_frame_equal(fb.transform(prepared(later)), fb2.transform(prepared(later)))
    # Saved history is compacted: rows inside the training window are flagged in the log.
    with caplog.at_level(logging.WARNING, logger="riskengine.features"):
        fb2.transform(prepared(hist.head(5)))
    assert "on or before the end of the saved history" in caplog.text


def test_relative_feature_compares_with_group_history():
    df = toy_table(400, days=40, seed=5)
    df["price"] = df["mass"] * 10.0  # every row: 10 per kg
    df.loc[df.index[-1], "price"] = df["mass"].iloc[-1] * 1000.0  # the last row: 100x dearer
    X = builder().fit_transform(prepared(df))
    r = X["rel.uv_vs_hs6.log_ratio"]
    assert r.iloc[-1] == pytest.approx(np.log(100), rel=1e-4)
    assert r.iloc[:-1].dropna().abs().max() < 1e-4


def test_native_indicators_use_the_history_not_the_batch():
    from riskengine.derived import add_derived_fields
    from riskengine.mapping import native_mapping
    from riskengine.synth import generate_manifests

    m = native_mapping()
    history, _ = m.prepare(generate_manifests(3000, seed=2, days=150), training=True)
    fb = FeatureBuilder(mapping=m, indicator_packs="default").fit(history)
    batch, rejects = m.prepare(generate_manifests(300, seed=2, start="2026-06-15", days=1))
    assert len(rejects) == 0
    X = fb.transform(batch)
    assert "ind.new_consignee" in X.columns and "prof.consignee.age_days" in X.columns
    # From the batch alone every consignee looks new; the fitted history knows most of them.
    alone = add_derived_fields(batch, fields=["party_first_seen_days"])["party_first_seen_days"]
    assert (alone < 90).mean() > 0.9
    assert X["ind.new_consignee"].mean() < 0.7
    np.testing.assert_array_equal(X["ind.new_consignee"].to_numpy() == 1, X["prof.consignee.age_days"].to_numpy() < 90)
