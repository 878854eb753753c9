"""`riskengine bench scanner` and `riskengine bench manifests`: measure on this machine.

    riskengine bench scanner --batch 4 --scans 200 --results-file auto
    riskengine bench scanner --provider cuda --batch 8 --json
    riskengine bench manifests --rows 200000 --json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskengine.cli import main
from riskengine.cli._common import ExitOnError, UserError, console, err_console, print_json

DEFAULT_RESULTS_DIR = Path("benchmarks") / "results"


@main.group(cls=ExitOnError)
def bench() -> None:
    """Benchmark scan triage and manifest scoring on this machine."""


def _spinner(disabled: bool) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=err_console, transient=True, disable=disabled)


def _write_results(result: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    return path


@bench.command("scanner")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu",
              show_default=True, help="ONNX Runtime execution provider (cuda/tensorrt need onnxruntime-gpu).")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="ONNX Runtime intra-op threads (default: one per core).")
@click.option("--batch", type=click.IntRange(1), default=4, show_default=True,
              help="Scans per inference call; one timed iteration is one batch.")
@click.option("--scans", type=click.IntRange(1), default=200, show_default=True,
              help="Scans timed in each pass (rounded up to whole batches).")
@click.option("--size", default="40ft", show_default=True,
              help="Scan size: 20ft, 40ft (2538x578 px at 5 mm) or WIDTHxHEIGHT in pixels.")
@click.option("--warmup", type=click.IntRange(0), default=3, show_default=True,
              help="Untimed iterations before each pass.")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Decode/preprocess threads of the pipelined pass (default: one per core).")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated scans.")
@click.option("--format", "file_format", type=click.Choice(["png", "tiff"]), default="png",
              show_default=True,
              help="Scan files: 16-bit PNG (zlib, as scanners export) or uncompressed 16-bit TIFF.")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
              help="Scan model directory (default: models/scanvision or $RISKENGINE_SCAN_MODEL).")
@click.option("--no-torch", is_flag=True, help="Skip the eager PyTorch comparison.")
@click.option("--results-file", default=None,
              help="Write the JSON result to this file; a directory or 'auto' (= benchmarks/results/) "
                   "gets a name after the configuration: scanner_<provider>_t<threads>_b<batch>_<size>.json.")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object instead of tables.")
def scanner_command(provider: str, threads: int | None, batch: int, scans: int, size: str,
                    warmup: int, workers: int | None, seed: int, file_format: str,
                    model_dir: str | None,
                    no_torch: bool, results_file: str | None, json_out: bool) -> None:
    """End-to-end scan triage throughput: PNG decode + preprocess + CNN + postprocess.

    Generated full-resolution 16-bit scans are written to a temporary folder first, so
    decoding is measured. Reports serial and pipelined end-to-end rates, per-iteration latency
    (p50/p90/p99), the model-only ONNX Runtime rate, eager PyTorch (when installed), the
    roofline and how many scanners this machine keeps up with.
    """
    from scanvision.bench import default_results_name, parse_size, run_scanner_benchmark

    parse_size(size)
    with _spinner(json_out) as bar:
        task = bar.add_task("starting", total=None)
        result = run_scanner_benchmark(
            model_dir, provider=provider, threads=threads, batch=batch, scans=scans, size=size,
            warmup=warmup, seed=seed, file_format=file_format, workers=workers,
            torch_eager=not no_torch,
            progress=lambda msg: bar.update(task, description=msg),
        )
    written = None
    if results_file:
        name = default_results_name(provider, threads, batch, size, file_format)
        if results_file == "auto":
            path = DEFAULT_RESULTS_DIR / name
        elif Path(results_file).is_dir() or results_file.endswith(("/", "\\")):
            path = Path(results_file) / name
        else:
            path = Path(results_file)
        written = _write_results(result, path)
    if json_out:
        print_json(result)
        return
    _print_scanner(result)
    if written:
        console.print(f"Results: {written}")


def _print_scanner(r: dict[str, Any]) -> None:
    t = Table(title=f"Scan triage on {r['machine']['cpu_model']} ({r['machine']['logical_cores']} cores)")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("provider / threads / batch", f"{r['provider']} / {r['threads'] or 'auto'} / {r['batch']}")
    t.add_row("scan size (px)", f"{r['width']} x {r['height']} → {r['network_input'][3]} x {r['network_input'][2]}")
    t.add_row("end to end, serial (scans/s)", f"{r['serial']['scans_per_s']:.1f}")
    t.add_row("end to end, pipelined (scans/s)", f"{r['pipelined']['scans_per_s']:.1f}")
    t.add_row("model only (scans/s)", f"{r['model_only_scans_per_s']:.1f}")
    t.add_row("end to end / model only", f"{100 * r['end_to_end_fraction_of_model_only']:.0f} %")
    if r["torch_eager_scans_per_s"]:
        t.add_row("eager PyTorch (scans/s)", f"{r['torch_eager_scans_per_s']:.1f} "
                  f"(ONNX Runtime x{r['onnxruntime_vs_torch_eager']:.1f})")
    t.add_row("latency p50 / p90 / p99 (ms/batch)",
              f"{r['latency_ms_p50']:.1f} / {r['latency_ms_p90']:.1f} / {r['latency_ms_p99']:.1f}")
    st = r["serial"]["stage_ms_per_scan"]
    t.add_row("decode / preprocess / infer+post (ms/scan)",
              f"{st['decode']:.1f} / {st['preprocess']:.1f} / {st['inference_and_postprocess']:.1f}")
    if r.get("roofline"):
        rf = r["roofline"]
        t.add_row("GFLOP per scan / matmul GFLOP/s", f"{rf['gflops_per_scan']:.3f} / {rf['matmul_gflops_per_s']:.0f}")
    s = r["scanners_served"]
    t.add_row("keeps up with", f"{s['rail_scanners']:.0f} rail, {s['drive_through_portals']:.0f} portals, "
              f"{s['gantries']:.0f} gantries")
    console.print(t)


@bench.command("manifests")
@click.option("--rows", type=click.IntRange(1), default=100_000, show_default=True,
              help="Generated manifests to score (dated after the model's training window).")
@click.option("--model", "model_dir", type=click.Path(file_okay=False), default=None,
              help="Manifest model directory written by `riskengine train` (default: the shipped "
                   "models/manifest of the repository riskengine runs from, wherever you run it).")
@click.option("--repeat", type=click.IntRange(1), default=3, show_default=True,
              help="Timed runs after one warm-up; stages are their medians.")
@click.option("--seed", default=12, show_default=True, help="Seed of the generated manifests.")
@click.option("--results-file", type=click.Path(dir_okay=False), default=None,
              help="Also write the JSON result to this file.")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object instead of a table.")
def manifests_command(rows: int, model_dir: str | None, repeat: int, seed: int,
                      results_file: str | None, json_out: bool) -> None:
    """Manifest scoring rows/s against LightGBM's raw predict, stage by stage, with peak memory.

    End to end is read, validate, features, predict, calibrate and reasons for the top 1 % of
    risk; raw predict is Booster.predict alone on the same feature matrix.
    """
    from riskengine.rescore import measure_scoring

    if model_dir is None:
        from riskengine.demo import shipped_model_dir

        try:
            model_dir = str(shipped_model_dir())
        except FileNotFoundError as exc:
            raise UserError(str(exc), "FileNotFoundError") from exc
    if not Path(model_dir).is_dir():
        raise UserError(
            f"model directory not found: {model_dir}; train one with `riskengine train` or pass --model DIR",
            "FileNotFoundError",
        )
    with _spinner(json_out) as bar:
        task = bar.add_task("starting", total=None)
        result = measure_scoring(model_dir, rows=rows, seed=seed, repeat=repeat,
                                 progress=lambda msg: bar.update(task, description=msg))
    if results_file:
        _write_results(result, Path(results_file))
    if json_out:
        print_json(result)
        return
    t = Table(title=f"Manifest scoring: {result['rows']:,} rows (median of {repeat})")
    t.add_column("stage")
    t.add_column("seconds", justify="right")
    t.add_column("rows/s", justify="right")
    for k, v in result["stages"].items():
        t.add_row(k, f"{v:.3f}", f"{result['rows'] / v:,.0f}" if v > 0 else "-")
    t.add_row("end to end", f"{result['end_to_end_seconds']:.3f}", f"{result['rows_per_s']:,.0f}")
    t.add_row("raw Booster.predict", "", f"{result['raw_predict_rows_per_s']:,.0f}")
    console.print(t)
    console.print(f"End to end is {100 * result['fraction_of_raw_predict']:.1f} % of raw predict; "
                  f"peak RSS {result['peak_rss_mb']:,.0f} MB")
