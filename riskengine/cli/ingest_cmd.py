"""`riskengine ingest`: stream manifest files into the store (validate, store, score, plan).

    riskengine ingest --data arrivals.csv --db sqlite:///riskengine.db
    riskengine ingest --data 'archive/*.parquet' --db postgresql+psycopg://re:pw@db/riskengine \\
        --batch-rows 10000 --quarantine rejects/ --json
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from riskengine.cli import main
from riskengine.cli._common import UserError, console, err_console, print_json
from riskengine.ingest import DEFAULT_BATCH_ROWS, QUARANTINE_FORMATS

_REPO_MODEL = Path(__file__).resolve().parents[2] / "models" / "manifest"


class _RowsPerSecond(ProgressColumn):
    """Rows per second of a progress task."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("- rows/s" if speed is None else f"{speed:,.0f} rows/s", style="cyan")


def database_url(value: str) -> str:
    """A store URL from ``--db``: URLs pass as they are, a plain path means a SQLite file."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


@main.command("ingest")
@click.option("--data", "data", required=True, multiple=True,
              help="Manifest file (CSV or Parquet), glob pattern (quote it) or folder; repeatable.")
@click.option("--db", "db_url", default="sqlite:///riskengine.db", show_default=True,
              envvar="RISKENGINE_DB_URL", metavar="URL",
              help="Store: a SQLite path or URL (sqlite:///riskengine.db) or "
                   "postgresql+psycopg://user:pass@host/db. Env: RISKENGINE_DB_URL.")
@click.option("--model", "model_dir", default=None, envvar="RISKENGINE_MODEL_DIR",
              type=click.Path(file_okay=False),
              help="Manifest risk model directory (default: models/manifest of the checkout). "
                   "Env: RISKENGINE_MODEL_DIR.")
@click.option("--batch-rows", default=DEFAULT_BATCH_ROWS, show_default=True, type=click.IntRange(1),
              help="Rows per batch: one upsert transaction and one quarantine part each. Keep "
                   "it when rerunning after a crash.")
@click.option("--quarantine", "quarantine", default=None, type=click.Path(file_okay=False),
              help="Folder for the rejected rows with reasons, one part per batch "
                   "(default: a 'quarantine' folder next to the first input).")
@click.option("--quarantine-format", type=click.Choice(QUARANTINE_FORMATS), default="parquet",
              show_default=True, help="File format of the quarantine parts.")
@click.option("--reasons", default=3, show_default=True, type=click.IntRange(0, 10),
              help="Top K reasons per manifest score (what officers read; costs scoring time).")
@click.option("--scan-capacity", type=click.IntRange(0), default=300, show_default=True,
              help="Scans per port/terminal/shift.")
@click.option("--inspection-capacity", type=click.IntRange(0), default=40, show_default=True,
              help="Physical inspections per port/terminal/shift.")
@click.option("--exploration-share", type=click.FloatRange(0, 1), default=0.05, show_default=True,
              help="Share of each capacity selected at random.")
@click.option("--actor", default="ingest", show_default=True, help="Audit actor of the writes.")
@click.option("--no-resume", "no_resume", is_flag=True,
              help="Send every batch again, even those an earlier run recorded as done.")
@click.option("--json", "json_out", is_flag=True, help="Print the summary as one JSON object.")
def ingest_command(data: tuple[str, ...], db_url: str, model_dir: str | None, batch_rows: int,
                   quarantine: str | None, quarantine_format: str, reasons: int, scan_capacity: int,
                   inspection_capacity: int, exploration_share: float, actor: str, no_resume: bool,
                   json_out: bool) -> None:
    """Ingest manifest files: validate, store, score and plan them batch by batch.

    Rejected rows go to quarantine parts with their reasons; every input row is stored or
    quarantined. The run is crash-safe: after a kill, run the same command again; batches
    already done are skipped and the result equals that of one uninterrupted run. Exit code 1
    when an input, the model or the database cannot be used.

    \b
    riskengine ingest --data arrivals.csv --db riskengine.db
    riskengine ingest --data 'archive/*.parquet' --db postgresql+psycopg://re:pw@db/riskengine --json
    """
    from riskengine.ingest import ingest_files
    from riskengine.queue import QueueConfig
    from riskengine.rescore import count_input_rows, expand_inputs
    from riskengine.service.scoring import ModelScorer, ModelUnavailableError
    from riskengine.store import Store

    files = expand_inputs(list(data))
    scorer = ModelScorer(model_dir or _REPO_MODEL, reasons=reasons)
    if not scorer.available:
        raise UserError(f"no manifest risk model in {scorer.model_dir} (model.txt missing): train one "
                        "with `riskengine train --data manifests.parquet --out DIR` and pass --model DIR",
                        "ModelUnavailableError")
    qdir = Path(quarantine) if quarantine else files[0].parent / "quarantine"
    config = QueueConfig(scan_capacity=scan_capacity, inspection_capacity=inspection_capacity,
                         exploration_share=exploration_share)
    try:
        store = Store(database_url(db_url))
    except ConnectionError as exc:
        raise UserError(str(exc), "ConnectionError") from exc
    total = count_input_rows(files)
    columns = [TextColumn("ingesting"), BarColumn(), TextColumn("{task.completed:,} rows"),
               _RowsPerSecond(), TimeElapsedColumn()]
    if total is not None:
        columns.insert(3, TextColumn("of {task.total:,}"))
    try:
        with Progress(*columns, console=err_console, transient=True, disable=json_out) as bar:
            task = bar.add_task("ingest", total=total)
            summary = ingest_files(store, scorer, files, config=config, batch_rows=batch_rows,
                                   quarantine_dir=qdir, quarantine_format=quarantine_format,
                                   actor=actor, resume=not no_resume,
                                   progress=lambda n: bar.advance(task, n))
    except ModelUnavailableError as exc:
        raise UserError(str(exc), "ModelUnavailableError") from exc
    except ConnectionError as exc:
        raise UserError(str(exc), "ConnectionError") from exc
    finally:
        store.close()
    if json_out:
        print_json(summary.to_dict())
        return
    table = Table(title=f"Ingested into {store!r}")
    for col in ("rows read", "valid", "inserted", "updated", "unchanged", "quarantined", "decisions"):
        table.add_column(col, justify="right")
    table.add_row(*(f"{v:,}" for v in (summary.rows, summary.valid, summary.inserted, summary.updated,
                                       summary.unchanged, summary.rejected, summary.decisions)))
    console.print(table)
    resumed = (f"; {summary.batches_skipped:,} done by an earlier run, skipped"
               if summary.batches_skipped else "")
    speed = f", {summary.rows_per_s:,.0f} rows/s" if summary.rows_per_s else ""
    console.print(f"{summary.batches:,} batch(es) of up to {batch_rows:,} rows{resumed}; "
                  f"{summary.seconds:.1f} s{speed}", highlight=False)
    if summary.top_reasons:
        reasons_table = Table(title="Top reject reasons")
        reasons_table.add_column("rows", justify="right")
        reasons_table.add_column("column")
        reasons_table.add_column("reason")
        for r in summary.top_reasons:
            reasons_table.add_row(f"{r['rows']:,}", r["column"], r["reason"])
        console.print(reasons_table)
    if summary.rejected:
        console.print(f"{summary.rejected:,} rejected row(s) with reasons in {summary.quarantine_dir}/",
                      highlight=False, soft_wrap=True)
