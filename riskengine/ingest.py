"""Streaming ingest of manifest files into the store: validate, store, score, plan; crash-safe.

A manifest file (CSV or Parquet, any size) is read as a stream and cut into batches of exactly
``batch_rows`` rows. Each batch goes through :func:`riskengine.service.workflow.ingest_manifests`
(validate → upsert in one transaction → score what is new or changed → re-plan the affected
queues), then its rejected rows are written to a quarantine part. The ``ingest_batches`` table
of the same database records each batch as ``started`` before and ``done`` after.

Crash safety (a ``kill -9`` at any moment, then the same command again):

* a batch recorded as done, with the same content (SHA-256 of the rows as read), is skipped, so
  the rerun does not touch what the first run finished: the manifests, scores, decisions and
  audit rows end up exactly as after one uninterrupted run (sending a finished batch again would
  not be harmless: it would undo later amendments of its manifests until their batch came by);
* the batch that was running when the process died (``started``) is sent again: upserts are
  keyed by ``manifest_id`` and a content hash (a row stored before the crash is "unchanged"),
  manifests whose score is missing or stale are scored, and every queue the batch touches is
  re-planned (plans are deterministic and only changed decisions are written, so nothing is
  duplicated and the queues end as if the batch had run once);
* quarantine parts (one file per batch, named after the input and the batch number) are
  written under a temporary name and renamed into place, so a part is complete or absent and a
  rerun replaces it with the same rows, never appends them twice.

Every input row is either stored (valid) or quarantined with its reasons:
``rows == valid + rejected`` for the run and for every batch.

Example::

    from riskengine.ingest import ingest_files
    from riskengine.service.scoring import ModelScorer
    from riskengine.store import Store

    summary = ingest_files(Store("sqlite:///riskengine.db"), ModelScorer("models/manifest"),
                           ["arrivals.csv"], quarantine_dir="quarantine/")
    summary.rows == summary.valid + summary.rejected
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from riskengine.queue import QueueConfig
from riskengine.schema import ROW_COLUMN, ValidationResult, iter_manifest_chunks, validate
from riskengine.store import Store, utcnow

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 5_000
QUARANTINE_FORMATS = ("parquet", "csv")
#: Columns every quarantine part starts with; the rejected row as received follows.
QUARANTINE_FRONT = ("source_file", "batch", ROW_COLUMN, "reject_column", "reject_reason", "reject_reasons")

Progress = Callable[[int], None]

_META = sa.MetaData()
#: One row per batch: what it held (content hash), whether it finished, and what it did.
INGEST_BATCHES = sa.Table(
    "ingest_batches", _META,
    sa.Column("source_key", sa.String(40), primary_key=True,
              doc="SHA-1 of the input's absolute path and the batch size."),
    sa.Column("batch", sa.Integer, primary_key=True, doc="0-based batch number in the input."),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("batch_rows", sa.Integer, nullable=False),
    sa.Column("status", sa.String(8), nullable=False,
              doc="'started' while the batch is being ingested, 'done' when it finished."),
    sa.Column("content_sha256", sa.String(64), nullable=False),
    sa.Column("first_row", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("valid", sa.Integer, nullable=False),
    sa.Column("rejected", sa.Integer, nullable=False),
    sa.Column("inserted", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("unchanged", sa.Integer, nullable=False),
    sa.Column("scored", sa.Integer, nullable=False),
    sa.Column("decisions", sa.Integer, nullable=False),
    sa.Column("warnings", sa.Integer, nullable=False),
    sa.Column("reasons", sa.Text, doc="JSON list of [column, reason class, rows] of the rejects."),
    sa.Column("quarantine", sa.Text, doc="Quarantine part of the batch (None without rejects)."),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("done_at", sa.DateTime, nullable=False, doc="When the batch started or finished."),
)
_COUNTS = ("rows", "valid", "rejected", "inserted", "updated", "unchanged", "scored", "decisions",
           "warnings")


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------

def iter_batches(path: str | Path, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """Stream a manifest file as frames of exactly ``batch_rows`` rows (the last one shorter).

    The cut depends only on the file and ``batch_rows``, so a rerun sees the same batches.
    Rows keep ``source_row`` (1-based row in the file); unparsable CSV lines come as rows with
    a ``_malformed`` reason (see :func:`riskengine.schema.iter_manifest_chunks`).
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    pending: list[pd.DataFrame] = []
    held = 0
    for chunk in iter_manifest_chunks(path, chunk_rows=batch_rows):
        start = 0
        while start < len(chunk):
            take = min(batch_rows - held, len(chunk) - start)
            pending.append(chunk.iloc[start:start + take])
            held += take
            start += take
            if held == batch_rows:
                yield _joined(pending)
                pending, held = [], 0
    if held:
        yield _joined(pending)


