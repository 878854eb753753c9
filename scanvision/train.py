"""Train the scan triage CNN from scratch on generated scans, export it, write its model card.

Two entry points:

* :func:`train_from_dir` trains on a directory written by ``riskengine generate scans``
  (``<id>.png`` + ``<id>.json`` + ``<id>_mask.png``); used by ``riskengine train scans``.
* :func:`build_shipped_model` generates the scans in memory from fixed seeds, trains, exports,
  evaluates on scans from a seed never used in training and writes ``MODEL_CARD.md``; this is
  what ``make models`` runs::

      python -m scanvision.train --generate 4500 --seed 1 --epochs 24 --out models/scanvision

Every scan is used twice: as raw 16-bit transmission and as an 8-bit display image
(:func:`scanvision.synth.to_display8`, random window, downscale and JPEG) read back through the
*same* :func:`scanvision.preprocess.preprocess` that serving uses. On top come random crops
(horizontal and vertical, then resized back to the input height), horizontal flips, air
padding, attenuation gain and noise (dose variation).

Losses: BCE with a positive weight on the heatmap cells (targets: the concealment masks
downsampled to the 16-pixel grid), BCE on the image score, BCE on "empty", cross-entropy on
the cargo family. The epoch with the best validation detection metric is kept; the image score
is then Platt-calibrated on the validation scans.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from scanvision.export import pad_batch, save_model_dir
from scanvision.io import (
    DISPLAY_LOG_RANGE,
    Scan,
    display8_to_transmission,
    raw16_to_transmission,
    read_dual_energy,
    read_mask,
    read_scan,
    transmission_to_raw16,
)
from scanvision.model import CARGO_CLASSES, ScanTriageNet, count_parameters, create_model
from scanvision.preprocess import PreprocessConfig, preprocess

logger = logging.getLogger(__name__)

#: Effective mass attenuation coefficient (cm²/g) used for the physics mass integral; the
#: fitted calibration absorbs the difference to the real material mix.
NOMINAL_MU_M_CM2_G = 0.027
#: Threat mass bins (kg) reported in the model card.
MASS_BINS_KG: tuple[tuple[float, float], ...] = ((1, 5), (5, 20), (20, 100), (100, 500), (500, 5000))
MASS_FEATURES = ("physics_kg", "scan_length_m", "scan_height_m")
#: Range of display log-windows (attenuation shown from white to black) used for training.
DISPLAY_WINDOW_RANGE = (1.0, 6.0)


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (all recorded in the model sidecar).

    Attributes:
        model_name: registry name (see :func:`scanvision.model.list_models`).
        epochs: passes over the training scans.
        batch_size: scans per optimiser step.
        lr: peak learning rate (one-cycle schedule).
        seed: seeds weights, augmentation and, for generated data, the scans themselves.
        threat_rate: share of generated scans with a concealment.
        val_fraction: share of a scan directory held out for validation.
        display_prob: probability of using a scan's 8-bit display version in a step.
        crop_prob: probability of a random crop (zoom) of a scan.
        max_train_width: wider training inputs are randomly cropped to this width (compute).
        render_pixel_mm: pixel pitch at which generated *training* scans are rendered (the
            dose is scaled with the pixel area so that the noise after resizing to the input
            height matches 5 mm scans); validation and test scans keep the native 5 mm. A
            coarser pitch renders ~3x faster and changes nothing the network sees at 192 px.
        pos_weight: weight of positive heatmap cells in their BCE.
        heat_weight, image_weight, empty_weight, class_weight: loss weights.
        threads: torch CPU threads (1 by default: on a shared 2-core machine one thread per
            process is faster than two that wait on each other, and results do not depend on
            the machine's load).
        workers: processes rendering / reading scans.
        preprocess: the preprocessing configuration (travels with the model).
    """

    model_name: str = "triage_mnv3s_075"
    epochs: int = 24
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 1
    threat_rate: float = 0.5
    val_fraction: float = 0.1
    display_prob: float = 0.35
    crop_prob: float = 0.5
    max_train_width: int = 256
    render_pixel_mm: float | None = 10.0
    pos_weight: float = 30.0
    heat_weight: float = 4.0
    image_weight: float = 1.0
    empty_weight: float = 0.5
    class_weight: float = 0.5
    threads: int = 1
    workers: int = 2
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the preprocessing as its own dict)."""
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        return d


@dataclass
class Variant:
    """One network input of a scan (raw or display) and its threat-fraction map."""

    image: np.ndarray  # float16 [C, H, W]
    frac: np.ndarray  # float16 [H, W]: share of each input pixel covered by a concealment
    kind: str


@dataclass
class Sample:
    """A training / evaluation scan reduced to what the network and the metrics need."""

    scan_id: str
    variants: list[Variant]
    threat: bool
    threat_mass_kg: float
    threat_types: list[str]
    threat_locations: list[str]
    empty: bool
    cls: int
    cargo_mass_kg: float
    mass_features: dict[str, float]
    tractor: bool = False


# --------------------------------------------------------------------------- sample building


def mask_fraction(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a full-resolution bool mask to ``height x width`` as the covered fraction per pixel."""
    return cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)


