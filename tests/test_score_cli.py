"""`riskengine train` / `riskengine score` / `riskengine evaluate`: the command-line contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from riskengine.cli import main

MAPPING = {
    "name": "toy-declarations",
    "id": "decl_id",
    "date": "date",
    "label": {"column": "fraud", "positive": [1]},
    "categorical": ["origin"],
    "numeric": ["mass", "price"],
    "entities": ["importer", ["origin", "hs6"]],
    "model": {"n_estimators": 80, "learning_rate": 0.1, "early_stopping_rounds": 20},
}


def declarations(n: int, days: int, seed: int, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    imp = rng.integers(0, 150, n)
    bad = imp % 10 == 0
    date = pd.Timestamp(start) + pd.to_timedelta(np.sort(rng.integers(0, days, n)), unit="D")
    return pd.DataFrame({
        "decl_id": [f"S{seed}-{i:05d}" for i in range(n)],
        "date": date.strftime("%Y-%m-%d"),
        "importer": [f"IMP{i:03d}" for i in imp],
        "hs6": rng.choice(["080390", "401110", "847130"], n),
        "origin": rng.choice(["CN", "DE", "ZZ"], n),
        "mass": rng.uniform(100, 20000, n).round(1),
        "price": rng.uniform(1000, 50000, n).round(2),
        "fraud": (rng.random(n) < np.where(bad, 0.6, 0.08)).astype(int),
    })


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def flat(text: str) -> str:
    """CLI output with the terminal's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    (d / "mapping.yaml").write_text(yaml.safe_dump(MAPPING), encoding="utf-8")
    declarations(3000, 100, seed=0).to_csv(d / "train.csv", index=False)
    later = declarations(300, 10, seed=1, start="2024-05-01").drop(columns=["fraud"])
    later = later.astype({"mass": object})
    later.loc[7, "date"] = "31/02/2024"       # not a date
    later.loc[12, "mass"] = "about a ton"     # not a number
    later.loc[20, "decl_id"] = later.loc[19, "decl_id"]  # duplicate id
    later.to_csv(d / "later.csv", index=False)
    res = run("train", "--data", str(d / "train.csv"), "--schema", str(d / "mapping.yaml"),
              "--out", str(d / "model"), "--json")
    assert res.exit_code == 0, res.output
    (d / "train_summary.json").write_text(res.output.strip().splitlines()[-1])
    return d


def test_help_lists_the_options():
    out = run("score", "--help").output
    for opt in ("--model", "--data", "--out", "--reasons", "--quarantine", "--json"):
        assert opt in out
    assert "--schema" in run("train", "--help").output


def test_train_writes_a_complete_model_directory(workdir):
    summary = json.loads((workdir / "train_summary.json").read_text())
    assert summary["rows"] == 3000 and summary["rejected"] == 0
    assert summary["labelled"] == 3000 and 0 < summary["positives"] < 3000
    assert 0 < summary["holdout"]["roc_auc"] <= 1
    files = {p.name for p in (workdir / "model").iterdir()}
    assert {"model.txt", "model.json", "MODEL_CARD.md", "mapping.yaml", "features"} <= files
    assert yaml.safe_load((workdir / "model" / "mapping.yaml").read_text())["id"] == "decl_id"


