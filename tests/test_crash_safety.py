"""Crash safety: an ingest or a rescoring killed at any moment, then rerun, ends exactly like a run
that was never interrupted (no decision lost or duplicated, no row lost, no quarantine row twice).

* in-process: the ingest fails on purpose inside a batch, right after it stored its manifests,
  its scores, its decisions or its quarantine part; the rerun is compared with a clean run;
* subprocess: ``riskengine ingest`` and ``riskengine rescore`` get SIGKILL at several points
  (the database or the output folder is polled), are rerun to the end and compared with a clean
  run, on SQLite and on PostgreSQL (the ``store_url`` mechanism of tests/test_store.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from test_store import pg_skip_reason, pg_url

from riskengine.cli import main
from riskengine.ingest import (
    INGEST_BATCHES,
    batch_digest,
    ingest_files,
    iter_batches,
    quarantine_part_name,
    read_quarantine,
    store_checksums,
)
from riskengine.model import RiskModel
from riskengine.queue import QueueConfig
from riskengine.rescore import plan_parquet, read_scores
from riskengine.schema import MANIFEST_COLUMNS, validate
from riskengine.store import Store
from riskengine.synth import generate_manifests

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "import sys; from riskengine.cli import main; sys.exit(main())"]
# Small capacities so that every re-plan moves containers between lanes.
CONFIG = QueueConfig(scan_capacity=40, inspection_capacity=8)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def bad_manifests(rows: int, seed: int, start: str = "2026-03-10") -> pd.DataFrame:
    """Generated manifests with ~3 % bad rows and 1 % later amendments that change queue.

    Bad rows: the generator's own (check digits, negative weights, unreadable dates, missing
    consignees, broken HS codes, repeated ids) plus text/``inf`` in numbers, short container
    numbers, unknown countries. Amendments repeat a manifest later in the file with another
    terminal and weight: an update that moves it to another queue.
    """
    df = generate_manifests(rows, seed=seed, start=start, days=2, corrupt_rate=0.02)
    df = df[list(MANIFEST_COLUMNS)].astype(object)
    rng = np.random.default_rng(seed)
    kinds = [("gross_weight_kg", "heavy"), ("vgm_kg", "inf"), ("container_id", "MSKU12345"),
             ("origin_country", "XX")]
    for k, i in enumerate(rng.choice(rows, rows // 100, replace=False)):
        col, value = kinds[k % len(kinds)]
        df.iat[int(i), df.columns.get_loc(col)] = value
    orig = rng.choice(rows, rows // 100, replace=False)
    amend = df.iloc[orig].copy()
    terminals = sorted(set(df["terminal"].astype(str)))
    amend["terminal"] = [terminals[(terminals.index(str(t)) + 1) % len(terminals)] for t in amend["terminal"]]
    amend["gross_weight_kg"] = pd.to_numeric(amend["gross_weight_kg"], errors="coerce").fillna(900.0) + 125.0
    key = np.concatenate([np.arange(rows, dtype=float), rng.uniform(orig + 1, rows + 1)])
    return pd.concat([df, amend], ignore_index=True).iloc[np.argsort(key, kind="stable")].reset_index(drop=True)


class HashScorer:
    """A deterministic scorer (risk from a hash of the manifest's content) for fast tests."""

    version = "hash-scorer@1"
    loaded = True

    def __call__(self, manifests: pd.DataFrame) -> pd.DataFrame:
        key = manifests["manifest_id"].astype(str) + "|" + manifests["gross_weight_kg"].astype(str)
        h = pd.util.hash_pandas_object(key, index=False).to_numpy()
        return pd.DataFrame({"manifest_id": manifests["manifest_id"].astype(str).to_numpy(),
                             "risk_score": (h % 9973) / 10_000.0, "reasons": "hash",
                             "mandatory": (h % 211) == 0})


def quarantine_view(folder: Path) -> pd.DataFrame:
    cols = ["source_row", "manifest_id", "reject_column", "reject_reason"]
    q = read_quarantine(folder).reindex(columns=cols).astype("string").fillna("")
    return q.sort_values(cols).reset_index(drop=True)


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    """1000 manifests (bad rows and amendments mixed in), then 250 amendments of the first 600.

    With batches of 250 the last batch holds only amendments: updates that move manifests
    between queues without any new manifest in the batch (the hardest batch to resume).
    """
    path = tmp_path_factory.mktemp("ingest") / "arrivals.csv"
    df = bad_manifests(1_000, seed=21).iloc[:1_000]
    late = df.iloc[np.random.default_rng(3).choice(600, 250, replace=False)].copy()
    terminals = sorted(set(df["terminal"].astype(str)))
    late["terminal"] = [terminals[(terminals.index(str(t)) + 2) % len(terminals)] for t in late["terminal"]]
    late["gross_weight_kg"] = pd.to_numeric(late["gross_weight_kg"], errors="coerce").fillna(900.0) + 40.0
    late.iloc[:5, late.columns.get_loc("container_id")] = "MSKU1234560"  # wrong check digit
    pd.concat([df, late], ignore_index=True).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def clean_reference(small_csv, tmp_path_factory):
    """One uninterrupted ingest of ``small_csv`` (batches of 250) into SQLite."""
    d = tmp_path_factory.mktemp("clean")
    with Store(f"sqlite:///{d / 'clean.db'}") as store:
        summary = ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=250,
                               quarantine_dir=d / "q")
        return summary, store_checksums(store), quarantine_view(d / "q")


