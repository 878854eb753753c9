"""Batch rescoring: row accounting, quarantine, resume after a crash, Dask parity, CLI contract."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from riskengine.cli import main
from riskengine.model import RiskModel
from riskengine.rescore import (
    QUARANTINE_DIR,
    RUN_FILE,
    expand_inputs,
    part_name,
    plan_parquet,
    read_parquet_chunk,
    read_scores,
    rescore,
)
from riskengine.schema import iter_manifest_chunks
from riskengine.synth import generate_manifests, write_manifests


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small manifest model (few trees) trained on 60 days of generated traffic."""
    train = generate_manifests(4_000, days=60, seed=1, illicit_rate=0.05)
    model = RiskModel(n_estimators=20, early_stopping_rounds=5, seed=1).fit(train)
    return model.save(tmp_path_factory.mktemp("model") / "manifest")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A Parquet file of 3 row groups and a CSV file, both with corrupted rows."""
    d = tmp_path_factory.mktemp("data")
    pq_path = d / "march.parquet"
    csv_path = d / "april.csv"
    write_manifests(pq_path, 2_500, seed=3, start="2026-03-10", days=2, chunk_rows=1_000,
                    corrupt_rate=0.02)
    write_manifests(csv_path, 1_200, seed=4, start="2026-03-12", days=2, corrupt_rate=0.03)
    return pq_path, csv_path


def _csv_chunks(path, chunk_rows):
    return sum(1 for _ in iter_manifest_chunks(path, chunk_rows=chunk_rows))


def _parts(out):
    return sorted(p.name for p in out.glob("part-*.parquet"))


def test_every_row_is_scored_or_quarantined(model_dir, inputs, tmp_path):
    pq_path, csv_path = inputs
    out = tmp_path / "out"
    s = rescore(model_dir, [pq_path, csv_path], out, chunk_rows=700, reasons=2)

    assert s.rows == 2_500 + 1_200
    assert s.scored + s.rejected == s.rows
    assert s.rejected > 0
    # Parquet: row groups of 1000 split into 700 + 300 (+ the last 500); CSV: one part per chunk
    # of its streaming reader.
    assert s.parts_written == 5 + _csv_chunks(csv_path, 700) and s.parts_skipped == 0
    scores = read_scores(out)
    assert len(scores) == s.scored
    assert scores["risk_score"].between(0, 1).all()
    assert (scores["reasons"].str.len() > 0).all()
    quarantined = read_scores(out, quarantine=True)
    assert len(quarantined) == s.rejected
    assert quarantined["reject_reason"].notna().all()
    # No row lost or duplicated: scored ids + quarantined ids are exactly the input ids.
    src = pd.concat([pq.read_table(pq_path).to_pandas()[["manifest_id"]],
                     pd.read_csv(csv_path, usecols=["manifest_id"], dtype=str)])
    got = pd.concat([scores["manifest_id"], quarantined["manifest_id"]])
    assert sorted(got.astype(str)) == sorted(src["manifest_id"].astype(str))
    run = json.loads((out / RUN_FILE).read_text())
    assert run["last_summary"]["rows"] == s.rows and run["chunk_rows"] == 700


def test_parquet_chunks_match_the_streaming_reader(inputs):
    pq_path, _ = inputs
    tasks = plan_parquet(pq_path, 1_000)
    assert [t.rows for t in tasks] == [1_000, 1_000, 500]
    mine = pd.concat([read_parquet_chunk(t) for t in tasks], ignore_index=True)
    theirs = pd.concat(list(iter_manifest_chunks(pq_path, chunk_rows=1_000)), ignore_index=True)
    pd.testing.assert_frame_equal(mine, theirs)
    assert len({t.part for t in tasks}) == 3 and tasks[2].part == part_name(pq_path, 2)


def test_resume_after_a_crash_skips_finished_parts(model_dir, inputs, tmp_path):
    pq_path, csv_path = inputs
    reference = tmp_path / "reference"
    rescore(model_dir, [pq_path, csv_path], reference, chunk_rows=700)

    out = tmp_path / "crashed"
    seen = []

    def crash_after_three(n):
        seen.append(n)
        if len(seen) == 3:
            raise KeyboardInterrupt("power cut")

    with pytest.raises(KeyboardInterrupt):
        rescore(model_dir, [pq_path, csv_path], out, chunk_rows=700, progress=crash_after_three)
    before = {p: (out / p).stat().st_mtime_ns for p in _parts(out)}
    assert len(before) == 3
    # A half-written temporary file from the crash must not count as a part.
    (out / ".part-leftover.parquet.123.tmp").write_bytes(b"partial")

    s = rescore(model_dir, [pq_path, csv_path], out, chunk_rows=700)
    n_parts = 5 + _csv_chunks(csv_path, 700)
    assert s.parts_skipped == 3 and s.parts_written == n_parts - 3
    assert s.rows == 3_700 and s.scored + s.rejected == s.rows
    # Finished parts were not rewritten, and the result equals an uninterrupted run.
    assert all((out / p).stat().st_mtime_ns == t for p, t in before.items())
    assert _parts(out) == _parts(reference)
    a, b = read_scores(out), read_scores(reference)
    assert len(a) + len(read_scores(out, quarantine=True)) == 3_700
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(read_scores(out, quarantine=True),
                                  read_scores(reference, quarantine=True))

    again = rescore(model_dir, [pq_path, csv_path], out, chunk_rows=700)
    assert again.parts_written == 0 and again.parts_skipped == n_parts and again.rows == 3_700


def test_resume_with_other_settings_is_refused(model_dir, inputs, tmp_path):
    pq_path, _ = inputs
    out = tmp_path / "out"
    rescore(model_dir, pq_path, out, chunk_rows=1_000)
    with pytest.raises(ValueError, match="chunk_rows: 1000 before, 500 now"):
        rescore(model_dir, pq_path, out, chunk_rows=500)


def test_dask_gives_the_same_scores(model_dir, inputs, tmp_path):
    distributed = pytest.importorskip("distributed")
    pq_path, csv_path = inputs
    local = rescore(model_dir, [pq_path, csv_path], tmp_path / "local", chunk_rows=900, reasons=1)
    logging.getLogger("distributed").setLevel(logging.WARNING)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        dk = rescore(model_dir, [pq_path, csv_path], tmp_path / "dask", chunk_rows=900, reasons=1,
                     dask=client)
    assert dk.mode.startswith("dask") and dk.parts_written == local.parts_written
    assert (dk.rows, dk.scored, dk.rejected) == (local.rows, local.scored, local.rejected)
    # Ids repeat across the two generated files, so sort by every column.
    a = read_scores(tmp_path / "local")
    a = a.sort_values(list(a.columns), ignore_index=True)
    b = read_scores(tmp_path / "dask")
    b = b.sort_values(list(b.columns), ignore_index=True)
    pd.testing.assert_frame_equal(a, b)


def test_expand_inputs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_inputs(str(tmp_path / "*.parquet"))
    bad = tmp_path / "scores.xlsx"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match="expected .parquet or .csv"):
        expand_inputs(bad)
    with pytest.raises(FileNotFoundError, match="holds no .parquet or .csv"):
        expand_inputs(tmp_path)


# ------------------------------------------------------------------------------------------ CLI


def test_cli_help():
    res = CliRunner().invoke(main, ["rescore", "--help"])
    assert res.exit_code == 0
    for flag in ("--model", "--data", "--out", "--dask", "--chunk-rows", "--reasons"):
        assert flag in res.output


def test_cli_json_summary_and_resume(model_dir, inputs, tmp_path):
    pq_path, _ = inputs
    args = ["rescore", "--model", str(model_dir), "--data", str(pq_path),
            "--out", str(tmp_path / "o"), "--chunk-rows", "1000", "--json"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    s = json.loads(first.output.strip().splitlines()[-1])
    assert s["rows"] == 2_500 and s["scored"] + s["rejected"] == 2_500 and s["parts_written"] == 3
    second = json.loads(CliRunner().invoke(main, args).output.strip().splitlines()[-1])
    assert second["parts_skipped"] == 3 and second["parts_written"] == 0
    assert (tmp_path / "o" / QUARANTINE_DIR).is_dir()


def test_cli_bad_input_exit_codes(model_dir, inputs, tmp_path):
    pq_path, _ = inputs
    runner = CliRunner()
    res = runner.invoke(main, ["rescore", "--model", str(model_dir), "--data",
                               str(tmp_path / "none-*.parquet"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "FileNotFoundError: no file matches" in res.output
    res = runner.invoke(main, ["rescore", "--model", str(tmp_path / "nomodel"), "--data",
                               str(pq_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "model directory not found" in res.output
    dask = pytest.importorskip("dask")
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        res = runner.invoke(main, ["rescore", "--model", str(model_dir), "--data", str(pq_path),
                                   "--out", str(tmp_path / "o2"), "--dask", "tcp://127.0.0.1:9"])
    assert res.exit_code == 1 and "ConnectionError: cannot reach the Dask scheduler" in res.output
    assert not (tmp_path / "o2").exists()
    res = runner.invoke(main, ["rescore", "--model", str(model_dir), "--data", str(pq_path),
                               "--out", str(tmp_path / "o3"), "--chunk-rows", "0"])
    assert res.exit_code == 2


@pytest.mark.slow
def test_cli_dask_local_matches_local(model_dir, inputs, tmp_path):
    """`--dask local` starts a real two-process LocalCluster (slower: worker start-up)."""
    pytest.importorskip("distributed")
    pq_path, _ = inputs
    runner = CliRunner()
    base = ["rescore", "--model", str(model_dir), "--data", str(pq_path), "--chunk-rows", "1000", "--json"]
    local = runner.invoke(main, [*base, "--out", str(tmp_path / "local")])
    dk = runner.invoke(main, [*base, "--out", str(tmp_path / "dask"), "--dask", "local"])
    assert local.exit_code == 0 and dk.exit_code == 0, dk.output
    s = json.loads(dk.output.strip().splitlines()[-1])
    assert s["mode"].startswith("dask") and "2 workers" in s["mode"]
    a = read_scores(tmp_path / "local").sort_values(["manifest_id", "risk_score"], ignore_index=True)
    b = read_scores(tmp_path / "dask").sort_values(["manifest_id", "risk_score"], ignore_index=True)
    pd.testing.assert_frame_equal(a, b)
