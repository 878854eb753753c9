"""`riskengine scanner calibrate`: fit the concealment score to one scanner from cleared scans."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskengine.cli import main
from riskengine.cli._common import UserError, console, err_console, print_json


@main.group("scanner")
def scanner() -> None:
    """Per-scanner settings of the scan model."""


@scanner.command("calibrate")
@click.argument("scans", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--scanner", "scanner_name", required=True,
              help="Name of the scanner (site, lane or serial) the cleared scans come from.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="New model directory: a copy of --model with the calibration in config.json.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
              help="Scan model to calibrate (default: $RISKENGINE_SCAN_MODEL, else the shipped "
                   "models/scanvision).")
@click.option("--reference-count", type=click.IntRange(min=50), default=300, show_default=True,
              help="Clean synthetic scans scored as the reference distribution.")
@click.option("--min-scans", type=click.IntRange(min=5), default=20, show_default=True,
              help="Fewest readable cleared scans to accept.")
@click.option("--json", "json_out", is_flag=True, help="Print the calibration as JSON.")
def calibrate_cmd(scans: tuple[str, ...], scanner_name: str, out_dir: str, model_dir: str | None,
                  reference_count: int, min_scans: int, json_out: bool) -> None:
    """Calibrate the concealment score on scans of cleared containers from one scanner.

    SCANS are images of containers that were inspected or released as clean, all exported the
    same way (16-bit raw or 8-bit display). The scanner's clean-score distribution is mapped
    onto the one the model card's thresholds were set on, so that the card's false-alarm
    rates hold on this scanner. Use the written directory with `riskengine triage --model`.

    \b
    riskengine scanner calibrate --scanner RTM-Lane3 --out models/scanvision-rtm3 cleared/*.jpg
    riskengine triage --model models/scanvision-rtm3 new_scan.jpg
    """
    import numpy as np

    from scanvision.calibrate import (
        CALIBRATION_KEY,
        card_threshold,
        fit_scanner_calibration,
        reference_clean_scores,
        write_calibrated_model,
    )
    from scanvision.infer import ScanTriage
    from scanvision.io import ScanReadError, read_scan

    engine = ScanTriage(model_dir)
    if engine.config.get(CALIBRATION_KEY):
        prev = engine.config[CALIBRATION_KEY]
        raise UserError(
            f"{engine.model_dir} already carries a calibration for scanner {prev.get('scanner')!r}; "
            "calibrate from the uncalibrated model (the shipped models/scanvision)"
        )
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new directory for the calibrated model")

    good, kinds, failed = [], Counter(), 0
    for p in scans:
        try:
            scan = read_scan(p)
        except (ScanReadError, ValueError, OSError) as exc:
            failed += 1
            err_console.print(f"skipped {p}: {exc}", markup=False, highlight=False)
            continue
        good.append(scan)
        kinds[scan.kind] += 1
    if len(kinds) > 1:
        raise UserError(
            "the cleared scans mix image kinds (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
            + "); calibrate raw 16-bit and 8-bit display exports separately"
        )
    if len(good) < min_scans:
        raise UserError(
            f"{len(good)} readable cleared scan(s) ({failed} unreadable); a calibration needs at least "
            f"{min_scans}, better 200 or more"
        )
    kind = next(iter(kinds))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True, disable=json_out) as bar:
        task = bar.add_task("scoring cleared scans", total=len(good))
        clean = []
        for c0 in range(0, len(good), 32):
            part = good[c0:c0 + 32]
            clean.extend(r.concealment_score for r in engine.triage(part))
            bar.advance(task, len(part))
        ref_task = bar.add_task(f"scoring {reference_count} clean reference scans", total=reference_count)
        reference = reference_clean_scores(engine, kind, count=reference_count,
                                           progress=lambda k: bar.advance(ref_task, k))
    threshold = card_threshold(engine.config, kind)
    try:
        cal = fit_scanner_calibration(np.asarray(clean), reference, scanner=scanner_name, kind=kind,
                                      threshold=threshold, min_scans=min_scans)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    written = write_calibrated_model(engine.model_dir, out, cal)
    summary = {**cal.to_dict(), "model": str(written), "unreadable": failed,
               "reference_alarm_rate": float((reference > threshold).mean())}
    if json_out:
        print_json(summary)
        return
    table = Table(title=f"Scanner calibration: {scanner_name} ({kind})")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("cleared scans used", f"{cal.n_clean}" + (f" ({failed} unreadable)" if failed else ""))
    table.add_row("alarm threshold (card, 1 % false alarms)", f"{threshold:.3f}")
    table.add_row("cleared scans above it, before", f"{cal.alarm_rate_before:.1%}")
    table.add_row("cleared scans above it, after", f"{cal.alarm_rate_after:.1%}")
    table.add_row("reference clean scans above it", f"{summary['reference_alarm_rate']:.1%}")
    table.add_row("map of the score logit", f"x{cal.scale:.3f} {cal.bias:+.3f}")
    console.print(table)
    console.print(f"calibrated model: {written}  (riskengine triage --model {written} ...)")
    if cal.n_clean < 200:
        err_console.print(f"[yellow]only {cal.n_clean} cleared scans: the after figure is in-sample; "
                          "recheck the alarm rate on the next 200+ cleared scans[/]")