def cell_targets(frac: np.ndarray, stride: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Heatmap targets from a fraction map ``[H, W]`` (H, W multiples of ``stride``).

    A cell's coverage is the mean fraction over its ``stride x stride`` pixels. Cells covered
    at least 30 % as much as the scan's most covered cell are positive; cells touched less are
    ignored (neither positive nor negative), so a concealment smaller than a cell still gives a
    clean positive and its fringe does not teach "background".

    Returns:
        ``(positive, ignore)`` bool arrays ``[H/stride, W/stride]``.
    """
    h, w = frac.shape
    cells = frac.reshape(h // stride, stride, w // stride, stride).mean(axis=(1, 3))
    peak = float(cells.max())
    if peak < 1e-4:
        zero = np.zeros(cells.shape, dtype=bool)
        return zero, cells > 0
    positive = cells >= max(0.3 * peak, 1e-4)
    return positive, (cells > 0) & ~positive


def _mass_features(scan: Scan, pixel_mm: float) -> dict[str, float]:
    from scanvision.infer import mass_features

    feats = mass_features(scan, NOMINAL_MU_M_CM2_G, pixel_mm)
    return feats if feats is not None else dict.fromkeys(MASS_FEATURES, float("nan"))


def build_sample(
    transmission: np.ndarray,
    transmission_low: np.ndarray | None,
    mask: np.ndarray,
    meta: dict[str, Any],
    pcfg: PreprocessConfig,
    rng: np.random.Generator,
    *,
    with_display: bool = True,
) -> Sample:
    """Turn one full-resolution scan + mask + sidecar into a :class:`Sample`.

    The raw variant is the 16-bit-quantised transmission; the display variant is
    :func:`scanvision.synth.to_display8` with a random (often hard) window, read back as a
    display image.
    Both go through :func:`scanvision.preprocess.preprocess`.
    """
    from scanvision.synth import to_display8

    t = raw16_to_transmission(transmission_to_raw16(transmission))
    t_low = None if transmission_low is None else raw16_to_transmission(
        transmission_to_raw16(transmission_low))
    h, w = t.shape
    scan = Scan(t, t_low, "raw16", None, w, h, meta)
    x = preprocess(scan, pcfg)
    variants = [Variant(x.astype(np.float16),
                        mask_fraction(mask, x.shape[2], x.shape[1]).astype(np.float16), "raw16")]
    if with_display and pcfg.channels == 1:
        # Scanner software windows much harder than the default: real display images show an
        # empty container's walls light grey and dense cargo saturated black. Compressing the
        # attenuation range before to_display8 widens its random window accordingly.
        window = float(np.exp(rng.uniform(np.log(DISPLAY_WINDOW_RANGE[0]), np.log(DISPLAY_WINDOW_RANGE[1]))))
        d8 = to_display8(np.power(t, np.float32(DISPLAY_LOG_RANGE / window)), rng)
        ds = Scan(display8_to_transmission(d8), None, "display8", None, d8.shape[1], d8.shape[0])
        xd = preprocess(ds, pcfg)
        variants.append(Variant(xd.astype(np.float16),
                                mask_fraction(mask, xd.shape[2], xd.shape[1]).astype(np.float16),
                                "display8"))
    threats = meta.get("threats") or []
    family = meta.get("cargo_family", "general")
    if family not in CARGO_CLASSES:
        raise ValueError(
            f"scan {meta.get('scan_id')}: cargo_family {family!r} is not one of {list(CARGO_CLASSES)}"
        )
    return Sample(
        scan_id=str(meta.get("scan_id", "")),
        variants=variants,
        threat=bool(threats) and bool(mask.any()),
        threat_mass_kg=float(sum(float(tm["mass_kg"]) for tm in threats)),
        threat_types=[str(tm["type"]) for tm in threats],
        threat_locations=[str(tm["location"]) for tm in threats],
        empty=bool(meta.get("empty", family == "empty")),
        cls=CARGO_CLASSES.index(family),
        cargo_mass_kg=float(meta.get("cargo_mass_kg", 0.0)),
        mass_features=_mass_features(scan, float(meta.get("pixel_mm", 5.0))),
        tractor=bool(meta.get("tractor", False)),
    )


def _generated_sample(
    args: tuple[np.random.SeedSequence, int, int, float, dict[str, Any], bool, float | None],
) -> Sample:
    """Render scan ``index`` of a seeded set as ``generate_scans`` does; build its sample.

    With a ``pixel_mm`` the scan is rendered at that pitch (dose scaled by the pixel area).
    """
    from scanvision.synth import render_scan, sample_spec

    child, index, seed, threat_rate, pcfg_dict, with_display, pixel_mm = args
    rng = np.random.default_rng(child)
    pcfg = PreprocessConfig.from_dict(pcfg_dict)
    spec = sample_spec(rng, scan_id=f"SCAN{index:06d}", seed=seed, threat_rate=threat_rate,
                       dual_energy=pcfg.channels == 2)
    if pixel_mm is not None and pixel_mm != spec.pixel_mm:
        spec = replace(spec, pixel_mm=pixel_mm, dose=spec.dose * (pixel_mm / spec.pixel_mm) ** 2)
    scan = render_scan(spec, rng)
    aug_rng = np.random.default_rng([seed, index, 7])
    return build_sample(scan.transmission, scan.transmission_low, scan.mask, scan.meta, pcfg,
                        aug_rng, with_display=with_display)


def _dir_sample(args: tuple[str, int, int, dict[str, Any]]) -> Sample:
    sidecar_path, index, seed, pcfg_dict = args
    path = Path(sidecar_path)
    meta = json.loads(path.read_text())
    files = meta.get("files") or {}
    pcfg = PreprocessConfig.from_dict(pcfg_dict)
    if "image" in files:
        scan = read_scan(path.parent / files["image"])
    elif "high" in files and "low" in files:
        scan = read_dual_energy(path.parent / files["high"], path.parent / files["low"])
    else:
        raise ValueError(
            f"{path}: sidecar has no 'files' entry naming the image(s); expected a scan directory "
            "written by `riskengine generate scans`"
        )
    if scan.kind != "raw16":
        raise ValueError(f"{path}: training needs raw 16-bit scans, got a {scan.kind} image")
    shape = scan.transmission.shape
    mask = read_mask(path.parent / files["mask"], shape) if "mask" in files else np.zeros(shape, bool)
    return build_sample(scan.transmission, scan.transmission_low, mask, meta, pcfg,
                        np.random.default_rng([seed, index, 11]))


def _parallel_map(fn: Callable[[Any], Sample], jobs: Sequence[Any], workers: int,
                  label: str) -> list[Sample]:
    t0 = time.perf_counter()
    out: list[Sample] = []
    if workers <= 1 or len(jobs) < 8:
        out = [fn(j) for j in jobs]
    else:
        # spawn, not fork: the parent may hold torch threads, which do not survive a fork.
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for i, s in enumerate(pool.map(fn, jobs, chunksize=8)):
                out.append(s)
                if (i + 1) % 500 == 0:
                    logger.info("%s: %d/%d scans", label, i + 1, len(jobs))
    logger.info("%s: %d scans in %.0f s", label, len(out), time.perf_counter() - t0)
    return out


def generate_samples(count: int, seed: int, *, threat_rate: float, pcfg: PreprocessConfig,
                     workers: int = 2, with_display: bool = True,
                     pixel_mm: float | None = None) -> list[Sample]:
    """Render ``count`` scans in memory.

    Scan *i* is scan *i* of ``riskengine generate scans --seed SEED --count N --threat-rate R``
    (same content; rendered at ``pixel_mm`` when given, else at the native 5 mm).
    """
    children = np.random.SeedSequence(seed).spawn(count)
    jobs = [(c, i, seed, threat_rate, pcfg.to_dict(), with_display, pixel_mm)
            for i, c in enumerate(children)]
    return _parallel_map(_generated_sample, jobs, workers, f"generate seed {seed}")


def load_samples(data_dir: str | Path, pcfg: PreprocessConfig, *, seed: int = 0,
                 workers: int = 2) -> list[Sample]:
    """Read every scan of a generated scan directory (sidecar ``*.json`` with ``files``)."""
    data_dir = Path(data_dir)
    sidecars = sorted(p for p in data_dir.glob("*.json"))
    if not sidecars:
        raise FileNotFoundError(
            f"no scan sidecars (*.json) in {data_dir}; generate training scans with "
            "`riskengine generate scans --out DIR --count N`"
        )
    jobs = [(str(p), i, seed, pcfg.to_dict()) for i, p in enumerate(sidecars)]
    return _parallel_map(_dir_sample, jobs, workers, f"read {data_dir}")


# --------------------------------------------------------------------------- augmentation


def _resize_chw(img: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in img])


def _window_start(hits: np.ndarray, length: int, window: int, rng: np.random.Generator,
                  keep: float = 0.8) -> int:
    """Start of a random ``window`` in ``[0, length)``; with probability ``keep`` it contains a
    random one of the ``hits`` (concealment rows/columns), so crops rarely lose the positive."""
    last = length - window
    if hits.size and rng.random() < keep:
        c = int(rng.choice(hits))
        return int(rng.integers(max(0, c - window + 1), min(c, last) + 1))
    return int(rng.integers(0, last + 1))


def augment(variant: Variant, rng: np.random.Generator, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Random zoom / crop, air padding, flip, gain and noise of one input and its fraction map."""
    img = variant.image.astype(np.float32)
    frac = variant.frac.astype(np.float32)
    c, h, w = img.shape
    mult = cfg.preprocess.width_multiple
    if rng.random() < cfg.crop_prob:
        hh = int(h * rng.uniform(0.65, 1.0)) if rng.random() < 0.6 else h
        ww = min(w, max(mult * 2, int(w * rng.uniform(0.45, 1.0))))
        y0 = _window_start(np.flatnonzero(frac.any(axis=1)), h, hh, rng)
        x0 = _window_start(np.flatnonzero(frac.any(axis=0)), w, ww, rng)
        img, frac = img[:, y0:y0 + hh, x0:x0 + ww], frac[y0:y0 + hh, x0:x0 + ww]
    elif rng.random() < 0.25:
        # zoom out: the container higher in a frame with more air around it
        pad = int(h * rng.uniform(0.05, 0.35))
        top = int(rng.integers(0, pad + 1))
        img = np.pad(img, ((0, 0), (top, pad - top), (0, 0)))
        frac = np.pad(frac, ((top, pad - top), (0, 0)))
    ch, cw = img.shape[1:]
    new_w = max(mult, int(round(cw * h / ch / mult)) * mult)
    if (ch, cw) != (h, new_w):
        img = _resize_chw(img, new_w, h)
        frac = cv2.resize(frac, (new_w, h), interpolation=cv2.INTER_LINEAR)
    if new_w > cfg.max_train_width:
        x0 = _window_start(np.flatnonzero(frac.any(axis=0)), new_w, cfg.max_train_width, rng)
        x0 = min(x0 // mult * mult, new_w - cfg.max_train_width)
        img = img[:, :, x0:x0 + cfg.max_train_width]
        frac = frac[:, x0:x0 + cfg.max_train_width]
    if rng.random() < 0.5:
        img, frac = img[:, :, ::-1], frac[:, ::-1]
    if variant.kind == "raw16":
        img = img * np.float32(rng.uniform(0.9, 1.1))
    else:
        # display windows differ between vendors: random gamma and contrast on the window
        top = np.float32(cfg.preprocess.clip_max)
        gamma = np.float32(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
        img = top * np.power(img / top, gamma) * np.float32(rng.uniform(0.75, 1.3))
    if rng.random() < 0.5:
        # photon noise grows with attenuation: sigma ~ exp(A / 2)
        sigma = np.float32(rng.uniform(0.0, 0.01)) * np.exp(img * np.float32(cfg.preprocess.atten_scale / 2.0))
        img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    np.clip(img, 0.0, cfg.preprocess.clip_max, out=img)
    return np.ascontiguousarray(img), np.ascontiguousarray(frac)


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    image: torch.Tensor
    width: torch.Tensor
    heat_pos: torch.Tensor
    heat_ignore: torch.Tensor
    label: torch.Tensor
    label_weight: torch.Tensor
    empty: torch.Tensor
    cls: torch.Tensor


def make_batch(items: Sequence[tuple[np.ndarray, np.ndarray]], samples: Sequence[Sample],
               stride: int = 16) -> Batch:
    """Pad inputs to a common width (air) and build all targets."""
    images = [it[0] for it in items]
    batch, widths = pad_batch(images)
    b, _, h, w = batch.shape
    pos = np.zeros((b, h // stride, w // stride), dtype=bool)
    ign = np.zeros_like(pos)
    label = np.zeros(b, dtype=np.float32)
    label_w = np.ones(b, dtype=np.float32)
    for i, (_img, frac) in enumerate(items):
        p, g = cell_targets(frac, stride)
        pos[i, :, : p.shape[1]] = p
        ign[i, :, : g.shape[1]] = g
        label[i] = float(p.any())
        # a concealment cropped to a sliver is neither a clear positive nor a negative
        if samples[i].threat and not p.any() and g.any():
            label_w[i] = 0.0
    return Batch(
        image=torch.from_numpy(batch),
        width=torch.from_numpy(widths),
        heat_pos=torch.from_numpy(pos),
        heat_ignore=torch.from_numpy(ign),
        label=torch.from_numpy(label),
        label_weight=torch.from_numpy(label_w),
        empty=torch.tensor([float(s.empty) for s in samples]),
        cls=torch.tensor([s.cls for s in samples], dtype=torch.int64),
    )


def epoch_batches(samples: Sequence[Sample], cfg: TrainConfig, rng: np.random.Generator) -> Iterator[Batch]:
    """Shuffled, augmented batches; scans of similar width share a batch (less padding)."""
    order = rng.permutation(len(samples))
    group = cfg.batch_size * 8
    batches: list[np.ndarray] = []
    for g0 in range(0, len(order), group):
        chunk = order[g0:g0 + group]
        chunk = chunk[np.argsort([samples[i].variants[0].image.shape[2] for i in chunk], kind="stable")]
        batches.extend(chunk[k:k + cfg.batch_size] for k in range(0, len(chunk), cfg.batch_size))
    for bi in rng.permutation(len(batches)):
        idx = batches[bi]
        items, chosen = [], []
        for i in idx:
            s = samples[i]
            use_display = len(s.variants) > 1 and rng.random() < cfg.display_prob
            items.append(augment(s.variants[1 if use_display else 0], rng, cfg))
            chosen.append(s)
        yield make_batch(items, chosen)


def compute_losses(out: dict[str, torch.Tensor], batch: Batch, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """The four training losses and their weighted total."""
    heat = out["heatmap_logits"][:, 0]
    valid = out["heat_mask"][:, 0] & ~batch.heat_ignore
    target = batch.heat_pos.to(heat.dtype)
    bce = F.binary_cross_entropy_with_logits(
        heat, target, pos_weight=torch.tensor(cfg.pos_weight), reduction="none")
    heat_loss = (bce * valid).sum() / valid.sum().clamp(min=1)
    img = F.binary_cross_entropy_with_logits(out["score_logit"], batch.label, weight=batch.label_weight)
    empty = F.binary_cross_entropy_with_logits(out["empty_logit"], batch.empty)
    cls = F.cross_entropy(out["class_logits"], batch.cls)
    total = (cfg.heat_weight * heat_loss + cfg.image_weight * img + cfg.empty_weight * empty
             + cfg.class_weight * cls)
    return {"total": total, "heat": heat_loss, "image": img, "empty": empty, "class": cls}


# --------------------------------------------------------------------------- evaluation


@dataclass
class Predictions:
    """Network outputs on a set of scans (one variant each)."""

    score_logit: np.ndarray
    empty_prob: np.ndarray
    class_pred: np.ndarray


def predict_torch(model: ScanTriageNet, images: Sequence[np.ndarray], batch_size: int = 16) -> Predictions:
    """Uncalibrated pooled logits, empty probability and class of preprocessed inputs."""
    from scanvision.infer import width_batches

    model.eval()
    n = len(images)
    score = np.zeros(n, dtype=np.float64)
    empty = np.zeros(n, dtype=np.float64)
    cls = np.zeros(n, dtype=np.int64)
    with torch.no_grad():
        for idx in width_batches([im.shape[2] for im in images], batch_size):
            batch, widths = pad_batch([images[i].astype(np.float32) for i in idx])
            out = model.forward_train(torch.from_numpy(batch), torch.from_numpy(widths))
            score[idx] = out["score_logit"].numpy()
            empty[idx] = torch.sigmoid(out["empty_logit"]).numpy()
            cls[idx] = out["class_logits"].argmax(1).numpy()
    return Predictions(score, empty, cls)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN with a single class."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def threshold_at_far(neg_scores: np.ndarray, far: float) -> float:
    """Smallest threshold whose false-alarm rate on ``neg_scores`` is at most ``far``.

    An alarm is ``score > threshold``; with *n* negatives at most ``floor(far * n)`` of them
    may exceed it.
    """
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64))[::-1]
    k = int(math.floor(far * len(neg)))
    if len(neg) == 0:
        return float("nan")
    return float(neg[min(k, len(neg) - 1)])


def detection_report(labels: np.ndarray, scores: np.ndarray, masses: np.ndarray,
                     fars: Sequence[float] = (0.01, 0.05)) -> dict[str, Any]:
    """AUC, thresholds at the given false-alarm rates and Pd per threat mass bin."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    masses = np.asarray(masses, dtype=np.float64)
    report: dict[str, Any] = {
        "auc": roc_auc(labels, scores),
        "n_negative": int((~labels).sum()),
        "n_positive": int(labels.sum()),
        "at_far": {},
    }
    for far in fars:
        thr = threshold_at_far(scores[~labels], far)
        fa = float((scores[~labels] > thr).mean()) if (~labels).any() else float("nan")
        bins = []
        for lo, hi in MASS_BINS_KG:
            sel = labels & (masses >= lo) & (masses < hi)
            bins.append({
                "mass_kg": [lo, hi], "n": int(sel.sum()),
                "pd": float((scores[sel] > thr).mean()) if sel.any() else None,
            })
        ge5 = labels & (masses >= 5)
        report["at_far"][f"{far:g}"] = {
            "threshold": thr,
            "measured_false_alarm_rate": fa,
            "pd_all": float((scores[labels] > thr).mean()) if labels.any() else None,
            "pd_ge_5kg": float((scores[ge5] > thr).mean()) if ge5.any() else None,
            "by_mass": bins,
        }
    return report


def _selection_metric(samples: Sequence[Sample], preds: Sequence[Predictions]) -> tuple[float, dict[str, float]]:
    labels = np.array([s.threat for s in samples])
    masses = np.array([s.threat_mass_kg for s in samples])
    details: dict[str, float] = {}
    parts = []
    for p, name in zip(preds, ("raw", "display"), strict=False):
        rep = detection_report(labels, p.score_logit, masses, fars=(0.05,))
        pd5 = rep["at_far"]["0.05"]["pd_ge_5kg"] or 0.0
        details[f"{name}_auc"] = rep["auc"]
        details[f"{name}_pd_ge5kg_at_5pct"] = pd5
        parts.append(0.5 * pd5 + 0.5 * rep["auc"])
    p0 = preds[0]
    details["empty_accuracy"] = float(((p0.empty_prob > 0.5) == np.array([s.empty for s in samples])).mean())
    details["class_accuracy"] = float((p0.class_pred == np.array([s.cls for s in samples])).mean())
    # detection first; the pooled heads break ties
    metric = float(np.mean(parts)) + 0.1 * (details["empty_accuracy"] + details["class_accuracy"])
    return metric, details


def _variant_images(samples: Sequence[Sample], k: int) -> list[np.ndarray]:
    return [s.variants[min(k, len(s.variants) - 1)].image for s in samples]


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Logistic (Platt) map ``sigmoid(a * logit + b)`` fitted by maximum likelihood."""
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        raise ValueError(
            "score calibration needs validation scans with and without concealments, got only "
            f"label {labels[0]}; generate more scans or raise the threat rate"
        )
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(np.asarray(logits, dtype=np.float64).reshape(-1, 1), labels)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def fit_mass_calibration(samples: Sequence[Sample]) -> dict[str, Any]:
    """Least-squares map from the physics integral and scan size to the cargo mass.

    The physics integral ``sum(-ln T) / mu * pixel area`` weighs everything in the beam
    (container tare, chassis, cargo, with a nominal ``mu``); the fit subtracts the structure
    (which scales with the scan's length and height) and corrects ``mu``; it minimises the
    squared relative error (loads under 1 t count as 1 t). Scans that show the
    tractor unit are left out: its engine weighs tonnes and is not part of the container.
    """
    samples = [s for s in samples if not s.tractor]
    feats = np.array([[s.mass_features[k] for k in MASS_FEATURES] for s in samples], dtype=np.float64)
    target = np.array([s.cargo_mass_kg for s in samples], dtype=np.float64)
    ok = np.isfinite(feats).all(axis=1)
    if ok.sum() < len(MASS_FEATURES) + 2:
        raise ValueError(f"mass calibration needs raw scans; got {int(ok.sum())} usable")
    design = np.column_stack([feats[ok], np.ones(int(ok.sum()))])
    # least squares on the *relative* error (the card reports % error): without the weights a
    # few very heavy loads (steel coils, IBC tanks) pull the line away from typical cargo
    w = 1.0 / np.maximum(target[ok], 1000.0)
    coef, *_ = np.linalg.lstsq(design * w[:, None], target[ok] * w, rcond=None)
    pred = np.maximum(design @ coef, 0.0)
    loaded = target[ok] > 0
    ape = np.abs(pred[loaded] - target[ok][loaded]) / target[ok][loaded]
    return {
        "method": "linear",
        "mu_m_cm2_g": NOMINAL_MU_M_CM2_G,
        "pixel_mm": 5.0,
        "features": list(MASS_FEATURES),
        "coef": dict(zip(MASS_FEATURES, coef[:-1].round(6).tolist(), strict=True)),
        "intercept": round(float(coef[-1]), 3),
        "formula": "mass_kg = max(0, sum_k coef[k] * feature[k] + intercept)",
        "fit_n": int(ok.sum()),
        "fit_median_abs_pct_error_loaded": round(float(np.median(ape) * 100), 2) if ape.size else None,
    }


# --------------------------------------------------------------------------- training


def optimise_epoch(model: ScanTriageNet, batches: Iterator[Any],
                   loss_fn: Callable[[dict[str, torch.Tensor], Any], dict[str, torch.Tensor]],
                   opt: torch.optim.Optimizer, sched: Any) -> tuple[dict[str, float], int]:
    """One pass of optimiser steps (gradients clipped at 5); summed losses and the step count.

    ``batches`` yields objects with ``image`` and ``width`` (attributes or keys);
    ``loss_fn(outputs, batch)`` returns the losses with their weighted ``"total"``.
    """
    sums: dict[str, float] = {}
    n = 0
    for batch in batches:
        image, width = ((batch["image"], batch["width"]) if isinstance(batch, dict)
                        else (batch.image, batch.width))
        losses = loss_fn(model.forward_train(image, width), batch)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        n += 1
    return sums, n


def train_model(train: Sequence[Sample], val: Sequence[Sample], cfg: TrainConfig,
                log: Callable[[str], None] | None = None) -> tuple[ScanTriageNet, dict[str, Any]]:
    """Train a fresh network; keep the epoch with the best validation metric; calibrate."""
    if not train or not val:
        raise ValueError(f"need training and validation scans, got {len(train)} and {len(val)}")
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng([cfg.seed, 42])
    model = create_model(cfg.model_name, in_channels=cfg.preprocess.channels, num_classes=len(CARGO_CLASSES))
    logger.info("model %s: %d parameters", cfg.model_name, count_parameters(model))
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.15)
    val_sets = [_variant_images(val, 0)]
    if any(len(s.variants) > 1 for s in val):
        val_sets.append(_variant_images(val, 1))

    best: tuple[float, int, dict[str, torch.Tensor], dict[str, float]] | None = None
    history = []
    t_start = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        sums, n = optimise_epoch(model, epoch_batches(train, cfg, rng),
                                 lambda out, batch: compute_losses(out, batch, cfg), opt, sched)
        preds = [predict_torch(model, imgs) for imgs in val_sets]
        metric, details = _selection_metric(val, preds)
        row = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 1),
               **{f"loss_{k}": round(v / n, 4) for k, v in sums.items()},
               "val_metric": round(metric, 4), **{k: round(v, 4) for k, v in details.items()}}
        history.append(row)
        msg = " ".join(f"{k}={v}" for k, v in row.items())
        logger.info("epoch %s", msg)
        if log is not None:
            log(msg)
        if best is None or metric > best[0]:
            best = (metric, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}, details)
    assert best is not None
    model.load_state_dict(best[2])
    model.eval()
    # Platt calibration on validation scans (raw and display together).
    val_preds = [predict_torch(model, imgs) for imgs in val_sets]
    logits = np.concatenate([p.score_logit for p in val_preds])
    labels = np.concatenate([[s.threat for s in val] for _ in val_preds])
    a, b = fit_platt(logits, labels)
    model.set_score_calibration(a, b)
    summary = {
        "best_epoch": best[1],
        "val": {k: round(v, 4) for k, v in best[3].items()},
        "history": history,
        "train_seconds": round(time.perf_counter() - t_start, 1),
        "score_calibration": {"scale": a, "bias": b},
        "parameters": count_parameters(model),
    }
    return model, summary


