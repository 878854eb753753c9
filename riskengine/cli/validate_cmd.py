"""`riskengine validate`: check a manifest file against the schema and quarantine bad rows."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskengine.cli import main
from riskengine.cli._common import console, print_json


@main.command("validate")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False),
              help="Manifest file (CSV or Parquet).")
@click.option("--quarantine", type=click.Path(dir_okay=False), default=None,
              help="Where to write rejected rows with reasons (CSV or Parquet). "
                   "Default: <data>.quarantine.csv next to the input.")
@click.option("--chunk-rows", default=250_000, show_default=True, help="Rows per chunk.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary instead of tables.")
def validate_command(data: str, quarantine: str | None, chunk_rows: int, json_out: bool) -> None:
    """Validate manifests: print counts and the top reasons, quarantine rejected rows.

    Exit code 0 when the file could be read (even with rejected rows), 1 when it could not.
    """
    from riskengine.schema import validate_file

    path = Path(data)
    q = Path(quarantine) if quarantine else path.with_name(path.name.split(".")[0] + ".quarantine.csv")
    size = path.stat().st_size if path.exists() else 0
    with Progress(TextColumn("validating"), BarColumn(), TextColumn("{task.completed:,} rows"),
                  TimeElapsedColumn(), console=console, transient=True, disable=json_out) as bar:
        task = bar.add_task("validate", total=None if size else 0)
        summary = validate_file(path, quarantine=q, chunk_rows=chunk_rows,
                                progress=lambda k: bar.advance(task, k))
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"Validation of {path.name}")
    table.add_column("rows in", justify="right")
    table.add_column("valid", justify="right")
    table.add_column("rejected", justify="right")
    table.add_column("warnings", justify="right")
    table.add_row(f"{summary['rows']:,}", f"{summary['valid']:,}", f"{summary['rejected']:,}",
                  f"{summary['warnings']:,}")
    console.print(table)
    if summary["top_reasons"]:
        reasons = Table(title="Top reject reasons")
        reasons.add_column("rows", justify="right")
        reasons.add_column("column")
        reasons.add_column("reason")
        for r in summary["top_reasons"]:
            reasons.add_row(f"{r['rows']:,}", r["column"], r["reason"])
        console.print(reasons)
        console.print(f"Rejected rows with reasons: {q}")
