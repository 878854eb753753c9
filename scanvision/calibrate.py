"""Per-scanner calibration of the concealment score from cleared scans.

The scan model is trained on synthetic scans. A real scanner (its beam, detector, geometry and,
for display exports, the vendor's window) shifts the scores of *clean* containers: the false-alarm
rate at the model card's threshold is then not the card's. Every scanner produces scans of
containers that were cleared (inspected and found clean, or released after a random check), so
the fix does not need a single seizure: map the scanner's clean-score distribution onto the
clean-score distribution the thresholds were set on.

The map is affine on the score's logit, ``z' = scale * z + bias``. It matches the median and
the interquartile spread of the scanner's clean logits to those of reference clean scans
(synthetic, scored by the same model, same image kind). Median and interquartile range, not mean
and standard deviation, so that a few uncleared concealments among the "clean" scans move it
little. The scale is bounded to [1/4, 4].

``riskengine scanner calibrate`` writes a copy of the model directory whose ``config.json``
carries the calibration; ``riskengine triage --model THAT_DIR`` (and the service) then apply
it to every scan of the calibrated kind (raw 16-bit or 8-bit display). This module, like
:mod:`scanvision.infer`, never imports torch.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from scanvision.io import Scan

logger = logging.getLogger(__name__)

#: Key of the calibration in a model's ``config.json``.
CALIBRATION_KEY = "scanner_calibration"
#: Fewest cleared scans a calibration accepts (below that the spread is noise).
MIN_CLEAN_SCANS = 20
#: Scans at which a calibration stops warning that it rests on few scans.
ADVISED_CLEAN_SCANS = 200
MAX_SCALE = 4.0
_EPS = 1e-6


def score_logit(scores: np.ndarray | Sequence[float]) -> np.ndarray:
    """``log(p / (1 - p))`` of scores in [0, 1] (clipped to stay finite)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def robust_location_spread(z: np.ndarray) -> tuple[float, float]:
    """Median and interquartile range / 1.349 (the standard deviation of a normal sample)."""
    z = np.asarray(z, dtype=np.float64)
    q25, q50, q75 = np.quantile(z, [0.25, 0.5, 0.75])
    return float(q50), max(float(q75 - q25) / 1.349, 1e-3)


@dataclass
class ScannerCalibration:
    """An affine map of the score logit for one scanner and image kind.

    Attributes:
        scanner: the scanner's name (free text: site, lane, serial).
        kind: ``"raw16"`` or ``"display8"``: the scans it applies to.
        scale, bias: ``score' = sigmoid(scale * logit(score) + bias)``.
        n_clean: cleared scans it was fitted on.
        clean_median, clean_spread: their logit median and spread before the map.
        reference_median, reference_spread: the same for the reference clean scans.
        threshold: the alarm threshold the report below refers to (the model card's 1 %
            false-alarm threshold for this kind, or 0.5).
        alarm_rate_before, alarm_rate_after: share of the cleared scans above ``threshold``
            before and after the map (in-sample: an optimistic check, not a test).
        fitted_at: UTC time of the fit (ISO 8601).
    """

    scanner: str
    kind: str
    scale: float
    bias: float
    n_clean: int = 0
    clean_median: float = float("nan")
    clean_spread: float = float("nan")
    reference_median: float = float("nan")
    reference_spread: float = float("nan")
    threshold: float = 0.5
    alarm_rate_before: float = float("nan")
    alarm_rate_after: float = float("nan")
    fitted_at: str = ""

    def apply(self, scores: np.ndarray | Sequence[float]) -> np.ndarray:
        """Calibrated scores."""
        return _sigmoid(self.scale * score_logit(scores) + self.bias)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["formula"] = "score = sigmoid(scale * logit(model_score) + bias)"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScannerCalibration:
        fields = cls.__dataclass_fields__
        missing = [k for k in ("scanner", "kind", "scale", "bias") if k not in d]
        if missing:
            raise ValueError(f"{CALIBRATION_KEY} in config.json lacks {missing}; recalibrate the scanner")
        if d["kind"] not in ("raw16", "display8"):
            raise ValueError(f"{CALIBRATION_KEY}.kind must be 'raw16' or 'display8', got {d['kind']!r}")
        try:
            return cls(**{k: d[k] for k in fields if k in d})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{CALIBRATION_KEY} in config.json is malformed ({exc}); recalibrate the scanner") from exc