def _export_samples(samples: Sequence[Sample], n: int = 4) -> list[np.ndarray]:
    """Parity inputs of several widths (both variants when present)."""
    by_width: dict[int, np.ndarray] = {}
    for s in samples:
        for v in s.variants:
            by_width.setdefault(v.image.shape[2], v.image.astype(np.float32))
        if len(by_width) >= n:
            break
    return list(by_width.values())[:n]


def train_from_dir(data_dir: str | Path, out_dir: str | Path, cfg: TrainConfig) -> dict[str, Any]:
    """Train on a scan directory (split by ``cfg.val_fraction``), export to ``out_dir``.

    Returns:
        A JSON-ready summary (sizes, best epoch, validation metrics).
    """
    samples = load_samples(data_dir, cfg.preprocess, seed=cfg.seed, workers=cfg.workers)
    n_val = max(1, int(round(cfg.val_fraction * len(samples))))
    if len(samples) - n_val < 1:
        raise ValueError(f"{data_dir}: {len(samples)} scan(s) is too few to train; generate more")
    perm = np.random.default_rng(cfg.seed).permutation(len(samples))
    val = [samples[i] for i in perm[:n_val]]
    train = [samples[i] for i in perm[n_val:]]
    model, summary = train_model(train, val, cfg)
    mass_cal = fit_mass_calibration(train)
    training = {"source": "directory", "data_dir": str(data_dir), "n_train": len(train),
                "n_val": len(val), "config": cfg.to_dict(), "best_epoch": summary["best_epoch"],
                "train_seconds": summary["train_seconds"]}
    save_model_dir(model, out_dir, model_name=cfg.model_name, preprocess=cfg.preprocess.to_dict(),
                   samples=_export_samples(val), mass_calibration=mass_cal, training=training,
                   metrics={"validation": summary["val"]})
    return {"n_train": len(train), "n_val": len(val), "best_epoch": summary["best_epoch"],
            "val_auc": summary["val"].get("raw_auc"),
            "val_empty_accuracy": summary["val"].get("empty_accuracy"),
            "val_class_accuracy": summary["val"].get("class_accuracy"),
            "out": str(out_dir)}


