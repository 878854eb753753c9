import json

import pandas as pd
from click.testing import CliRunner

from riskengine.cli import main


def test_help_lists_the_commands():
    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0
    for cmd in ("validate", "generate", "train"):
        assert cmd in res.output


def test_validate_counts_and_quarantine(tmp_path, good_row):
    rows = [dict(good_row, manifest_id=f"M{i}") for i in range(5)]
    rows[3]["container_id"] = "CSQU3054384"
    p = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    q = tmp_path / "q.csv"
    res = CliRunner().invoke(main, ["validate", "--data", str(p), "--quarantine", str(q), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert (summary["rows"], summary["valid"], summary["rejected"]) == (5, 4, 1)
    assert summary["top_reasons"][0]["column"] == "container_id"
    assert pd.read_csv(q)["manifest_id"].tolist() == ["M3"]

    table = CliRunner().invoke(main, ["validate", "--data", str(p), "--quarantine", str(q)])
    assert table.exit_code == 0
    assert "Top reject reasons" in table.output and "check digit" in table.output


def test_validate_missing_file_and_missing_column(tmp_path, good_row):
    res = CliRunner().invoke(main, ["validate", "--data", str(tmp_path / "nope.csv")])
    assert res.exit_code == 1
    assert "FileNotFoundError: manifest file not found" in res.output

    p = tmp_path / "m.csv"
    pd.DataFrame([good_row]).drop(columns=["vgm_kg"]).to_csv(p, index=False)
    res = CliRunner().invoke(main, ["validate", "--data", str(p)])
    assert res.exit_code == 1
    assert "SchemaError: missing required column(s) ['vgm_kg']" in res.output


def test_train_without_arguments_is_a_usage_error():
    res = CliRunner().invoke(main, ["train"])
    assert res.exit_code == 2
    assert "--data" in res.output


def test_cli_logging_drops_a_warning_repeated_back_to_back():
    """The same warning twice in a row prints once; a different one in between prints again."""
    import logging

    from riskengine.cli import _RepeatFilter

    f = _RepeatFilter()

    def rec(msg: str) -> logging.LogRecord:
        return logging.LogRecord("riskengine.schema", logging.WARNING, __file__, 1, msg, None, None)

    kept = [f.filter(rec(m)) for m in ("122 bad IMO", "122 bad IMO", "1 bad IMO", "122 bad IMO")]
    assert kept == [True, False, True, True]


def test_indicators_hits_flags_an_indicator_that_fires_on_everything(tmp_path):
    from riskengine.synth import generate_manifests

    # One day alone: without history every consignee is "first seen today".
    day = generate_manifests(600, seed=5, start="2026-03-01", days=1)
    p = tmp_path / "day.csv"
    day.to_csv(p, index=False)
    res = CliRunner().invoke(main, ["indicators", "hits", "--data", str(p), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    rates = {r["id"]: r["hit_rate"] for r in out["indicators"]}
    assert rates["new_consignee"] == 1.0
    assert out["uninformative"] == [i for i, r in rates.items() if r >= 0.9] and "new_consignee" in out["uninformative"]
    flags = {r["id"]: r["uninformative"] for r in out["indicators"]}
    assert flags["new_consignee"] and not flags["seal_mismatch_at_gate"]

    table = CliRunner().invoke(main, ["indicators", "hits", "--data", str(p)], terminal_width=80)
    assert table.exit_code == 0, table.output
    flat = " ".join(table.output.split())
    assert "uninformative: new_consignee fires on 100" in flat and "--history" in flat


def test_generated_traffic_starts_after_the_shipped_models_history(tmp_path):
    from riskengine.demo import MODELS_DIR

    end = json.loads((MODELS_DIR / "manifest" / "model.json").read_text())["history"]["end"]
    out = tmp_path / "m.csv"
    res = CliRunner().invoke(main, ["generate", "manifests", "--rows", "200", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    arrivals = pd.to_datetime(pd.read_csv(out)["arrival_date"])
    assert arrivals.min() > pd.Timestamp(end)  # new to the model: no "dated before its history" warning
    assert json.loads(res.output.strip().splitlines()[-1])["params"]["start"] == "2027-01-02"
    helptext = CliRunner().invoke(main, ["generate", "manifests", "--help"]).output
    assert "day after the shipped model's history" in " ".join(helptext.split())


def test_bench_manifests_finds_the_shipped_model_from_any_directory(tmp_path, monkeypatch):
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)  # not the repository: models/ is not here
    res = runner.invoke(main, ["bench", "manifests", "--rows", "300", "--repeat", "1", "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output.strip().splitlines()[-1])
    assert result["rows"] == 300 and result["rows_per_s"] > 0

    import riskengine.demo

    monkeypatch.setattr(riskengine.demo, "MODELS_DIR", tmp_path / "no-models")
    res = runner.invoke(main, ["bench", "manifests", "--rows", "300", "--repeat", "1"])
    assert res.exit_code == 1
    assert "FileNotFoundError: the shipped manifest model is not at" in res.output
    assert "--model DIR" in res.output


def test_errors_do_not_name_the_readers_internal_columns(tmp_path):
    from riskengine.demo import MODELS_DIR

    p = tmp_path / "two.csv"
    p.write_text("manifest_id,container_id\nM1,MSKU0000011\n")
    res = CliRunner().invoke(main, ["validate", "--data", str(p)])
    assert res.exit_code == 1
    flat = " ".join(res.output.split())
    assert "the file has ['container_id', 'manifest_id']" in flat
    assert "source_row" not in flat and "_malformed" not in flat
    res = CliRunner().invoke(main, ["score", "--model", str(MODELS_DIR / "manifest"), "--data", str(p),
                                    "--out", str(tmp_path / "o.csv")])
    assert res.exit_code == 1
    flat = " ".join(res.output.split())
    assert "input has 2 columns" in flat and "source_row" not in flat


def test_tokens_list_is_readable_at_80_columns(tmp_path):
    db = f"sqlite:///{tmp_path / 't.db'}"
    runner = CliRunner()
    for name, role in (("night shift ECT", "officer"), ("liaison Antwerp police", "analyst")):
        res = runner.invoke(main, ["tokens", "create", "--db", db, "--name", name, "--role", role,
                                   "--expires", "30d", "--json"])
        assert res.exit_code == 0, res.output
    ids = [json.loads(x)["token_id"] for x in
           runner.invoke(main, ["tokens", "list", "--db", db, "--json"]).output.splitlines()]
    res = runner.invoke(main, ["tokens", "list", "--db", db], terminal_width=80)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    # one line per token carries its id, role, clearance, state and expiry, unbroken
    for token_id, role, tlp in zip(ids, ("officer", "analyst"), ("GREEN", "AMBER"), strict=True):
        line = next(x for x in lines if token_id in x)
        assert role in line and tlp in line and "active" in line and "20" in line.split()[-2]
    assert "night shift ECT" in res.output
