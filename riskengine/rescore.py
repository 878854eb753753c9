"""Batch rescoring of large manifest archives with bounded memory, resumable, local or on Dask.

When a model or an indicator pack changes, every stored manifest is scored again. Inputs are
streamed one chunk at a time (Parquet row groups, CSV chunks) so memory does not grow with the
archive; each input chunk becomes one Parquet *part* in the output directory:

``part-<file stem>-<path hash>-<chunk>.parquet``
    the id column, ``risk_score`` and (with reasons) ``reasons`` of the chunk's valid rows;
``quarantine/part-...parquet``
    the chunk's rejected rows as received, with ``source_row``, ``reject_column`` and
    ``reject_reason`` (only when a chunk has rejects);
``_rescore.json``
    the run's settings (model hash, chunk size, reasons) and the last summary.

A part is written under a hidden temporary name and then linked into place atomically, so a
part that exists is complete. A rerun after a crash skips finished parts (for Parquet without
even reading them), never writes a part twice and removes the temporary files a killed run
left behind; every input row ends up either in a score part or in a quarantine part.

The same :func:`score_chunk` runs locally or on a Dask cluster (``dask.dataframe`` over the
chunk plan, one task per chunk, ``distributed`` for scheduling and progress): ``dask="local"``
starts a two-worker ``LocalCluster``; an address such as ``tcp://scheduler:8786`` connects to a
real cluster whose workers see the same model directory, input and output paths.

Example::

    from riskengine.rescore import rescore, read_scores
    summary = rescore("models/manifest", "archive/*.parquet", "rescored/", reasons=3)
    scores = read_scores("rescored/")
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

RUN_FILE = "_rescore.json"
RUN_FORMAT = "riskengine-rescore"
RUN_FORMAT_VERSION = 1
QUARANTINE_DIR = "quarantine"
DEFAULT_CHUNK_ROWS = 100_000
ROW_COLUMN = "source_row"
_PARQUET_SUFFIXES = (".parquet", ".pq")
_CSV_SUFFIXES = (".csv", ".tsv", ".txt", ".gz")

Progress = Callable[[int], None]


# --------------------------------------------------------------------------------------------
# Inputs and the chunk plan
# --------------------------------------------------------------------------------------------


def expand_inputs(data: str | Path | Sequence[str | Path]) -> list[Path]:
    """Resolve paths, glob patterns and directories into a sorted list of manifest files.

    A directory stands for the CSV / Parquet files directly inside it.

    Raises:
        FileNotFoundError: a path or pattern matches no file.
        ValueError: a file is neither CSV nor Parquet.
    """
    items = [data] if isinstance(data, (str, Path)) else list(data)
    if not items:
        raise ValueError("no input given: pass --data PATH_OR_GLOB (one or more)")
    files: list[Path] = []
    for item in items:
        s = str(item)
        p = Path(s)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and _kind(f) is not None)
            if not found:
                raise FileNotFoundError(f"directory {p} holds no .parquet or .csv files")
            files.extend(found)
        elif any(ch in s for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(s) if Path(f).is_file())
            if not found:
                raise FileNotFoundError(f"no file matches {s!r}; check the pattern and the folder")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input not found: {p}")
    for f in files:
        if _kind(f) is None:
            raise ValueError(
                f"unsupported input file {f.name!r}: expected .parquet or .csv (optionally .csv.gz)"
            )
    unique: dict[str, Path] = {}
    for f in files:
        unique.setdefault(str(f.resolve()), f.resolve())
    return list(unique.values())


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    return None


def part_name(source: str | Path, index: int) -> str:
    """Deterministic output part name of chunk ``index`` of input file ``source``.

    The stem keeps names readable; the hash of the absolute path keeps two inputs with the
    same name in different folders apart.

    Example: ``part_name("/data/2026-03.parquet", 7)`` gives
    ``"part-2026-03-<10 hex digits>-00007.parquet"``.
    """
    return f"part-{source_tag(source)}-{index:05d}.parquet"


def source_tag(source: str | Path) -> str:
    """``<stem>-<10 hex digits of the absolute path's SHA-1>``: names output files after an
    input, readable, and apart from an input of the same name in another folder."""
    p = Path(source).resolve()
    stem = p.name.split(".")[0][:60] or "input"
    return f"{stem}-{hashlib.sha1(str(p).encode()).hexdigest()[:10]}"


@dataclass(frozen=True)
class ChunkTask:
    """One input chunk: where it comes from and which part it becomes.

    For Parquet inputs the chunk is addressed directly (row group, offset, rows), so a worker
    reads it without touching the rest of the file; CSV chunks arrive as frames.
    """

    source: str
    index: int
    part: str
    row_group: int | None = None
    offset: int = 0
    rows: int | None = None
    first_row: int = 1


def plan_parquet(path: str | Path, chunk_rows: int) -> list[ChunkTask]:
    """Split a Parquet file into chunks of at most ``chunk_rows`` rows from its metadata.

    Chunks never straddle row groups; a row group larger than ``chunk_rows`` gives several.
    """
    import pyarrow.parquet as pq

    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    p = Path(path).resolve()
    try:
        meta = pq.ParquetFile(p).metadata
    except Exception as exc:  # pyarrow raises several types for broken files
        raise ValueError(f"cannot read Parquet file {p}: {exc}") from exc
    tasks: list[ChunkTask] = []
    file_offset = 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        for start in range(0, n, chunk_rows):
            k = len(tasks)
            tasks.append(ChunkTask(str(p), k, part_name(p, k), row_group=g, offset=start,
                                   rows=min(chunk_rows, n - start),
                                   first_row=file_offset + start + 1))
        file_offset += n
    return tasks


def read_parquet_chunk(task: ChunkTask) -> pd.DataFrame:
    """Read the rows of a Parquet chunk (with ``source_row``, 1-based row in the file).

    Only the chunk's row group is read, in record batches, and reading stops at the chunk's
    last row, so memory stays bounded by the chunk.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if task.row_group is None or task.rows is None:
        raise ValueError(f"{task.part} is not a Parquet chunk (no row group)")
    pf = pq.ParquetFile(task.source)
    batches, seen = [], 0
    end = task.offset + task.rows
    step = max(1024, min(task.rows, 65_536))
    for b in pf.iter_batches(batch_size=step, row_groups=[task.row_group]):
        lo, hi = max(task.offset - seen, 0), min(end - seen, b.num_rows)
        if hi > lo:
            batches.append(b.slice(lo, hi - lo))
        seen += b.num_rows
        if seen >= end:
            break
    table = pa.Table.from_batches(batches, schema=pf.schema_arrow)
    df = table.to_pandas()
    if len(df) != task.rows:
        raise ValueError(
            f"{task.source}: row group {task.row_group} gave {len(df)} rows at offset "
            f"{task.offset}, expected {task.rows}; the file changed since the run was planned"
        )
    df[ROW_COLUMN] = np.arange(task.first_row, task.first_row + len(df))
    return df


