"""Benchmark: kill -9 during `riskengine ingest` and `riskengine rescore`, rerun, compare.

For each scenario the command runs **in a separate process** on generated manifests with bad
rows mixed in; this script polls the database (ingest: batches recorded as done) or the output
folder (rescore: finished parts) and sends SIGKILL at the kill points (fractions of the work,
default 20 %, 50 % and 80 %; an ingest is killed inside the next batch, right after it committed
its manifests, its scores, its decisions in turn), then reruns the same command to the end. A second, uninterrupted run
on a fresh database / folder is the reference. Recorded: the kill points (work done, rows
stored, seconds), the summaries, and the counts and checksums of both states:

* ingest (SQLite, and PostgreSQL when a server answers): manifests (count, distinct ids,
  SHA-256 over (id, content hash) and (id, revision)), scores, decisions (per stage, whole
  history and latest per manifest), audit rows per action (``riskengine.ingest.store_checksums``),
  the quarantined rows (count, ids, reasons) and rows in = valid + quarantined;
* rescore: scored rows, duplicate ids, SHA-256 over sorted (id, risk_score), quarantined rows,
  leftover temporary files.

    python benchmarks/crash_safety.py                              # 200 000 rows, SQLite + rescore
    python benchmarks/crash_safety.py --rows 20000 --pg-url postgresql+psycopg://u:p@host/db
    python benchmarks/crash_safety.py --rows 5000 --out /tmp/crash.json --kill-at 0.5 --skip postgresql
    python benchmarks/crash_safety.py --rerun-only --rows 20000 --batch-rows 2000 --kill-at 0.5

Writes ``benchmarks/results/crash_safety.json``. ``--rerun-only`` measures only what a rerun after
a crash costs (SQLite): the ingest is killed once, rerun to the end, then run a third time with
every batch done, which is the pure cost of skipping committed batches by checksum (read, hash,
compare; no validation, no scoring); written to ``benchmarks/results/crash_rerun.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "import sys; from riskengine.cli import main; sys.exit(main())"]
PG_DEFAULT_URL = "postgresql+psycopg://riskengine:riskengine@127.0.0.1:5432/riskengine"


# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------

def bad_manifests(rows: int, *, seed: int, start: str, bad_share: float = 0.02) -> tuple[pd.DataFrame, dict[str, int]]:
    """Generated manifests with bad rows of every kind a real file brings, and late amendments.

    The generator breaks ``bad_share`` of the rows its own way (check digits, negative weights,
    unreadable dates, missing consignees, broken HS codes, repeated ids); on top of that, 1 % of
    the rows get a value the schema refuses (text or ``inf`` in a number, a container number of
    the wrong length, an unknown country, a payment term), and 0.5 % are sent again later in the
    file as amendments (another terminal, another weight): updates that move a manifest to
    another queue.
    """
    from riskengine.schema import MANIFEST_COLUMNS
    from riskengine.synth import generate_manifests

    days = max(2, rows // 5_000)
    df = generate_manifests(rows, seed=seed, start=start, days=days, corrupt_rate=bad_share)
    corrupt = int(df.attrs["synth"]["corrupt_rows"])
    df = df[list(MANIFEST_COLUMNS)].astype(object)
    rng = np.random.default_rng(seed)
    n_bad = max(5, rows // 100)
    idx = rng.choice(rows, n_bad, replace=False)
    kinds = [("gross_weight_kg", "heavy"), ("vgm_kg", "inf"), ("declared_value", "NaN"),
             ("container_id", "MSKU12345"), ("origin_country", "XX"), ("freight_payment", "barter")]
    for k, i in enumerate(idx):
        col, value = kinds[k % len(kinds)]
        df.iat[int(i), df.columns.get_loc(col)] = value
    n_amend = max(2, rows // 200)
    orig = rng.choice(rows, n_amend, replace=False)
    amend = df.iloc[orig].copy()
    terminals = sorted(set(df["terminal"].dropna().astype(str)))
    amend["terminal"] = [terminals[(terminals.index(str(t)) + 1) % len(terminals)] if str(t) in terminals
                         else terminals[0] for t in amend["terminal"]]
    amend["gross_weight_kg"] = pd.to_numeric(amend["gross_weight_kg"], errors="coerce").fillna(1000.0) + 125.0
    # Each amendment comes later in the file than its manifest, anywhere up to the end.
    key = np.concatenate([np.arange(rows, dtype=float), rng.uniform(orig + 1, rows + 1)])
    out = pd.concat([df, amend], ignore_index=True).iloc[np.argsort(key, kind="stable")].reset_index(drop=True)
    return out, {"generated_corrupt": corrupt, "injected_bad": int(n_bad), "amendments": int(n_amend),
                 "days": days}


# --------------------------------------------------------------------------------------------
# Killing a command
# --------------------------------------------------------------------------------------------

def run_and_kill(cmd: list[str], ready, log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Start ``cmd`` and SIGKILL it as soon as ``ready()`` is true. Returns what happened."""
    t0 = time.perf_counter()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
        try:
            while not ready():
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd[3:5]} ended (exit {proc.returncode}) before the kill "
                                       f"point; see {log_path}")
                if time.perf_counter() - t0 > timeout_s:
                    raise RuntimeError(f"the kill point was not reached in {timeout_s:.0f} s")
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return {"seconds": round(time.perf_counter() - t0, 2), "returncode": proc.returncode,
            "killed_by_sigkill": proc.returncode == -signal.SIGKILL}


