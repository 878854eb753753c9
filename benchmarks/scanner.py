"""Benchmark: scan triage on this machine, a sweep over batch and threads, and inference variants.

Writes into ``benchmarks/results/``:

* ``scanner_cpu_t<threads>_b<batch>_40ft.json``: one ``riskengine bench scanner`` result per
  configuration of the sweep (end to end serial and pipelined, model only, eager PyTorch,
  latencies, roofline, machine);
* ``scanner_summary.json``: the sweep in one table, the best configuration and the targets;
* ``inference_variants.json``: graph optimisation levels, 1 vs 2 threads and static INT8, each
  with speed and accuracy (AUC of the concealment score, cargo-class accuracy) on generated
  scans from a seed the model never saw;
* ``scanner_throughput.png`` (throughput against batch and threads) and
  ``scanner_latency.png`` (latency histogram of the best configuration);

and refreshes the tables between the ``<!-- scanner:... -->`` / ``<!-- variants:... -->``
markers of ``benchmarks/README.md``.

    python benchmarks/scanner.py                      # shipped model, full sweep (~15 min on 2 cores)
    python benchmarks/scanner.py --model DIR --scans 40 --batches 1 4 --skip-variants
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"

TARGET_SCANS_PER_S = 20.0
TARGET_FRACTION_OF_MODEL_ONLY = 0.8
TARGET_VS_TORCH = 5.0


def sweep(model: Path | None, threads: list[int], batches: list[int], scans: int, size: str,
          warmup: int, torch_seconds: float) -> list[dict[str, Any]]:
    from scanvision.bench import default_results_name, run_scanner_benchmark

    results = []
    for t in threads:
        for b in batches:
            t0 = time.perf_counter()
            r = run_scanner_benchmark(model, threads=t, batch=b, scans=scans, size=size,
                                      warmup=warmup, torch_max_seconds=torch_seconds)
            r["command"] = (f"riskengine bench scanner --threads {t} --batch {b} --scans {scans} "
                            f"--size {size} --warmup {warmup}" + (f" --model {model}" if model else ""))
            path = RESULTS / default_results_name("cpu", t, b, size)
            path.write_text(json.dumps(r, indent=1) + "\n", encoding="utf-8")
            print(f"threads {t} batch {b}: end to end {r['scans_per_s']:.1f} scans/s "
                  f"({r['best_mode']}), model only {r['model_only_scans_per_s']:.1f}, torch "
                  f"{r['torch_eager_scans_per_s']}, p99 {r['latency_ms_p99']:.0f} ms "
                  f"[{time.perf_counter() - t0:.0f} s] -> {path.name}", flush=True)
            results.append(r)
    return results


def tiff_run(model: Path | None, best: dict[str, Any], scans: int, warmup: int) -> dict[str, Any]:
    """The best configuration again on uncompressed 16-bit TIFF files: what PNG decoding costs."""
    from scanvision.bench import default_results_name, run_scanner_benchmark

    t, b, size = best["threads"], best["batch"], best["size"]
    r = run_scanner_benchmark(model, threads=t, batch=b, scans=scans, size=size, warmup=warmup,
                              file_format="tiff", torch_eager=False)
    r["command"] = (f"riskengine bench scanner --format tiff --threads {t} --batch {b} --scans {scans} "
                    f"--size {size} --warmup {warmup}" + (f" --model {model}" if model else ""))
    path = RESULTS / default_results_name("cpu", t, b, size, "tiff")
    path.write_text(json.dumps(r, indent=1) + "\n", encoding="utf-8")
    print(f"TIFF, threads {t} batch {b}: end to end {r['scans_per_s']:.1f} scans/s -> {path.name}")
    return r


def summarise(results: list[dict[str, Any]], tiff: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = [{
        "threads": r["threads"], "batch": r["batch"],
        "serial_scans_per_s": r["serial"]["scans_per_s"],
        "pipelined_scans_per_s": r["pipelined"]["scans_per_s"],
        "model_only_scans_per_s": r["model_only_scans_per_s"],
        "torch_eager_scans_per_s": r["torch_eager_scans_per_s"],
        "latency_ms_p50": r["latency_ms_p50"], "latency_ms_p99": r["latency_ms_p99"],
        "stage_ms_per_scan": r["serial"]["stage_ms_per_scan"],
    } for r in results]
    best = max(results, key=lambda r: r["scans_per_s"])
    best_model = best["model_only_scans_per_s"]  # the same configuration's ceiling
    ratio = best["onnxruntime_vs_torch_eager"]
    stages = best["serial"]["stage_ms_per_scan"]
    cpu_ms = stages["decode"] + stages["preprocess"]
    cores = best["machine"]["logical_cores"] or 1
    return {
        "benchmark": "scanner_summary",
        "model": best["model"],
        "size": best["size"], "width": best["width"], "height": best["height"],
        "network_input_width": best["network_input"][3],
        "sweep": rows,
        "best": {"threads": best["threads"], "batch": best["batch"], "mode": best["best_mode"],
                 "scans_per_s": best["scans_per_s"], "model_only_scans_per_s": best["model_only_scans_per_s"],
                 "latency_ms_p50": best["latency_ms_p50"], "latency_ms_p99": best["latency_ms_p99"],
                 "scanners_served": best["scanners_served"]},
        "limits": {
            "decode_plus_preprocess_ms_per_scan": round(cpu_ms, 2),
            "decode_bound_scans_per_s": round(1000.0 * cores / cpu_ms, 1) if cpu_ms else None,
            "note": ("decode (16-bit PNG inflate) and preprocessing run on the CPU cores that "
                     "inference needs; with every core busy the end-to-end rate cannot exceed "
                     "cores x 1000 / (decode + preprocess ms) even with zero-cost inference"),
        },
        "roofline": best["roofline"],
        "uncompressed_tiff": None if tiff is None else {
            "threads": tiff["threads"], "batch": tiff["batch"], "scans_per_s": tiff["scans_per_s"],
            "mode": tiff["best_mode"], "stage_ms_per_scan": tiff["serial"]["stage_ms_per_scan"],
            "fraction_of_model_only": tiff["end_to_end_fraction_of_model_only"],
        },
        "targets": {
            "end_to_end_scans_per_s": {"target": TARGET_SCANS_PER_S, "measured": best["scans_per_s"],
                                       "met": best["scans_per_s"] >= TARGET_SCANS_PER_S},
            "end_to_end_fraction_of_model_only": {
                "target": TARGET_FRACTION_OF_MODEL_ONLY,
                "measured": round(best["scans_per_s"] / best_model, 3),
                "met": best["scans_per_s"] / best_model >= TARGET_FRACTION_OF_MODEL_ONLY},
            "onnxruntime_vs_torch_eager": {"target": TARGET_VS_TORCH, "measured": ratio,
                                           "met": bool(ratio and ratio >= TARGET_VS_TORCH)},
        },
        "machine": best["machine"],
        "versions": best["versions"],
    }


def plot(results: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    for t in sorted({r["threads"] for r in results}):
        rs = sorted((r for r in results if r["threads"] == t), key=lambda r: r["batch"])
        b = [r["batch"] for r in rs]
        ax.plot(b, [r["model_only_scans_per_s"] for r in rs], "o--", label=f"model only, {t} thread(s)")
        ax.plot(b, [r["pipelined"]["scans_per_s"] for r in rs], "s-", label=f"end to end pipelined, {t} thread(s)")
        ax.plot(b, [r["serial"]["scans_per_s"] for r in rs], "^:", label=f"end to end serial, {t} thread(s)")
        if rs[0]["torch_eager_scans_per_s"]:
            ax.plot(b, [r["torch_eager_scans_per_s"] for r in rs], "x-.", label=f"eager PyTorch, {t} thread(s)")
    ax.axhline(TARGET_SCANS_PER_S, color="grey", lw=0.8)
    ax.text(ax.get_xlim()[0], TARGET_SCANS_PER_S, " target end to end", va="bottom", fontsize=8, color="grey")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    batches = sorted({r["batch"] for r in results})
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.grid(True, which="both", axis="y", lw=0.4, alpha=0.5)
    ax.set_xlabel("batch (scans per inference call)")
    ax.set_ylabel("scans / s")
    m = summary["machine"]
    ax.set_title(f"{summary['size']} scans ({summary['width']}x{summary['height']} px), "
                 f"{m['cpu_model']}, {m['logical_cores']} cores", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    fig.savefig(RESULTS / "scanner_throughput.png", dpi=110)
    plt.close(fig)

    best = max(results, key=lambda r: r["scans_per_s"])
    import numpy as np

    serial, piped = best["serial"]["latencies_ms"], best["pipelined"]["latencies_ms"]
    bins = np.histogram_bin_edges(np.concatenate([serial, piped]), bins=40)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.hist(serial, bins=bins, alpha=0.7, label="serial")
    ax.hist(piped, bins=bins, alpha=0.6, label="pipelined (includes waiting in the queue)")
    for q, style in (("p50", "-"), ("p90", "--"), ("p99", ":")):
        v = best["serial"]["latency_ms"][q]
        ax.axvline(v, color="k", lw=0.9, ls=style, label=f"serial {q} = {v:.0f} ms")
    ax.set_xlabel(f"ms per iteration (batch of {best['batch']} scan(s), file to triage result)")
    ax.set_ylabel("iterations")
    ax.set_title(f"Latency of the best configuration: threads {best['threads']}, batch {best['batch']}",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "scanner_latency.png", dpi=110)
    plt.close(fig)


def replace_section(name: str, body: str) -> None:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in the README."""
    if not README.is_file():
        return
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        print(f"README has no {name} markers; not updated", file=sys.stderr)
        return
    README.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), text), encoding="utf-8")