def _joined(parts: list[pd.DataFrame]) -> pd.DataFrame:
    return (parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)).reset_index(drop=True)


def batch_digest(batch: pd.DataFrame) -> str:
    """SHA-256 of a batch as read (column names, values, row numbers), order-sensitive."""
    h = hashlib.sha256("\x1f".join(map(str, batch.columns)).encode())
    try:
        hashed = pd.util.hash_pandas_object(batch, index=False)
    except TypeError:  # unhashable cells (lists from a Parquet list column): hash their text
        hashed = pd.util.hash_pandas_object(batch.astype(str), index=False)
    h.update(np.ascontiguousarray(hashed.to_numpy()).tobytes())
    return h.hexdigest()


def source_key(path: str | Path, batch_rows: int) -> str:
    """Key of an input in ``ingest_batches``: its absolute path and the batch size."""
    return hashlib.sha1(f"{Path(path).resolve()}|{batch_rows}".encode()).hexdigest()


def quarantine_part_name(path: str | Path, batch: int, fmt: str = "parquet") -> str:
    """File name of the quarantine part of batch ``batch`` of input ``path``.

    Example: ``quarantine_part_name("/data/arrivals.csv", 3)`` gives
    ``"quarantine-arrivals-<10 hex digits>-00003.parquet"``.
    """
    from riskengine.rescore import source_tag

    return f"quarantine-{source_tag(path)}-{batch:05d}.{fmt}"


def write_quarantine_part(rejects: pd.DataFrame, path: Path, *, source: str, batch: int) -> Path:
    """Write one batch's rejected rows (reasons first, values as text) atomically.

    The rows go to a hidden temporary file in the same folder, which then replaces ``path``:
    the part is complete or absent, and writing the same batch again replaces it (a rerun
    never duplicates rows). CSV or Parquet by the file's extension.
    """
    front = pd.DataFrame({
        "source_file": source,
        "batch": np.full(len(rejects), batch, dtype=np.int64),
        ROW_COLUMN: pd.to_numeric(rejects[ROW_COLUMN], errors="coerce").astype("Int64").to_numpy(),
    })
    rest = rejects.drop(columns=[ROW_COLUMN], errors="ignore").reset_index(drop=True)
    text = {str(c): rest[c].astype("string") for c in rest.columns}
    table = pd.concat([front, pd.DataFrame(text)], axis=1)
    table = table[[c for c in QUARANTINE_FRONT if c in table.columns]
                  + [c for c in table.columns if c not in QUARANTINE_FRONT]]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if path.suffix == ".csv":
            from riskengine.csvsafe import write_csv

            write_csv(table, tmp)  # formula cells escaped: analysts open these in spreadsheets
        else:
            table.to_parquet(tmp, index=False, compression="zstd")
        with open(tmp, "rb") as fh:  # the rename must not land before the data
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_quarantine(folder: str | Path) -> pd.DataFrame:
    """Every quarantine part of a folder in one frame (parts in name order, values as text)."""
    folder = Path(folder)
    parts = sorted(folder.glob("quarantine-*.parquet")) + sorted(folder.glob("quarantine-*.csv"))
    if not parts:
        return pd.DataFrame(columns=list(QUARANTINE_FRONT))
    frames = [pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p, dtype=str, keep_default_na=False)
              for p in parts]
    return pd.concat(frames, ignore_index=True)


def remove_leftover_temporaries(folder: str | Path) -> int:
    """Delete the hidden temporary files a killed run left in a quarantine folder."""
    from riskengine.rescore import remove_temporary_files

    return remove_temporary_files((folder,), ".quarantine-*.tmp", folder)


# --------------------------------------------------------------------------------------------
# The batch ledger (ingest_batches)
# --------------------------------------------------------------------------------------------

def create_ledger(store: Store) -> None:
    """Create the ``ingest_batches`` table when it is missing."""
    with store.engine.begin() as conn:
        _META.create_all(conn, checkfirst=True)


def done_batches(store: Store, key: str) -> dict[int, dict[str, Any]]:
    """The finished batches of an input (by ``source_key``): batch number → ledger row."""
    t = INGEST_BATCHES
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.source_key == key)).mappings().all()
    return {int(r["batch"]): dict(r) for r in rows}


