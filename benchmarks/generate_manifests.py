"""Benchmark: synthetic manifest generation streamed to Parquet.

Each repetition runs in a fresh Python process (so the peak RSS is that run's own) and streams
``--rows`` manifests to a Parquet file in a temporary folder, timing the whole call (world
construction included). A small warm-up run fills the OS file cache first. Reported: wall-clock
rows/s (median, min, max), CPU seconds (user + system, both threads), peak RSS and its growth
over the process after imports, and the machine's load average, because a shared machine slows
every number down.

    python benchmarks/generate_manifests.py                      # 1 M rows, 3 repetitions
    python benchmarks/generate_manifests.py --rows 200000 --repeats 1 --out /tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RUN = """
import json, resource, sys, time
from riskengine.synth import write_manifests
def rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
path, rows, chunk_rows, days = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base, c0, t0 = rss_mb(), cpu_s(), time.perf_counter()
s = write_manifests(path, rows, chunk_rows=chunk_rows, days=days, seed=0)
wall = time.perf_counter() - t0
print(json.dumps({"rows": s["rows"], "seconds": wall, "cpu_seconds": cpu_s() - c0,
                  "rss_base_mb": base, "rss_peak_mb": rss_mb(), "bytes": s["bytes"],
                  "illicit": s["illicit"]}))
"""


def _run_once(path: Path, rows: int, chunk_rows: int, days: int) -> dict:
    res = subprocess.run(
        [sys.executable, "-c", RUN, str(path), str(rows), str(chunk_rows), str(days)],
        capture_output=True, text=True, check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"benchmark run failed:\n{res.stderr}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["rows_per_s"] = out["rows"] / out["seconds"]
    out["rss_growth_mb"] = out["rss_peak_mb"] - out["rss_base_mb"]
    path.unlink(missing_ok=True)
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import numpy
    import pandas
    import psutil
    import pyarrow

    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs")
    parser.add_argument("--chunk-rows", type=int, default=250_000, help="rows per chunk / row group")
    parser.add_argument("--days", type=int, default=90, help="arrival days the rows spread over")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "generate_manifests.json",
                        help="results file")
    args = parser.parse_args(argv)

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "manifests.parquet"
        _run_once(target, 50_000, args.chunk_rows, args.days)  # warm-up
        runs = [_run_once(target, args.rows, args.chunk_rows, args.days) for _ in range(args.repeats)]
    load_after = os.getloadavg()

    rates = [r["rows_per_s"] for r in runs]
    result = {
        "benchmark": "generate_manifests",
        "config": {"rows": args.rows, "repeats": args.repeats, "chunk_rows": args.chunk_rows,
                   "days": args.days, "format": "parquet (zstd)", "seed": 0},
        "rows_per_s": {"median": round(statistics.median(rates)), "min": round(min(rates)),
                       "max": round(max(rates))},
        "rows_per_cpu_s": round(statistics.median(r["rows"] / r["cpu_seconds"] for r in runs)),
        "peak_rss_mb": round(max(r["rss_peak_mb"] for r in runs), 1),
        "rss_growth_mb": round(max(r["rss_growth_mb"] for r in runs), 1),
        "file_mb": round(runs[0]["bytes"] / 1e6, 1),
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "runs": [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in runs],
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("rows_per_s", "rows_per_cpu_s", "peak_rss_mb", "load_average_1min")}))
    return result


if __name__ == "__main__":
    main()