def scanner_table(summary: dict[str, Any]) -> str:
    lines = ["| threads | batch | end to end serial | end to end pipelined | model only | eager PyTorch "
             "| p50 / p99 ms per batch | decode / preprocess / infer+post ms per scan |",
             "|---|---|---|---|---|---|---|---|"]
    for r in summary["sweep"]:
        st = r["stage_ms_per_scan"]
        torch = f"{r['torch_eager_scans_per_s']:.1f}" if r["torch_eager_scans_per_s"] else "–"
        lines.append(
            f"| {r['threads']} | {r['batch']} | {r['serial_scans_per_s']:.1f} | "
            f"{r['pipelined_scans_per_s']:.1f} | {r['model_only_scans_per_s']:.1f} | {torch} | "
            f"{r['latency_ms_p50']:.0f} / {r['latency_ms_p99']:.0f} | "
            f"{st['decode']:.1f} / {st['preprocess']:.1f} / {st['inference_and_postprocess']:.1f} |")
    t, b, rf = summary["targets"], summary["best"], summary["roofline"] or {}
    yes = {True: "met", False: "**not met**"}
    lines += [
        "",
        f"Scans/s of {summary['size']} scans ({summary['width']}x{summary['height']} px, network input "
        f"width {summary['network_input_width']}); best: threads {b['threads']}, batch {b['batch']}, "
        f"{b['mode']}, {b['scans_per_s']:.1f} scans/s, keeping up with "
        f"{b['scanners_served']['rail_scanners']:.0f} rail scanners, "
        f"{b['scanners_served']['drive_through_portals']:.0f} drive-through portals or "
        f"{b['scanners_served']['gantries']:.0f} gantries.",
        "",
        "| target | measured | |",
        "|---|---|---|",
        f"| ≥ {t['end_to_end_scans_per_s']['target']:.0f} scans/s end to end | "
        f"{t['end_to_end_scans_per_s']['measured']:.1f} | {yes[t['end_to_end_scans_per_s']['met']]} |",
        f"| end to end ≥ 80 % of model only | "
        f"{100 * t['end_to_end_fraction_of_model_only']['measured']:.0f} % | "
        f"{yes[t['end_to_end_fraction_of_model_only']['met']]} |",
        f"| ONNX Runtime ≥ 5x eager PyTorch | x{t['onnxruntime_vs_torch_eager']['measured']} | "
        f"{yes[t['onnxruntime_vs_torch_eager']['met']]} |",
        "",
        f"Roofline: {rf.get('gflops_per_scan')} GFLOP per scan; NumPy float32 matmul on "
        f"{rf.get('matmul_threads')} thread(s) runs at {rf.get('matmul_gflops_per_s')} GFLOP/s here, so a compute-bound network would reach "
        f"{rf.get('compute_bound_scans_per_s')} scans/s; the model-only rate uses "
        f"{100 * (rf.get('model_only_fraction_of_matmul_peak') or 0):.0f} % of that. Decode + "
        f"preprocess cost {summary['limits']['decode_plus_preprocess_ms_per_scan']:.1f} ms of CPU "
        f"per scan, which alone caps end to end at "
        f"{summary['limits']['decode_bound_scans_per_s']} scans/s on "
        f"{summary['machine']['logical_cores']} cores. Load average during the run: "
        f"{summary['machine']['load_average_before']}.",
        "",
    ]
    tf = summary.get("uncompressed_tiff")
    if tf:
        st = tf["stage_ms_per_scan"]
        lines += [
            f"Same configuration on **uncompressed 16-bit TIFF** files instead of PNG: "
            f"{tf['scans_per_s']:.1f} scans/s end to end ({tf['mode']}; decode {st['decode']:.1f} ms, "
            f"preprocess {st['preprocess']:.1f} ms per scan), {100 * tf['fraction_of_model_only']:.0f} % "
            f"of the model-only rate.",
            "",
        ]
    return "\n".join(lines)