# --------------------------------------------------------------------------------------------
# Scoring one chunk
# --------------------------------------------------------------------------------------------


def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over the model's ``model.txt`` and ``model.json`` (identifies a model version)."""
    from riskengine.model import MODEL_FILE, SIDECAR_FILE

    p = Path(model_dir)
    h = hashlib.sha256()
    for name in (MODEL_FILE, SIDECAR_FILE):
        f = p / name
        if not f.is_file():
            raise FileNotFoundError(
                f"{p} is not a model directory: expected {MODEL_FILE} and {SIDECAR_FILE} in it "
                "(train one with `riskengine train`)"
            )
        h.update(f.read_bytes())
    return h.hexdigest()


_MODEL_CACHE: dict[tuple[str, str], Any] = {}
_MODEL_LOCK = threading.Lock()


def load_model_cached(model_dir: str | Path, fingerprint: str | None = None,
                      threads: int | None = None) -> Any:
    """Load a :class:`~riskengine.model.RiskModel` once per process (Dask workers reuse it).

    Raises:
        ValueError: the model on disk is not the one the run was started with.
    """
    from riskengine.model import RiskModel

    key_dir = str(Path(model_dir).resolve())
    fp = model_fingerprint(key_dir)
    if fingerprint is not None and fp != fingerprint:
        raise ValueError(
            f"the model at {key_dir} changed during the run (hash {fp[:12]}, run started with "
            f"{fingerprint[:12]}); rerun so that every part comes from one model"
        )
    with _MODEL_LOCK:
        model = _MODEL_CACHE.get((key_dir, fp))
        if model is None:
            model = RiskModel.load(key_dir)
            _MODEL_CACHE[(key_dir, fp)] = model
    if threads is not None:
        model.n_jobs = threads
    return model


