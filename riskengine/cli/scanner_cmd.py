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


_SCAN_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


@scanner.command("adapt")
@click.option("--scans", "scans_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of one site's cleared scans (searched recursively; JPEG, PNG, TIFF; "
                   "all 8-bit display or all 16-bit raw).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="New model directory for the site model (refused if it exists and is not empty).")
@click.option("--labels", "labels_csv", type=click.Path(exists=True, dir_okay=False), default=None,
              help="CSV with columns file,state (empty|loaded); other columns are ignored. Trains "
                   "the empty/loaded head too and splits the held-out share by state.")
@click.option("--base", "base_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Model to start from (default: $RISKENGINE_SCAN_MODEL, else the shipped "
                   "models/scanvision).")
@click.option("--site", default=None, help="Name of the site (default: the --scans folder name).")
@click.option("--epochs", type=click.IntRange(min=1), default=40, show_default=True,
              help="Passes over the fitting scans (each seen clean and twice with a projected threat).")
@click.option("--holdout", type=click.FloatRange(0.05, 0.6), default=0.25, show_default=True,
              help="Share of the scans kept out of fitting, for the report and the thresholds.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the split, the projected threats and the training.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where to fine-tune: auto uses CUDA when PyTorch sees a GPU (inference of the "
                   "written model is ONNX Runtime either way).")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="CPU threads for fine-tuning.")
@click.option("--min-scans", type=click.IntRange(min=10), default=20, show_default=True,
              help="Fewest readable scans to accept.")
@click.option("--json", "json_out", is_flag=True, help="Print the site record as JSON.")
def adapt_cmd(scans_dir: str, out_dir: str, labels_csv: str | None, base_dir: str | None,
              site: str | None, epochs: int, holdout: float, seed: int, device: str,
              threads: int, min_scans: int, json_out: bool) -> None:
    """Adapt the scan model to one site from the site's own cleared scans.

    Threats (organic brick stacks, rip-on/rip-off bags, floor, roof, wall and reefer-unit
    loads, 1-500 kg) are projected physically into the site's scans; the model is fine-tuned
    on them, measured on a held-out share with fresh threats (AUC, Pd at 1 % / 5 % false
    alarms by mass and by empty/loaded, heatmap pointing, empty AUC) against the model it
    started from, and the site's alarm thresholds are set from the held-out clean scans.

    \b
    riskengine scanner adapt --scans cleared/ --labels cleared/labels.csv --out models/site-rtm
    riskengine triage --model models/site-rtm new_scan.jpg
    """
    import os
    import shlex
    import sys

    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ModuleNotFoundError as exc:
        raise UserError(
            f"site adaptation fine-tunes the network with PyTorch ({exc.name} is not installed); "
            "install the training extra: pip install 'riskengine[train]'", "MissingDependency",
        ) from exc
    from scanvision.adapt import AdaptConfig, SiteScanError, adapt_to_site, load_site_scans

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; choose a new directory for the site model",
                        "FileExistsError")
    root = Path(scans_dir)
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in _SCAN_SUFFIXES)
    if not paths:
        raise UserError(f"{root} holds no scan files ({', '.join(_SCAN_SUFFIXES)})", "SiteScanError")
    skipped: list[str] = []

    def on_skip(path: str, reason: str) -> None:
        skipped.append(path)
        err_console.print(f"skipped {path}: {reason}", markup=False, highlight=False)

    try:
        scans = load_site_scans(paths, labels_csv=labels_csv, min_scans=min_scans, on_skip=on_skip)
        cfg = AdaptConfig(epochs=epochs, holdout=holdout, seed=seed, device=device, threads=threads)
    except (SiteScanError, ValueError) as exc:
        raise UserError(str(exc), type(exc).__name__) from exc
    base = base_dir or os.environ.get("RISKENGINE_SCAN_MODEL") or None
    site_name = site or root.resolve().name
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console, transient=True, disable=json_out) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            record = adapt_to_site(scans, out, cfg, base_dir=base, site=site_name, progress=progress,
                                   command=shlex.join(["riskengine", *sys.argv[1:]]))
        except SiteScanError as exc:
            raise UserError(str(exc), "SiteScanError") from exc
    record = {**record, "model": str(out), "unreadable": skipped}
    if json_out:
        print_json(record)
        return
    h = record["holdout"]
    table = Table(title=f"Site adaptation: {site_name} ({record['kind']}), "
                        f"{record['n_holdout']} held-out scans")
    table.add_column("held out, fresh threats")
    table.add_column("base", justify="right")
    table.add_column("adapted", justify="right")

    def fmt(x: float | None, pct: bool = False) -> str:
        if x is None or x != x:
            return "-"
        return f"{x:.1%}" if pct else f"{x:.3f}"

    table.add_row("AUC", fmt(h["base"]["auc"]), fmt(h["adapted"]["auc"]))
    for st, a in h["adapted"]["by_state"].items():
        b = h["base"]["by_state"][st]
        table.add_row(f"AUC {st}", fmt(b["auc"]), fmt(a["auc"]))
        table.add_row(f"Pd stacks>=10kg @5% FA {st}", fmt(b["stacks_ge_10kg"]["pd_at_0.05"], True),
                      fmt(a["stacks_ge_10kg"]["pd_at_0.05"], True))
    table.add_row("heatmap peak on threat", fmt(h["base"]["pointing_accuracy"], True),
                  fmt(h["adapted"]["pointing_accuracy"], True))
    table.add_row("empty/loaded AUC", fmt(h["base"].get("empty_auc")), fmt(h["adapted"].get("empty_auc")))
    console.print(table)
    thr = record["thresholds"]
    console.print(f"site thresholds: {thr['0.01']:.4f} (1 % false alarms), {thr['0.05']:.4f} (5 %)")
    console.print(f"site model: {out}  ({record['wall_seconds'] / 60:.1f} min, "
                  f"peak {record['peak_rss_mb']:.0f} MB)")
    console.print(f"use it: riskengine triage --model {out} SCAN...")