def test_score_writes_ids_scores_reasons_and_quarantines_bad_rows(workdir):
    out = workdir / "scores.csv"
    res = run("score", "--model", str(workdir / "model"), "--data", str(workdir / "later.csv"),
              "--out", str(out), "--reasons", "2", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["rows"] == 300 and summary["scored"] == 297 and summary["quarantined"] == 3
    scores = pd.read_csv(out, dtype={"decl_id": str})
    assert list(scores.columns) == ["decl_id", "risk_score", "reasons"]
    assert len(scores) == 297 and scores["risk_score"].between(0, 1).all()
    assert scores["reasons"].fillna("").str.split(r" \| ").map(len).max() <= 2
    assert scores["reasons"].notna().mean() > 0.9
    q = pd.read_csv(workdir / "scores.quarantine.csv")
    assert summary["quarantine"] == str(workdir / "scores.quarantine.csv")
    assert sorted(q["source_row"]) == [8, 13, 21]
    assert q["reject_reason"].str.contains("is not a date").any()
    assert q["reject_reason"].str.contains("is not a number").any()
    assert q["reject_reason"].str.contains("duplicate").any()


def test_score_parquet_output_and_table_summary(workdir, tmp_path):
    out = tmp_path / "scores.parquet"
    q = tmp_path / "bad.csv"
    res = run("score", "--model", str(workdir / "model"), "--data", str(workdir / "later.csv"),
              "--out", str(out), "--quarantine", str(q), "--chunk-rows", "100")
    assert res.exit_code == 0, res.output
    assert "quarantined" in res.output
    df = pd.read_parquet(out)
    assert list(df.columns) == ["decl_id", "risk_score"] and len(df) == 297
    assert len(pd.read_csv(q)) == 3


def test_missing_columns_exit_1_and_name_them(workdir, tmp_path):
    src = tmp_path / "no_mass.csv"
    pd.read_csv(workdir / "later.csv").drop(columns=["mass", "hs6"]).to_csv(src, index=False)
    res = CliRunner().invoke(main, ["score", "--model", str(workdir / "model"), "--data", str(src),
                                    "--out", str(tmp_path / "o.csv")])
    assert res.exit_code == 1
    text = " ".join(res.output.split()).replace("[ ", "[").replace(", ", ",")  # undo line wrapping
    assert "ValueError" in text and "missing ['mass','hs6']" in text


def test_bad_model_or_data_exit_1(workdir, tmp_path):
    res = CliRunner().invoke(main, ["score", "--model", str(tmp_path / "nope"), "--data",
                                    str(workdir / "later.csv"), "--out", str(tmp_path / "o.csv")])
    assert res.exit_code == 1 and "model directory not found" in flat(res.output)
    res = CliRunner().invoke(main, ["score", "--model", str(workdir / "model"), "--data",
                                    str(tmp_path / "none.csv"), "--out", str(tmp_path / "o.csv")])
    assert res.exit_code == 1 and "not found" in flat(res.output)
    res = CliRunner().invoke(main, ["score", "--model", str(workdir / "model"), "--data",
                                    str(workdir / "later.csv"), "--out", str(tmp_path / "o.txt")])
    assert res.exit_code == 1 and "use .csv or .parquet" in flat(res.output)


def test_train_without_labels_exits_1(workdir, tmp_path):
    src = tmp_path / "unlabelled.csv"
    declarations(200, 10, seed=3).assign(fraud="").to_csv(src, index=False)
    res = CliRunner().invoke(main, ["train", "--data", str(src), "--schema", str(workdir / "mapping.yaml"),
                                    "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and "no labelled rows" in flat(res.output)


def test_evaluate_reports_metrics_and_plots(workdir, tmp_path):
    src = tmp_path / "labelled_later.csv"
    declarations(400, 10, seed=4, start="2024-05-01").to_csv(src, index=False)
    res = run("evaluate", "--model", str(workdir / "model"), "--data", str(src),
              "--plot", str(tmp_path / "rel.png"), "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["labelled"] == 400 and out["metrics"]["roc_auc"] > 0.6
    assert (tmp_path / "rel.png").stat().st_size > 1000


@pytest.mark.slow
def test_native_manifests_train_and_score(tmp_path):
    from riskengine.synth import generate_manifests

    generate_manifests(6000, seed=5, days=60, illicit_rate=0.05).to_parquet(tmp_path / "train.parquet")
    later = generate_manifests(400, seed=5, days=3, start="2026-03-10", illicit_rate=0.05)
    later = later.drop(columns=["is_illicit", "inspected", "selection", "outcome_at", "modus_operandi",
                                "concealment_location", "amount_kg"])
    later.loc[3, "container_id"] = "NOTACONTAINER"
    later.to_csv(tmp_path / "today.csv", index=False)
    res = run("train", "--data", str(tmp_path / "train.parquet"), "--out", str(tmp_path / "m"), "--json")
    assert res.exit_code == 0, res.output
    res = run("score", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "today.csv"),
              "--out", str(tmp_path / "s.csv"), "--reasons", "3", "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["scored"] == 399 and summary["quarantined"] == 1
    s = pd.read_csv(tmp_path / "s.csv")
    assert list(s.columns) == ["manifest_id", "risk_score", "reasons"]
    q = pd.read_csv(tmp_path / "s.quarantine.csv")
    assert q["reject_column"].tolist() == ["container_id"]


def test_score_writes_no_quarantine_file_when_nothing_is_rejected(tmp_path):
    from riskengine.demo import MODELS_DIR
    from riskengine.synth import generate_manifests

    generate_manifests(120, seed=4, start="2027-01-05").to_csv(tmp_path / "clean.csv", index=False)
    res = run("score", "--model", str(MODELS_DIR / "manifest"), "--data", str(tmp_path / "clean.csv"),
              "--out", str(tmp_path / "s.csv"), "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["scored"] == 120 and summary["quarantined"] == 0 and summary["quarantine"] is None
    assert not (tmp_path / "s.quarantine.csv").exists()