def variants_table(rep: dict[str, Any]) -> str:
    lines = ["| variant | threads | scans/s median (best) | speed-up vs FP32 `all` | AUC | class accuracy "
             "| max score diff vs FP32 | class agreement | holds accuracy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for v in rep["variants"]:
        agree = v["vs_fp32"] or {}
        auc = "–" if v["auc"] is None else f"{v['auc']:.4f}"
        lines.append(
            f"| {v['name']} | {v['threads']} | {v['scans_per_s']:.1f} ({v['scans_per_s_best']:.1f}) | "
            f"x{v['speedup_vs_fp32_all']:.2f} | "
            f"{auc} | {v['class_accuracy']:.3f} | {agree.get('score_max_abs_diff', '–')} | "
            f"{agree.get('class_agreement', '–')} | {'yes' if v['holds_accuracy'] else '**no**'} |")
    ev, rec = rep["evaluation"], rep["recommended"]
    lines += [
        "",
        f"Accuracy on {ev['scans']} generated scans (seed {ev['seed']}, {ev['concealed']} with a "
        f"concealment; training seeds {ev['training_seeds_excluded']} excluded); speed on one "
        f"{rep['speed_input']['size']} scan, batch 1, median of {rep['speed_input']['iterations']} runs. "
        f"Rule: {rep['rule']}. Kept: **{rec['name']}** with {rec['threads']} thread(s) "
        f"({rec['scans_per_s']:.1f} scans/s)." if rec else "No variant holds accuracy.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None,
                    help="scan model directory (default: models/scanvision)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--scans", type=int, default=120, help="scans timed per pass and configuration")
    ap.add_argument("--size", default="40ft")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--torch-seconds", type=float, default=8.0,
                    help="time budget of the eager PyTorch measurement per configuration")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--from-results", action="store_true",
                    help="rebuild the summary, plots and README tables from the JSON files in results/")
    ap.add_argument("--skip-tiff", action="store_true",
                    help="skip the rerun of the best configuration on uncompressed TIFF files")
    ap.add_argument("--skip-variants", action="store_true")
    ap.add_argument("--eval-count", type=int, default=200, help="scans for the accuracy of each variant")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "riskengine-scanbench",
                    help="cache of the generated evaluation / calibration scans")
    ap.add_argument("--int8-out", type=Path, default=None,
                    help="also write the INT8 model directory here")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)

    if args.from_results:
        results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob(f"scanner_cpu_t*_b*_{args.size}.json"))]
        tiff_files = sorted(RESULTS.glob(f"scanner_cpu_t*_b*_{args.size}_tiff.json"))
        tiff = json.loads(tiff_files[-1].read_text()) if tiff_files else None
        summary = summarise(results, tiff)
        (RESULTS / "scanner_summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        plot(results, summary)
        replace_section("scanner", scanner_table(summary))
        variants = RESULTS / "inference_variants.json"
        if variants.is_file():
            replace_section("variants", variants_table(json.loads(variants.read_text())))
        return

    if not args.skip_sweep:
        results = sweep(args.model, args.threads, args.batches, args.scans, args.size, args.warmup,
                        args.torch_seconds)
        best = max(results, key=lambda r: r["scans_per_s"])
        tiff = None if args.skip_tiff else tiff_run(args.model, best, args.scans, args.warmup)
        summary = summarise(results, tiff)
        (RESULTS / "scanner_summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        plot(results, summary)
        replace_section("scanner", scanner_table(summary))
        print(json.dumps(summary["targets"], indent=1))

    if not args.skip_variants:
        from scanvision.quantize import run_inference_variants

        rep = run_inference_variants(args.model, eval_count=args.eval_count, cache_dir=args.cache,
                                     int8_dir=args.int8_out, progress=lambda m: print(m, flush=True))
        rep["command"] = "python benchmarks/scanner.py" + (f" --model {args.model}" if args.model else "")
        (RESULTS / "inference_variants.json").write_text(json.dumps(rep, indent=1) + "\n", encoding="utf-8")
        replace_section("variants", variants_table(rep))
        for v in rep["variants"]:
            print(f"{v['name']:16s} t{v['threads']} {v['scans_per_s']:8.1f} scans/s  AUC {v['auc']}  "
                  f"class acc {v['class_accuracy']}  holds {v['holds_accuracy']}")


if __name__ == "__main__":
    main()
