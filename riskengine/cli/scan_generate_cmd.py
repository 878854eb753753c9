"""`riskengine generate scans`: physics-based synthetic X-ray scans with ground truth."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskengine.cli import generate
from riskengine.cli._common import console, print_json


@generate.command("scans")
@click.option("--count", type=click.IntRange(min=1), required=True, help="Number of scans to generate.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; scan i depends only on the seed and i.")
@click.option("--out", "out", type=click.Path(file_okay=False), required=True,
              help="Output directory (created if missing).")
@click.option("--threat-rate", type=click.FloatRange(0.0, 1.0), default=0.3, show_default=True,
              help="Share of scans with a concealment (drugs, cigarettes or a weapon).")
@click.option("--dual-energy", is_flag=True,
              help="Also write the 4 MeV image: <id>_high and <id>_low instead of <id>.")
@click.option("--size", type=click.Choice(["20ft", "40ft", "mixed"]), default="mixed",
              show_default=True, help="Container length (mixed: 60 % 40 ft).")
@click.option("--format", "fmt", type=click.Choice(["png", "tiff"]), default="png",
              show_default=True, help="16-bit raw transmission image format.")
@click.option("--tractor-rate", type=click.FloatRange(0.0, 1.0), default=0.3, show_default=True,
              help="Share of scans on a trailer that also show the tractor unit (cab, engine).")
@click.option("--bulk-rate", type=click.FloatRange(0.0, 1.0), default=0.3, show_default=True,
              help="Share of loaded boxes packed with large uniform packages (big bags, paper "
                   "reels, fabric rolls, cable drums, steel coils, IBC tanks). 0 and 0 give the "
                   "scans of generator 1.0.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary instead of a table.")
def generate_scans_command(count: int, seed: int, out: str, threat_rate: float, dual_energy: bool,
                           size: str, fmt: str, tractor_rate: float, bulk_rate: float,
                           json_out: bool) -> None:
    """Generate synthetic container X-ray scans (16-bit raw transmission) with ground truth.

    Each scan gets a JSON sidecar (<id>.json: container, cargo family and mass, threats with
    boxes and masses) and, when it has a concealment, a mask (<id>_mask.png).

    \b
    riskengine generate scans --count 200 --seed 1 --out data/scans
    riskengine generate scans --count 20 --dual-energy --size 40ft --format tiff --out de_scans
    """
    from scanvision.synth import generate_scans

    t0 = time.perf_counter()
    with Progress(TextColumn("rendering scans"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True, disable=json_out) as bar:
        task = bar.add_task("scans", total=count)
        sidecars = generate_scans(out, count=count, seed=seed, threat_rate=threat_rate,
                                  dual_energy=dual_energy, size=size, fmt=fmt,
                                  tractor_rate=tractor_rate, bulk_rate=bulk_rate,
                                  progress=lambda k: bar.advance(task, k))
    elapsed = time.perf_counter() - t0
    with_threat = sum(1 for m in sidecars if m["threats"])
    families = Counter(m["cargo_family"] for m in sidecars)
    sizes = Counter(m["size"] for m in sidecars)
    threat_types = Counter(t["type"] for m in sidecars for t in m["threats"])
    summary = {
        "out": str(Path(out)),
        "scans": len(sidecars),
        "with_threat": with_threat,
        "threats": dict(threat_types),
        "sizes": dict(sizes),
        "cargo_families": dict(families),
        "reefers": sum(1 for m in sidecars if m["reefer"]),
        "with_tractor": sum(1 for m in sidecars if m.get("tractor")),
        "bulk_cargo": dict(Counter(m["bulk_cargo"] for m in sidecars if m.get("bulk_cargo"))),
        "dual_energy": dual_energy,
        "format": fmt,
        "seconds": round(elapsed, 2),
    }
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"{len(sidecars)} synthetic scans in {out}")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("with a concealment", f"{with_threat}")
    for kind, n in sorted(threat_types.items()):
        table.add_row(f"  threat: {kind}", f"{n}")
    for s, n in sorted(sizes.items()):
        table.add_row(f"size {s}", f"{n}")
    table.add_row("reefers", f"{summary['reefers']}")
    table.add_row("with the tractor unit", f"{summary['with_tractor']}")
    for kind, n in sorted(summary["bulk_cargo"].items()):
        table.add_row(f"  bulk packing: {kind}", f"{n}")
    for fam, n in sorted(families.items()):
        table.add_row(f"cargo: {fam}", f"{n}")
    console.print(table)
    console.print(f"{len(sidecars)} scans in {elapsed:.1f} s ({elapsed / max(1, len(sidecars)):.2f} s/scan); "
                  f"index: {Path(out) / 'index.jsonl'}")