def _record_batch(store: Store, row: dict[str, Any]) -> None:
    t = INGEST_BATCHES
    conn = store.engine.connect()
    if store.dialect == "sqlite":
        conn = conn.execution_options(sqlite_begin_immediate=True)
    with conn, conn.begin():
        conn.execute(t.delete().where(t.c.source_key == row["source_key"]).where(t.c.batch == row["batch"]))
        conn.execute(t.insert(), [row])


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------

@dataclass
class IngestSummary:
    """What an ingest run did, over every batch of its inputs.

    Batches finished by an earlier run of the same command count as they counted then (their
    ledger row); ``batches_skipped`` says how many came from the ledger. A batch that a killed
    run had started counts as its second attempt saw it (rows the first attempt stored are
    ``unchanged``). ``rows == valid + rejected``.
    """

    inputs: list[str]
    batch_rows: int
    quarantine_dir: str | None
    rows: int = 0
    valid: int = 0
    rejected: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    scored: int = 0
    decisions: int = 0
    warnings: int = 0
    batches: int = 0
    batches_skipped: int = 0
    rows_this_run: int = 0
    quarantine_parts: list[str] = field(default_factory=list)
    top_reasons: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: Of ``seconds``, the time spent on batches skipped by checksum (reading and hashing them).
    skipped_seconds: float = 0.0
    rows_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def _add(self, row: dict[str, Any], reasons: dict[tuple[str, str], int], skipped: bool) -> None:
        for k in _COUNTS:
            setattr(self, k, getattr(self, k) + int(row[k]))
        self.batches += 1
        if skipped:
            self.batches_skipped += 1
        else:
            self.rows_this_run += int(row["rows"])
        if row.get("quarantine"):
            self.quarantine_parts.append(str(row["quarantine"]))
        for column, reason, n in json.loads(row.get("reasons") or "[]"):
            reasons[(column, reason)] = reasons.get((column, reason), 0) + int(n)


def first_row(batch: pd.DataFrame) -> int:
    """The file row number of a batch's first row (0 for an empty batch)."""
    if not len(batch) or ROW_COLUMN not in batch.columns:
        return 0
    return int(pd.to_numeric(batch[ROW_COLUMN], errors="coerce").min())


def _replan_interrupted(store: Store, batch: pd.DataFrame, config: QueueConfig, actor: str) -> int:
    """Re-plan every queue a batch touches: its manifests' groups and those of their decisions.

    A run killed between storing a batch and planning it leaves changed manifests that look
    settled to a plain re-ingest (already stored and scored); the groups they left and joined
    are planned here. Plans are deterministic and only changed decisions are written, so a
    group that needs nothing gets nothing. Returns the number of decisions written.
    """
    from riskengine.service.workflow import replan
    from riskengine.store import DecisionRecord

    ids = validate(batch).valid["manifest_id"].astype(str).tolist()
    if not ids:
        return 0
    d = DecisionRecord.__table__
    groups = set(store.groups_of(ids))
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 5_000):
            q = (sa.select(d.c.port, d.c.terminal, d.c.shift).distinct()
                 .where(d.c.manifest_id.in_(ids[start:start + 5_000])))
            groups.update(tuple(r) for r in conn.execute(q))
    plan = replan(store, sorted(groups), config, actor=actor)
    log.warning("batch interrupted by an earlier run: re-planned %d queue(s), %d decision(s) written",
                len(groups), plan.decisions)
    return plan.decisions


def _reason_counts(rejects: pd.DataFrame) -> list[list[Any]]:
    if rejects.empty:
        return []
    top = ValidationResult(valid=rejects.iloc[:0], rejects=rejects).top_reasons(50)
    return [[str(r.column), str(r.reason), int(r.rows)] for r in top.itertuples(index=False)]


