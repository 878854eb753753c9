"""Benchmark: manifest scoring end to end against LightGBM's raw predict on the same features.

Stages, timed separately on one batch of generated manifests (arrivals after the model's
training window, so profiles come from the saved history):

    read (Parquet) → validate → derived fields → indicators → features → predict → calibrate → reasons

``end_to_end`` is read → … → calibrate plus reasons for the rows at or above the 99th
percentile of risk (what the targeting centre reads); explaining every row is reported apart,
since TreeSHAP costs far more per row than a prediction. ``raw_predict`` is ``Booster.predict``
on the already-built feature matrix. One warm-up run, then ``--repeat`` timed runs; the median,
min and max of each stage are written with machine information and peak memory.

    python benchmarks/manifest_scoring.py --model models/manifest --rows 100000 \
        --out benchmarks/results/manifest_scoring.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskengine.model import RiskModel

GROUND_TRUTH = ["is_illicit", "modus_operandi", "concealment_location", "amount_kg", "inspected",
                "selection", "outcome_at"]
EXPLAIN_SAMPLE = 2000


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import lightgbm

    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "logical_cpus": os.cpu_count(), "load_average_at_start": list(os.getloadavg()),
            "lightgbm": lightgbm.__version__, "pandas": pd.__version__, "numpy": np.__version__,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def make_batch(model: RiskModel, rows: int, seed: int, folder: Path) -> Path:
    from riskengine.synth import generate_manifests

    end = model.training_["end"]
    start = (pd.Timestamp(end) + pd.Timedelta(days=11)).date().isoformat()  # past the filing lead
    df = generate_manifests(rows, seed=seed, start=start, days=max(1, rows // 1400))
    path = folder / "batch.parquet"
    df.drop(columns=[c for c in GROUND_TRUTH if c in df.columns]).to_parquet(path, index=False)
    return path


def one_run(model: RiskModel, path: Path, *, explain_all: bool) -> dict[str, float]:
    from riskengine.commodities import cargo_family
    from riskengine.derived import add_derived_fields
    from riskengine.indicators import evaluate
    from riskengine.mapping import NATIVE_DERIVED_FIELDS
    from riskengine.schema import read_manifests, validate

    t: dict[str, float] = {}
    c = time.perf_counter
    s = c()
    raw = read_manifests(path)
    t["read"] = c() - s
    n = len(raw)

    # Breakdown of the preparation (the pipeline below runs it once more as one call).
    s = c()
    res = validate(raw)
    t["validate"] = c() - s
    s = c()
    enriched = add_derived_fields(res.valid, fields=NATIVE_DERIVED_FIELDS)
    enriched["cargo_family"] = cargo_family(enriched["hs_code"], enriched["goods_description"]).to_numpy()
    t["derived"] = c() - s

    s = c()
    rows, rejects = model.prepare(raw)
    t["prepare"] = c() - s
    packs = model.features_._packs
    s = c()
    evaluate(packs, rows)
    t["indicators"] = c() - s
    s = c()
    X = model.transform(rows)
    t["features"] = c() - s
    arr = model._matrix(X)
    s = c()
    margin = model.booster_.predict(arr, raw_score=True, num_threads=model.n_jobs)
    t["predict"] = c() - s
    s = c()
    p = model.calibrator_(margin)
    t["calibrate"] = c() - s
    top = p >= np.quantile(p, 0.99)
    s = c()
    model.reasons(X[top], k=3)
    t["reasons_top1pct"] = c() - s
    t["rows"] = n
    t["rows_top1pct"] = int(top.sum())
    if explain_all:
        sample = X.iloc[:EXPLAIN_SAMPLE]
        s = c()
        model.reasons(sample, k=3)
        t["reasons_per_row_sample"] = (c() - s) / len(sample)
    t["end_to_end"] = t["read"] + t["prepare"] + t["features"] + t["predict"] + t["calibrate"] + t["reasons_top1pct"]
    t["end_to_end_no_reasons"] = t["end_to_end"] - t["reasons_top1pct"]
    # Raw predict again on the same matrix (warm), the reference the pipeline is compared with.
    s = c()
    model.booster_.predict(arr, raw_score=True, num_threads=model.n_jobs)
    t["raw_predict"] = c() - s
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=Path("models/manifest"), help="model directory")
    ap.add_argument("--rows", type=int, default=100_000, help="rows in the scored batch")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs after one warm-up")
    ap.add_argument("--seed", type=int, default=12, help="generator seed of the batch")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/manifest_scoring.json"))
    args = ap.parse_args()

    info = machine()
    model = RiskModel.load(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        path = make_batch(model, args.rows, args.seed, Path(tmp))
        one_run(model, path, explain_all=False)  # warm-up
        runs = [one_run(model, path, explain_all=(i == 0)) for i in range(args.repeat)]
    n = runs[0]["rows"]
    keys = [k for k in runs[0] if k not in ("rows", "rows_top1pct", "reasons_per_row_sample")]
    stages = {k: {"median_s": statistics.median(r[k] for r in runs), "min_s": min(r[k] for r in runs),
                  "max_s": max(r[k] for r in runs)} for k in keys}
    med = {k: v["median_s"] for k, v in stages.items()}
    result = {
        "benchmark": "manifest_scoring",
        "model": str(args.model),
        "model_trees": int(model.booster_.num_trees()),
        "features": len(model.features_.feature_names_),
        "rows": n,
        "repeat": args.repeat,
        "rows_explained_top1pct": runs[0]["rows_top1pct"],
        "stages": stages,
        "rows_per_second": {
            "end_to_end": n / med["end_to_end"],
            "end_to_end_no_reasons": n / med["end_to_end_no_reasons"],
            "raw_predict": n / med["raw_predict"],
            "validate": n / med["validate"],
            "features": n / med["features"],
            "explain_every_row": 1.0 / runs[0]["reasons_per_row_sample"],
        },
        "end_to_end_vs_raw_predict": med["raw_predict"] / med["end_to_end"],
        "targets": {"end_to_end_rows_per_second": 100_000, "end_to_end_vs_raw_predict": 0.5},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "machine": info,
        "load_average_at_end": list(os.getloadavg()),
        "command": f"python benchmarks/manifest_scoring.py --model {args.model} --rows {args.rows} "
                   f"--repeat {args.repeat} --seed {args.seed} --out {args.out}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    rps = result["rows_per_second"]
    print(f"{n:,} rows: end to end {rps['end_to_end']:,.0f} rows/s "  # noqa: T201 - a script's report
          f"({result['end_to_end_vs_raw_predict']:.1%} of raw predict at {rps['raw_predict']:,.0f} rows/s); "
          f"without reasons {rps['end_to_end_no_reasons']:,.0f} rows/s; explaining every row "
          f"{rps['explain_every_row']:,.0f} rows/s; peak RSS {result['peak_rss_mb']:,.0f} MB")
    for k, v in stages.items():
        print(f"  {k:24s} {v['median_s']*1000:10.1f} ms")  # noqa: T201
    print(f"written to {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()