def run_to_end(cmd: list[str], log_path: Path) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    with open(log_path, "a") as log:
        log.write(res.stderr)
    if res.returncode != 0:
        raise RuntimeError(f"{cmd[3:5]} failed (exit {res.returncode}): {res.stderr[-2000:]}")
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    return summary, round(time.perf_counter() - t0, 2)


# --------------------------------------------------------------------------------------------
# Ingest
# --------------------------------------------------------------------------------------------

def count_rows(url: str, table: str, where: str = "") -> int:
    """Rows of a table (0 while it does not exist yet), on a connection of its own."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} {where}")).scalar_one())
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


#: Where inside a batch the kill lands: right after the batch's manifests, its scores or its
#: decisions were committed (before the batch is recorded as done).
KILL_MOMENTS = ("manifests", "scores", "decisions")


def ingest_kill_point(url: str, batches_done: int, moment: str):
    """A ``ready()`` predicate: ``batches_done`` batches are done and the next one has committed
    its ``moment`` table (the kill then lands inside that batch)."""
    base: list[int] = []

    def ready() -> bool:
        if not base:
            if count_rows(url, "ingest_batches", "WHERE status = 'done'") >= batches_done:
                base.append(count_rows(url, moment))
            return False
        return count_rows(url, moment) > base[0]

    return ready


def quarantine_rows(folder: Path) -> pd.DataFrame:
    from riskengine.ingest import read_quarantine

    q = read_quarantine(folder)
    cols = ["source_row", "manifest_id", "reject_column", "reject_reason"]
    q = q.reindex(columns=cols).astype("string").fillna("")
    return q.sort_values(cols).reset_index(drop=True)


def frame_sha256(df: pd.DataFrame) -> str:
    return hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()


def ingest_scenario(backend: str, url_a: str, url_b: str, data: Path, work: Path, *, model: Path,
                    batch_rows: int, reasons: int, kill_at: list[float], total_rows: int) -> dict[str, Any]:
    from riskengine.ingest import store_checksums
    from riskengine.store import Store

    n_batches = -(-total_rows // batch_rows)
    log_path = work / f"ingest-{backend}.log"

    def cmd(url: str, qdir: Path) -> list[str]:
        return [*CLI, "ingest", "--data", str(data), "--db", url, "--model", str(model),
                "--batch-rows", str(batch_rows), "--quarantine", str(qdir), "--reasons", str(reasons), "--json"]

    qa, qb = work / f"q-{backend}-crashed", work / f"q-{backend}-clean"
    kills = []
    for i, frac in enumerate(kill_at):
        threshold = max(1, min(n_batches - 2, int(round(frac * n_batches))))
        moment = KILL_MOMENTS[i % len(KILL_MOMENTS)]
        k = run_and_kill(cmd(url_a, qa), ingest_kill_point(url_a, threshold, moment), log_path, 7200)
        k.update(fraction=frac, after_batches=threshold, inside_batch_after=moment, batches=n_batches,
                 batches_done=count_rows(url_a, "ingest_batches", "WHERE status = 'done'"),
                 batch_started_not_done=count_rows(url_a, "ingest_batches", "WHERE status = 'started'"),
                 manifests_stored=count_rows(url_a, "manifests"), scores_stored=count_rows(url_a, "scores"),
                 decisions_stored=count_rows(url_a, "decisions"))
        kills.append(k)
    resumed, resumed_s = run_to_end(cmd(url_a, qa), log_path)
    clean, clean_s = run_to_end(cmd(url_b, qb), log_path)
    with Store(url_a) as a, Store(url_b) as b:
        ca, cb = store_checksums(a), store_checksums(b)
    qra, qrb = quarantine_rows(qa), quarantine_rows(qb)
    tmp_left = sorted(p.name for p in qa.glob(".*"))
    equal = {
        "store": ca == cb,
        "quarantine": qra.equals(qrb),
        "summary_rows": all(resumed[k] == clean[k] for k in ("rows", "valid", "rejected")),
    }
    return {
        "backend": backend, "batch_rows": batch_rows, "batches": n_batches, "kills": kills,
        "resumed_run": {"seconds": resumed_s, **{k: resumed[k] for k in (
            "rows", "valid", "rejected", "inserted", "updated", "unchanged", "decisions",
            "batches", "batches_skipped")}},
        "clean_run": {"seconds": clean_s, "rows_per_s": clean.get("rows_per_s"), **{k: clean[k] for k in (
            "rows", "valid", "rejected", "inserted", "updated", "unchanged", "decisions", "batches")}},
        "rows_in_equals_valid_plus_quarantined": (resumed["rows"] == resumed["valid"] + resumed["rejected"]
                                                   and resumed["rejected"] == len(qra)),
        "crashed_then_resumed": {**ca, "quarantined_rows": len(qra), "quarantine_sha256": frame_sha256(qra)},
        "uninterrupted": {**cb, "quarantined_rows": len(qrb), "quarantine_sha256": frame_sha256(qrb)},
        "temporary_files_left": tmp_left,
        "equal": equal,
        "all_equal": all(equal.values()) and not tmp_left,
    }


def rerun_scenario(data: Path, work: Path, *, model: Path, batch_rows: int, reasons: int,
                   kill_at: float, total_rows: int) -> dict[str, Any]:
    """Kill an ingest once, rerun it, then run it again with every batch done (SQLite)."""
    url = f"sqlite:///{work / 'rerun.db'}"
    n_batches = -(-total_rows // batch_rows)
    log_path = work / "rerun.log"
    cmd = [*CLI, "ingest", "--data", str(data), "--db", url, "--model", str(model), "--batch-rows",
           str(batch_rows), "--quarantine", str(work / "q-rerun"), "--reasons", str(reasons), "--json"]
    threshold = max(1, min(n_batches - 2, int(round(kill_at * n_batches))))
    kill = run_and_kill(cmd, ingest_kill_point(url, threshold, "scores"), log_path, 7200)
    kill.update(fraction=kill_at, after_batches=threshold, inside_batch_after="scores",
                batches_done=count_rows(url, "ingest_batches", "WHERE status = 'done'"))
    keys = ("rows", "batches", "batches_skipped", "rows_this_run", "seconds", "skipped_seconds",
            "rows_per_s", "inserted", "unchanged", "decisions")
    resumed, resumed_s = run_to_end(cmd, log_path)
    again, again_s = run_to_end(cmd, log_path)
    skipped_rows = again["rows"]

    def rate(rows: int, seconds: float) -> float | None:
        return round(rows / seconds, 1) if seconds else None

    return {
        "backend": "sqlite", "batch_rows": batch_rows, "batches": n_batches, "kill": kill,
        "resumed_run": {"wall_seconds": resumed_s, **{k: resumed.get(k) for k in keys},
                        "skipped_rows_per_s": rate(resumed["rows"] - resumed["rows_this_run"],
                                                   resumed["skipped_seconds"])},
        "all_done_run": {"wall_seconds": again_s, **{k: again.get(k) for k in keys},
                         "skipped_rows_per_s": rate(skipped_rows, again["skipped_seconds"])},
        "every_batch_skipped_when_all_done": again["batches_skipped"] == again["batches"] == n_batches
                                             and again["rows_this_run"] == 0,
    }


# --------------------------------------------------------------------------------------------
# Rescore
# --------------------------------------------------------------------------------------------

def rescore_input(folder: Path, rows: int, *, seed: int, start: str, files: int, row_group: int) -> dict[str, Any]:
    """Bad manifests with unique ids, split over ``files`` Parquet files of ``row_group``-row groups."""
    df, info = bad_manifests(rows, seed=seed, start=start)
    df = df.iloc[:rows].copy()  # no amendments: every id once
    dup = df["manifest_id"].duplicated(keep="first")
    df.loc[dup, "manifest_id"] = df.loc[dup, "manifest_id"].astype(str) + "-R" + pd.Series(range(int(dup.sum())), index=df.index[dup]).astype(str)
    folder.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(np.array_split(np.arange(len(df)), files)):
        df.iloc[part].astype("string").to_parquet(folder / f"archive-{k:02d}.parquet", index=False,
                                                  row_group_size=row_group)
    return {**info, "rows": len(df), "files": files, "row_group": row_group}


def rescore_scenario(data: Path, work: Path, *, model: Path, chunk_rows: int, kill_at: list[float],
                     rows: int) -> dict[str, Any]:
    from riskengine.rescore import expand_inputs, plan_parquet, read_scores

    n_parts = sum(len(plan_parquet(f, chunk_rows)) for f in expand_inputs(str(data)))
    out_a, out_b = work / "rescore-crashed", work / "rescore-clean"
    log_path = work / "rescore.log"

    def cmd(out: Path) -> list[str]:
        return [*CLI, "rescore", "--model", str(model), "--data", str(data), "--out", str(out),
                "--chunk-rows", str(chunk_rows), "--json"]

    kills = []
    for frac in kill_at:
        threshold = max(1, min(n_parts - 1, int(round(frac * n_parts))))
        k = run_and_kill(cmd(out_a), lambda t=threshold: len(list(out_a.glob("part-*.parquet"))) >= t,
                         log_path, 7200)
        k.update(fraction=frac, after_parts=threshold, parts=n_parts,
                 parts_done=len(list(out_a.glob("part-*.parquet"))),
                 temporary_files_after_kill=len(list(out_a.rglob(".*.tmp"))))
        kills.append(k)
    resumed, resumed_s = run_to_end(cmd(out_a), log_path)
    clean, clean_s = run_to_end(cmd(out_b), log_path)

    def state(out: Path) -> dict[str, Any]:
        s = read_scores(out)
        q = read_scores(out, quarantine=True)
        ids = s["manifest_id"].astype(str)
        pairs = pd.DataFrame({"id": ids, "risk": s["risk_score"].map(lambda v: f"{v:.12g}")}).sort_values(["id", "risk"])
        return {"scored_rows": len(s), "duplicate_ids": int(ids.duplicated().sum()),
                "scores_sha256": frame_sha256(pairs), "quarantined_rows": len(q),
                "quarantine_ids_sha256": frame_sha256(q[["manifest_id"]].astype("string").sort_values("manifest_id")),
                "temporary_files": sorted(p.name for p in out.rglob(".*.tmp"))}

    sa_, sb = state(out_a), state(out_b)
    return {
        "chunk_rows": chunk_rows, "parts": n_parts, "kills": kills,
        "resumed_run": {"seconds": resumed_s, **{k: resumed[k] for k in (
            "rows", "scored", "rejected", "parts_written", "parts_skipped")}},
        "clean_run": {"seconds": clean_s, **{k: clean[k] for k in ("rows", "scored", "rejected", "parts_written")}},
        "crashed_then_resumed": sa_, "uninterrupted": sb,
        "rows_in_equals_scored_plus_quarantined": sa_["scored_rows"] + sa_["quarantined_rows"] == rows,
        "all_equal": sa_ == sb and not sa_["temporary_files"] and sa_["duplicate_ids"] == 0,
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def hide_passwords(text: str) -> str:
    """``scheme://user:secret@host`` → ``scheme://user:***@host`` (results files are committed)."""
    return re.sub(r"(://[^:/@\s]+):[^@\s]+@", r"\1:***@", text)