def fit_scanner_calibration(
    clean_scores: np.ndarray | Sequence[float],
    reference_scores: np.ndarray | Sequence[float],
    *,
    scanner: str,
    kind: str,
    threshold: float = 0.5,
    min_scans: int = MIN_CLEAN_SCANS,
) -> ScannerCalibration:
    """Fit the map that puts the scanner's cleared-scan scores on the reference clean scores.

    Raises:
        ValueError: fewer than ``min_scans`` cleared scans, too few reference scores, or an
            unknown kind.
    """
    if kind not in ("raw16", "display8"):
        raise ValueError(f"kind must be 'raw16' or 'display8', got {kind!r}")
    clean = np.asarray(clean_scores, dtype=np.float64)
    ref = np.asarray(reference_scores, dtype=np.float64)
    if clean.size < min_scans:
        raise ValueError(
            f"{clean.size} cleared scan(s) of kind {kind}; a calibration needs at least {min_scans} "
            f"(advised: {ADVISED_CLEAN_SCANS} or more) scans of containers inspected or released as clean"
        )
    if ref.size < min_scans:
        raise ValueError(f"{ref.size} reference scores; need at least {min_scans}")
    if clean.size < ADVISED_CLEAN_SCANS:
        logger.warning("calibrating %s on %d cleared scans; %d or more give a steadier false-alarm rate",
                       scanner, clean.size, ADVISED_CLEAN_SCANS)
    m, s = robust_location_spread(score_logit(clean))
    mr, sr = robust_location_spread(score_logit(ref))
    scale = float(np.clip(sr / s, 1 / MAX_SCALE, MAX_SCALE))
    bias = float(mr - scale * m)
    cal = ScannerCalibration(
        scanner=scanner, kind=kind, scale=round(scale, 6), bias=round(bias, 6), n_clean=int(clean.size),
        clean_median=round(m, 4), clean_spread=round(s, 4), reference_median=round(mr, 4),
        reference_spread=round(sr, 4), threshold=float(threshold),
        alarm_rate_before=float((clean > threshold).mean()), alarm_rate_after=0.0,
        fitted_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    cal.alarm_rate_after = float((cal.apply(clean) > threshold).mean())
    return cal


def card_threshold(config: dict[str, Any], kind: str, far: str = "0.01") -> float:
    """The alarm threshold at ``far`` false alarms for this image kind.

    A site-adapted model's own thresholds (set on the site's held-out clean scans) come first,
    then the model card's (set on generated test scans); 0.5 if neither is recorded.
    """
    from scanvision.adapt import site_threshold

    site = site_threshold(config, kind, far)
    if site is not None:
        return site
    key = "raw" if kind == "raw16" else "display"
    try:
        return float(config["metrics"]["test"][key]["at_far"][far]["threshold"])
    except (KeyError, TypeError, ValueError):
        return 0.5


# --------------------------------------------------------------------------- reference scans


def _reference_scan(args: tuple[int, int, str]) -> Scan:
    """Clean synthetic scan ``index`` of ``seed`` as the calibrated kind would show it."""
    from scanvision.io import display8_to_transmission, raw16_to_transmission, transmission_to_raw16
    from scanvision.synth import render_scan, sample_spec, to_display8

    index, seed, kind = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    spec = sample_spec(rng, scan_id=f"REF{index:06d}", seed=seed, threat_rate=0.0)
    t = raw16_to_transmission(transmission_to_raw16(render_scan(spec, rng).transmission))
    if kind == "raw16":
        return Scan(t, None, "raw16", None, t.shape[1], t.shape[0])
    d8 = to_display8(t, np.random.default_rng([seed, index, 13]))
    return Scan(display8_to_transmission(d8), None, "display8", None, d8.shape[1], d8.shape[0])


def reference_clean_scores(engine: Any, kind: str, *, count: int = 300, seed: int = 7,
                           workers: int = 2,
                           progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Model scores of ``count`` clean synthetic scans of this kind (raw, or display exports
    with random vendor windows). Seed 7 is used by no training, validation or test set."""
    scores: list[float] = []
    jobs = [(i, seed, kind) for i in range(count)]
    pool = (ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
            if workers > 1 else None)
    try:
        for c0 in range(0, count, 32):
            part = jobs[c0:c0 + 32]
            scans = list(pool.map(_reference_scan, part)) if pool else [_reference_scan(j) for j in part]
            scores.extend(r.concealment_score for r in engine.triage(scans))
            if progress is not None:
                progress(len(part))
    finally:
        if pool is not None:
            pool.shutdown()
    return np.asarray(scores, dtype=np.float64)


# --------------------------------------------------------------------------- model directories


def write_calibrated_model(model_dir: str | Path, out_dir: str | Path,
                           calibration: ScannerCalibration) -> Path:
    """Copy a model directory to ``out_dir`` with ``calibration`` in its ``config.json``.

    Raises:
        FileExistsError: ``out_dir`` exists and is not empty (a calibration is never
            overwritten in place; write a new directory).
        ValueError: ``out_dir`` is the model directory itself.
    """
    src, dst = Path(model_dir).resolve(), Path(out_dir).resolve()
    if src == dst:
        raise ValueError("write the calibrated model to a new directory, not over the model it comes from")
    if dst.exists() and any(dst.iterdir()):
        raise FileExistsError(f"{dst} exists and is not empty; choose a new directory for the calibrated model")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    cfg_path = dst / "config.json"
    config = json.loads(cfg_path.read_text())
    config[CALIBRATION_KEY] = calibration.to_dict()
    cfg_path.write_text(json.dumps(config, indent=2) + "\n")
    return dst