def _scores_schema(id_col: str, reasons: int) -> Any:
    import pyarrow as pa

    fields = [(id_col, pa.string()), ("risk_score", pa.float64())]
    if reasons:
        fields.append(("reasons", pa.string()))
    return pa.schema(fields)


def _quarantine_table(rejects: pd.DataFrame) -> Any:
    """Rejected rows as text (every chunk gives one schema), reasons first."""
    import pyarrow as pa

    front = [c for c in (ROW_COLUMN, "reject_column", "reject_reason") if c in rejects.columns]
    rest = [c for c in rejects.columns if c not in front]
    cols = {}
    for c in front + rest:
        s = rejects[c]
        if c == ROW_COLUMN:
            cols[c] = pa.array(pd.to_numeric(s, errors="coerce").astype("Int64"), type=pa.int64())
        else:
            cols[str(c)] = pa.array(s.astype("string"), type=pa.string())
    return pa.table(cols)


def write_parquet_once(table: Any, path: Path) -> bool:
    """Write ``table`` to ``path`` atomically, never replacing an existing file.

    The data goes to a hidden temporary file in the same folder, which is then hard-linked to
    ``path`` (fails if ``path`` exists) or, where links are unsupported, renamed. Returns
    ``False`` when ``path`` already existed (another attempt finished first).
    """
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, tmp, compression="zstd")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class ChunkResult:
    """What scoring one chunk did (also what a skipped part contributes to the summary)."""

    part: str
    source: str
    index: int
    rows: int
    scored: int
    rejected: int
    written: bool
    seconds: float = 0.0


def score_chunk(
    model: Any,
    frame: pd.DataFrame,
    task: ChunkTask,
    out_dir: str | Path,
    *,
    reasons: int = 0,
) -> ChunkResult:
    """Score one chunk and write its score part (and quarantine part when rows were rejected).

    The quarantine part is written first, the score part last, so an existing score part
    means the whole chunk is done. Invariant: ``scored + rejected == rows``.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    target = out / task.part
    res = model.score(frame, reasons=reasons)
    scores, rejects = res.scores, res.rejects
    if len(scores) + len(rejects) != len(frame):
        raise RuntimeError(
            f"{task.part}: {len(frame)} rows in, {len(scores)} scored + {len(rejects)} rejected; "
            "rows would be lost, refusing to write the part"
        )
    if len(rejects):
        write_parquet_once(_quarantine_table(rejects), out / QUARANTINE_DIR / task.part)
    import pyarrow as pa

    id_col = model.features_.mapping_.id
    schema = _scores_schema(id_col, reasons)
    cols = [pa.array(scores[id_col].astype("string"), type=pa.string()),
            pa.array(scores["risk_score"].to_numpy(dtype="float64"), type=pa.float64())]
    if reasons:
        cols.append(pa.array(scores["reasons"].astype("string"), type=pa.string()))
    written = write_parquet_once(pa.Table.from_arrays(cols, schema=schema), target)
    if not written:
        log.warning("part %s was finished by another attempt meanwhile; kept the first", task.part)
    return ChunkResult(task.part, task.source, task.index, len(frame), len(scores), len(rejects),
                       written, time.perf_counter() - t0)


def finished_result(task: ChunkTask, out_dir: str | Path, rows: int | None = None) -> ChunkResult:
    """The contribution of an already written part, from the Parquet metadata of its files."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    scored = pq.ParquetFile(out / task.part).metadata.num_rows
    q = out / QUARANTINE_DIR / task.part
    rejected = pq.ParquetFile(q).metadata.num_rows if q.exists() else 0
    total = rows if rows is not None else (task.rows if task.rows is not None else scored + rejected)
    if scored + rejected != total:
        raise ValueError(
            f"part {task.part} holds {scored} scored + {rejected} quarantined rows but its input "
            f"chunk has {total}; the input changed since that part was written. Rescore into a "
            "new --out directory"
        )
    return ChunkResult(task.part, task.source, task.index, total, scored, rejected, False)