def ingest_files(
    store: Store,
    scorer: Any,
    paths: str | Path | Sequence[str | Path],
    *,
    config: QueueConfig | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    quarantine_dir: str | Path | None = "quarantine",
    quarantine_format: str = "parquet",
    actor: str = "ingest",
    resume: bool = True,
    progress: Progress | None = None,
) -> IngestSummary:
    """Ingest manifest files batch by batch: validate, store, score, plan, quarantine rejects.

    Args:
        store: the store (SQLite or PostgreSQL).
        scorer: a :class:`riskengine.service.scoring.Scorer` (e.g. ``ModelScorer``).
        paths: CSV / Parquet files, glob patterns or folders (see
            :func:`riskengine.rescore.expand_inputs`).
        config: queue capacities and thresholds of the re-plans.
        batch_rows: rows per batch (one upsert transaction, one quarantine part); keep it when
            rerunning after a crash, or the batches are cut differently and sent again.
        quarantine_dir: folder of the quarantine parts; ``None`` writes none (the rejected
            rows are then only counted, with their reasons, in the summary).
        quarantine_format: ``"parquet"`` or ``"csv"``.
        actor: audit actor of the writes.
        resume: skip the batches the ledger records as done with the same content (a missing
            quarantine part of such a batch is rebuilt). ``False`` sends every batch again,
            in order: the final state is the same, with the amendments replayed in the history.
        progress: called with the number of rows of each finished or skipped batch.

    Returns:
        The :class:`IngestSummary`.

    Raises:
        riskengine.schema.SchemaError: a required column is missing (nothing of that file
            is stored; earlier files stay ingested).
        ValueError, FileNotFoundError: an input cannot be read.
    """
    from riskengine.rescore import expand_inputs
    from riskengine.service.workflow import ingest_manifests

    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if quarantine_format not in QUARANTINE_FORMATS:
        raise ValueError(f"quarantine_format must be one of {list(QUARANTINE_FORMATS)}, got {quarantine_format!r}")
    files = expand_inputs(paths)
    qdir = None if quarantine_dir is None else Path(quarantine_dir).resolve()
    if qdir is not None:
        if qdir.exists() and not qdir.is_dir():
            raise ValueError(f"quarantine path {qdir} exists and is not a folder; give a folder for the parts")
        remove_leftover_temporaries(qdir)
    config = config or QueueConfig()
    create_ledger(store)
    tick = progress or (lambda _n: None)
    summary = IngestSummary(inputs=[str(f) for f in files], batch_rows=batch_rows,
                            quarantine_dir=None if qdir is None else str(qdir))
    reasons: dict[tuple[str, str], int] = {}
    t0 = time.perf_counter()
    skipped_s = 0.0
    for f in files:
        key = source_key(f, batch_rows)
        done = done_batches(store, key) if resume else {}
        since = time.perf_counter()  # reading a batch happens in the iterator: timed from here
        for index, batch in enumerate(iter_batches(f, batch_rows)):
            digest = batch_digest(batch)
            prev = done.get(index)
            part = None if qdir is None else qdir / quarantine_part_name(f, index, quarantine_format)
            if prev is not None and prev["status"] == "done" and prev["content_sha256"] == digest:
                if prev["rejected"] and part is not None and not part.is_file():
                    # Only the part is missing (deleted, or another folder): sending the batch
                    # again would undo later amendments of its manifests, so only its rejects
                    # are rebuilt (validation is deterministic).
                    write_quarantine_part(validate(batch).rejects, part, source=str(f), batch=index)
                    log.warning("%s batch %d: quarantine part rewritten to %s", f.name, index, part)
                summary._add({**prev, "quarantine": str(part) if prev["rejected"] and part is not None
                              else prev["quarantine"]}, reasons, skipped=True)
                tick(len(batch))
                skipped_s += time.perf_counter() - since
                since = time.perf_counter()
                continue
            row = {
                "source_key": key, "batch": index, "source": str(f), "batch_rows": batch_rows,
                "status": "started", "content_sha256": digest, "first_row": first_row(batch),
                **dict.fromkeys(_COUNTS, 0), "reasons": None, "quarantine": None, "actor": actor,
                "done_at": utcnow(),
            }
            # An earlier run died inside this batch: what it committed is unknown, so the
            # queues of everything the batch touches are re-planned after the ingest.
            interrupted = prev is not None and prev["status"] == "started" and prev["content_sha256"] == digest
            _record_batch(store, row)
            report = ingest_manifests(store, scorer, batch, config, actor=actor)
            if report.received != report.valid + report.rejected:
                raise RuntimeError(f"{f} batch {index}: {report.received} rows in, {report.valid} valid + "
                                   f"{report.rejected} rejected; rows would be lost")
            decisions = report.plan.decisions
            if interrupted:
                decisions += _replan_interrupted(store, batch, config, actor)
            written = None
            if report.rejected and part is not None:
                written = str(write_quarantine_part(report.rejects, part, source=str(f), batch=index))
            row.update({
                "status": "done", "rows": report.received, "valid": report.valid,
                "rejected": report.rejected, "inserted": report.inserted, "updated": report.updated,
                "unchanged": report.unchanged, "scored": report.scored, "decisions": decisions,
                "warnings": len(report.warnings), "reasons": json.dumps(_reason_counts(report.rejects)),
                "quarantine": written, "done_at": utcnow(),
            })
            _record_batch(store, row)
            summary._add(row, reasons, skipped=False)
            log.info("%s batch %d: %d rows, %d valid, %d rejected, %d inserted, %d updated, %d decisions",
                     f.name, index, report.received, report.valid, report.rejected, report.inserted,
                     report.updated, report.plan.decisions)
            tick(len(batch))
            since = time.perf_counter()
    summary.seconds = round(time.perf_counter() - t0, 3)
    summary.skipped_seconds = round(skipped_s, 3)
    summary.rows_per_s = (round(summary.rows_this_run / summary.seconds, 1)
                          if summary.seconds > 0 and summary.rows_this_run else None)
    summary.top_reasons = [{"column": c, "reason": r, "rows": n}
                           for (c, r), n in sorted(reasons.items(), key=lambda kv: -kv[1])[:10]]
    if summary.valid + summary.rejected != summary.rows:
        raise RuntimeError(f"row accounting failed: {summary.rows} rows, {summary.valid} valid + "
                           f"{summary.rejected} rejected")
    log.info("ingested %d rows from %d file(s): %d valid, %d rejected, %d batches (%d skipped by "
             "checksum in %.1f s), %.1f s", summary.rows, len(files), summary.valid, summary.rejected,
             summary.batches, summary.batches_skipped, summary.skipped_seconds, summary.seconds)
    return summary


