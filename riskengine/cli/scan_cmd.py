"""`riskengine triage` (score X-ray scans with the scan CNN) and `riskengine train scans`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from riskengine.cli import main, train
from riskengine.cli._common import UserError, console, err_console, print_json

TRAIN_EXTRA_HINT = "pip install 'riskengine[train]'"


class _PlainUserError(UserError):
    """A UserError whose message is printed verbatim (it holds square brackets)."""

    def show(self, file: object = None) -> None:
        err_console.print(self.format_message(), markup=False, highlight=False)


@main.command("triage")
@click.argument("scans", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--model", "model_dir", type=click.Path(file_okay=False), default=None,
    help="Scan model directory (model.onnx + config.json). Default: $RISKENGINE_SCAN_MODEL, "
         "else the shipped models/scanvision.",
)
@click.option(
    "--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu",
    show_default=True,
    help="ONNX Runtime execution provider; falls back to CPU with a warning when unavailable.",
)
@click.option("--json", "json_out", is_flag=True, help="One JSON object per scan per line.")
@click.option(
    "--heatmaps", "heatmap_dir", type=click.Path(file_okay=False), default=None,
    help="Write a heatmap overlay PNG per scan into this directory.",
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None,
    help="CPU threads for ONNX Runtime (default: all cores).",
)
def triage_cmd(
    scans: tuple[str, ...], model_dir: str | None, provider: str, json_out: bool,
    heatmap_dir: str | None, threads: int | None,
) -> None:
    """Triage X-ray scans: concealment score, empty verdict, cargo class, mass, heatmap.

    SCAN files are 16-bit raw transmission PNG/TIFF or 8-bit display JPEG/PNG, any size. A file
    that cannot be read is reported (an `error` record with --json) and the others are still
    triaged; the exit code is 1 if any file failed.

    \b
    riskengine triage scans/*.png
    riskengine triage --json --heatmaps out/ scan1.png photo.jpg
    """
    from scanvision.infer import ScanTriage, TriageError, triage_paths

    engine = ScanTriage(model_dir, provider=provider, threads=threads)
    failed = 0
    table = Table(title=f"Scan triage ({engine.model_dir})",
                  caption=f"heatmaps in {heatmap_dir}" if heatmap_dir else None)
    for col, justify in (("scan", "left"), ("concealment", "right"), ("empty", "right"),
                         ("cargo class", "left"), ("mass kg", "right"), ("heatmap", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for item in triage_paths(scans, triage=engine, heatmap_dir=heatmap_dir):
        if isinstance(item, TriageError):
            failed += 1
        if json_out:
            print_json(item.to_json())
            continue
        if isinstance(item, TriageError):
            table.add_row(Path(item.path).name, "[red]error[/]", "", "", "", "")
            err_console.print(f"[bold red]{item.error_type}[/]: {item.error}", highlight=False)
            continue
        score = item.concealment_score
        style = "bold red" if item.alarm else ("yellow" if score >= 0.1 else "green")
        table.add_row(
            Path(item.path).name if item.path else "",
            f"[{style}]{score:.3f}{' ALARM' if item.alarm else ''}[/]",
            f"{item.empty_probability:.2f}",
            item.cargo_class,
            "-" if item.estimated_mass_kg is None else f"{item.estimated_mass_kg:,.0f}",
            Path(item.heatmap_path).name if item.heatmap_path else "",
        )
    if not json_out:
        console.print(table)
        thresholds = sorted({f"{engine.alarm_threshold(k)[0]:.3f} ({k})" for k in ("display8", "raw16")})
        source = "site's" if engine.config.get("site_adaptation") else "model card's"
        console.print(f"ALARM: score above the {source} threshold at 1 % false alarms: "
                      + ", ".join(thresholds))
        if failed:
            err_console.print(f"{failed} of {len(scans)} scan(s) could not be triaged.")
    if failed:
        raise SystemExit(1)


@train.command("scans")
@click.option(
    "--data", "data_dir", required=True, type=click.Path(exists=True, file_okay=False),
    help="Directory of generated scans (<id>.png + <id>.json + <id>_mask.png).",
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Model directory to write (model.onnx, config.json).")
@click.option("--epochs", default=24, show_default=True, type=click.IntRange(min=1),
              help="Training epochs.")
@click.option("--seed", default=1, show_default=True, help="Random seed (weights, augmentation, split).")
@click.option("--model", "model_name", default="triage_mnv3s_075", show_default=True,
              help="Architecture name from the scan model registry.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0.01, 0.5),
              help="Share of the scans held out to choose the epoch and calibrate the score.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary.")
def train_scans_cmd(
    data_dir: str, out_dir: str, epochs: int, seed: int, model_name: str, val_fraction: float,
    json_out: bool,
) -> None:
    """Train the scan triage CNN on a directory of generated scans and export it to ONNX.

    \b
    riskengine generate scans --out scans/ --count 3000
    riskengine train scans --data scans/ --out models/scanvision
    """
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ModuleNotFoundError as exc:
        raise _PlainUserError(
            f"training the scan model needs PyTorch ({exc.name} is not installed); "
            f"install the training extra: {TRAIN_EXTRA_HINT}",
            "MissingDependency",
        ) from exc
    from scanvision.train import TrainConfig, train_from_dir

    cfg = TrainConfig(model_name=model_name, epochs=epochs, seed=seed, val_fraction=val_fraction)
    summary = train_from_dir(Path(data_dir), Path(out_dir), cfg)
    if json_out:
        print_json(summary)
        return
    console.print(f"[green]Wrote[/] {out_dir}: model.onnx + config.json")
    for key in ("n_train", "n_val", "best_epoch", "val_auc", "val_empty_accuracy",
                "val_class_accuracy"):
        if key in summary:
            console.print(f"  {key}: {summary[key]}")