# --------------------------------------------------------------------------------------------
# Dask tasks (module-level functions so workers can import them)
# --------------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = ["part", "source", "index", "rows", "scored", "rejected", "written", "seconds"]


def _summary_frame(results: Sequence[ChunkResult]) -> pd.DataFrame:
    return pd.DataFrame([asdict(r) for r in results], columns=_SUMMARY_COLUMNS).astype(
        {"index": "int64", "rows": "int64", "scored": "int64", "rejected": "int64",
         "written": "bool", "seconds": "float64"})


def _dask_parquet_task(task: ChunkTask, *, model_dir: str, fingerprint: str, out_dir: str,
                       reasons: int, threads: int | None) -> pd.DataFrame:
    """One partition of the Dask dataframe: read, score and write one Parquet chunk."""
    if (Path(out_dir) / task.part).exists():
        return _summary_frame([finished_result(task, out_dir)])
    model = load_model_cached(model_dir, fingerprint, threads)
    frame = read_parquet_chunk(task)
    return _summary_frame([score_chunk(model, frame, task, out_dir, reasons=reasons)])


def _dask_frame_task(frame: pd.DataFrame, task: ChunkTask, *, model_dir: str, fingerprint: str,
                     out_dir: str, reasons: int, threads: int | None) -> pd.DataFrame:
    """Score a chunk the client read (CSV has no random access) on a worker."""
    model = load_model_cached(model_dir, fingerprint, threads)
    return _summary_frame([score_chunk(model, frame, task, out_dir, reasons=reasons)])


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class RescoreSummary:
    """The outcome of a rescoring run.

    ``rows`` counts every input row covered by the output (including parts finished by an
    earlier run); ``scored + rejected == rows``. ``rows_per_s`` is over the rows this run
    scored itself.
    """

    out_dir: str
    inputs: list[str]
    rows: int = 0
    scored: int = 0
    rejected: int = 0
    parts_written: int = 0
    parts_skipped: int = 0
    quarantine_parts: int = 0
    rows_this_run: int = 0
    seconds: float = 0.0
    rows_per_s: float | None = None
    mode: str = "local"
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    reasons: int = 0
    model_sha256: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    def add(self, r: ChunkResult) -> None:
        self.rows += r.rows
        self.scored += r.scored
        self.rejected += r.rejected
        if r.written:
            self.parts_written += 1
            self.rows_this_run += r.rows
        else:
            self.parts_skipped += 1
        if r.rejected:
            self.quarantine_parts += 1


