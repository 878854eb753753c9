"""Scan triage with ONNX Runtime: concealment score, heatmap, empty verdict, cargo class, mass.

This module is the serving side of the scan CNN and never imports PyTorch: it needs only the
model directory written by :mod:`scanvision.export` (``model.onnx`` + ``config.json``).

Example::

    from scanvision.infer import ScanTriage, triage_paths
    triage = ScanTriage("models/scanvision")            # provider="cuda" / "tensorrt" on a GPU
    for item in triage_paths(["a.png", "b.jpg"], triage=triage, heatmap_dir="heatmaps"):
        print(item.to_json())

Scans of different widths are batched together: they are sorted by width, grouped so that
padding stays small, padded with zero attenuation (air) and the padded columns are masked out
of the pooled outputs inside the graph (the ``width`` input).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scanvision.io import DEFAULT_MAX_PIXELS, Scan, ScanReadError, read_dual_energy, read_scan
from scanvision.preprocess import PreprocessConfig, estimate_mass_kg, preprocess

logger = logging.getLogger(__name__)

#: Environment variable naming the default scan model directory.
MODEL_ENV_VAR = "RISKENGINE_SCAN_MODEL"
SUPPORTED_SIDECAR_VERSIONS = (1,)

_PROVIDERS: dict[str, list[str]] = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def default_model_dir() -> Path:
    """The scan model used when none is given.

    ``$RISKENGINE_SCAN_MODEL`` when set, else ``models/scanvision`` next to the directory that
    holds the ``scanvision`` package (the repository root in a source checkout).
    """
    env = os.environ.get(MODEL_ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "models" / "scanvision"


@dataclass
class TriageResult:
    """Triage of one scan.

    Attributes:
        path: the scan file (``None`` for in-memory scans).
        concealment_score: calibrated probability (0–1) that the scan shows a concealment.
        empty_probability: probability that the container is empty.
        cargo_class: most likely cargo family.
        class_probabilities: probability of every cargo family.
        estimated_mass_kg: cargo mass from the raw transmission; ``None`` for display images.
        heatmap: ``[rows, cols]`` per-cell concealment probability (one cell = 16 input pixels
            of the preprocessed scan).
        heatmap_path: PNG overlay written for this scan, if any.
        threshold: the alarm threshold used (the site's when the model is site-adapted for
            this image kind, else the model card's at 1 % false alarms).
        threshold_source: ``"site"`` or ``"model card"``.
    """

    path: str | None
    concealment_score: float
    empty_probability: float
    cargo_class: str
    class_probabilities: dict[str, float]
    estimated_mass_kg: float | None
    heatmap: np.ndarray = field(repr=False)
    heatmap_path: str | None = None
    threshold: float = 0.5
    threshold_source: str = "model card"

    @property
    def alarm(self) -> bool:
        """The scan alarms: its concealment score is above the threshold."""
        return self.concealment_score > self.threshold

    @property
    def empty(self) -> bool:
        """The container is empty (``empty_probability >= 0.5``; ``cargo_class`` agrees)."""
        return self.empty_probability >= 0.5

    def to_json(self) -> dict[str, Any]:
        """The JSON record of the ``riskengine triage --json`` contract."""
        return {
            "path": self.path,
            "concealment_score": round(self.concealment_score, 6),
            "alarm": self.alarm,
            "threshold": round(self.threshold, 6),
            "threshold_source": self.threshold_source,
            "empty": self.empty,
            "empty_probability": round(self.empty_probability, 6),
            "cargo_class": self.cargo_class,
            "estimated_mass_kg": (
                None if self.estimated_mass_kg is None else round(self.estimated_mass_kg, 1)
            ),
            "heatmap": self.heatmap_path,
        }


@dataclass
class TriageError:
    """A scan that could not be triaged (unreadable, corrupt, wrong kind)."""

    path: str
    error: str
    error_type: str = "ScanReadError"

    def to_json(self) -> dict[str, Any]:
        """The JSON error record: ``{"path", "error"}``."""
        return {"path": self.path, "error": self.error}


def load_model_config(model_dir: str | Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a scan model directory."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"scan model directory not found: {model_dir}; pass --model DIR (a directory with "
            f"model.onnx and config.json) or set {MODEL_ENV_VAR}"
        )
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{model_dir} has no config.json; a scan model directory holds model.onnx and "
            "config.json as written by `riskengine train scans`"
        )
    config = json.loads(cfg_path.read_text())
    version = config.get("format_version")
    if version not in SUPPORTED_SIDECAR_VERSIONS:
        raise ValueError(
            f"{cfg_path}: sidecar format_version {version!r}, this version reads "
            f"{list(SUPPORTED_SIDECAR_VERSIONS)}; upgrade the package or re-export the model"
        )
    missing = [k for k in ("preprocess", "class_names", "heatmap_stride", "outputs") if k not in config]
    if missing:
        raise ValueError(f"{cfg_path}: missing keys {missing}; re-export the model")
    return config


def mass_features(scan: Scan, mu_m_cm2_g: float, pixel_mm: float) -> dict[str, float] | None:
    """Inputs of the mass calibration: the physics integral (kg) and the scan's size (m).

    ``None`` for display images, which carry no physics.
    """
    physics = estimate_mass_kg(scan, mu_m_cm2_g, pixel_mm)
    if physics is None:
        return None
    return {
        "physics_kg": physics,
        "scan_length_m": scan.width * pixel_mm / 1000.0,
        "scan_height_m": scan.height * pixel_mm / 1000.0,
    }


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def width_batches(widths: Sequence[int], batch_size: int, max_pad_ratio: float = 1.25) -> list[np.ndarray]:
    """Group scan indices into batches of similar width.

    Indices are sorted by width; a batch closes when it holds ``batch_size`` scans or the next
    scan is more than ``max_pad_ratio`` times wider than the batch's narrowest (so padding
    wastes at most that fraction of compute).
    """
    w = np.asarray(widths, dtype=np.int64)
    order = np.argsort(w, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    for i in range(1, len(order) + 1):
        if (
            i == len(order)
            or i - start >= batch_size
            or w[order[i]] > max_pad_ratio * w[order[start]]
        ):
            batches.append(order[start:i])
            start = i
    return batches


class ScanTriage:
    """Runs the exported scan CNN with ONNX Runtime.

    Args:
        model_dir: directory with ``model.onnx`` and ``config.json`` (default:
            :func:`default_model_dir`).
        provider: ``"cpu"``, ``"cuda"`` or ``"tensorrt"``; an unavailable provider falls back
            to CPU with a logged warning.
        threads: intra-op threads for the CPU provider (``None``: ONNX Runtime's default).
        batch_size: largest number of scans per ONNX Runtime call.
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        provider: str = "cpu",
        threads: int | None = None,
        batch_size: int = 8,
    ) -> None:
        import onnxruntime as ort

        if provider not in _PROVIDERS:
            raise ValueError(
                f"unknown provider {provider!r}; expected one of {sorted(_PROVIDERS)}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.config = load_model_config(self.model_dir)
        self.preprocess_config = PreprocessConfig.from_dict(self.config["preprocess"])
        self.class_names: list[str] = list(self.config["class_names"])
        self.heatmap_stride = int(self.config["heatmap_stride"])
        self.mass_calibration: dict[str, Any] | None = self.config.get("mass_calibration")
        self.batch_size = batch_size
        from scanvision.calibrate import CALIBRATION_KEY, ScannerCalibration

        cal = self.config.get(CALIBRATION_KEY)
        #: Per-scanner map of the score (``riskengine scanner calibrate``), or ``None``.
        self.scanner_calibration = None if cal is None else ScannerCalibration.from_dict(cal)
        self._warned_kind = False

        onnx_path = self.model_dir / self.config.get("onnx_file", "model.onnx")
        if not onnx_path.is_file():
            raise FileNotFoundError(
                f"{onnx_path} not found; the model directory must hold the ONNX file named in "
                "config.json"
            )
        available = set(ort.get_available_providers())
        wanted = [p for p in _PROVIDERS[provider] if p in available]
        if _PROVIDERS[provider][0] not in available:
            logger.warning(
                "ONNX Runtime provider %s for %r is not available here (available: %s); "
                "falling back to %s. Install onnxruntime-gpu with CUDA/TensorRT to use it.",
                _PROVIDERS[provider][0], provider, sorted(available), wanted[0],
            )
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1 or None, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=wanted)
        except Exception as exc:  # ONNX Runtime raises its own types for unreadable graphs
            raise ValueError(
                f"{onnx_path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc}); the file "
                "is damaged or from an incompatible exporter: re-export the model"
            ) from exc
        self.providers: list[str] = self.session.get_providers()
        if provider != "cpu" and self.providers[0] == "CPUExecutionProvider" and len(wanted) > 1:
            logger.warning(
                "ONNX Runtime could not start %s (missing CUDA/TensorRT libraries?); running on "
                "CPUExecutionProvider", wanted[0],
            )
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != ["image", "width"]:
            raise ValueError(
                f"{onnx_path}: inputs {inputs}, expected ['image', 'width']; re-export the model"
            )
        self._outputs = list(self.config["outputs"])

    @property
    def channels(self) -> int:
        """Input channels the model expects (2 = dual energy)."""
        return self.preprocess_config.channels

    def prepare(self, scan: Scan) -> np.ndarray:
        """Preprocess one scan into the network input ``[C, H, W']``."""
        return preprocess(scan, self.preprocess_config)

    def run(self, images: Sequence[np.ndarray]) -> dict[str, list[np.ndarray]]:
        """Run the network on preprocessed images; outputs per image, in input order.

        Returns:
            ``{"heatmap_logits": [[rows, cols] ...], "score": [...], "empty_prob": [...],
            "class_logits": [...]}`` with each heatmap cropped to its scan's real width.
        """
        n = len(images)
        out: dict[str, list[Any]] = {name: [None] * n for name in self._outputs}
        if n == 0:
            return out
        widths = [im.shape[-1] for im in images]
        for idx in width_batches(widths, self.batch_size):
            c, h = images[idx[0]].shape[:2]
            w_batch = np.array([widths[i] for i in idx], dtype=np.int64)
            batch = np.zeros((len(idx), c, h, int(w_batch.max())), dtype=np.float32)
            for j, i in enumerate(idx):
                batch[j, :, :, : widths[i]] = images[i]
            res = dict(zip(self._outputs, self.session.run(
                self._outputs, {"image": batch, "width": w_batch}), strict=True))
            cols = -(-w_batch // self.heatmap_stride)
            for j, i in enumerate(idx):
                out["heatmap_logits"][i] = res["heatmap_logits"][j, 0, :, : cols[j]]
                out["score"][i] = res["score"][j]
                out["empty_prob"][i] = res["empty_prob"][j]
                out["class_logits"][i] = res["class_logits"][j]
        return out

    def estimate_mass(self, scan: Scan) -> float | None:
        """Cargo mass (kg) from the raw transmission with the model's fitted calibration.

        ``None`` for display images (their windowing destroys the physics) or when the model
        carries no mass calibration.
        """
        cal = self.mass_calibration
        if cal is None or scan.kind != "raw16":
            return None
        pixel_mm = float((scan.sidecar or {}).get("pixel_mm", cal["pixel_mm"]))
        feats = mass_features(scan, float(cal["mu_m_cm2_g"]), pixel_mm)
        if feats is None:
            return None
        # The fitted line maps the physics estimate of everything in the beam (container,
        # chassis, cargo) to the cargo mass; the scan's size stands in for the structure.
        value = float(cal["intercept"]) + sum(
            float(c) * feats[k] for k, c in cal["coef"].items()
        )
        return max(0.0, value)

    def _results(self, scans: Sequence[Scan], images: Sequence[np.ndarray]) -> list[TriageResult]:
        raw = self.run(images)
        logits = np.stack(raw["class_logits"]) if scans else np.zeros((0, len(self.class_names)))
        probs = _softmax(logits.astype(np.float64))
        results = []
        empty_idx = self.class_names.index("empty") if "empty" in self.class_names else None
        for i, scan in enumerate(scans):
            p = probs[i]
            empty_p = float(raw["empty_prob"][i])
            # the empty head decides empty/loaded; the cargo class follows it, so the two
            # outputs never disagree (an empty verdict with a cargo class, or the reverse)
            ranked = np.argsort(-p)
            if empty_idx is not None:
                ranked = ([empty_idx] if empty_p >= 0.5 else
                          [int(k) for k in ranked if int(k) != empty_idx])
            threshold, source = self.alarm_threshold(scan.kind)
            results.append(
                TriageResult(
                    path=None if scan.path is None else str(scan.path),
                    concealment_score=self._calibrated(float(raw["score"][i]), scan),
                    empty_probability=empty_p,
                    cargo_class=self.class_names[int(ranked[0])],
                    threshold=threshold,
                    threshold_source=source,
                    class_probabilities=dict(zip(self.class_names, p.round(6).tolist(), strict=True)),
                    estimated_mass_kg=self.estimate_mass(scan),
                    heatmap=_sigmoid(raw["heatmap_logits"][i].astype(np.float32)),
                )
            )
        return results

    def alarm_threshold(self, kind: str, far: str = "0.01") -> tuple[float, str]:
        """Threshold at ``far`` false alarms for scans of ``kind`` and where it comes from."""
        from scanvision.adapt import site_threshold
        from scanvision.calibrate import card_threshold

        site = site_threshold(self.config, kind, far)
        if site is not None:
            return site, "site"
        return card_threshold(self.config, kind, far), "model card"

    def _calibrated(self, score: float, scan: Scan) -> float:
        """The score through the scanner calibration, for scans of the calibrated kind."""
        cal = self.scanner_calibration
        if cal is None:
            return score
        if scan.kind != cal.kind:
            if not self._warned_kind:
                logger.warning(
                    "model calibrated for %s %s scans; %s is a %s scan and keeps the uncalibrated score",
                    cal.scanner, cal.kind, scan.path or "a scan", scan.kind,
                )
                self._warned_kind = True
            return score
        return float(cal.apply([score])[0])

    def triage(self, scans: Sequence[Scan]) -> list[TriageResult]:
        """Triage scans of any widths (batched by width); one result per scan, in order.

        Raises:
            ValueError: a scan does not match the model (e.g. single energy for a dual-energy
                model). Use :func:`triage_paths` to get per-file errors instead.
        """
        images = [self.prepare(s) for s in scans]
        return self._results(scans, images)


def heatmap_to_image(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a coarse ``[rows, cols]`` heatmap onto a ``height x width`` scan (float32 0–1).

    Preprocessing resizes the whole scan to the network input, so each heatmap cell covers the
    same share of the original scan; a bilinear stretch puts the cells back in place.
    """
    hm = np.asarray(heatmap, dtype=np.float32)
    if hm.ndim != 2 or hm.size == 0:
        raise ValueError(f"heatmap must be a non-empty 2-D array, got shape {hm.shape}")
    return cv2.resize(hm, (width, height), interpolation=cv2.INTER_LINEAR)


def save_heatmap_overlay(scan: Scan, heatmap: np.ndarray, path: str | Path, *, alpha: float = 0.6) -> Path:
    """Write a PNG: the scan in grey with the heatmap in colour on top (hot = look here).

    Opacity grows with the cell probability, so clean areas keep the plain grey scan.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = np.rint(255.0 * np.clip(scan.transmission, 0.0, 1.0)).astype(np.uint8)
    heat = heatmap_to_image(heatmap, scan.height, scan.width)
    colour = cv2.applyColorMap(np.rint(255.0 * heat).astype(np.uint8), cv2.COLORMAP_JET)
    weight = (alpha * heat)[..., None]
    grey3 = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    overlay = grey3 * (1.0 - weight) + colour.astype(np.float32) * weight
    if not cv2.imwrite(str(path), np.rint(overlay).astype(np.uint8)):
        raise OSError(f"could not write heatmap overlay {path}")
    return path


def _read_for(engine: ScanTriage, path: str, max_pixels: int) -> Scan:
    """Read one scan; for a dual-energy model, ``<id>_high.*`` is paired with ``<id>_low.*``."""
    p = Path(path)
    if engine.channels == 2:
        if not p.stem.endswith("_high"):
            raise ValueError(
                f"{p}: the model expects dual-energy scans; pass the high-energy file "
                "<id>_high.png (its <id>_low.png is read alongside)"
            )
        low = p.with_name(p.stem[: -len("_high")] + "_low" + p.suffix)
        return read_dual_energy(p, low, max_pixels=max_pixels)
    return read_scan(p, max_pixels=max_pixels)


def _heatmap_name(path: str, used: set[str]) -> str:
    stem = Path(path).stem
    name, k = f"{stem}_heatmap.png", 2
    while name in used:
        name, k = f"{stem}_{k}_heatmap.png", k + 1
    used.add(name)
    return name


def triage_paths(
    paths: Iterable[str | Path],
    *,
    triage: ScanTriage | None = None,
    model_dir: str | Path | None = None,
    provider: str = "cpu",
    heatmap_dir: str | Path | None = None,
    chunk_size: int = 32,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Iterator[TriageResult | TriageError]:
    """Triage scan files; yields per file (in input order) a result or an error record.

    A file that cannot be read or does not fit the model gives a :class:`TriageError`; the
    other files are still triaged. Files are read and run ``chunk_size`` at a time so memory
    stays bounded on long lists.

    Args:
        paths: scan files (16-bit raw PNG/TIFF or 8-bit display JPEG/PNG).
        triage: a loaded :class:`ScanTriage` (else one is built from ``model_dir``/``provider``).
        heatmap_dir: when given, a heatmap overlay PNG per scan is written there.
    """
    engine = triage or ScanTriage(model_dir, provider=provider)
    hm_dir = Path(heatmap_dir) if heatmap_dir is not None else None
    used_names: set[str] = set()
    chunk: list[str] = []

    def flush(batch: list[str]) -> Iterator[TriageResult | TriageError]:
        slots: list[TriageResult | TriageError | None] = [None] * len(batch)
        good: list[tuple[int, Scan, np.ndarray]] = []
        for i, p in enumerate(batch):
            try:
                scan = _read_for(engine, p, max_pixels)
                good.append((i, scan, engine.prepare(scan)))
            except (ScanReadError, ValueError, OSError) as exc:
                logger.warning("cannot triage %s: %s", p, exc)
                slots[i] = TriageError(path=p, error=str(exc), error_type=type(exc).__name__)
        results = engine._results([g[1] for g in good], [g[2] for g in good])
        for (i, scan, _), res in zip(good, results, strict=True):
            if hm_dir is not None:
                target = hm_dir / _heatmap_name(batch[i], used_names)
                res.heatmap_path = str(save_heatmap_overlay(scan, res.heatmap, target))
            slots[i] = res
        yield from slots  # type: ignore[misc]

    for p in paths:
        chunk.append(str(p))
        if len(chunk) >= chunk_size:
            yield from flush(chunk)
            chunk = []
    if chunk:
        yield from flush(chunk)
