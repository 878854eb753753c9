"""`riskengine generate manifests`: synthetic port traffic with smuggling ground truth."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from riskengine.cli import generate
from riskengine.cli._common import console, print_json


@generate.command("manifests")
@click.option("--rows", type=int, required=True, help="Number of manifest rows (containers) to generate.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Output file: .parquet (one row group per chunk), .csv or .csv.gz.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed and options give the same file.")
@click.option("--start", default=None,
              help="First arrival date (YYYY-MM-DD). Default: the day after the shipped model's "
                   "history ends (2027-01-02), so that the traffic is new to the model.")
@click.option("--days", type=int, default=1, show_default=True,
              help="Arrivals spread uniformly over this many days from --start.")
@click.option("--port", default="NLRTM", show_default=True,
              help="UN/LOCODE of the port of discharge (European ports: NLRTM, BEANR, DEHAM, ESALG, ...).")
@click.option("--illicit-rate", type=float, default=0.01, show_default=True,
              help="Expected share of containers carrying drugs (0 to 0.2).")
@click.option("--drift", type=float, default=0.0, show_default=True,
              help="0 to 1: how far smugglers shift modus operandi, origins and hubs over the period.")
@click.option("--corrupt-rate", type=float, default=0.0, show_default=True,
              help="Share of rows broken the way real files break (bad check digit, negative weight, "
                   "bad date, missing consignee, bad HS code, duplicate id), for validation demos.")
@click.option("--chunk-rows", type=int, default=250_000, show_default=True,
              help="Rows generated and written per chunk; bounds memory.")
@click.option("--exclude-last-days", type=int, default=0, show_default=True,
              help="Leave out the arrivals of the last N days of the period (they stay 'the future': "
                   "`riskengine demo` draws its day from the same world).")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary instead of tables.")
def generate_manifests_command(
    rows: int, out: str, seed: int, start: str | None, days: int, port: str, illicit_rate: float,
    drift: float, corrupt_rate: float, chunk_rows: int, exclude_last_days: int, json_out: bool,
) -> None:
    """Generate synthetic container manifests with ground truth for training and demos.

    \b
    riskengine generate manifests --rows 1000000 --days 90 --out traffic.parquet
    riskengine generate manifests --rows 5000 --corrupt-rate 0.02 --out broken.csv
    """
    from riskengine.demo import day_after_shipped_history
    from riskengine.synth import write_manifests

    if start is None:
        start = day_after_shipped_history()

    with Progress(TextColumn("generating"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                  disable=json_out) as bar:
        task = bar.add_task("generate", total=max(rows, 0))
        summary = write_manifests(
            Path(out), rows, chunk_rows=chunk_rows, progress=lambda k: bar.advance(task, k),
            seed=seed, start=start, days=days, port=port, illicit_rate=illicit_rate, drift=drift,
            corrupt_rate=corrupt_rate, exclude_last_days=exclude_last_days,
        )
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"Synthetic manifests for {summary['params']['port']}")
    table.add_column("rows", justify="right")
    table.add_column("illicit", justify="right")
    table.add_column("inspected", justify="right")
    table.add_column("corrupt", justify="right")
    table.add_column("rows/s", justify="right")
    table.add_column("size", justify="right")
    table.add_row(
        f"{summary['rows']:,}",
        f"{summary['illicit']:,} ({summary['illicit_rate']:.2%})",
        f"{summary['inspected']:,}",
        f"{summary['corrupt_rows']:,}",
        f"{summary['rows_per_s']:,.0f}" if summary["rows_per_s"] else "-",
        f"{summary['bytes'] / 1e6:,.1f} MB",
    )
    console.print(table)
    if summary["illicit"]:
        mix = Table(title="Modus operandi of illicit containers")
        mix.add_column("modus operandi")
        mix.add_column("containers", justify="right")
        mix.add_column("share", justify="right")
        for name, count in sorted(summary["modus_operandi"].items(), key=lambda kv: -kv[1]):
            mix.add_row(name, f"{count:,}", f"{count / summary['illicit']:.1%}")
        console.print(mix)
    console.print(f"Wrote {summary['path']}")