def _check_run_file(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix parts of different models or chunkings in one output directory."""
    f = out / RUN_FILE
    if not f.exists():
        return
    try:
        prev = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{f} is unreadable ({exc}); remove it or use a new --out directory") from exc
    if prev.get("format") != RUN_FORMAT:
        raise ValueError(f"{out} holds a {RUN_FILE} that is not a rescoring run; use a new --out directory")
    diffs = [f"{k}: {prev.get(k)!r} before, {settings[k]!r} now"
             for k in ("model_sha256", "chunk_rows", "reasons") if prev.get(k) != settings[k]]
    if diffs:
        raise ValueError(
            f"{out} holds parts of a run with other settings ({'; '.join(diffs)}); resume with the "
            "same model, --chunk-rows and --reasons, or write to a new --out directory"
        )


def _remove_leftover_temporaries(out: Path) -> int:
    """Delete the hidden temporary files (``.<name>.<hex>.tmp``) of a run that was killed.

    A part is linked into place from its temporary file, so a temporary file never holds a
    finished part; one that is left when a run starts belongs to a run that died before its
    ``finally`` could remove it (SIGKILL, power cut). One run per output directory at a time.
    """
    return remove_temporary_files((out, out / QUARANTINE_DIR), ".*.tmp", out)


def remove_temporary_files(folders: Sequence[str | Path], pattern: str, where: str | Path) -> int:
    """Delete the files matching ``pattern`` in ``folders`` (those that exist); log the count."""
    removed = 0
    for folder in map(Path, folders):
        if folder.is_dir():
            for tmp in folder.glob(pattern):
                tmp.unlink(missing_ok=True)
                removed += 1
    if removed:
        log.warning("removed %d temporary file(s) left in %s by an interrupted run", removed, where)
    return removed


def _write_run_file(out: Path, settings: dict[str, Any], summary: RescoreSummary | None) -> None:
    body = {**settings, "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "last_summary": None if summary is None else summary.to_dict()}
    tmp = out / f".{RUN_FILE}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(body, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, out / RUN_FILE)


def count_input_rows(files: Sequence[Path]) -> int | None:
    """Total rows of the inputs when all are Parquet (from metadata), else ``None``."""
    import pyarrow.parquet as pq

    total = 0
    for f in files:
        if _kind(f) != "parquet":
            return None
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except Exception:  # unreadable files are reported with a clear message when planned
            return None
    return total


@contextmanager
def dask_client(address: Any, *, workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client``: ``"local"`` starts a LocalCluster of ``workers`` processes.

    An existing ``Client`` is used as is (and not closed); any other string is a scheduler
    address such as ``tcp://scheduler:8786``.

    Raises:
        ConnectionError: the scheduler cannot be reached.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "--dask needs dask.distributed: pip install 'riskengine[scale]'"
        ) from exc
    if isinstance(address, Client):
        yield address
        return
    if address == "local":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0")
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
        return
    try:
        # The connect timeout comes from dask's config (distributed.comm.timeouts.connect).
        client = Client(str(address))
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(
            f"cannot reach the Dask scheduler at {address!r} ({exc}); start one with "
            "`dask scheduler` and workers with `dask worker <address>`, or use --dask local"
        ) from exc
    try:
        yield client
    finally:
        client.close()


def rescore(
    model_dir: str | Path,
    data: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    reasons: int = 0,
    dask: Any = None,
    threads: int | None = None,
    progress: Progress | None = None,
) -> RescoreSummary:
    """Rescore manifest files into a directory of Parquet parts; resumable.

    Args:
        model_dir: model directory written by ``riskengine train``.
        data: file(s), glob pattern(s) or directories of CSV / Parquet manifests.
        out_dir: output directory (created); rerunning into it resumes.
        chunk_rows: rows per chunk and part (bounds memory).
        reasons: top reasons per row (0: none; reasons cost several times the scoring).
        dask: ``None`` (this process), ``"local"`` (a two-worker LocalCluster), a scheduler
            address, or a ``distributed.Client``.
        threads: LightGBM threads per chunk (default: the model's own setting locally, 1 per
            task on Dask, whose workers already run in parallel).
        progress: called with the number of input rows of each finished or skipped chunk.

    Returns:
        The :class:`RescoreSummary` (also stored in ``out_dir/_rescore.json``).

    Raises:
        FileNotFoundError: model or input missing.
        ValueError: ``out_dir`` holds a run with another model, chunk size or reasons setting,
            or an input is not a manifest file.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if reasons < 0:
        raise ValueError(f"reasons must be >= 0, got {reasons}")
    model_path = Path(model_dir).resolve()
    if not model_path.is_dir():
        raise FileNotFoundError(f"model directory not found: {model_path} (train one with `riskengine train`)")
    fingerprint = model_fingerprint(model_path)
    files = expand_inputs(data)
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory; give a folder for the parts")
    for f in files:
        if f == out or out in f.parents:
            raise ValueError(f"input {f} lies inside the output directory {out}; choose another --out")
    with ExitStack() as stack:
        # Connect first: an unreachable cluster must not leave an output directory behind.
        client = None if dask is None else stack.enter_context(dask_client(dask))
        out.mkdir(parents=True, exist_ok=True)
        settings = {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION,
                    "model_dir": str(model_path), "model_sha256": fingerprint,
                    "chunk_rows": chunk_rows, "reasons": reasons,
                    "inputs": [str(f) for f in files]}
        _check_run_file(out, settings)
        _remove_leftover_temporaries(out)
        _write_run_file(out, settings, None)
        summary = RescoreSummary(out_dir=str(out), inputs=[str(f) for f in files],
                                 chunk_rows=chunk_rows, reasons=reasons, model_sha256=fingerprint)
        tick = progress or (lambda _n: None)
        t0 = time.perf_counter()
        if client is None:
            _run_local(model_path, fingerprint, files, out, chunk_rows, reasons, threads, summary,
                       tick)
        else:
            summary.mode = f"dask ({_describe_client(client)})"
            _run_dask(client, model_path, fingerprint, files, out, chunk_rows, reasons,
                      1 if threads is None else threads, summary, tick)
        summary.seconds = round(time.perf_counter() - t0, 3)
    summary.rows_per_s = (round(summary.rows_this_run / summary.seconds, 1)
                          if summary.seconds > 0 and summary.rows_this_run else None)
    if summary.scored + summary.rejected != summary.rows:
        raise RuntimeError(
            f"row accounting failed: {summary.rows} rows, {summary.scored} scored + "
            f"{summary.rejected} rejected"
        )
    _write_run_file(out, settings, summary)
    log.info("rescored %d rows (%d rejected) into %s: %d parts written, %d skipped, %.1f s",
             summary.rows, summary.rejected, out, summary.parts_written, summary.parts_skipped,
             summary.seconds)
    return summary


def _describe_client(client: Any) -> str:
    info = client.scheduler_info()
    workers = info.get("workers", {})
    threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    return f"{info.get('address', '?')}, {len(workers)} workers, {threads} threads"


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[ChunkTask, pd.DataFrame]]:
    from riskengine.schema import iter_manifest_chunks

    for k, frame in enumerate(iter_manifest_chunks(path, chunk_rows=chunk_rows)):
        first = int(frame[ROW_COLUMN].iloc[0]) if len(frame) and ROW_COLUMN in frame else 1
        yield ChunkTask(str(path), k, part_name(path, k), rows=len(frame), first_row=first), frame