# --------------------------------------------------------------------------- shipped model


def _eval_chunk(args: tuple[Any, ...]) -> dict[str, Any]:
    """Render evaluation scan ``index`` (raw16 counts + a random display image) and its truth."""
    from scanvision.synth import render_scan, sample_spec, to_display8

    child, index, seed, threat_rate, channels, mix = args
    rng = np.random.default_rng(child)
    spec = sample_spec(rng, scan_id=f"SCAN{index:06d}", seed=seed, threat_rate=threat_rate,
                       dual_energy=channels == 2, **mix)
    r = render_scan(spec, rng)
    raw = transmission_to_raw16(r.transmission)
    d8 = to_display8(raw16_to_transmission(raw), np.random.default_rng([seed, index, 13]))
    return {"raw": raw, "raw_low": None if r.transmission_low is None else transmission_to_raw16(r.transmission_low),
            "display": d8, "meta": r.meta}


def evaluate_model_dir(model_dir: str | Path, count: int, seed: int, *, threat_rate: float = 0.5,
                       workers: int = 2, chunk: int = 64,
                       mix: dict[str, float] | None = None) -> dict[str, Any]:
    """Evaluate an exported model (ONNX Runtime, the serving code) on freshly generated scans.

    Scan *i* equals scan *i* of ``riskengine generate scans --seed SEED --count COUNT
    --threat-rate R``. Reports detection (raw and display images), empty and cargo-class
    accuracy and the mass-estimate error. ``mix`` overrides ``tractor_rate`` / ``bulk_rate`` of
    :func:`scanvision.synth.sample_spec` (both 0: the scans of generator 1.0).
    """
    mix = dict(mix or {})
    from scanvision.infer import ScanTriage

    engine = ScanTriage(model_dir, threads=2)
    children = np.random.SeedSequence(seed).spawn(count)
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    pool = (ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))
            if workers > 1 else None)
    try:
        for c0 in range(0, count, chunk):
            jobs = [(children[i], i, seed, threat_rate, engine.channels, mix)
                    for i in range(c0, min(count, c0 + chunk))]
            items = list(pool.map(_eval_chunk, jobs)) if pool else [_eval_chunk(j) for j in jobs]
            raw_scans, disp_scans = [], []
            for it in items:
                t = raw16_to_transmission(it["raw"])
                tl = None if it["raw_low"] is None else raw16_to_transmission(it["raw_low"])
                raw_scans.append(Scan(t, tl, "raw16", None, t.shape[1], t.shape[0], it["meta"]))
                d = it["display"]
                disp_scans.append(Scan(display8_to_transmission(d), None, "display8", None, d.shape[1], d.shape[0]))
            res_raw = engine.triage(raw_scans)
            res_disp = engine.triage(disp_scans) if engine.channels == 1 else [None] * len(items)
            for it, rr, rd in zip(items, res_raw, res_disp, strict=True):
                m = it["meta"]
                rows.append({
                    "threat": bool(m["threats"]),
                    "threat_mass_kg": float(sum(t["mass_kg"] for t in m["threats"])),
                    "threat_types": [t["type"] for t in m["threats"]],
                    "threat_locations": [t["location"] for t in m["threats"]],
                    "empty": bool(m["empty"]), "family": m["cargo_family"], "size": m["size"],
                    "tractor": bool(m.get("tractor")), "bulk_cargo": m.get("bulk_cargo"),
                    "cargo_mass_kg": float(m["cargo_mass_kg"]),
                    "score_raw": rr.concealment_score,
                    "score_display": None if rd is None else rd.concealment_score,
                    "empty_prob": rr.empty_probability, "empty_prob_display": None if rd is None else rd.empty_probability,
                    "class": rr.cargo_class, "class_display": None if rd is None else rd.cargo_class,
                    "mass_kg": rr.estimated_mass_kg,
                })
            logger.info("evaluated %d/%d scans", len(rows), count)
    finally:
        if pool is not None:
            pool.shutdown()
    out = summarize_evaluation(rows, seed=seed, threat_rate=threat_rate,
                               seconds=time.perf_counter() - t0)
    out["mix"] = mix
    return out


