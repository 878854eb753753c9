"""Site adaptation (`riskengine scanner adapt`) on one port's real cleared scans.

Runs the adaptation on a directory of a site's scans (default: the 119 real scans of
``../shared/data/xray_site_dev``, which are never copied into the project), then writes what
it measured on the held-out share: the model it started from against the adapted model (AUC,
Pd at 1 % / 5 % false alarms by threat mass and by empty/loaded, heatmap pointing, empty AUC),
the site thresholds, wall time and peak memory.

    python benchmarks/site_adaptation.py                       # defaults of the CLI
    python benchmarks/site_adaptation.py --epochs 60 --out benchmarks/results/site_adaptation.json

The adapted model directory is written to a temporary folder (``--keep DIR`` to keep it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scanvision.adapt import AdaptConfig, adapt_to_site, load_site_scans  # noqa: E402
from scanvision.bench import machine_info  # noqa: E402

SITE = ROOT.parent / "shared" / "data" / "xray_site_dev"


def summarise(rec: dict) -> dict:
    """The figures of a site record a reader compares (base vs adapted)."""
    out = {}
    for name in ("base", "adapted"):
        r = rec["holdout"][name]
        out[name] = {
            "auc": r["auc"],
            "auc_loaded": r["by_state"].get("loaded", {}).get("auc"),
            "auc_empty": r["by_state"].get("empty", {}).get("auc"),
            "stacks_ge_10kg": r["brick_stacks_ge_10kg"],
            "stacks_ge_10kg_loaded": r["by_state"].get("loaded", {}).get("stacks_ge_10kg"),
            "stacks_ge_10kg_empty": r["by_state"].get("empty", {}).get("stacks_ge_10kg"),
            "pd_by_mass": r["by_mass"],
            "pointing_accuracy": r["pointing_accuracy"],
            "empty_auc": r.get("empty_auc"),
        }
    return out


def base_only(args: argparse.Namespace) -> int:
    """How models transfer before any adaptation: every site scan is a test scan."""
    from scanvision.adapt import evaluate_views, holdout_views
    from scanvision.infer import default_model_dir, load_model_config

    paths = sorted(p for p in Path(args.scans).rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
    scans = load_site_scans(paths, labels_csv=args.labels or None)
    views = holdout_views(scans, args.seed, 2)
    models = args.base_only or [str(default_model_dir())]
    result: dict = {"benchmark": "site_base_models", "n_scans": len(scans),
                    "views": {"clean": sum(not v["threat"] for v in views),
                              "threat": sum(v["threat"] for v in views)},
                    "seed": args.seed, "models": {}, "machine": machine_info()}
    for m in models:
        rep = evaluate_views(m, views, scans[0].kind)
        cfg = load_model_config(m)
        result["models"][m] = {"onnx_sha256": cfg.get("onnx_sha256"), "auc": rep["auc"],
                               "by_state": rep["by_state"], "by_mass": rep["by_mass"],
                               "brick_stacks_ge_10kg": rep["brick_stacks_ge_10kg"],
                               "pointing_accuracy": rep["pointing_accuracy"],
                               "empty_auc": rep.get("empty_auc")}
        st = rep["by_state"]
        print(f"{m}: AUC {rep['auc']:.3f}  loaded {st.get('loaded', {}).get('auc', float('nan')):.3f}  "
              f"empty {st.get('empty', {}).get('auc', float('nan')):.3f}  stacks>=10kg "
              f"{rep['brick_stacks_ge_10kg']['auc']:.3f}  pointing {rep['pointing_accuracy']:.1%}  "
              f"empty AUC {rep.get('empty_auc', float('nan')):.3f}")
    out = Path(args.out or ROOT / "benchmarks" / "results" / "site_base_models.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", default=str(SITE / "scans"), help="directory of the site's scans")
    ap.add_argument("--labels", default=str(SITE / "labels.csv"), help="file,state CSV (or '')")
    ap.add_argument("--epochs", type=int, default=AdaptConfig.epochs)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout", type=float, default=AdaptConfig.holdout)
    ap.add_argument("--base", default=None, help="model to adapt (default: the shipped one)")
    ap.add_argument("--keep", default=None, help="keep the adapted model in this new directory")
    ap.add_argument("--out", default=None,
                    help="results JSON (default: benchmarks/results/site_adaptation.json, or "
                         "site_base_models.json with --base-only)")
    ap.add_argument("--base-only", nargs="*", default=None, metavar="MODEL_DIR",
                    help="no adaptation: score these model directories (default: the shipped one) "
                         "on every site scan, clean and with fresh threats")
    args = ap.parse_args(argv)
    if args.base_only is not None:
        return base_only(args)
    args.out = args.out or str(ROOT / "benchmarks" / "results" / "site_adaptation.json")
    scans_dir = Path(args.scans)
    if not scans_dir.is_dir():
        print(f"FileNotFoundError: {scans_dir} not found; pass --scans DIR with a site's cleared scans",
              file=sys.stderr)
        return 1
    paths = sorted(p for p in scans_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
    t0 = time.perf_counter()
    scans = load_site_scans(paths, labels_csv=args.labels or None)
    cfg = AdaptConfig(epochs=args.epochs, seed=args.seed, holdout=args.holdout)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.keep) if args.keep else Path(tmp) / "site_model"
        rec = adapt_to_site(scans, out_dir, cfg, base_dir=args.base, site=scans_dir.parent.name,
                            progress=lambda s, d, n: print(f"{s}: {d}/{n}", file=sys.stderr, flush=True))
    result = {
        "benchmark": "site_adaptation",
        "command": "python benchmarks/site_adaptation.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "site_scans": str(scans_dir.name), "n_scans": rec["n_scans"], "n_fit": rec["n_fit"],
        "n_holdout": rec["n_holdout"], "config": {"epochs": cfg.epochs, "seed": cfg.seed,
                                                  "holdout": cfg.holdout, "threads": cfg.threads},
        "thresholds": rec["thresholds"], "figures": summarise(rec),
        "holdout_views": {"clean": rec["holdout"]["adapted"]["n_clean"],
                          "threat": rec["holdout"]["adapted"]["n_threat"]},
        "wall_seconds": rec["wall_seconds"], "total_seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": rec["peak_rss_mb"], "machine": machine_info(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    f = result["figures"]
    for name in ("base", "adapted"):
        s = f[name]["stacks_ge_10kg"]
        print(f"{name:8s} AUC {f[name]['auc']:.3f}  loaded {f[name]['auc_loaded']:.3f}  "
              f"empty {f[name]['auc_empty']:.3f}  stacks>=10kg AUC {s['auc']:.3f} "
              f"Pd@5% {s['pd_at_0.05']:.1%}  pointing {f[name]['pointing_accuracy']:.1%}")
    print(f"wall {rec['wall_seconds'] / 60:.1f} min, peak {rec['peak_rss_mb']:.0f} MB -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