def _run_local(model_path: Path, fingerprint: str, files: Sequence[Path], out: Path,
               chunk_rows: int, reasons: int, threads: int | None, summary: RescoreSummary,
               tick: Progress) -> None:
    model = None
    stage = summary.stage_seconds
    stage.setdefault("read", 0.0)
    stage.setdefault("score_and_write", 0.0)
    for f in files:
        if _kind(f) == "parquet":
            for task in plan_parquet(f, chunk_rows):
                if (out / task.part).exists():
                    summary.add(finished_result(task, out))
                    tick(task.rows or 0)
                    continue
                t0 = time.perf_counter()
                frame = read_parquet_chunk(task)
                stage["read"] += time.perf_counter() - t0
                model = model or load_model_cached(model_path, fingerprint, threads)
                r = score_chunk(model, frame, task, out, reasons=reasons)
                stage["score_and_write"] += r.seconds
                summary.add(r)
                tick(r.rows)
        else:
            it = _csv_chunks(f, chunk_rows)
            while True:
                t0 = time.perf_counter()
                nxt = next(it, None)
                stage["read"] += time.perf_counter() - t0
                if nxt is None:
                    break
                task, frame = nxt
                if (out / task.part).exists():
                    summary.add(finished_result(task, out, rows=len(frame)))
                else:
                    model = model or load_model_cached(model_path, fingerprint, threads)
                    r = score_chunk(model, frame, task, out, reasons=reasons)
                    stage["score_and_write"] += r.seconds
                    summary.add(r)
                tick(len(frame))
    for k in stage:
        stage[k] = round(stage[k], 3)