#: ``sample_spec`` rates that give the scans of generator 1.0 (no tractor, default packing).
GENERATOR_1_0_MIX = {"tractor_rate": 0.0, "bulk_rate": 0.0}


def _short_report(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an evaluation (for a second test mix in the sidecar)."""
    out: dict[str, Any] = {"seed": evaluation["seed"], "count": evaluation["count"], "mix": evaluation.get("mix")}
    for kind in ("raw", "display"):
        if kind in evaluation:
            rep = evaluation[kind]
            out[kind] = {"auc": rep["auc"],
                         "pd_ge_5kg_at_1pct": rep["at_far"]["0.01"]["pd_ge_5kg"],
                         "pd_ge_5kg_at_5pct": rep["at_far"]["0.05"]["pd_ge_5kg"],
                         "threshold_1pct": rep["at_far"]["0.01"]["threshold"]}
    return out


def reevaluate_model_dir(model_dir: str | Path, count: int = 1000, seed: int = 20240, *,
                         threat_rate: float = 0.5, workers: int = 2,
                         reference_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate an existing model directory again (current generator mix and generator 1.0),
    store the figures in its ``config.json`` and rewrite the card."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config.json"
    config = json.loads(cfg_path.read_text())
    evaluation = evaluate_model_dir(model_dir, count, seed, threat_rate=threat_rate, workers=workers)
    config["metrics"]["test"] = evaluation
    config["metrics"]["test_generator_1_0"] = _short_report(
        evaluate_model_dir(model_dir, count, seed, threat_rate=threat_rate, workers=workers,
                           mix=GENERATOR_1_0_MIX))
    if reference_dir is not None and Path(reference_dir).is_dir():
        config["metrics"]["real_display_images"] = triage_reference_images(model_dir, reference_dir)
    cfg_path.write_text(json.dumps(config, indent=2) + "\n")
    write_card_from_sidecar(model_dir)
    return config["metrics"]


def summarize_evaluation(rows: Sequence[dict[str, Any]], *, seed: int, threat_rate: float,
                         seconds: float = 0.0) -> dict[str, Any]:
    """Metrics of :func:`evaluate_model_dir` from its per-scan rows."""
    labels = np.array([r["threat"] for r in rows])
    masses = np.array([r["threat_mass_kg"] for r in rows])
    out: dict[str, Any] = {"seed": seed, "count": len(rows), "threat_rate": threat_rate,
                           "seconds": round(seconds, 1)}
    out["raw"] = detection_report(labels, np.array([r["score_raw"] for r in rows]), masses)
    if rows and rows[0]["score_display"] is not None:
        out["display"] = detection_report(labels, np.array([r["score_display"] for r in rows]), masses)
    empty = np.array([r["empty"] for r in rows])
    out["empty_accuracy"] = float(((np.array([r["empty_prob"] for r in rows]) > 0.5) == empty).mean())
    out["class_accuracy"] = float((np.array([r["class"] for r in rows]) == np.array([r["family"] for r in rows])).mean())
    if rows and rows[0]["score_display"] is not None:
        out["empty_accuracy_display"] = float(
            ((np.array([r["empty_prob_display"] for r in rows]) > 0.5) == empty).mean())
        out["class_accuracy_display"] = float(
            (np.array([r["class_display"] for r in rows]) == np.array([r["family"] for r in rows])).mean())
    # the tractor's engine is not cargo: the mass estimate is for scans of container + trailer
    loaded = [r for r in rows if r["cargo_mass_kg"] > 0 and r["mass_kg"] is not None and not r.get("tractor")]
    if loaded:
        ape = np.array([abs(r["mass_kg"] - r["cargo_mass_kg"]) / r["cargo_mass_kg"] for r in loaded])
        out["mass_median_abs_pct_error"] = float(np.median(ape) * 100)
        out["mass_p90_abs_pct_error"] = float(np.quantile(ape, 0.9) * 100)
    empties = [r for r in rows if r["cargo_mass_kg"] == 0 and r["mass_kg"] is not None]
    if empties:
        out["mass_median_abs_kg_error_empty"] = float(np.median([r["mass_kg"] for r in empties]))
    # Pd by concealment location at the 1 % threshold (raw), for the card
    thr = out["raw"]["at_far"]["0.01"]["threshold"]
    by_loc: dict[str, list[int]] = {}
    for r in rows:
        if r["threat"] and r["threat_mass_kg"] >= 5:
            for loc in set(r["threat_locations"]):
                by_loc.setdefault(loc, []).append(int(r["score_raw"] > thr))
    out["raw_pd_ge5kg_at_1pct_by_location"] = {k: {"n": len(v), "pd": float(np.mean(v))} for k, v in sorted(by_loc.items())}
    # false alarms at that threshold by what the clean scan shows (raw and display)
    fa: dict[str, dict[str, list[int]]] = {}
    thr_d = out["display"]["at_far"]["0.01"]["threshold"] if "display" in out else None
    for r in rows:
        if r["threat"]:
            continue
        keys = ["all", f"family={r['family']}", f"tractor={bool(r.get('tractor'))}",
                f"bulk_cargo={r.get('bulk_cargo') or 'none'}"]
        for k in keys:
            d = fa.setdefault(k, {"raw": [], "display": []})
            d["raw"].append(int(r["score_raw"] > thr))
            if thr_d is not None:
                d["display"].append(int(r["score_display"] > thr_d))
    out["false_alarm_at_1pct_threshold_by_group"] = {
        k: {"n": len(v["raw"]), "raw": float(np.mean(v["raw"])),
            "display": float(np.mean(v["display"])) if v["display"] else None}
        for k, v in sorted(fa.items())}
    by_family: dict[str, list[int]] = {}
    for r in rows:
        by_family.setdefault(r["family"], []).append(int(r["class"] == r["family"]))
    out["class_accuracy_by_family"] = {k: {"n": len(v), "accuracy": float(np.mean(v))} for k, v in sorted(by_family.items())}
    return out


def triage_reference_images(model_dir: str | Path, reference_dir: str | Path) -> list[dict[str, Any]]:
    """Triage real display images (not shipped, not trained on) for the model card."""
    from scanvision.infer import ScanTriage, TriageError, triage_paths

    paths = sorted(Path(reference_dir).glob("*.jpg"))
    engine = ScanTriage(model_dir, threads=2)
    rows = []
    for item in triage_paths(paths, triage=engine):
        if isinstance(item, TriageError):
            rows.append({"file": Path(item.path).name, "error": item.error})
            continue
        rows.append({"file": Path(item.path or "").name, "concealment_score": item.concealment_score,
                     "empty_probability": item.empty_probability, "cargo_class": item.cargo_class,
                     "class_probability": item.class_probabilities[item.cargo_class]})
    return rows


def time_model_only(model_dir: str | Path, width: int, *, threads: int = 2, warmup: int = 5,
                    iters: int = 50) -> dict[str, Any]:
    """ONNX Runtime latency of the network alone on one ``192 x width`` input (no decode or
    preprocessing): warm-up runs, then timed runs; median, p90 and scans per second."""
    import platform

    import psutil

    from scanvision.infer import ScanTriage

    engine = ScanTriage(model_dir, threads=threads)
    h = engine.preprocess_config.height
    x = np.random.default_rng(0).random((1, engine.channels, h, width), dtype=np.float32) * 0.3
    feeds = {"image": x, "width": np.array([width], dtype=np.int64)}
    for _ in range(warmup):
        engine.session.run(None, feeds)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        engine.session.run(None, feeds)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000.0
    return {
        "input": [1, engine.channels, h, width], "threads": threads, "iters": iters,
        "median_ms": round(float(np.median(ms)), 2), "p90_ms": round(float(np.quantile(ms, 0.9)), 2),
        "scans_per_s": round(float(1000.0 / np.median(ms)), 1),
        "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} logical CPUs",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def plot_pd_vs_mass(evaluation: dict[str, Any], path: str | Path) -> Path:
    """Pd per threat mass bin at 1 % and 5 % false alarms (raw and display images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    centers = [math.sqrt(lo * hi) for lo, hi in MASS_BINS_KG]
    for kind, style in (("raw", "-"), ("display", "--")):
        if kind not in evaluation:
            continue
        for far, colour in (("0.01", "tab:red"), ("0.05", "tab:blue")):
            bins = evaluation[kind]["at_far"][far]["by_mass"]
            xs = [c for c, b in zip(centers, bins, strict=True) if b["pd"] is not None]
            ys = [b["pd"] for b in bins if b["pd"] is not None]
            ax.plot(xs, ys, style, marker="o", color=colour,
                    label=f"{kind} 16-bit, FA {float(far):.0%}" if kind == "raw" else f"8-bit display, FA {float(far):.0%}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("concealed mass per scan (kg, bin centre)")
    ax.set_ylabel("probability of detection")
    ax.axhline(0.95, color="grey", lw=0.8, ls=":")
    ax.set_title(f"Scan triage: Pd vs concealed mass ({evaluation['count']} test scans, seed {evaluation['seed']})",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.1%}" if pct else f"{x:.3f}"


def write_model_card(out_dir: str | Path, config: dict[str, Any], evaluation: dict[str, Any],
                     reference: list[dict[str, Any]] | None, command: str) -> Path:
    """Write ``MODEL_CARD.md`` from the sidecar and the evaluation."""
    out = Path(out_dir)
    tr = config["training"]
    lines = [
        "# Scan triage CNN (`models/scanvision`)",
        "",
        "Triage of container X-ray scans: a concealment score (0–1) with a coarse heatmap of where "
        "to look, an empty/loaded verdict, the cargo family and an estimate of the cargo mass. "
        "Served by `scanvision.infer.ScanTriage` / `riskengine triage` with ONNX Runtime.",
        "",
        "## Reproduce",
        "",
        "```",
        command,
        "```",
        "",
        f"Fixed seeds: training scans `--seed {tr['seed']}` ({tr['n_train']} scans), validation "
        f"scans seed {tr['val_seed']} ({tr['n_val']} scans), test scans seed {evaluation['seed']} "
        f"({evaluation['count']} scans, never used in training or model selection). Scan *i* of a "
        "seed equals scan *i* of `riskengine generate scans --seed SEED --count N "
        f"--threat-rate {tr['threat_rate']}`; training scans are rendered at "
        f"{tr['config']['render_pixel_mm'] or 5} mm pixels (dose scaled to the pixel area), "
        "validation and test scans at the native 5 mm.",
        "",
        f"Build time: {tr.get('build_seconds', 0) / 60:.1f} min in all (scan generation "
        f"{tr['generate_seconds'] / 60:.1f} min with {tr['config']['workers']} processes, training "
        f"{tr['train_seconds'] / 60:.1f} min on {tr['threads']} CPU thread(s), best epoch "
        f"{tr['best_epoch']} of {tr['config']['epochs']}; the rest: export, test, timing).",
        "",
        *_transfer_lines(tr),
        "## Model",
        "",
        f"- Architecture `{config['model_name']}`: torchvision MobileNetV3-small features "
        f"(width x{config['architecture']['width_mult']}, `weights=None`, trained from scratch, "
        "squeeze-and-excitation blocks removed so that every output cell depends only on its "
        f"neighbourhood), {tr['parameters']:,} parameters; 1-channel stem (log-attenuation); a stride-16 "
        "feature-pyramid heatmap head; image score = top-k mean of the heatmap logits "
        f"(k={config['architecture']['topk']}), learned affine, Platt calibration; empty and "
        "cargo-class heads on masked global average pooling.",
        f"- Input: `{config['input_height']}` px high, any width (multiple of 32), "
        f"`preprocess` = `{json.dumps(config['preprocess'])}`. Batches of mixed widths are padded "
        "with air; the `width` input masks the padding out of the pooled outputs.",
        f"- Outputs: {', '.join(f'`{o}`' for o in config['outputs'])}; classes: "
        f"{', '.join(config['class_names'])}.",
        "- Score calibration: Platt scaling fitted on the validation scans at a "
        f"{tr['threat_rate']:.0%} threat prevalence, so `score / (1 - score)` is the image "
        "likelihood ratio when the prevalence is 50 %.",
        "- Training: AdamW, one-cycle learning rate, batches of "
        f"{tr['config']['batch_size']}; every scan both as raw 16-bit transmission and as an "
        "8-bit display image (random, often hard window; downscale; JPEG) through the same "
        "preprocessing; random crops and zoom, air padding, flips, attenuation gain, noise, "
        f"random display gamma. Losses: heatmap-cell BCE (positive cells weighted "
        f"x{tr['config']['pos_weight']:g}), image-score BCE, empty BCE, cargo-class "
        "cross-entropy. The epoch with the best validation detection is kept.",
        "- Mass: `sum(-ln T) / mu * pixel area` over the raw 16-bit image, mapped to the cargo "
        "mass by a linear fit on the training scans (subtracts container and chassis; scans that "
        "show the tractor unit are left out of the fit and of the error figures below); "
        "`null` for 8-bit display images.",
        "",
        "## Test results (generated scans, ONNX Runtime, the shipped artifact)",
        "",
        _mix_sentence(config, evaluation),
        "",
    ]
    for kind, title in (("raw", "Raw 16-bit transmission"), ("display", "8-bit display images (random window, downscale, JPEG)")):
        if kind not in evaluation:
            continue
        rep = evaluation[kind]
        lines += [
            f"### {title}",
            "",
            f"AUC **{rep['auc']:.4f}** ({rep['n_positive']} scans with a concealment, "
            f"{rep['n_negative']} without).",
            "",
            "| threat mass per scan | n | Pd at 1 % FA | Pd at 5 % FA |",
            "|---|---:|---:|---:|",
        ]
        b1 = rep["at_far"]["0.01"]["by_mass"]
        b5 = rep["at_far"]["0.05"]["by_mass"]
        for x1, x5 in zip(b1, b5, strict=True):
            lo, hi = x1["mass_kg"]
            lines.append(f"| {lo:g}–{hi:g} kg | {x1['n']} | {_fmt(x1['pd'], True)} | {_fmt(x5['pd'], True)} |")
        a1, a5 = rep["at_far"]["0.01"], rep["at_far"]["0.05"]
        lines += [
            f"| **≥ 5 kg** | {sum(b['n'] for b in b1[1:])} | **{_fmt(a1['pd_ge_5kg'], True)}** | "
            f"**{_fmt(a5['pd_ge_5kg'], True)}** |",
            f"| all | {rep['n_positive']} | {_fmt(a1['pd_all'], True)} | {_fmt(a5['pd_all'], True)} |",
            "",
            f"Thresholds: {a1['threshold']:.4f} (1 % FA; measured {a1['measured_false_alarm_rate']:.2%}), "
            f"{a5['threshold']:.4f} (5 % FA; measured {a5['measured_false_alarm_rate']:.2%}). "
            f"With {rep['n_negative']} clean scans a 1 % false-alarm rate is set by "
            f"{int(rep['n_negative'] * 0.01)} scans: treat it as an estimate.",
            "",
        ]
    lines += _false_alarm_lines(evaluation)
    v10 = config["metrics"].get("test_generator_1_0")
    if v10:
        lines += [
            "Same test seed without the tractor unit and bulk packing (generator 1.0 scans, "
            "the test set of earlier cards):",
            "",
            "| image | AUC | Pd ≥ 5 kg at 1 % FA | Pd ≥ 5 kg at 5 % FA |",
            "|---|---:|---:|---:|",
        ]
        for kind in ("raw", "display"):
            if kind in v10:
                r = v10[kind]
                lines.append(f"| {kind} | {r['auc']:.4f} | {_fmt(r['pd_ge_5kg_at_1pct'], True)} | "
                             f"{_fmt(r['pd_ge_5kg_at_5pct'], True)} |")
        lines.append("")
    ge5 = evaluation["raw"]["at_far"]["0.01"]["pd_ge_5kg"]
    verdict = "met" if ge5 is not None and ge5 >= 0.95 else "NOT met"
    lines += [
        f"Target Pd ≥ 0.95 at 1 % false alarms for concealments ≥ 5 kg (raw scans): **{verdict}** "
        f"({_fmt(ge5, True)}).",
        "",
        "![Pd vs mass](pd_vs_mass.png)",
        "",
        "Pd (≥ 5 kg, raw, 1 % FA) by concealment location:",
        "",
        "| location | n | Pd |",
        "|---|---:|---:|",
    ]
    for loc, v in evaluation["raw_pd_ge5kg_at_1pct_by_location"].items():
        lines.append(f"| {loc} | {v['n']} | {_fmt(v['pd'], True)} |")
    lines += [
        "",
        "| other metric | raw 16-bit | 8-bit display |",
        "|---|---:|---:|",
        f"| empty / loaded accuracy | {_fmt(evaluation['empty_accuracy'], True)} | "
        f"{_fmt(evaluation.get('empty_accuracy_display'), True)} |",
        f"| cargo-class accuracy (9 classes) | {_fmt(evaluation['class_accuracy'], True)} | "
        f"{_fmt(evaluation.get('class_accuracy_display'), True)} |",
        f"| mass estimate, median abs % error (loaded) | {_fmt(evaluation.get('mass_median_abs_pct_error'))} % | – |",
        f"| mass estimate, 90th pct abs % error (loaded) | {_fmt(evaluation.get('mass_p90_abs_pct_error'))} % | – |",
        "",
        "Cargo-class accuracy by family (raw): "
        + ", ".join(f"{k} {v['accuracy']:.0%} (n={v['n']})" for k, v in evaluation["class_accuracy_by_family"].items())
        + ".",
        "",
    ]
    timing = config["metrics"].get("onnx_model_only_40ft") or []
    if timing:
        lines += ["## Speed (ONNX Runtime, CPU, network only)", "",
                  "| input | threads | median ms | p90 ms | scans/s |", "|---|---:|---:|---:|---:|"]
        for t in timing:
            lines.append(f"| {t['input'][2]}x{t['input'][3]} | {t['threads']} | {t['median_ms']} | "
                         f"{t['p90_ms']} | {t['scans_per_s']} |")
        lines += ["", f"Measured on {timing[0]['machine']} (1-min load average "
                  f"{timing[0]['load_average_1min']} while measuring: the machine was shared); "
                  "decoding and preprocessing come on top (see benchmarks/).", ""]
    lines += _real_site_lines(config.get("metrics", {}).get("real_site_scans"))
    lines += ["## Real display images", ""]
    if reference:
        lines += [
            "Six real 8-bit display scans (public AJNA project images, see "
            "`../shared/data/xray_reference/README.md` beside the checkout; not in this repository "
            "and never trained on), triaged with the shipped model:",
            "",
            "| file | concealment score | empty probability | cargo class (p) |",
            "|---|---:|---:|---|",
        ]
        for r in reference:
            if "error" in r:
                lines.append(f"| {r['file']} | error: {r['error']} | | |")
            else:
                lines.append(f"| {r['file']} | {r['concealment_score']:.3f} | "
                             f"{r['empty_probability']:.3f} | {r['cargo_class']} ({r['class_probability']:.2f}) |")
        lines.append("")
    else:
        lines += ["No reference images were available when this card was written.", ""]
    lines += [
        "## Limits",
        "",
        "- Trained only on synthetic scans (`scanvision.synth`: 6 MeV side view, 5 mm pixels, "
        "container + optional chassis). Real scanners differ in geometry, energy, detector and "
        "display window; validate on local scans with known outcomes before relying on the "
        "score. `riskengine scanner calibrate` maps a scanner's cleared-scan scores onto the "
        "distribution these thresholds were set on (see docs/scan_model_selection.md).",
        "- Small concealments (1–5 kg), especially bags thinly spread behind the doors, are "
        "near the noise floor and often missed; dense cargo (machinery, drums) hides more.",
        "- The mass estimate needs raw transmission and the scanner's pixel pitch "
        "(`pixel_mm` in the scan sidecar, 5 mm assumed otherwise).",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in config["versions"].items()) + ".",
        "",
    ]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def _transfer_lines(tr: dict[str, Any]) -> list[str]:
    """Card lines of the transfer stage (``scanvision.transfer``), when the model had one."""
    t = tr.get("transfer")
    if not t:
        return []
    val = t.get("val", {})
    return [
        "### Transfer stage",
        "",
        "```",
        t.get("command", "python -m scanvision.transfer"),
        "```",
        "",
        f"The model above was then fine-tuned for {t['epochs']} epochs (best epoch "
        f"{t['best_epoch']}, lr {t['lr']:g}, batch norms frozen) on {t['n_views']:,} views of "
        f"{t['n_scans']:,} new generated scans (seed {t['seed']}; validation seed {t['val_seed']}): "
        "each scan raw and as a display export re-exported as other vendors do (resized to "
        "600-800 px high, unsharp masking, blur, noise, pseudo-colour to grey, JPEG 50-97), and "
        "clean scans again with threats projected into their display export "
        "(`scanvision.tip`, the projection `riskengine scanner adapt` uses on real scans). "
        f"Validation AUC after the stage: raw {val.get('raw_auc', float('nan')):.3f}, display "
        f"{val.get('display_auc', float('nan')):.3f}, projected threats "
        f"{val.get('tip_auc', float('nan')):.3f}.",
        "",
    ]


def _real_site_lines(site: dict[str, Any] | None) -> list[str]:
    """Card lines of the real site scans (measured, never trained on), when recorded."""
    if not site:
        return []
    st = site.get("by_state", {})
    s10 = site.get("brick_stacks_ge_10kg", {})
    return [
        "## Real site scans, before any adaptation",
        "",
        f"{site['n_scans']} real 8-bit display scans of one port (`xray_site_dev`, not in this "
        "repository, never trained on), each clean and with threats projected in "
        f"({site['views']['threat']} threat views, 1-500 kg; `python benchmarks/site_adaptation.py "
        "--base-only`):",
        "",
        "| | AUC |",
        "|---|---:|",
        f"| all threats | {site['auc']:.3f} |",
        *[f"| {k} containers | {v['auc']:.3f} |" for k, v in st.items()],
        f"| brick stacks ≥ 10 kg | {s10.get('auc', float('nan')):.3f} |",
        f"| empty vs loaded (empty head) | {site.get('empty_auc', float('nan')):.3f} |",
        "",
        f"Heatmap peak on the threat: {site['pointing_accuracy']:.1%}. The concealment score does "
        "not transfer to these real scans: it fires on real container structure and dense "
        "cargo as often as on the projected threats. Adapt the model to a site's own cleared "
        "scans (`riskengine scanner adapt`, docs/site_adaptation.md) before using its alarms.",
        "",
    ]


def _mix_sentence(config: dict[str, Any], evaluation: dict[str, Any]) -> str:
    from scanvision.synth import BULK_RATE, GENERATOR_VERSION, TRACTOR_RATE

    mix = evaluation.get("mix") or {}
    if "mix" not in evaluation:
        return "Test scans of generator 1.0 (no tractor unit, default packing)."
    tractor = mix.get("tractor_rate", TRACTOR_RATE)
    bulk = mix.get("bulk_rate", BULK_RATE)
    return (f"Test scans of generator {GENERATOR_VERSION}: {tractor:.0%} of the scans on a trailer show "
            f"the tractor unit, {bulk:.0%} of the loaded boxes of families with a bulk packing hold "
            "large uniform packages (big bags, reels, rolls, cable drums, coils, IBC tanks).")


def _false_alarm_lines(evaluation: dict[str, Any]) -> list[str]:
    groups = evaluation.get("false_alarm_at_1pct_threshold_by_group")
    if not groups:
        return []
    lines = ["False alarms among the clean test scans at the 1 % thresholds, by what the scan shows:", "",
             "| clean scans | n | raw | display |", "|---|---:|---:|---:|"]
    for key in sorted(groups, key=lambda k: (k != "all", k)):
        v = groups[key]
        lines.append(f"| {key} | {v['n']} | {_fmt(v['raw'], True)} | {_fmt(v['display'], True)} |")
    return lines + [""]


def write_card_from_sidecar(model_dir: str | Path) -> Path:
    """(Re)write ``MODEL_CARD.md`` and ``pd_vs_mass.png`` from the metrics in ``config.json``."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    evaluation = (config.get("metrics") or {}).get("test")
    if not evaluation:
        raise ValueError(
            f"{model_dir}/config.json holds no test metrics; build the model with "
            "`python -m scanvision.train` to evaluate it first"
        )
    plot_pd_vs_mass(evaluation, model_dir / "pd_vs_mass.png")
    return write_model_card(model_dir, config, evaluation,
                            config["metrics"].get("real_display_images"),
                            config["training"].get("command", ""))


def build_shipped_model(
    out_dir: str | Path,
    *,
    count: int = 3000,
    val_count: int = 300,
    eval_count: int = 1000,
    eval_seed: int = 20240,
    reference_dir: str | Path | None = None,
    cfg: TrainConfig | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Generate scans, train, export, evaluate on a held-out seed, write card and plot.

    Seeds: training scans ``cfg.seed``, validation ``cfg.seed + 1``, test ``eval_seed``.
    """
    cfg = cfg or TrainConfig()
    if eval_seed in (cfg.seed, cfg.seed + 1):
        raise ValueError(f"eval_seed {eval_seed} must differ from the training seeds {cfg.seed}, {cfg.seed + 1}")
    t0 = time.perf_counter()
    train = generate_samples(count, cfg.seed, threat_rate=cfg.threat_rate, pcfg=cfg.preprocess,
                             workers=cfg.workers, pixel_mm=cfg.render_pixel_mm)
    val = generate_samples(val_count, cfg.seed + 1, threat_rate=cfg.threat_rate, pcfg=cfg.preprocess,
                           workers=cfg.workers)
    gen_seconds = time.perf_counter() - t0
    model, summary = train_model(train, val, cfg)
    mass_cal = fit_mass_calibration(train)
    training = {
        "source": "generated", "generator": "scanvision.synth", "seed": cfg.seed,
        "val_seed": cfg.seed + 1, "n_train": count, "n_val": val_count,
        "threat_rate": cfg.threat_rate, "threads": cfg.threads, "config": cfg.to_dict(),
        "best_epoch": summary["best_epoch"], "train_seconds": summary["train_seconds"],
        "generate_seconds": round(gen_seconds, 1), "parameters": summary["parameters"],
        "history": summary["history"],
    }
    parity_samples = _export_samples(val)
    del train
    config_path = save_model_dir(model, out_dir, model_name=cfg.model_name,
                                 preprocess=cfg.preprocess.to_dict(), samples=parity_samples,
                                 mass_calibration=mass_cal, training=training,
                                 metrics={"validation": summary["val"]})
    evaluation = evaluate_model_dir(out_dir, eval_count, eval_seed, threat_rate=cfg.threat_rate,
                                    workers=cfg.workers)
    evaluation_1_0 = evaluate_model_dir(out_dir, eval_count, eval_seed, threat_rate=cfg.threat_rate,
                                        workers=cfg.workers, mix=GENERATOR_1_0_MIX)
    reference = None
    if reference_dir is not None and Path(reference_dir).is_dir():
        reference = triage_reference_images(out_dir, reference_dir)
    config = json.loads(config_path.read_text())
    config["metrics"]["test"] = evaluation
    config["metrics"]["test_generator_1_0"] = _short_report(evaluation_1_0)
    # a 40 ft scan: 2538 x 849 px at 5 mm -> 576 px wide at 192 px; 768 for a tight crop
    config["metrics"]["onnx_model_only_40ft"] = [time_model_only(out_dir, w) for w in (576, 768)]
    if reference is not None:
        config["metrics"]["real_display_images"] = reference
    config["training"]["build_seconds"] = round(time.perf_counter() - t0, 1)
    config["training"]["command"] = command
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    write_card_from_sidecar(out_dir)
    logger.info("built %s in %.1f min", out_dir, (time.perf_counter() - t0) / 60)
    return {"out": str(out_dir), "minutes": round((time.perf_counter() - t0) / 60, 1),
            "test": evaluation, "reference": reference}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m scanvision.train``: build the shipped scan model (see module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generate", type=int, default=4500, help="training scans to generate")
    parser.add_argument("--val", type=int, default=300, help="validation scans to generate")
    parser.add_argument("--eval", type=int, default=1000, help="test scans for the model card")
    parser.add_argument("--eval-seed", type=int, default=20240, help="seed of the test scans")
    parser.add_argument("--seed", type=int, default=1, help="seed of training (and seed+1 validation)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--model", default=TrainConfig.model_name, help="registry name")
    parser.add_argument("--out", default="models/scanvision", help="model directory")
    parser.add_argument("--reference-dir", default=None,
                        help="directory of real display JPEGs to report in the card (not trained on)")
    parser.add_argument("--workers", type=int, default=2, help="processes rendering scans")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (at most 2)")
    parser.add_argument("--card-only", action="store_true",
                        help="only rewrite MODEL_CARD.md and the plot from --out's config.json")
    parser.add_argument("--eval-only", action="store_true",
                        help="evaluate the model in --out again (test seed, both generator mixes, "
                             "--reference-dir) and rewrite its card; no training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.card_only:
        write_card_from_sidecar(args.out)
        return 0
    if args.eval_only:
        reevaluate_model_dir(args.out, args.eval, args.eval_seed, workers=args.workers,
                             reference_dir=args.reference_dir)
        return 0
    cfg = TrainConfig(model_name=args.model, epochs=args.epochs, seed=args.seed,
                      workers=args.workers, threads=args.threads)
    parts = ["python -m scanvision.train", f"--generate {args.generate}", f"--val {args.val}",
             f"--eval {args.eval}", f"--eval-seed {args.eval_seed}", f"--seed {args.seed}",
             f"--epochs {args.epochs}", f"--model {args.model}", f"--out {args.out}"]
    if args.reference_dir:
        parts.append(f"--reference-dir {args.reference_dir}")
    build_shipped_model(args.out, count=args.generate, val_count=args.val, eval_count=args.eval,
                        eval_seed=args.eval_seed, reference_dir=args.reference_dir, cfg=cfg,
                        command=" ".join(parts))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Run the imported module, not this __main__ copy, so that worker processes and pickled
    # samples refer to `scanvision.train` and log under its name.
    from scanvision.train import main as _main

    raise SystemExit(_main())
