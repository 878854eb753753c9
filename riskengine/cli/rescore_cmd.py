"""`riskengine rescore`: rescore a manifest archive into Parquet parts, resumable, local or Dask.

    riskengine rescore --model models/manifest --data 'archive/*.parquet' --out rescored/
    riskengine rescore --model models/manifest --data archive/ --out rescored/ --dask local
    riskengine rescore --model /shared/models/manifest --data '/shared/archive/*.parquet' \\
        --out /shared/rescored --dask tcp://scheduler:8786 --reasons 3
"""

from __future__ import annotations

import logging
from typing import Any

import click
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from riskengine.cli import main
from riskengine.cli._common import UserError, console, err_console, print_json
from riskengine.rescore import DEFAULT_CHUNK_ROWS


class _RowsPerSecond(ProgressColumn):
    """Rows per second of a progress task."""

    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("- rows/s" if speed is None else f"{speed:,.0f} rows/s", style="cyan")


@main.command("rescore")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False),
              help="Manifest model directory written by `riskengine train` (visible to every Dask worker).")
@click.option("--data", "data", required=True, multiple=True,
              help="Input CSV/Parquet file, glob pattern (quote it) or directory; repeatable.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Output directory of Parquet parts; rerun into it to resume after a crash.")
@click.option("--dask", "dask_address", default=None,
              help="Run on Dask: 'local' (a LocalCluster of 2 workers) or a scheduler address "
                   "such as tcp://scheduler:8786.")
@click.option("--chunk-rows", default=DEFAULT_CHUNK_ROWS, show_default=True, type=click.IntRange(1),
              help="Rows per chunk and part (bounds memory; keep it when resuming).")
@click.option("--reasons", default=0, show_default=True, type=click.IntRange(0, 20),
              help="Top K reasons per row (costs several times the scoring itself).")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="LightGBM threads per chunk (default: the model's setting; 1 per Dask task).")
@click.option("--json", "json_out", is_flag=True, help="Print the summary as one JSON object.")
def rescore_command(model_dir: str, data: tuple[str, ...], out: str, dask_address: str | None,
                    chunk_rows: int, reasons: int, threads: int | None, json_out: bool) -> None:
    """Rescore every manifest of an archive with a model: one Parquet part per input chunk.

    Memory stays bounded by --chunk-rows. Rows that fail validation go to quarantine parts
    with reasons. Finished parts are skipped on a rerun, so an interrupted run resumes where
    it stopped. Exit code 1 when the model, the input or the output directory cannot be used.
    """
    from riskengine.rescore import count_input_rows, expand_inputs, rescore

    if dask_address is not None and logging.getLogger().getEffectiveLevel() >= logging.WARNING:
        # Scheduler and worker start-up chatter is noise unless -v was given.
        logging.getLogger("distributed").setLevel(logging.WARNING)
    files = expand_inputs(list(data))
    total = count_input_rows(files)
    columns = [TextColumn("rescoring"), BarColumn(), TextColumn("{task.completed:,} rows"),
               _RowsPerSecond(), TimeElapsedColumn()]
    if total is not None:
        columns.insert(3, TextColumn("of {task.total:,}"))
        columns.append(TimeRemainingColumn())
    try:
        with Progress(*columns, console=err_console, transient=True, disable=json_out) as bar:
            task = bar.add_task("rescore", total=total)
            summary = rescore(model_dir, [str(f) for f in files], out, chunk_rows=chunk_rows,
                              reasons=reasons, dask=dask_address, threads=threads,
                              progress=lambda n: bar.advance(task, n))
    except ConnectionError as exc:
        raise UserError(str(exc), "ConnectionError") from exc
    result = summary.to_dict()
    if json_out:
        print_json(result)
        return
    table = Table(title=f"Rescored into {summary.out_dir}")
    for col in ("rows", "scored", "quarantined", "parts written", "parts skipped", "rows/s"):
        table.add_column(col, justify="right")
    table.add_row(f"{summary.rows:,}", f"{summary.scored:,}", f"{summary.rejected:,}",
                  f"{summary.parts_written:,}", f"{summary.parts_skipped:,}",
                  f"{summary.rows_per_s:,.0f}" if summary.rows_per_s else "-")
    console.print(table)
    console.print(f"Mode: {summary.mode}; {summary.seconds:.1f} s")
    if summary.rejected:
        console.print(f"{summary.rejected:,} rejected row(s) with reasons in {summary.out_dir}/quarantine/")