def _run_dask(client: Any, model_path: Path, fingerprint: str, files: Sequence[Path], out: Path,
              chunk_rows: int, reasons: int, threads: int, summary: RescoreSummary,
              tick: Progress) -> None:
    import dask.dataframe as dd
    from distributed import as_completed

    kw = {"model_dir": str(model_path), "fingerprint": fingerprint, "out_dir": str(out),
          "reasons": reasons, "threads": threads}
    tasks: list[ChunkTask] = []
    for f in (f for f in files if _kind(f) == "parquet"):
        for task in plan_parquet(f, chunk_rows):
            if (out / task.part).exists():
                summary.add(finished_result(task, out))
                tick(task.rows or 0)
            else:
                tasks.append(task)
    futures = []
    if tasks:
        # One partition per chunk: workers read their own chunk straight from shared storage.
        meta = _summary_frame([])
        ddf = dd.from_map(_dask_parquet_task, tasks, meta=meta, label="rescore-chunk",
                          enforce_metadata=False, **kw)
        futures = client.compute(ddf.to_delayed())
    done = as_completed(futures)
    for fut in done:
        _collect(fut.result(), summary, tick)

    # CSV has no random access: the client streams chunks to the workers, a few in flight.
    limit = 2 * max(1, len(client.scheduler_info().get("workers", {})))
    inflight = as_completed()
    n_inflight = 0
    for f in (f for f in files if _kind(f) == "csv"):
        for task, frame in _csv_chunks(f, chunk_rows):
            if (out / task.part).exists():
                summary.add(finished_result(task, out, rows=len(frame)))
                tick(len(frame))
                continue
            inflight.add(client.submit(_dask_frame_task, frame, task, pure=False, **kw))
            n_inflight += 1
            while n_inflight >= limit:
                _collect(next(inflight).result(), summary, tick)
                n_inflight -= 1
    for fut in inflight:
        _collect(fut.result(), summary, tick)


def _collect(frame: pd.DataFrame, summary: RescoreSummary, tick: Progress) -> None:
    for rec in frame.to_dict(orient="records"):
        r = ChunkResult(**rec)
        summary.add(r)
        tick(r.rows)


def read_scores(out_dir: str | Path, *, quarantine: bool = False) -> pd.DataFrame:
    """All score parts of an output directory in one frame (parts in name order).

    ``quarantine=True`` reads the quarantined rows instead (empty frame when there are none).
    """
    import pyarrow.parquet as pq

    base = Path(out_dir) / (QUARANTINE_DIR if quarantine else "")
    parts = sorted(base.glob("part-*.parquet")) if base.is_dir() else []
    if not parts:
        if quarantine:
            return pd.DataFrame(columns=[ROW_COLUMN, "reject_column", "reject_reason"])
        raise FileNotFoundError(f"no score parts (part-*.parquet) in {out_dir}")
    return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)


# --------------------------------------------------------------------------------------------
# Measuring the scoring itself (`riskengine bench manifests`)
# --------------------------------------------------------------------------------------------


class PeakRss:
    """Context manager sampling a process's resident memory plus its children's.

    ``pid`` defaults to this process. ``peak_mb`` is the highest sample, ``start_mb`` the RSS
    on entry; a process that has ended stops the sampling without error.
    """

    def __init__(self, pid: int | None = None, interval_s: float = 0.02) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.start_mb = 0.0
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> float:
        import psutil

        try:
            proc = psutil.Process(self.pid)
            rss = proc.memory_info().rss
            children = proc.children(recursive=True)
        except psutil.Error:  # the process ended
            return 0.0
        for child in children:
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                pass
        mb = rss / 2**20
        self.peak_mb = max(self.peak_mb, mb)
        return mb

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> PeakRss:
        self.start_mb = self.sample()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()


