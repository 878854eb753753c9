"""RiskModel: training in time order, calibration, save/load identity, explanations, schema checks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from riskengine.explain import join_reasons, top_contributions
from riskengine.features import NotFittedError
from riskengine.mapping import Mapping
from riskengine.model import RiskModel, time_split

MAPPING = {
    "name": "toy-declarations",
    "id": "decl_id",
    "date": "date",
    "label": {"column": "fraud", "positive": [1]},
    "value": "price",
    "categorical": ["origin", "office"],
    "numeric": ["mass", "price", "unit_value"],
    "derived": [{"name": "unit_value", "op": "ratio", "numerator": "price", "denominator": "mass"}],
    "entities": [{"name": "importer", "columns": ["importer"], "label": "importer"},
                 {"name": "origin_x_hs6", "columns": ["origin", "hs6"], "label": "origin×HS"}],
    "relative": [{"name": "uv_vs_hs6", "value": "unit_value", "group": "hs6", "label": "value per kg"}],
}


def declarations(n: int = 4000, days: int = 120, seed: int = 0, start: str = "2024-01-01") -> pd.DataFrame:
    """Declarations where 8% of importers cheat often and origin ZZ with HS 847130 is risky."""
    rng = np.random.default_rng(seed)
    importers = np.array([f"IMP{i:03d}" for i in range(250)])
    bad = np.zeros(250, dtype=bool)
    bad[rng.choice(250, 20, replace=False)] = True
    imp = rng.integers(0, 250, n)
    origin = rng.choice(["CN", "DE", "US", "ZZ"], n, p=[0.4, 0.3, 0.2, 0.1])
    hs6 = rng.choice(["080390", "401110", "847130", "610910"], n)
    mass = rng.uniform(100, 20000, n).round(1)
    logit = -3.0 + 2.8 * bad[imp] + 1.5 * ((origin == "ZZ") & (hs6 == "847130"))
    fraud = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    date = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.integers(0, days, n)), unit="D")
    return pd.DataFrame({
        "decl_id": [f"{seed}-{i:06d}" for i in range(n)],
        "date": date.strftime("%Y-%m-%d"),
        "importer": importers[imp],
        "hs6": hs6,
        "origin": origin,
        "office": rng.choice(["A", "B", "C"], n),
        "mass": mass,
        "price": (mass * rng.lognormal(2, 0.3, n)).round(2),
        "fraud": fraud,
    })


@pytest.fixture(scope="module")
def trained() -> tuple[RiskModel, pd.DataFrame, pd.DataFrame]:
    full = declarations(5000, days=150, seed=0)
    train = full[full["date"] < "2024-05-01"]
    later = full[full["date"] >= "2024-05-01"]
    model = RiskModel(mapping=Mapping.from_dict(MAPPING), n_estimators=150, learning_rate=0.1,
                      early_stopping_rounds=30, seed=3).fit(train)
    return model, train, later


def test_time_split_keeps_days_together_and_orders_slices():
    days = np.repeat(np.arange(10), 10).astype(float)
    part = time_split(days, (0.2, 0.2))
    assert part.tolist() == [0] * 60 + [1] * 20 + [2] * 20
    for d in range(10):
        assert len(set(part[days == d])) == 1


def test_fit_learns_the_signal_and_records_slices(trained):
    model, _, later = trained
    t = model.training_
    s = t["slices"]
    assert s["fit"]["end"] < s["early_stopping"]["start"] <= s["early_stopping"]["end"] < s["calibration"]["start"]
    assert t["labelled"] == t["rows_valid"]
    ev = model.evaluate(later)
    assert ev["metrics"]["roc_auc"] > 0.65  # a random score gives 0.5
    # Calibrated on a later slice: the mean probability is near the observed rate.
    p = model.predict_proba(later)[:, 1]
    assert abs(p.mean() - later["fraud"].mean()) < 0.05
    assert ((p > 0) & (p < 1)).all()


def test_save_load_gives_identical_predictions(trained, tmp_path):
    model, _, later = trained
    model.save(tmp_path / "m")
    loaded = RiskModel.load(tmp_path / "m")
    np.testing.assert_array_equal(model.predict_proba(later), loaded.predict_proba(later))
    side = json.loads((tmp_path / "m" / "model.json").read_text())
    assert side["features"] == model.features_.feature_names_
    assert side["category_levels"]["origin"]
    assert side["package_versions"]["lightgbm"]
    assert side["training"]["data_sha256"] and side["mapping"]["id"] == "decl_id"
    assert (tmp_path / "m" / "MODEL_CARD.md").read_text().startswith("# Model card")


def test_contributions_sum_to_the_raw_score(trained):
    model, _, later = trained
    rows, _ = model.prepare(later)
    X = model.transform(rows)
    contrib = model.contributions(X)
    assert contrib.shape == (len(X), X.shape[1] + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), model.predict_raw(X), rtol=1e-9, atol=1e-9)


def test_reasons_name_the_risky_importer(trained):
    model, train, later = trained
    rates = train.groupby("importer")["fraud"].agg(["mean", "size"])
    worst = rates[rates["size"] >= 10]["mean"].idxmax()
    rows = later[later["importer"] == worst].head(3)
    assert len(rows)
    scored, rejects = model.score(rows, reasons=3)
    assert len(rejects) == 0
    assert scored["reasons"].str.contains(r"importer hit rate \d+(?:\.\d)?% over \d+ inspection", regex=True).any()
    long = model.explain(rows, k=3)
    assert (long["contribution"] > 0).all()
    assert set(long["rank"]) <= {1, 2, 3}


def test_only_positive_contributions_become_reasons():
    contrib = np.array([[0.5, -1.0, 0.2, 0.1], [-0.3, -0.2, -0.1, 0.0]])
    idx, val = top_contributions(contrib, 3)
    assert idx.tolist() == [[0, 2, -1], [-1, -1, -1]]
    texts = np.array([["a", "b", None], [None, None, None]], dtype=object)
    assert join_reasons(texts).tolist() == ["a | b", ""]


def test_missing_columns_are_named_and_extra_columns_ignored(trained):
    model, _, later = trained
    with pytest.raises(ValueError, match=r"missing \['mass', 'hs6'\]|missing \['hs6', 'mass'\]"):
        model.score(later.drop(columns=["mass", "hs6"]))
    extra = later.assign(unrelated="x", another=1)
    np.testing.assert_array_equal(model.predict_proba(extra), model.predict_proba(later))


def test_bad_rows_are_returned_not_dropped(trained):
    model, _, later = trained
    bad = later.head(20).astype({"mass": object})
    bad.loc[bad.index[3], "date"] = "not a date"
    bad.loc[bad.index[5], "mass"] = "heavy"
    scored, rejects = model.score(bad)
    assert len(scored) + len(rejects) == 20
    assert sorted(rejects["source_row"].tolist()) == [4, 6]
    assert rejects["reject_reason"].str.contains("is not a date").any()
    with pytest.raises(ValueError, match="failed validation"):
        model.predict_proba(bad)


def test_unfitted_model_says_call_fit():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        RiskModel().predict_proba(declarations(10))


def test_bad_parameters_and_too_few_labels_are_explained():
    with pytest.raises(ValueError, match="calibration must be"):
        RiskModel(mapping=Mapping.from_dict(MAPPING), calibration="magic").fit(declarations(200))
    with pytest.raises(ValueError, match="too few labelled rows"):
        RiskModel(mapping=Mapping.from_dict(MAPPING)).fit(declarations(200).assign(fraud=0))


def test_isotonic_calibration_round_trips(tmp_path):
    data = declarations(3000, days=90, seed=5)
    model = RiskModel(mapping=Mapping.from_dict(MAPPING), n_estimators=60, learning_rate=0.1,
                      calibration="isotonic", seed=1).fit(data)
    model.save(tmp_path / "iso")
    later = declarations(200, days=5, seed=6, start="2024-05-01")
    np.testing.assert_array_equal(model.predict_proba(later), RiskModel.load(tmp_path / "iso").predict_proba(later))
    assert model.calibrator_.method == "isotonic"


def test_reason_sentences_for_each_kind_of_feature():
    from riskengine.explain import reason_texts

    X = pd.DataFrame({
        "prof.consignee.age_days": [12.0, 0.0],
        "prof.consignee.n_labelled": [40.0, 0.0],
        "prof.consignee.hit_rate": [0.08, 0.02],
        "cat.origin": [1.0, np.nan],
        "num.seal_mismatch": [1.0, 0.0],
        "ind.REEFER-FRUIT-SOURCE": [1.0, 0.0],
        "num.weight_discrepancy_ratio": [0.13, 0.0],
    })
    info = {
        "prof.consignee.age_days": {"kind": "profile", "stat": "age_days", "label": "consignee"},
        "prof.consignee.n_labelled": {"kind": "profile", "stat": "n_labelled", "label": "consignee"},
        "prof.consignee.hit_rate": {"kind": "profile", "stat": "hit_rate", "label": "consignee"},
        "cat.origin": {"kind": "categorical", "column": "origin", "label": "origin country"},
        "num.seal_mismatch": {"kind": "numeric", "column": "seal_mismatch", "label": "seal mismatch"},
        "ind.REEFER-FRUIT-SOURCE": {"kind": "indicator", "id": "REEFER-FRUIT-SOURCE",
                                    "title": "bananas in a reefer from EC"},
        "num.weight_discrepancy_ratio": {"kind": "numeric", "column": "weight_discrepancy_ratio",
                                         "label": "weight discrepancy ratio"},
    }
    idx = np.array([[0, 2, 3, 4, 5, 6], [0, 2, 3, -1, -1, -1]])
    texts = reason_texts(idx, X, info, levels={"origin": ["CN", "EC"]})
    assert texts[0].tolist() == [
        "consignee first seen 12 days ago",
        "consignee hit rate 8% over 40 inspection(s)",
        "origin country = EC",
        "seal number at the gate differs from the manifest",
        "indicator REEFER-FRUIT-SOURCE: bananas in a reefer from EC",
        "declared weight plus tare differs from the VGM by 13%",
    ]
    assert texts[1].tolist() == ["new consignee: first seen today", "consignee never inspected (base rate 2%)",
                                 "origin country missing", None, None, None]