def pg_schema_pair(url: str) -> tuple[list[str], Any] | None:
    """Two fresh schemas on the PostgreSQL server (URLs with their search_path) and a cleanup."""
    import sqlalchemy as sa

    try:
        admin = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with admin.begin() as conn:
            names = [f"crash_{uuid.uuid4().hex[:10]}" for _ in range(2)]
            for n in names:
                conn.execute(sa.text(f'CREATE SCHEMA "{n}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means no PostgreSQL for this run
        print(f"PostgreSQL skipped: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
        return None
    base = sa.engine.make_url(url)
    urls = [base.update_query_dict({"options": f"-csearch_path={n}"}).render_as_string(hide_password=False)
            for n in names]

    def drop() -> None:
        with admin.begin() as conn:
            for n in names:
                conn.execute(sa.text(f'DROP SCHEMA "{n}" CASCADE'))
        admin.dispose()

    return urls, drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000, help="Manifest rows of the SQLite ingest and the rescore.")
    ap.add_argument("--batch-rows", type=int, default=5_000)
    ap.add_argument("--pg-url", default=os.environ.get("RISKENGINE_TEST_PG_URL", PG_DEFAULT_URL),
                    help="PostgreSQL server for the PostgreSQL scenario (two schemas are created and dropped).")
    ap.add_argument("--pg-rows", type=int, default=None, help="Rows of the PostgreSQL ingest (default: --rows).")
    ap.add_argument("--rescore-rows", type=int, default=None, help="Rows of the rescore scenario (default: --rows).")
    ap.add_argument("--chunk-rows", type=int, default=10_000, help="Rescore chunk size.")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "manifest")
    ap.add_argument("--reasons", type=int, default=3)
    ap.add_argument("--kill-at", type=float, nargs="+", default=[0.2, 0.5, 0.8],
                    help="Kill points as fractions of the batches / parts done; an ingest is killed "
                         "inside the next batch, right after its manifests, scores, decisions in turn.")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--skip", nargs="*", default=[], choices=["sqlite", "postgresql", "rescore"])
    ap.add_argument("--rerun-only", action="store_true",
                    help="Measure only the rerun after one crash and a run with every batch done "
                         "(SQLite; the first --kill-at); default output crash_rerun.json.")
    ap.add_argument("--out", type=Path, default=None,
                    help="Results file (default benchmarks/results/crash_safety.json, or crash_rerun.json).")
    args = ap.parse_args()
    if args.out is None:
        args.out = ROOT / "benchmarks" / "results" / ("crash_rerun.json" if args.rerun_only else "crash_safety.json")

    from riskengine.model import RiskModel
    from scanvision.bench import machine_info

    end = RiskModel.load(args.model).training_.get("end")
    start = (pd.Timestamp(end) + pd.Timedelta(days=11)).date().isoformat() if end else "2026-06-01"
    result: dict[str, Any] = {
        "benchmark": "crash_safety", "timestamp": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "command": hide_passwords(" ".join([Path(sys.executable).name, *sys.argv])), "model": str(args.model),
        "kill_at": args.kill_at, "machine": machine_info(), "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="crash-") as tmp:
        work = Path(tmp)
        if args.rerun_only:
            df, info = bad_manifests(args.rows, seed=args.seed, start=start)
            data = work / "manifests-rerun.csv"
            df.to_csv(data, index=False)
            res = rerun_scenario(data, work, model=args.model, batch_rows=args.batch_rows,
                                 reasons=args.reasons, kill_at=args.kill_at[0], total_rows=len(df))
            result["benchmark"] = "crash_rerun"
            result["scenarios"]["rerun_sqlite"] = {"input": {**info, "rows": len(df), "file": "CSV"}, **res}
            args.skip = ["sqlite", "postgresql", "rescore"]
        for backend in ("sqlite", "postgresql"):
            if backend in args.skip:
                continue
            rows = args.rows if backend == "sqlite" else (args.pg_rows or args.rows)
            df, info = bad_manifests(rows, seed=args.seed, start=start)
            data = work / f"manifests-{backend}.csv"
            df.to_csv(data, index=False)
            print(f"{backend}: {len(df):,} rows ({info})", file=sys.stderr)
            if backend == "sqlite":
                urls, drop = [f"sqlite:///{work / 'crashed.db'}", f"sqlite:///{work / 'clean.db'}"], None
            else:
                pair = pg_schema_pair(args.pg_url)
                if pair is None:
                    result["scenarios"]["ingest_postgresql"] = {"skipped": f"no PostgreSQL server at {args.pg_url.split('@')[-1]}"}
                    continue
                urls, drop = pair
            try:
                res = ingest_scenario(backend, urls[0], urls[1], data, work, model=args.model,
                                      batch_rows=args.batch_rows, reasons=args.reasons,
                                      kill_at=args.kill_at, total_rows=len(df))
            finally:
                if drop is not None:
                    drop()
            result["scenarios"][f"ingest_{backend}"] = {"input": {**info, "rows": len(df), "file": "CSV"}, **res}
            print(json.dumps({k: res[k] for k in ("kills", "equal", "all_equal")}, default=str), file=sys.stderr)
        if "rescore" not in args.skip:
            rows = args.rescore_rows or args.rows
            data = work / "archive"
            info = rescore_input(data, rows, seed=args.seed + 1, start=start, files=4,
                                 row_group=max(1, args.chunk_rows // 2))
            res = rescore_scenario(data, work, model=args.model, chunk_rows=args.chunk_rows,
                                   kill_at=args.kill_at, rows=info["rows"])
            result["scenarios"]["rescore"] = {"input": info, **res}
            print(json.dumps({k: res[k] for k in ("kills", "all_equal")}, default=str), file=sys.stderr)
    result["all_equal"] = all(s.get("all_equal", True) for s in result["scenarios"].values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {args.out}: all equal = {result['all_equal']}", file=sys.stderr)


if __name__ == "__main__":
    main()