def _manifest_scoring_module() -> Any:
    """``benchmarks/manifest_scoring.py`` of the source checkout, imported by path.

    The stage timings of ``riskengine bench manifests`` are that benchmark's own, so the two
    never disagree about what a stage is.
    """
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "manifest_scoring.py"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: `riskengine bench manifests` runs the stage timings of "
            "benchmarks/manifest_scoring.py, which ships with the source checkout; run it from "
            "the repository"
        )
    spec = importlib.util.spec_from_file_location("riskengine_benchmarks_manifest_scoring", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def measure_scoring(
    model_dir: str | Path,
    *,
    rows: int = 100_000,
    seed: int = 12,
    repeat: int = 3,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Manifest scoring throughput, stage by stage, against LightGBM's raw predict.

    Runs ``benchmarks/manifest_scoring.py`` (one warm-up, then ``repeat`` timed runs on
    ``rows`` generated manifests dated after the model's training window) while sampling the
    resident memory, and returns its medians as one JSON-ready dict:

    * ``rows_per_s``: end to end (read, validate, features, predict, calibrate, reasons for the
      top 1 % of risk, which is what analysts read); ``rows_per_s_no_reasons`` without them;
    * ``raw_predict_rows_per_s``: ``Booster.predict`` alone on the same feature matrix;
    * ``stages`` (median seconds): ``read``, ``validate``, ``indicators``, ``features``
      (``RiskModel.transform``, which evaluates the indicators itself), ``predict`` (trees and
      calibration), ``reasons`` (top 1 %), plus ``prepare`` and ``derived``;
    * ``peak_rss_mb``: the highest resident memory sampled while measuring.
    """
    import statistics
    import tempfile

    from riskengine.model import RiskModel
    from scanvision.bench import machine_info

    say = progress or (lambda _m: None)
    if rows < 1 or repeat < 1:
        raise ValueError(f"rows and repeat must be >= 1, got rows={rows}, repeat={repeat}")
    bench = _manifest_scoring_module()
    say("loading the model")
    model = RiskModel.load(model_dir)
    with PeakRss() as mem, tempfile.TemporaryDirectory(prefix="scorebench-") as tmp:
        say(f"generating {rows:,} manifests")
        path = bench.make_batch(model, rows, seed, Path(tmp))
        say("warm-up run")
        bench.one_run(model, path, explain_all=False)
        runs = []
        for i in range(repeat):
            say(f"timed run {i + 1}/{repeat}")
            runs.append(bench.one_run(model, path, explain_all=False))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}
    n = int(runs[0]["rows"])
    stages = {
        "read": med["read"],
        "validate": med["validate"],
        "indicators": med["indicators"],
        "features": med["features"],
        "predict": med["predict"] + med["calibrate"],
        "reasons": med["reasons_top1pct"],
        "prepare": med["prepare"],
        "derived": med["derived"],
    }
    return {
        "benchmark": "manifest_scoring",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "rows": n,
        "rows_per_s": round(n / med["end_to_end"], 1),
        "rows_per_s_no_reasons": round(n / med["end_to_end_no_reasons"], 1),
        "raw_predict_rows_per_s": round(n / med["raw_predict"], 1),
        "fraction_of_raw_predict": round(med["raw_predict"] / med["end_to_end"], 4),
        "rows_explained": int(runs[0]["rows_top1pct"]),
        "stages": {k: round(v, 4) for k, v in stages.items()},
        "end_to_end_seconds": round(med["end_to_end"], 4),
        "repeat": repeat,
        "peak_rss_mb": round(mem.peak_mb, 1),
        "rss_at_start_mb": round(mem.start_mb, 1),
        "model": {"dir": str(model_dir), "trees": int(model.booster_.num_trees()),
                  "features": len(model.features_.feature_names_), "lightgbm_threads": model.n_jobs},
        "method": "benchmarks/manifest_scoring.py (make_batch, one_run): medians of the timed runs",
        "machine": machine_info(),
    }