# --------------------------------------------------------------------------------------------
# The ingest, interrupted in-process at every step of a batch
# --------------------------------------------------------------------------------------------

def test_batches_are_cut_the_same_way_every_time(small_csv):
    a = list(iter_batches(small_csv, 250))
    assert [len(b) for b in a] == [250] * 5
    assert a[0]["source_row"].tolist()[:3] == [1, 2, 3] and a[-1]["source_row"].iloc[-1] == 1_250
    assert [batch_digest(b) for b in a] == [batch_digest(b) for b in iter_batches(small_csv, 250)]
    with pytest.raises(ValueError, match="batch_rows must be >= 1"):
        next(iter_batches(small_csv, 0))


def test_uninterrupted_ingest_accounts_for_every_row(clean_reference, small_csv):
    summary, sums, quarantined = clean_reference
    assert summary.rows == 1_250 and summary.batches == 5 and summary.batches_skipped == 0
    assert summary.rows == summary.valid + summary.rejected
    assert len(quarantined) == summary.rejected >= 40
    assert summary.updated >= 200  # the amendments
    # Stored = the distinct ids of the valid rows of each batch (an amendment updates its id).
    valid_ids = pd.concat([validate(b).valid["manifest_id"] for b in iter_batches(small_csv, 250)])
    assert sums["manifests"] == sums["manifest_ids_distinct"] == valid_ids.nunique()
    assert sums["decisions_by_stage"]["1"] >= sums["manifests"]
    reasons = set(quarantined["reject_column"])
    assert {"container_id", "gross_weight_kg", "vgm_kg", "origin_country", "filed_at"} <= reasons


@pytest.mark.parametrize("fail_in", ["upsert_manifests", "save_scores", "save_decisions", "quarantine"])
def test_ingest_interrupted_inside_a_batch_converges(fail_in, small_csv, clean_reference, tmp_path,
                                                    monkeypatch):
    """The last batch (amendments only) dies right after one of its steps committed; the rerun
    ends exactly like a clean run: same manifests, scores, decisions, audit, quarantine."""
    import riskengine.ingest as ingest_mod

    _, clean_sums, clean_q = clean_reference
    target, name = (ingest_mod, "write_quarantine_part") if fail_in == "quarantine" else (Store, fail_in)
    original = getattr(target, name)
    calls: list[int] = []

    def step_then_die(*args, **kwargs):
        result = original(*args, **kwargs)
        calls.append(1)
        last_batch = kwargs["batch"] == 4 if fail_in == "quarantine" else len(calls) == 5
        if last_batch:
            raise KeyboardInterrupt(f"killed after {name}")
        return result

    monkeypatch.setattr(target, name, step_then_die)
    url = f"sqlite:///{tmp_path / 'crashed.db'}"
    with Store(url) as store, pytest.raises(KeyboardInterrupt):
        ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=250, quarantine_dir=tmp_path / "q")
    monkeypatch.setattr(target, name, original)
    with Store(url) as store:
        ledger = pd.read_sql(sa.select(INGEST_BATCHES), store.engine)
        assert ledger["status"].value_counts().to_dict() == {"done": 4, "started": 1}
        summary = ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=250,
                               quarantine_dir=tmp_path / "q")
        sums = store_checksums(store)
    assert summary.batches_skipped == 4 and summary.rows == 1_250
    assert summary.rows == summary.valid + summary.rejected
    assert sums == clean_sums
    assert quarantine_view(tmp_path / "q").equals(clean_q)


