"""Per-scanner calibration (`riskengine scanner calibrate`) on simulated scanners.

A scanner that exports its images differently from anything in training shifts the scores of
clean containers, so the model card's 1 % false-alarm threshold no longer gives 1 % there. This
benchmark builds such scanners from the generator (test seeds never used in training):

* ``display_vendor_b``: 8-bit display exports through a harsher tone curve than training saw
  (gain 2.0, lift 0.9), an unsharp mask (edge enhancement), gamma 0.6, half-size, JPEG 75;
* ``raw_hard_beam``: raw 16-bit transmission of a beam that attenuates 1.5x more
  (``T' = T ** 1.5``, a bremsstrahlung spectrum against the monoenergetic model) with a 3 %
  detector offset;
* ``raw_low_dose_stretched``: raw 16-bit transmission with the fan-beam magnification of a
  portal (image 1.2x taller) and a 5x lower dose (extra Poisson noise at 5,000 counts in air).

Per scanner: fit on ``--calibration`` clean scans (seed 31), then measure on held-out scans
(seed 32, half with a concealment) the false-alarm rate and Pd (>= 5 kg) at the card's 1 %
threshold, before and after. Writes ``benchmarks/results/scanner_calibration.json``.

    python benchmarks/scanner_calibration.py --model models/scanvision --calibration 200 --test 600
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scanvision.calibrate import card_threshold, fit_scanner_calibration  # noqa: E402
from scanvision.infer import ScanTriage  # noqa: E402
from scanvision.io import (  # noqa: E402
    Scan,
    display8_to_transmission,
    raw16_to_transmission,
    transmission_to_display8,
    transmission_to_raw16,
)

SCANNERS = ("display_vendor_b", "raw_hard_beam", "raw_low_dose_stretched")


def _export(t: np.ndarray, scanner: str, index: int = 0) -> Scan:
    if scanner == "raw_low_dose_stretched":
        h, w = t.shape
        t2 = cv2.resize(t, (w, int(round(h * 1.2))), interpolation=cv2.INTER_LINEAR)
        rng = np.random.default_rng(index)
        t2 = np.clip(rng.poisson(t2 * 5000.0) / 5000.0, 1e-5, 1.0).astype(np.float32)
        t2 = raw16_to_transmission(transmission_to_raw16(t2))
        return Scan(t2, None, "raw16", None, t2.shape[1], t2.shape[0])
    if scanner == "raw_hard_beam":
        t2 = np.clip(np.power(t, np.float32(1.5)) * np.float32(0.97), 1e-5, 1.0)
        t2 = raw16_to_transmission(transmission_to_raw16(t2))
        return Scan(t2, None, "raw16", None, t2.shape[1], t2.shape[0])
    a = -np.log(np.clip(t, 1e-5, 1.0))
    t = np.exp(-(2.0 * a + 0.9 * (1.0 - np.exp(-a / 0.05)))).astype(np.float32)
    d = transmission_to_display8(t, gamma=0.6 * 1.5).astype(np.float32)
    blur = cv2.GaussianBlur(d, (0, 0), 2.0)
    d = np.clip(d + 1.0 * (d - blur), 0, 255).astype(np.uint8)
    d = cv2.resize(d, (d.shape[1] // 2, d.shape[0] // 2), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", d, [cv2.IMWRITE_JPEG_QUALITY, 75])
    d = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return Scan(display8_to_transmission(d), None, "display8", None, d.shape[1], d.shape[0])


def _render(args: tuple[int, int, float]) -> tuple[np.ndarray, float]:
    from scanvision.synth import render_scan, sample_spec

    index, seed, threat_rate = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    spec = sample_spec(rng, scan_id=f"B{seed}_{index:05d}", seed=seed, threat_rate=threat_rate)
    r = render_scan(spec, rng)
    mass = float(sum(t["mass_kg"] for t in r.meta["threats"])) if r.mask.any() else 0.0
    return raw16_to_transmission(transmission_to_raw16(r.transmission)), mass


def _scores(engine: ScanTriage, count: int, seed: int, threat_rate: float, workers: int) -> dict:
    out: dict[str, list] = {s: [] for s in SCANNERS}
    masses: list[float] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        for c0 in range(0, count, 32):
            items = list(pool.map(_render, [(i, seed, threat_rate) for i in range(c0, min(count, c0 + 32))]))
            masses.extend(m for _, m in items)
            for s in SCANNERS:
                scans = [_export(t, s, c0 + j) for j, (t, _) in enumerate(items)]
                out[s].extend(r.concealment_score for r in engine.triage(scans))
            print(f"  seed {seed}: {len(masses)}/{count} scans", file=sys.stderr, flush=True)
    return {"scores": {s: np.asarray(v) for s, v in out.items()}, "mass": np.asarray(masses)}


def _rates(scores: np.ndarray, mass: np.ndarray, thr: float) -> dict[str, float]:
    clean, big = mass == 0, mass >= 5
    return {"false_alarm_rate": round(float((scores[clean] > thr).mean()), 4),
            "pd_ge_5kg": round(float((scores[big] > thr).mean()), 4),
            "n_clean": int(clean.sum()), "n_ge_5kg": int(big.sum())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "models" / "scanvision"))
    ap.add_argument("--calibration", type=int, default=200, help="cleared scans per scanner for the fit")
    ap.add_argument("--test", type=int, default=600, help="held-out scans per scanner (half with a threat)")
    ap.add_argument("--reference", type=int, default=300, help="clean reference scans per image kind")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scanner_calibration.json"))
    args = ap.parse_args()

    from scanvision.calibrate import reference_clean_scores

    t0 = time.perf_counter()
    engine = ScanTriage(args.model, threads=2)
    cal_set = _scores(engine, args.calibration, 31, 0.0, args.workers)
    test_set = _scores(engine, args.test, 32, 0.5, args.workers)
    refs = {k: reference_clean_scores(engine, k, count=args.reference, workers=args.workers)
            for k in ("raw16", "display8")}
    results = {}
    for s in SCANNERS:
        kind = "raw16" if s.startswith("raw") else "display8"
        thr = card_threshold(engine.config, kind)
        cal = fit_scanner_calibration(cal_set["scores"][s], refs[kind], scanner=s, kind=kind, threshold=thr)
        before = test_set["scores"][s]
        after = cal.apply(before)
        results[s] = {
            "kind": kind, "threshold": round(thr, 4), "calibration": cal.to_dict(),
            "reference_false_alarm_rate": round(float((refs[kind] > thr).mean()), 4),
            "held_out_before": _rates(before, test_set["mass"], thr),
            "held_out_after": _rates(after, test_set["mass"], thr),
        }
        print(f"{s}: FA {results[s]['held_out_before']['false_alarm_rate']:.1%} -> "
              f"{results[s]['held_out_after']['false_alarm_rate']:.1%}, Pd>=5kg "
              f"{results[s]['held_out_before']['pd_ge_5kg']:.1%} -> {results[s]['held_out_after']['pd_ge_5kg']:.1%}")
    doc = {
        "what": "false-alarm rate and Pd (>= 5 kg) at the card's 1 % threshold on held-out scans of "
                "simulated scanners, before and after `riskengine scanner calibrate`",
        "command": "python benchmarks/scanner_calibration.py " + " ".join(sys.argv[1:]),
        "model": str(Path(args.model)), "model_onnx_sha256": engine.config.get("onnx_sha256"),
        "calibration_scans": args.calibration, "test_scans": args.test, "reference_scans": args.reference,
        "seeds": {"calibration": 31, "test": 32, "reference": 7},
        "scanners": results,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
    }
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