# --------------------------------------------------------------------------------------------
# Comparing stores
# --------------------------------------------------------------------------------------------

def _frame_sha256(df: pd.DataFrame) -> str:
    """SHA-256 of a frame's rows sorted by every column (independent of row order)."""
    ordered = df.sort_values(list(df.columns), kind="stable").reset_index(drop=True)
    return hashlib.sha256(ordered.to_csv(index=False, float_format="%.12g").encode()).hexdigest()


def store_checksums(store: Store) -> dict[str, Any]:
    """Counts and order-independent checksums of what a store holds, to compare two stores.

    Covers the manifests (id, content hash, revision), every score (id, stage, score, content
    hash, model), every decision (id, stage, group, lane, selection, rank) and the latest
    decision per manifest and stage, and the audit rows per action. Times and surrogate keys
    are left out, so two stores fed the same data in the same batches give equal dicts, e.g.
    one ingest killed and rerun against one that ran through.
    """
    from riskengine.store import AuditRecord, DecisionRecord, Manifest, ScoreRecord

    m, s, d, a = (Manifest.__table__, ScoreRecord.__table__, DecisionRecord.__table__,
                  AuditRecord.__table__)
    with store.engine.connect() as conn:
        def frame(q: Any, cols: list[str]) -> pd.DataFrame:
            return pd.DataFrame([tuple(r) for r in conn.execute(q)], columns=cols)

        man = frame(sa.select(m.c.manifest_id, m.c.content_hash, m.c.revision),
                    ["manifest_id", "content_hash", "revision"])
        sco = frame(sa.select(s.c.manifest_id, s.c.stage, s.c.risk_score, s.c.content_hash, s.c.model_version),
                    ["manifest_id", "stage", "risk_score", "content_hash", "model_version"])
        dec = frame(sa.select(d.c.id, d.c.manifest_id, d.c.stage, d.c.port, d.c.terminal, d.c.shift,
                              d.c.lane, d.c.selection, d.c.rank),
                    ["id", "manifest_id", "stage", "port", "terminal", "shift", "lane", "selection", "rank"])
        aud = frame(sa.select(a.c.action, sa.func.count()).group_by(a.c.action), ["action", "rows"])
    latest = dec.sort_values("id").drop_duplicates(["manifest_id", "stage"], keep="last")
    dec = dec.drop(columns="id")
    latest = latest[["manifest_id", "stage", "lane", "selection", "rank"]]
    return {
        "manifests": len(man),
        "manifest_ids_distinct": int(man["manifest_id"].nunique()),
        "manifests_sha256": _frame_sha256(man[["manifest_id", "content_hash"]]),
        "revisions_sha256": _frame_sha256(man[["manifest_id", "revision"]]),
        "scores": len(sco),
        "scores_by_stage": {str(k): int(v) for k, v in sco["stage"].value_counts().sort_index().items()},
        "scores_sha256": _frame_sha256(sco),
        "decisions": len(dec),
        "decisions_by_stage": {str(k): int(v) for k, v in dec["stage"].value_counts().sort_index().items()},
        "decisions_sha256": _frame_sha256(dec),
        "latest_decisions_by_lane": {str(k): int(v) for k, v in latest["lane"].value_counts().sort_index().items()},
        "latest_decisions_sha256": _frame_sha256(latest),
        "audit_by_action": {str(r.action): int(r.rows) for r in aud.sort_values("action").itertuples()},
    }