def test_rerun_after_success_skips_everything_and_no_resume_changes_nothing(small_csv, tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        first = ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=500,
                             quarantine_dir=tmp_path / "q")
        before = store_checksums(store)
        again = ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=500,
                             quarantine_dir=tmp_path / "q")
        assert again.batches_skipped == again.batches == 3 and again.rows_this_run == 0
        assert (again.inserted, again.valid, again.rejected) == (first.inserted, first.valid, first.rejected)
        assert store_checksums(store) == before
        forced = ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=500,
                              quarantine_dir=tmp_path / "q", resume=False)
        # Every batch sent again: the amendments flip their manifests back and forth, nothing else.
        assert forced.batches_skipped == 0 and forced.inserted == 0
        assert forced.rows == first.rows and forced.rejected == first.rejected
    parts = sorted(p.name for p in (tmp_path / "q").iterdir())
    assert parts == sorted(Path(p).name for p in first.quarantine_parts)
    assert set(parts) == {quarantine_part_name(small_csv, i) for i in range(3)}
    assert len(read_quarantine(tmp_path / "q")) == first.rejected  # replaced, never appended


def test_rerun_after_a_crash_skips_committed_batches_without_validating_them(small_csv, tmp_path, monkeypatch):
    """Batches recorded as done with the same checksum are neither validated, stored, scored nor
    planned again: only the interrupted batch and the ones after it are."""
    import riskengine.ingest as ingest_mod
    import riskengine.service.workflow as workflow

    url = f"sqlite:///{tmp_path / 'crashed.db'}"
    original = workflow.ingest_manifests
    sent: list[int] = []

    def die_in_batch_3(store, scorer, batch, *args, **kwargs):
        sent.append(int(batch["source_row"].min()))
        report = original(store, scorer, batch, *args, **kwargs)
        if len(sent) == 3:
            raise KeyboardInterrupt("killed inside batch 2")
        return report

    monkeypatch.setattr(workflow, "ingest_manifests", die_in_batch_3)
    with Store(url) as store, pytest.raises(KeyboardInterrupt):
        ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=250, quarantine_dir=tmp_path / "q")
    assert sent == [1, 251, 501]

    validated: list[int] = []
    real_validate = ingest_mod.validate

    def counted_validate(batch, *args, **kwargs):
        validated.append(int(batch["source_row"].min()))
        return real_validate(batch, *args, **kwargs)

    sent.clear()
    monkeypatch.setattr(workflow, "ingest_manifests", lambda store, scorer, batch, *a, **k: (
        sent.append(int(batch["source_row"].min())), original(store, scorer, batch, *a, **k))[1])
    monkeypatch.setattr(ingest_mod, "validate", counted_validate)
    with Store(url) as store:
        summary = ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=250,
                               quarantine_dir=tmp_path / "q")
    assert summary.batches == 5 and summary.batches_skipped == 2 and summary.rows_this_run == 750
    assert sent == [501, 751, 1001]  # batches 0 and 1 (rows 1-500) are not sent again
    assert validated == [501]  # only the interrupted batch, for its re-plan
    assert summary.rows == summary.valid + summary.rejected == 1_250


def test_a_deleted_quarantine_part_is_written_again(small_csv, tmp_path):
    with Store(f"sqlite:///{tmp_path / 's.db'}") as store:
        first = ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=500,
                             quarantine_dir=tmp_path / "q", quarantine_format="csv")
        before = store_checksums(store)
        lost = tmp_path / "q" / quarantine_part_name(small_csv, 1, "csv")
        n_lost = len(pd.read_csv(lost))
        lost.unlink()
        (tmp_path / "q" / f".{lost.name}.0123.tmp").write_text("half a part")  # a killed write
        again = ingest_files(store, HashScorer(), small_csv, config=CONFIG, batch_rows=500,
                             quarantine_dir=tmp_path / "q", quarantine_format="csv")
        # Only the part was rebuilt: sending batch 1 again would undo the amendments of batch 2.
        assert store_checksums(store) == before
    assert n_lost > 0 and lost.is_file() and len(pd.read_csv(lost)) == n_lost
    assert again.batches_skipped == 3 and again.rows_this_run == 0
    assert sorted(p.name for p in (tmp_path / "q").iterdir() if p.name.startswith(".")) == []
    assert len(read_quarantine(tmp_path / "q")) == first.rejected == again.rejected


