"""`riskengine train` (manifest model), `riskengine score` and `riskengine evaluate`.

    riskengine train --data year.parquet --out models/manifest
    riskengine train --data train.csv --schema datasets/kcs/mapping.yaml --out kcs_model
    riskengine score --model models/manifest --data today.csv --out scores.csv --reasons 3
    riskengine evaluate --model models/manifest --data later_month.parquet --plot reliability.png
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskengine.cli import main
from riskengine.cli._common import console, err_console, print_json

DEFAULT_CHUNK_ROWS = 200_000


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

def _read_tables(paths: list[str]) -> pd.DataFrame:
    """Read and concatenate CSV/Parquet files; ``source_file`` says where each row came from."""
    from riskengine.schema import read_manifests

    frames = []
    for p in paths:
        df = read_manifests(p)
        df["source_file"] = Path(p).name
        frames.append(df)
    if not frames:
        raise ValueError("no training data given: pass --data PATH (one or more).")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def run_train(*, data: list[str], schema: str | None, out: str, seed: int, json_out: bool) -> None:
    """Train the manifest risk model on ``data`` and write the model directory ``out``.

    Without ``schema`` the files are native manifests (label ``is_illicit`` on inspected rows);
    with it, a foreign table described by the mapping YAML, which is stored in the model directory.
    """
    from riskengine.mapping import Mapping, native_mapping
    from riskengine.model import RiskModel

    t0 = time.perf_counter()
    mapping = Mapping.from_yaml(schema) if schema else native_mapping()
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a directory; give a folder for the model.")
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=json_out) as bar:
        task = bar.add_task(f"reading {len(data)} file(s)", total=None)
        raw = _read_tables(data)
        model = RiskModel(mapping=mapping, seed=seed, **mapping.model)
        model.fit(raw, progress=lambda msg: bar.update(task, description=msg))
        model.training_["command"] = " ".join(
            ["riskengine train"] + [f"--data {p}" for p in data] + ([f"--schema {schema}"] if schema else [])
            + [f"--out {out}", f"--seed {seed}"])
        bar.update(task, description="writing the model directory")
        model.save(out_dir)
        rejects = model.rejects_
        rejects_path = None
        if len(rejects):
            from riskengine.schema import write_table

            rejects_path = write_table(rejects.astype("string"), out_dir / "rejected_rows.csv")
    t = model.training_
    hold = model.metrics_.get("holdout", {})
    summary: dict[str, Any] = {
        "model": str(out_dir),
        "schema": mapping.name,
        "files": list(data),
        "rows": t["rows_in"],
        "rejected": t["rows_rejected"],
        "rejected_rows_file": str(rejects_path) if rejects_path else None,
        "labelled": t["labelled"],
        "positives": t["positives"],
        "start": t["start"],
        "end": t["end"],
        "features": len(model.features_.feature_names_),
        "trees": int(model.booster_.num_trees()),
        "calibration": model.calibrator_.method,
        "holdout": {k: hold[k] for k in ("rows", "positives", "precision_at_1", "precision_at_5",
                                         "roc_auc", "pr_auc", "brier") if k in hold},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"Trained {out_dir}")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("schema", mapping.name)
    table.add_row("rows (rejected)", f"{t['rows_in']:,} ({t['rows_rejected']:,})")
    table.add_row("labelled (positive)", f"{t['labelled']:,} ({t['positives']:,})")
    table.add_row("window", f"{t['start']} .. {t['end']}")
    table.add_row("features / trees", f"{summary['features']} / {summary['trees']}")
    table.add_row("calibration", f"{model.calibrator_.method} on {model.calibrator_.rows:,} rows")
    for k in ("precision_at_1", "precision_at_5", "roc_auc", "brier"):
        if k in hold:
            table.add_row(f"holdout {k}", f"{hold[k]:.4f}")
    table.add_row("time", f"{summary['seconds']} s")
    console.print(table)
    if rejects_path:
        console.print(f"{t['rows_rejected']:,} rejected row(s) with reasons: {rejects_path}")


# --------------------------------------------------------------------------------------------
# score
# --------------------------------------------------------------------------------------------

class _TableWriter:
    """Appends frames to a CSV or Parquet file chosen by extension."""

    def __init__(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise ValueError(f"unsupported output type {path.suffix!r} for {path}: use .csv or .parquet")
        self.path = path
        self.parquet = suffix != ".csv"
        self._writer: Any = None
        self._schema: Any = None
        self._started = False
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, df: pd.DataFrame) -> None:
        if self.parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            if self._writer is None:
                table = pa.Table.from_pandas(df, preserve_index=False)
                self._schema = table.schema
                self._writer = pq.ParquetWriter(self.path, self._schema)
            else:
                table = pa.Table.from_pandas(df, schema=self._schema, preserve_index=False)
            self._writer.write_table(table)
        else:
            from riskengine.csvsafe import write_csv

            # Reasons and ids come from the manifests: formula cells are escaped.
            write_csv(df, self.path, mode="a" if self._started else "w", header=not self._started)
        self._started = True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    from riskengine.schema import iter_manifest_chunks

    yield from iter_manifest_chunks(path, chunk_rows=chunk_rows)


def _row_count(path: Path) -> int | None:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # unreadable files are reported by the reader with a clear message
            return None
    return None


def default_quarantine(out: Path) -> Path:
    """``<out stem>.quarantine.csv`` next to the output file."""
    return out.with_name(out.name.split(".")[0] + ".quarantine.csv")


@main.command("score")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory written by `riskengine train`.")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False),
              help="Rows to score (CSV or Parquet) in the schema the model was trained on.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output file (.csv or .parquet): id column, risk_score and, with --reasons, reasons.")
@click.option("--reasons", "reasons", default=0, show_default=True, type=click.IntRange(0, 20),
              help="Add the top K reasons per row (features that pushed the risk up), joined by ' | '.")
@click.option("--reasons-min-score", "reasons_min_score", type=click.FloatRange(0, 1), default=None,
              help="With --reasons: explain only rows with at least this risk_score (explanations cost "
                   "far more than scores); other rows get an empty reasons field.")
@click.option("--quarantine", type=click.Path(dir_okay=False), default=None,
              help="Where rows that fail validation go, with reasons (CSV or Parquet). "
                   "Default: <out stem>.quarantine.csv next to --out.")
@click.option("--chunk-rows", default=DEFAULT_CHUNK_ROWS, show_default=True, type=click.IntRange(1),
              help="Rows per chunk (bounds memory on large files).")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary instead of tables.")
def score_command(model_dir: str, data: str, out: str, reasons: int, reasons_min_score: float | None,
                  quarantine: str | None, chunk_rows: int, json_out: bool) -> None:
    """Score rows with a trained model: calibrated risk_score per row, optional reasons.

    Rows that fail validation are written to the quarantine file and counted; the run goes on.
    Exit code 1 when the model or the input cannot be used (e.g. missing required columns).
    """
    from riskengine.model import RiskModel

    t0 = time.perf_counter()
    model = RiskModel.load(model_dir)
    src, out_path = Path(data), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"input file not found: {src}")
    if src.resolve() == out_path.resolve():
        raise ValueError(f"--out {out_path} is the input file; choose another output path.")
    q_path = Path(quarantine) if quarantine else default_quarantine(out_path)
    writer = _TableWriter(out_path)
    q_writer = _TableWriter(q_path)
    id_col = model.features_.mapping_.id
    n_in = n_scored = n_rej = 0
    sums = {"risk": 0.0}
    scores_all: list[np.ndarray] = []
    reject_reasons: dict[str, int] = {}
    total = _row_count(src)
    try:
        with Progress(TextColumn("scoring"), BarColumn(), TextColumn("{task.completed:,} rows"),
                      TimeElapsedColumn(), console=err_console, transient=True, disable=json_out) as bar:
            task = bar.add_task("score", total=total)
            for chunk in _chunks(src, chunk_rows):
                res = model.score(chunk, reasons=reasons, reasons_min_score=reasons_min_score)
                sc = res.scores
                sc[id_col] = sc[id_col].astype("string")
                if reasons:
                    sc["reasons"] = sc["reasons"].astype("string")
                writer.write(sc)
                rej = res.rejects
                if len(rej):  # no quarantine file at all when nothing is rejected
                    q_writer.write(_quarantine_frame(rej))
                for reason, k in rej.get("reject_column", pd.Series(dtype=str)).value_counts().items():
                    reject_reasons[str(reason)] = reject_reasons.get(str(reason), 0) + int(k)
                n_in += len(chunk)
                n_scored += len(sc)
                n_rej += len(rej)
                scores_all.append(sc["risk_score"].to_numpy())
                sums["risk"] += float(sc["risk_score"].sum())
                bar.advance(task, len(chunk))
            if not writer._started:
                empty = pd.DataFrame({id_col: pd.Series(dtype="string"), "risk_score": pd.Series(dtype="float64")})
                if reasons:
                    empty["reasons"] = pd.Series(dtype="string")
                writer.write(empty)
    finally:
        writer.close()
        q_writer.close()
    seconds = time.perf_counter() - t0
    s = np.concatenate(scores_all) if scores_all else np.zeros(0)
    summary: dict[str, Any] = {
        "model": str(model_dir),
        "data": str(src),
        "out": str(out_path),
        "quarantine": str(q_path) if n_rej else None,
        "rows": n_in,
        "scored": n_scored,
        "quarantined": n_rej,
        "quarantined_by_column": reject_reasons,
        "reasons": reasons,
        "risk_mean": float(s.mean()) if len(s) else None,
        "risk_p50": float(np.quantile(s, 0.5)) if len(s) else None,
        "risk_p90": float(np.quantile(s, 0.9)) if len(s) else None,
        "risk_p99": float(np.quantile(s, 0.99)) if len(s) else None,
        "risk_max": float(s.max()) if len(s) else None,
        "seconds": round(seconds, 2),
        "rows_per_second": round(n_in / seconds, 1) if seconds > 0 else None,
    }
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"Scored {src.name}")
    table.add_column("rows in", justify="right")
    table.add_column("scored", justify="right")
    table.add_column("quarantined", justify="right")
    table.add_column("mean risk", justify="right")
    table.add_column("p99 risk", justify="right")
    table.add_column("rows/s", justify="right")

    def fmt(v: float | None) -> str:
        return f"{v:.4f}" if v is not None else "-"

    table.add_row(f"{n_in:,}", f"{n_scored:,}", f"{n_rej:,}", fmt(summary["risk_mean"]), fmt(summary["risk_p99"]),
                  f"{summary['rows_per_second']:,.0f}" if summary["rows_per_second"] else "-")
    console.print(table)
    console.print(f"Scores: {out_path}")
    if n_rej:
        console.print(f"{n_rej:,} row(s) quarantined with reasons: {q_path}")


def _quarantine_frame(rej: pd.DataFrame) -> pd.DataFrame:
    """Rejected rows as text (chunks of one file keep one schema), reasons first."""
    front = [c for c in ("source_row", "reject_column", "reject_reason") if c in rej.columns]
    rest = [c for c in rej.columns if c not in front]
    out = rej[front + rest].copy()
    for c in out.columns:
        if c != "source_row":
            out[c] = out[c].astype("string")
    return out


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------

@main.command("evaluate")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory written by `riskengine train`.")
@click.option("--data", "data", required=True, multiple=True, type=click.Path(dir_okay=False),
              help="Labelled rows (CSV or Parquet) dated after the training window; repeatable.")
@click.option("--label", "label", default=None,
              help="Label column to evaluate against (default: the model's label). Native generated "
                   "data carries is_illicit for every row, inspected or not.")
@click.option("--all-rows", is_flag=True,
              help="Use every row's label, ignoring the 'labelled' column (e.g. generator ground truth).")
@click.option("--plot", "plot", type=click.Path(dir_okay=False), default=None,
              help="Write a reliability diagram (PNG) here.")
@click.option("--since", "since", default=None,
              help="Only rows dated on or after this date (YYYY-MM-DD), e.g. after the training window.")
@click.option("--record", "record", default=None,
              help="Store the result under this title in the model directory (model.json metrics and "
                   "MODEL_CARD.md); a plot inside the model directory is linked from the card.")
@click.option("--note", "note", default=None, help="With --record: a remark shown with the result in the card.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary instead of tables.")
def evaluate_command(model_dir: str, data: tuple[str, ...], label: str | None, all_rows: bool,
                     plot: str | None, since: str | None, record: str | None, note: str | None,
                     json_out: bool) -> None:
    """Measure a model on labelled rows: P@1/2/5/10%, ROC-AUC, PR-AUC, Brier, reliability."""
    import shlex

    from riskengine.model import RiskModel

    model = RiskModel.load(model_dir)
    raw = _read_tables(list(data))
    result = model.evaluate(raw, label=label, all_rows=all_rows, plot=plot, since=since)
    if record:
        rel_plot = None
        if plot and Path(plot).resolve().parent == Path(model_dir).resolve():
            rel_plot = Path(plot).name
        parts = ["riskengine", "evaluate", "--model", model_dir]
        for d in data:
            parts += ["--data", d]
        parts += (["--label", label] if label else []) + (["--all-rows"] if all_rows else [])
        parts += (["--plot", plot] if plot else []) + (["--since", since] if since else [])
        parts += ["--record", record] + (["--note", note] if note else [])
        command = " ".join(shlex.quote(str(a)) for a in parts)
        model.record_evaluation(model_dir, result, title=record, command=command, plot=rel_plot, note=note)
    if json_out:
        print_json(result)
        return
    table = Table(title=f"Evaluation of {model_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in result["metrics"].items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else f"{v:,}")
    console.print(table)
    if plot:
        console.print(f"Reliability diagram: {plot}")
