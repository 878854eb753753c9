"""The KCS customs declarations through a schema mapping: prepare, train, score, baseline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from riskengine import metrics
from riskengine.mapping import LABEL, Mapping
from riskengine.model import RiskModel

ROOT = Path(__file__).resolve().parents[1]
KCS_DIR = Path("/work/shared/data/customs_declarations")
MAPPING = ROOT / "datasets" / "kcs" / "mapping.yaml"

needs_data = pytest.mark.skipif(
    not (KCS_DIR / "df_syn_train_eng.csv").exists(),
    reason=f"KCS declarations not found in {KCS_DIR} (public data, not shipped with the repository)",
)


def read(name: str, nrows: int) -> pd.DataFrame:
    return pd.read_csv(KCS_DIR / name, dtype=str, nrows=nrows, keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return read("df_syn_train_eng.csv", 6000)


@pytest.fixture(scope="module")
def valid() -> pd.DataFrame:
    return read("df_syn_valid_eng.csv", 1500)


def test_mapping_round_trips_and_rejects_bad_keys(tmp_path):
    m = Mapping.from_yaml(MAPPING)
    assert m.id == "Declaration ID" and m.label.column == "Fraud"
    assert Mapping.from_dict(m.to_dict()) == m
    m.to_yaml(tmp_path / "m.yaml")
    assert Mapping.from_yaml(tmp_path / "m.yaml") == m
    with pytest.raises(ValueError, match="unknown key"):
        Mapping.from_dict({**m.to_dict(), "colour": "blue"})
    with pytest.raises(ValueError, match="unknown op"):
        Mapping.from_dict({**m.to_dict(), "derived": [{"name": "x", "op": "eval", "column": "Date"}]})
    with pytest.raises(ValueError, match="unknown model parameter"):
        Mapping.from_dict({**m.to_dict(), "model": {"depth": 3}})
    with pytest.raises(ValueError, match=r"missing required key\(s\) \['label'\]"):
        Mapping.from_dict({"id": "a", "date": "b"})


@needs_data
def test_prepare_keeps_every_row_and_applies_label_rules(train):
    m = Mapping.from_yaml(MAPPING)
    rows, rejects = m.prepare(train, training=True)
    assert len(rows) + len(rejects) == len(train) and len(rejects) == 0
    assert rows[LABEL].sum() == (train["Fraud"] == "1").sum()
    # HS codes stay text with their leading zeros; HS4 is derived from them.
    assert (rows["HS4"] == rows["HS6 Code"].str.slice(0, 4)).all()
    critical = Mapping.from_dict({**m.to_dict(), "label": {"column": "Critical Fraud", "threshold": 2}})
    crit_rows, _ = critical.prepare(train, training=True)
    assert crit_rows[LABEL].sum() == (train["Critical Fraud"] == "2").sum()


@needs_data
def test_engine_trains_on_train_and_scores_valid(train, valid, tmp_path):
    m = Mapping.from_yaml(MAPPING)
    model = RiskModel(mapping=m, **{**m.model, "n_estimators": 120, "learning_rate": 0.1}).fit(train)
    model.save(tmp_path / "kcs")
    loaded = RiskModel.load(tmp_path / "kcs")
    scored, rejects = loaded.score(valid, reasons=2)
    assert len(rejects) == 0 and len(scored) == len(valid)
    assert list(scored.columns) == ["Declaration ID", "risk_score", "reasons"]
    assert scored["Declaration ID"].tolist() == valid["Declaration ID"].tolist()
    y = (valid["Fraud"] == "1").to_numpy()
    auc = metrics.roc_auc(y, scored["risk_score"])
    assert auc > 0.6, auc  # random ranking gives 0.5; 6,000 training rows give about 0.67
    assert scored["reasons"].str.len().gt(0).mean() > 0.9


@needs_data
def test_plain_baseline_runs_on_the_same_split(train, valid):
    spec = importlib.util.spec_from_file_location("kcs_evaluate", ROOT / "datasets" / "kcs" / "evaluate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scores, record = mod.plain_lightgbm(train, valid, Mapping.from_yaml(MAPPING), params={"learning_rate": 0.1})
    assert scores.shape == (len(valid),) and np.all((scores >= 0) & (scores <= 1))
    assert "Importer ID" in record["categorical"] and "Net Mass" not in record["categorical"]