# --------------------------------------------------------------------------------------------
# kill -9 of the real commands
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A small manifest model (20 trees) trained on 60 days of generated traffic."""
    train = generate_manifests(4_000, days=60, seed=1, illicit_rate=0.05)
    model = RiskModel(n_estimators=20, early_stopping_rounds=5, seed=1).fit(train)
    return model.save(tmp_path_factory.mktemp("model") / "manifest")


@pytest.fixture(params=["sqlite", "postgresql"])
def two_store_urls(request, tmp_path):
    """Two empty stores of one backend: one to crash, one for the uninterrupted reference."""
    if request.param == "sqlite":
        yield [f"sqlite:///{tmp_path / 'crashed.db'}", f"sqlite:///{tmp_path / 'clean.db'}"]
        return
    reason = pg_skip_reason()
    if reason:
        pytest.skip(reason)
    names = [f"rcrash_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    admin = sa.create_engine(pg_url())
    with admin.begin() as conn:
        for n in names:
            conn.execute(sa.text(f'CREATE SCHEMA "{n}"'))
    base = sa.engine.make_url(pg_url())
    try:
        yield [base.update_query_dict({"options": f"-csearch_path={n}"}).render_as_string(hide_password=False)
               for n in names]
    finally:
        with admin.begin() as conn:
            for n in names:
                conn.execute(sa.text(f'DROP SCHEMA "{n}" CASCADE'))
        admin.dispose()


def count_rows(url: str, table: str, where: str = "") -> int:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} {where}")).scalar_one())
    except sa.exc.SQLAlchemyError:
        return 0  # not created yet
    finally:
        engine.dispose()


def kill_when(cmd: list[str], ready, log: Path, timeout_s: float = 300) -> int:
    """Run ``cmd``; SIGKILL it as soon as ``ready()``; returns its exit status."""
    with open(log, "ab") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=fh, stderr=fh)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if proc.poll() is not None:
                raise AssertionError(f"the command ended before the kill point: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the kill point was never reached")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_json(cmd: list[str]) -> dict:
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def inside_next_batch(url: str, done: int, table: str):
    """True once ``done`` batches are done and the next one committed rows to ``table``."""
    base: list[int] = []

    def ready() -> bool:
        if not base:
            if count_rows(url, "ingest_batches", "WHERE status = 'done'") >= done:
                base.append(count_rows(url, table))
            return False
        return count_rows(url, table) > base[0]

    return ready


@pytest.mark.slow
def test_kill_9_during_ingest_then_rerun_equals_an_uninterrupted_run(two_store_urls, model_dir, tmp_path):
    crashed, clean = two_store_urls
    data = tmp_path / "arrivals.csv"
    bad_manifests(8_000, seed=5).to_csv(data, index=False)  # 8080 rows, ~330 bad, 80 amendments

    def cmd(url: str, q: Path) -> list[str]:
        return [*CLI, "ingest", "--data", str(data), "--db", url, "--model", str(model_dir),
                "--batch-rows", "1000", "--quarantine", str(q), "--reasons", "1", "--json"]

    log = tmp_path / "ingest.log"
    # Killed inside batch 2 after its manifests, inside batch 4 after its scores, inside
    # batch 7 after its decisions (before each is recorded as done).
    for done, table in ((1, "manifests"), (3, "scores"), (6, "decisions")):
        status = kill_when(cmd(crashed, tmp_path / "qa"), inside_next_batch(crashed, done, table), log)
        assert status == -signal.SIGKILL
        assert count_rows(crashed, "ingest_batches", "WHERE status = 'done'") < 9
    resumed = run_json(cmd(crashed, tmp_path / "qa"))
    reference = run_json(cmd(clean, tmp_path / "qb"))

    assert resumed["batches"] == reference["batches"] == 9 and resumed["batches_skipped"] >= 6
    for k in ("rows", "valid", "rejected"):
        assert resumed[k] == reference[k]
    assert resumed["rows"] == 8_080 == resumed["valid"] + resumed["rejected"]
    with Store(crashed) as a, Store(clean) as b:
        got, want = store_checksums(a), store_checksums(b)
    assert got["manifests"] == got["manifest_ids_distinct"] == want["manifests"]
    assert got == want  # manifests, revisions, scores, decisions (history and latest), audit
    qa, qb = quarantine_view(tmp_path / "qa"), quarantine_view(tmp_path / "qb")
    assert len(qa) == resumed["rejected"] and qa.equals(qb)
    assert not [p for p in (tmp_path / "qa").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_kill_9_during_rescore_then_rerun_equals_an_uninterrupted_run(model_dir, tmp_path):
    df = bad_manifests(6_000, seed=8).iloc[:6_000]
    dup = df["manifest_id"].duplicated()
    df.loc[dup, "manifest_id"] = df.loc[dup, "manifest_id"].astype(str) + "-" + np.arange(int(dup.sum())).astype(str)
    archive = tmp_path / "archive"
    archive.mkdir()
    for k, rows in enumerate(np.array_split(np.arange(len(df)), 4)):  # 4 files, row groups of 500
        df.iloc[rows].astype("string").to_parquet(archive / f"part{k}.parquet", index=False, row_group_size=500)
    assert sum(len(plan_parquet(f, 500)) for f in archive.iterdir()) == 12

    def cmd(out: Path) -> list[str]:
        return [*CLI, "rescore", "--model", str(model_dir), "--data", str(archive), "--out", str(out),
                "--chunk-rows", "500", "--json"]

    out, ref = tmp_path / "crashed", tmp_path / "clean"
    log = tmp_path / "rescore.log"
    for parts in (3, 8):
        status = kill_when(cmd(out), lambda p=parts: len(list(out.glob("part-*.parquet"))) >= p, log)
        assert status == -signal.SIGKILL
    assert 8 <= len(list(out.glob("part-*.parquet"))) < 12
    (out / ".part-killed-mid-write.parquet.5f3a.tmp").write_bytes(b"PAR1 half")  # as a kill leaves it
    resumed = run_json(cmd(out))
    reference = run_json(cmd(ref))
    assert resumed["parts_skipped"] >= 8 and resumed["parts_written"] + resumed["parts_skipped"] == 12
    assert (resumed["rows"], resumed["scored"], resumed["rejected"]) == \
        (reference["rows"], reference["scored"], reference["rejected"])
    got, want = read_scores(out), read_scores(ref)
    assert len(got) + len(read_scores(out, quarantine=True)) == 6_000
    assert not got["manifest_id"].duplicated().any()

    def pairs(s: pd.DataFrame) -> list[tuple[str, str]]:
        return sorted(zip(s["manifest_id"].astype(str), s["risk_score"].map("{:.12g}".format), strict=True))

    assert pairs(got) == pairs(want)
    qa, qb = read_scores(out, quarantine=True), read_scores(ref, quarantine=True)
    assert len(qa) == len(qb) == resumed["rejected"] > 0
    assert sorted(qa["manifest_id"].astype(str)) == sorted(qb["manifest_id"].astype(str))
    assert not list(out.rglob(".*.tmp"))


# --------------------------------------------------------------------------------------------
# The command-line contract
# --------------------------------------------------------------------------------------------

def test_ingest_help_documents_the_options():
    res = CliRunner().invoke(main, ["ingest", "--help"])
    assert res.exit_code == 0
    for opt in ("--data", "--db", "--model", "--batch-rows", "--quarantine", "--quarantine-format",
                "--no-resume", "--json", "crash-safe"):
        assert opt in res.output


def test_ingest_cli_errors_exit_1_with_a_reason(tmp_path, small_csv, model_dir):
    runner = CliRunner()
    db = str(tmp_path / "s.db")
    res = runner.invoke(main, ["ingest", "--data", str(tmp_path / "nope.csv"), "--db", db])
    assert res.exit_code == 1 and "FileNotFoundError: input not found" in res.output
    res = runner.invoke(main, ["ingest", "--data", str(small_csv), "--db", db, "--model", str(tmp_path)])
    assert res.exit_code == 1 and "ModelUnavailableError: no manifest risk model" in res.output
    no_vgm = tmp_path / "no_vgm.csv"
    pd.read_csv(small_csv, dtype=str).drop(columns=["vgm_kg"]).to_csv(no_vgm, index=False)
    res = runner.invoke(main, ["ingest", "--data", str(no_vgm), "--db", db, "--model", str(model_dir)])
    assert res.exit_code == 1 and "SchemaError: missing required column(s) ['vgm_kg']" in res.output
    assert Store(f"sqlite:///{db}").counts()["manifests"] == 0


def test_ingest_cli_summary(tmp_path, small_csv, model_dir):
    res = CliRunner().invoke(main, ["ingest", "--data", str(small_csv), "--db", str(tmp_path / "s.db"),
                                    "--model", str(model_dir), "--batch-rows", "800", "--reasons", "0",
                                    "--quarantine", str(tmp_path / "q"), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output.strip().splitlines()[-1])
    assert s["rows"] == 1_250 == s["valid"] + s["rejected"] and s["batches"] == 2
    assert s["inserted"] + s["updated"] + s["unchanged"] == s["valid"] and s["decisions"] > 0
    assert len(s["quarantine_parts"]) == 2 and s["top_reasons"][0]["rows"] > 0
    res = CliRunner().invoke(main, ["ingest", "--data", str(small_csv), "--db", str(tmp_path / "s.db"),
                                    "--model", str(model_dir), "--batch-rows", "800", "--reasons", "0",
                                    "--quarantine", str(tmp_path / "q")])
    assert res.exit_code == 0
    assert "2 done by an earlier run, skipped" in res.output and "quarantined" in res.output
