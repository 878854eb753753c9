"""Site adaptation: fit the scan model to one port from that port's own cleared scans.

A port has thousands of scans of containers released or inspected as clean, and almost no
seizures. :func:`adapt_to_site` fine-tunes a scan model directory on those backgrounds with
threats projected into them (:mod:`scanvision.tip`), keeps a share of the site's scans out
of fitting, measures the adapted model (and the model it started from) on the held-out scans
with freshly drawn threats, sets the site's alarm thresholds from the held-out clean scans,
and writes a model directory that ``riskengine triage --model``, the service
(``RISKENGINE_SCAN_MODEL``) and ``riskengine bench scanner --model`` load as they are.

The shipped ONNX graph is the starting point (no PyTorch checkpoint has to travel with a
model): :func:`torch_model_from_onnx` rebuilds the network with the exported weights, whose
batch norms were folded into the convolutions, and checks it against ONNX Runtime.

Example::

    scans = load_site_scans(sorted(Path("cleared").glob("*.jpg")), labels_csv="labels.csv")
    result = adapt_to_site(scans, "models/scanvision-rtm", AdaptConfig(epochs=40))
    result["holdout"]["adapted"]["auc"]
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scanvision.io import (
    DEFAULT_MAX_PIXELS,
    ScanReadError,
    display8_to_transmission,
    raw16_to_transmission,
    transmission_to_display8,
)
from scanvision.io import (
    Scan as _Scan,
)
from scanvision.preprocess import PreprocessConfig, preprocess
from scanvision.tip import (
    THREAT_MIX,
    DisplayMapping,
    ScanGeometry,
    Threat,
    draw_threat,
    estimate_geometry,
    jpeg_roundtrip,
    project_threat,
)

logger = logging.getLogger(__name__)

#: Key of the site adaptation record in a model's ``config.json``.
SITE_KEY = "site_adaptation"
#: Threat mass bands (kg) of the held-out report.
HOLDOUT_MASS_BANDS: tuple[tuple[float, float], ...] = ((1, 5), (5, 10), (10, 50), (50, 500))
#: False-alarm rates at which the site's thresholds are set.
SITE_FARS: tuple[float, ...] = (0.01, 0.05)
#: Working height of training images (2x the network input: threats are drawn at a
#: resolution finer than the network sees, as they are in a full-resolution scan).
WORK_HEIGHT = 384


class SiteScanError(ValueError):
    """The site's scans cannot be used for adaptation (the message says why and what to do)."""


# --------------------------------------------------------------------------- site scans


@dataclass
class SiteScan:
    """One cleared scan of the site: its pixels as the scanner wrote them, and its label.

    ``pixels`` is uint8 grey for display images, uint16 counts for raw scans.
    """

    path: str
    kind: str
    pixels: np.ndarray = field(repr=False)
    state: str | None = None  # "empty" / "loaded" / None (unlabelled)


def _read_pixels(path: Path, max_pixels: int) -> tuple[np.ndarray, str]:
    from scanvision.io import _decode

    if not path.is_file():
        raise FileNotFoundError(f"scan file not found: {path}")
    img, kind = _decode(path.read_bytes(), str(path), max_pixels)
    return img, kind


def read_labels(labels_csv: str | Path) -> dict[str, str]:
    """``file -> state`` from a CSV with columns ``file`` and ``state`` (``empty``/``loaded``).

    Other columns are ignored. Keys are the ``file`` values as written and their base names.

    Raises:
        SiteScanError: missing columns or a state other than empty / loaded (row named).
    """
    path = Path(labels_csv)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in ("file", "state") if c not in cols]
        if missing:
            raise SiteScanError(
                f"{path}: labels CSV needs columns 'file' and 'state' (empty|loaded); missing "
                f"{missing}, found {cols}")
        out: dict[str, str] = {}
        for i, row in enumerate(reader, start=2):
            state = (row.get("state") or "").strip().lower()
            if state not in ("empty", "loaded"):
                raise SiteScanError(
                    f"{path} line {i}: state {row.get('state')!r} for {row.get('file')!r}; "
                    "expected 'empty' or 'loaded'")
            f = (row.get("file") or "").strip()
            out[f] = state
            out.setdefault(Path(f).name, state)
    return out


def load_site_scans(
    paths: Sequence[str | Path],
    *,
    labels_csv: str | Path | None = None,
    min_scans: int = 20,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    on_skip: Callable[[str, str], None] | None = None,
) -> list[SiteScan]:
    """Read a site's cleared scans; unreadable files are reported and skipped.

    Raises:
        SiteScanError: fewer than ``min_scans`` readable scans, or raw and display images mixed.
    """
    labels = read_labels(labels_csv) if labels_csv is not None else {}
    scans: list[SiteScan] = []
    skipped: list[tuple[str, str]] = []
    for p in paths:
        p = Path(p)
        try:
            img, kind = _read_pixels(p, max_pixels)
        except (ScanReadError, OSError, ValueError) as exc:
            skipped.append((str(p), str(exc)))
            if on_skip is not None:
                on_skip(str(p), str(exc))
            else:
                logger.warning("skipped %s: %s", p, exc)
            continue
        state = None
        if labels:
            parts = p.parts
            for k in range(len(parts)):
                key = "/".join(parts[k:])
                if key in labels:
                    state = labels[key]
                    break
        scans.append(SiteScan(str(p), kind, img, state))
    kinds = sorted({s.kind for s in scans})
    if len(kinds) > 1:
        counts = ", ".join(f"{sum(s.kind == k for s in scans)} {k}" for k in kinds)
        raise SiteScanError(
            f"the site's scans mix image kinds ({counts}); adapt to raw 16-bit and 8-bit display "
            "exports separately (one model directory each)")
    if len(scans) < min_scans:
        raise SiteScanError(
            f"{len(scans)} readable scan(s) ({len(skipped)} unreadable); site adaptation needs at "
            f"least {min_scans} cleared scans of the site, better 100 or more")
    if labels and not any(s.state for s in scans):
        raise SiteScanError(
            f"{labels_csv}: no row matches any of the {len(scans)} scans; its 'file' column must "
            "name the scan files (relative paths or base names)")
    return scans


# --------------------------------------------------------------------------- image domain


def _grey_view(pixels: np.ndarray, kind: str) -> np.ndarray:
    """An 8-bit view for geometry and saturation checks (raw scans: the default window)."""
    if kind == "display8":
        return pixels
    return transmission_to_display8(raw16_to_transmission(pixels))


def _resize_work(pixels: np.ndarray, kind: str, height: int) -> np.ndarray:
    """Downscale to ``height`` rows (attenuation-preserving for raw scans)."""
    h, w = pixels.shape
    if h <= height:
        return pixels
    nw = max(1, round(w * height / h))
    if kind == "display8":
        return cv2.resize(pixels, (nw, height), interpolation=cv2.INTER_AREA)
    a = -np.log(raw16_to_transmission(pixels))
    a = cv2.resize(a, (nw, height), interpolation=cv2.INTER_AREA)
    return np.clip(np.rint(np.exp(-a) * 65535.0), 0, 65535).astype(np.uint16)


def _project(pixels: np.ndarray, kind: str, threat: Threat, mapping: DisplayMapping,
             rng: np.random.Generator, mu: float) -> tuple[np.ndarray, np.ndarray]:
    if kind == "display8":
        return project_threat(pixels, threat, mapping, rng, mu_m_cm2_g=mu)
    # raw counts: the transmission is known, the projection is exact
    grey = _grey_view(pixels, kind)
    zero = np.zeros_like(grey)
    _, mask = project_threat(zero, threat, DisplayMapping(255.0, 0.0), None, mu_m_cm2_g=mu)
    th = np.zeros(pixels.shape, np.float32)
    t = threat.thickness_cm
    hh, ww = min(t.shape[0], th.shape[0] - threat.y), min(t.shape[1], th.shape[1] - threat.x)
    th[threat.y:threat.y + hh, threat.x:threat.x + ww] = t[:hh, :ww]
    th = cv2.GaussianBlur(th, (0, 0), 0.8)
    out = pixels.astype(np.float32) * np.exp(-th * np.float32(mu * threat.density_g_cm3))
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16), mask


def _to_scan(pixels: np.ndarray, kind: str) -> _Scan:
    h, w = pixels.shape
    t = display8_to_transmission(pixels) if kind == "display8" else raw16_to_transmission(pixels)
    return _Scan(t, None, kind, None, w, h)  # type: ignore[arg-type]


@dataclass
class _Prepared:
    """A site scan at the working resolution, with what threat drawing needs."""

    kind: str
    pixels: np.ndarray
    grey: np.ndarray
    geometry: ScanGeometry
    mapping: DisplayMapping
    state: str | None


def _prepare(scan: SiteScan, height: int | None) -> _Prepared:
    px = scan.pixels if height is None else _resize_work(scan.pixels, scan.kind, height)
    grey = _grey_view(px, scan.kind)
    return _Prepared(scan.kind, px, grey, estimate_geometry(grey), DisplayMapping.estimate(grey),
                     scan.state)


def _draw_view(p: _Prepared, rng: np.random.Generator, *, threat: bool, mass_kg: float | None = None,
               kind: str | None = None, randomise: bool = True, jpeg_quality: int | None = None,
               ) -> tuple[np.ndarray, np.ndarray, Threat | None]:
    """One view of a prepared scan, with or without a projected threat.

    With ``randomise`` the display window of the projection and the organic attenuation
    coefficient are drawn at random (domain randomisation); clean and threat views go through
    the same JPEG round trip so that re-encoding is never a cue.
    """
    pixels, mask, th = p.pixels, np.zeros(p.pixels.shape, bool), None
    if threat:
        mapping = p.mapping
        mu = 0.027
        if randomise:
            mapping = mapping.with_window(float(np.exp(rng.uniform(np.log(1.5), np.log(10.0)))),
                                          float(rng.uniform(0.9, 2.2)))
            mu = float(rng.uniform(0.02, 0.04))
        th = draw_threat(rng, p.geometry, p.grey, mass_kg=mass_kg, kind=kind, mapping=mapping)
        pixels, mask = _project(p.pixels, p.kind, th, mapping, rng, mu)
    if p.kind == "display8":
        q = jpeg_quality
        if q is None and randomise and rng.random() < 0.7:
            q = int(rng.integers(70, 99))
        if q is not None:
            pixels = jpeg_roundtrip(pixels, q)
    return pixels, mask, th


# --------------------------------------------------------------------------- the network


def torch_model_from_onnx(model_dir: str | Path, *, check: bool = True):
    """Rebuild the PyTorch network of a model directory from its ONNX graph.

    The exporter folded each batch norm into its convolution; the rebuilt network keeps the
    batch-norm layers as learnable affine maps with unit statistics (``running_var = 1 - eps``),
    so it computes exactly what the graph computes and can be fine-tuned with the batch norms
    frozen (``eval`` mode), as is usual when fine-tuning on small batches.

    Raises:
        ValueError: the graph does not match the architecture in ``config.json``, or the
            rebuilt network does not reproduce ONNX Runtime's outputs.
    """
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    from scanvision.infer import load_model_config
    from scanvision.model import create_model

    model_dir = Path(model_dir)
    config = load_model_config(model_dir)
    spec = config.get("architecture") or {}
    model = create_model(config["model_name"], in_channels=int(config["channels"]),
                         num_classes=len(config["class_names"]),
                         **{k: v for k, v in spec.items() if k not in ("backbone", "heatmap_stride")})
    graph = onnx.load(str(model_dir / config.get("onnx_file", "model.onnx"))).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}

    # convolutions in execution order (forward hooks), each with the batch norm that follows it
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, int(config["channels"]), int(config["input_height"]), 64))
    for h in hooks:
        h.remove()
    bn_after: dict[int, nn.BatchNorm2d] = {}
    for mod in model.modules():
        kids = list(mod.children())
        for a, b in zip(kids, kids[1:], strict=False):
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                bn_after[id(a)] = b
    conv_nodes = [n for n in graph.node if n.op_type == "Conv"]
    if len(conv_nodes) != len(order):
        raise ValueError(
            f"{model_dir}: the ONNX graph has {len(conv_nodes)} convolutions, the architecture "
            f"{config['model_name']} has {len(order)}; the directory's config.json does not "
            "describe its graph")
    with torch.no_grad():
        for node, conv in zip(conv_nodes, order, strict=True):
            w = inits[node.input[1]]
            if tuple(w.shape) != tuple(conv.weight.shape):
                raise ValueError(f"{model_dir}: convolution {node.name} has weights {w.shape}, "
                                 f"expected {tuple(conv.weight.shape)}")
            conv.weight.copy_(torch.from_numpy(np.array(w)))
            bias = inits[node.input[2]] if len(node.input) > 2 else np.zeros(w.shape[0], np.float32)
            bn = bn_after.get(id(conv))
            if bn is not None:
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(np.array(bias)))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
            elif conv.bias is not None:
                conv.bias.copy_(torch.from_numpy(np.array(bias)))
            else:
                raise ValueError(f"{model_dir}: convolution {node.name} has a bias the network lacks")
        named = dict(model.named_parameters()) | dict(model.named_buffers())
        for name, arr in inits.items():
            if name in named:
                named[name].copy_(torch.from_numpy(np.array(arr)).reshape(named[name].shape))
    if check:
        _check_against_onnx(model, model_dir, config)
    return model


def _check_against_onnx(model: Any, model_dir: Path, config: dict[str, Any]) -> None:
    import torch

    from scanvision.infer import ScanTriage

    rng = np.random.default_rng(0)
    h = int(config["input_height"])
    x = (rng.random((2, int(config["channels"]), h, 256)) * 1.2).astype(np.float32)
    widths = np.array([256, 192], dtype=np.int64)
    x[1, :, :, 192:] = 0
    engine = ScanTriage(model_dir)
    ref = engine.session.run(list(config["outputs"]), {"image": x, "width": widths})
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(x), torch.from_numpy(widths))
    worst = max(float(np.abs(a.numpy() - b).max()) for a, b in zip(out, ref, strict=True))
    if worst > 1e-3:
        raise ValueError(f"{model_dir}: the network rebuilt from model.onnx differs from ONNX "
                         f"Runtime by {worst:.2e}; the graph's layout is not the one expected")


def _freeze_batchnorm(model: Any) -> None:
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


# --------------------------------------------------------------------------- training


@dataclass
class AdaptConfig:
    """Settings of one site adaptation (all recorded in the adapted model's sidecar).

    Attributes:
        epochs: passes over the fitting scans (each pass sees every scan clean and with a threat).
        batch_size: views per optimiser step.
        lr: peak learning rate (cosine decay after a short warm-up).
        holdout: share of the site's scans kept out of fitting and used for the report.
        seed: seeds the split, threats, augmentation and weights' updates.
        max_train_width: training views are cropped to this width (network pixels).
        threat_views: threat views per clean view in each pass.
        heat_weight, image_weight, empty_weight, class_weight: loss weights.
        pos_weight: weight of heatmap cells inside a threat.
        threads: torch CPU threads.
        device: ``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu`` or ``cuda``.
        holdout_draws: threats drawn per held-out scan and mass band (half brick stacks).
    """

    epochs: int = 40
    batch_size: int = 12
    lr: float = 1e-3
    weight_decay: float = 1e-4
    holdout: float = 0.25
    seed: int = 0
    max_train_width: int = 384
    threat_views: int = 2
    heat_weight: float = 4.0
    image_weight: float = 1.0
    empty_weight: float = 0.5
    class_weight: float = 0.2
    pos_weight: float = 30.0
    threads: int = 2
    device: str = "auto"
    holdout_draws: int = 2

    def __post_init__(self) -> None:
        if not 0.0 < self.holdout < 0.9:
            raise ValueError(f"holdout must be in (0, 0.9), got {self.holdout}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")


def split_holdout(n: int, share: float, seed: int, states: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(fit, holdout)``, stratified by empty/loaded label when there is one."""
    rng = np.random.default_rng([seed, 101])
    hold: list[int] = []
    for st in sorted({s or "" for s in states}):
        idx = np.flatnonzero([(s or "") == st for s in states])
        rng.shuffle(idx)
        k = int(round(len(idx) * share))
        hold.extend(idx[:k].tolist())
    hold_arr = np.array(sorted(hold), dtype=np.int64)
    fit = np.setdiff1d(np.arange(n), hold_arr)
    return fit, hold_arr


def _view_tensor(pixels: np.ndarray, mask: np.ndarray, kind: str, pcfg: PreprocessConfig
                 ) -> tuple[np.ndarray, np.ndarray]:
    from scanvision.train import mask_fraction

    x = preprocess(_to_scan(pixels, kind), pcfg)
    frac = mask_fraction(mask, x.shape[2], x.shape[1])
    return x, frac


def _crop_flip(x: np.ndarray, frac: np.ndarray, rng: np.random.Generator, max_w: int, mult: int
               ) -> tuple[np.ndarray, np.ndarray]:
    from scanvision.train import _window_start

    w = x.shape[2]
    if w > max_w:
        x0 = _window_start(np.flatnonzero(frac.any(axis=0)), w, max_w, rng, keep=0.9)
        x0 = min(x0 // mult * mult, w - max_w)
        x, frac = x[:, :, x0:x0 + max_w], frac[:, x0:x0 + max_w]
    if rng.random() < 0.5:
        x, frac = x[:, :, ::-1], frac[:, ::-1]
    x = x * np.float32(rng.uniform(0.92, 1.08))
    return np.ascontiguousarray(x), np.ascontiguousarray(frac)


def _epoch_views(prepared: Sequence[_Prepared], cfg: AdaptConfig, pcfg: PreprocessConfig,
                 rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, float, str | None]]:
    views = []
    for p in prepared:
        for threat in [False] + [True] * cfg.threat_views:
            pixels, mask, _ = _draw_view(p, rng, threat=threat)
            x, frac = _view_tensor(pixels, mask, p.kind, pcfg)
            x, frac = _crop_flip(x, frac, rng, cfg.max_train_width, pcfg.width_multiple)
            np.clip(x, 0.0, pcfg.clip_max, out=x)
            views.append((x, frac, float(threat), p.state))
    order = rng.permutation(len(views))
    return [views[i] for i in order]


def _batches(views: list, cfg: AdaptConfig, empty_index: int, device: Any):
    import torch

    from scanvision.export import pad_batch
    from scanvision.train import cell_targets

    # similar widths share a batch (less padding)
    order = np.argsort([v[0].shape[2] for v in views], kind="stable")
    groups = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
    for gi in np.random.default_rng(len(views)).permutation(len(groups)):
        idx = groups[gi]
        batch, widths = pad_batch([views[i][0] for i in idx])
        b, _, h, w = batch.shape
        pos = np.zeros((b, h // 16, w // 16), bool)
        ign = np.zeros_like(pos)
        label = np.zeros(b, np.float32)
        label_w = np.ones(b, np.float32)
        empty = np.zeros(b, np.float32)
        empty_w = np.zeros(b, np.float32)
        for j, i in enumerate(idx):
            p, g = cell_targets(views[i][1], 16)
            pos[j, :, : p.shape[1]] = p
            ign[j, :, : g.shape[1]] = g
            label[j] = float(p.any())
            if views[i][2] and not p.any():
                label_w[j] = 0.0  # the threat was cropped away or hidden: no image label
            st = views[i][3]
            if st is not None:
                empty[j], empty_w[j] = float(st == "empty"), 1.0
        t = {k: torch.from_numpy(v).to(device) for k, v in dict(
            image=batch, width=widths, pos=pos, ign=ign, label=label, label_w=label_w,
            empty=empty, empty_w=empty_w).items()}
        t["empty_index"] = empty_index
        yield t


def _losses(out: dict[str, Any], t: dict[str, Any], cfg: AdaptConfig) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    heat = out["heatmap_logits"][:, 0]
    valid = out["heat_mask"][:, 0] & ~t["ign"]
    bce = F.binary_cross_entropy_with_logits(heat, t["pos"].to(heat.dtype),
                                             pos_weight=torch.tensor(cfg.pos_weight, device=heat.device),
                                             reduction="none")
    heat_loss = (bce * valid).sum() / valid.sum().clamp(min=1)
    img = F.binary_cross_entropy_with_logits(out["score_logit"], t["label"], weight=t["label_w"])
    ew = t["empty_w"]
    n_lab = ew.sum().clamp(min=1)
    empty = (F.binary_cross_entropy_with_logits(out["empty_logit"], t["empty"], reduction="none")
             * ew).sum() / n_lab
    # cargo class head: labelled empty scans are class "empty", labelled loaded ones are not
    logp = torch.log_softmax(out["class_logits"], dim=1)[:, t["empty_index"]]
    p_empty = logp.exp().clamp(max=1 - 1e-6)
    cls = (-(t["empty"] * logp + (1 - t["empty"]) * torch.log1p(-p_empty)) * ew).sum() / n_lab
    total = (cfg.heat_weight * heat_loss + cfg.image_weight * img + cfg.empty_weight * empty
             + cfg.class_weight * cls)
    return {"total": total, "heat": heat_loss, "image": img, "empty": empty, "class": cls}


def fine_tune(model: Any, prepared: Sequence[_Prepared], cfg: AdaptConfig, pcfg: PreprocessConfig,
              class_names: Sequence[str],
              progress: Callable[[int, int, dict[str, float]], None] | None = None) -> list[dict[str, Any]]:
    """Fine-tune ``model`` in place on threat-projected views of ``prepared`` scans."""
    import torch

    from scanvision.train import optimise_epoch

    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, cfg.threads))
    model.to(device)
    rng = np.random.default_rng([cfg.seed, 7])
    views_per_epoch = len(prepared) * (1 + cfg.threat_views)
    steps = cfg.epochs * math.ceil(views_per_epoch / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps,
                                                pct_start=0.1, anneal_strategy="cos")
    empty_index = list(class_names).index("empty") if "empty" in class_names else 0
    history = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        _freeze_batchnorm(model)
        views = _epoch_views(prepared, cfg, pcfg, rng)
        sums, n = optimise_epoch(model, _batches(views, cfg, empty_index, device),
                                 lambda out, t: _losses(out, t, cfg), opt, sched)
        row = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 1),
               **{f"loss_{k}": round(v / max(n, 1), 4) for k, v in sums.items()}}
        history.append(row)
        logger.info("adapt epoch %s", " ".join(f"{k}={v}" for k, v in row.items()))
        if progress is not None:
            progress(epoch, cfg.epochs, row)
    model.to("cpu").eval()
    return history


def _torch_scores(model: Any, images: Sequence[np.ndarray]) -> np.ndarray:
    from scanvision.train import predict_torch

    return predict_torch(model, images, batch_size=8).score_logit


def calibrate_on_fit_scans(model: Any, prepared: Sequence[_Prepared], pcfg: PreprocessConfig,
                           seed: int) -> tuple[float, float]:
    """Platt map of the pooled score from fresh threat draws into the fitting scans."""
    from scanvision.train import fit_platt

    rng = np.random.default_rng([seed, 23])
    images, labels = [], []
    for p in prepared:
        for threat in (False, True):
            pixels, mask, _ = _draw_view(p, rng, threat=threat)
            images.append(_view_tensor(pixels, mask, p.kind, pcfg)[0])
            labels.append(threat)
    a, b = fit_platt(_torch_scores(model, images), np.array(labels))
    model.set_score_calibration(a, b)
    return a, b


# --------------------------------------------------------------------------- held-out report


def _peak_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> bool:
    """Is the heatmap's peak cell on the threat (its full-resolution footprint touches it)?"""
    r, c = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    H, W = mask.shape
    rows, cols = heatmap.shape
    # the heatmap spans the network input, which spans the scan: map the cell back
    y0, y1 = int(r * H / rows), int(math.ceil((r + 1) * H / rows))
    x0, x1 = int(c * W / cols), int(math.ceil((c + 1) * W / cols))
    return bool(mask[y0:y1, x0:x1].any())


def holdout_views(scans: Sequence[SiteScan], seed: int, draws: int = 2) -> list[dict[str, Any]]:
    """Held-out views at full resolution: each scan clean, and with fresh threats per mass band.

    Half the threats of each band are brick stacks, the rest drawn from the other kinds. All
    views go through one JPEG round trip (quality 92) for display scans. The same seed gives
    the same views, so two models are compared on identical images.
    """
    rng = np.random.default_rng([seed, 311])
    others = [k for k in THREAT_MIX if k != "brick_stack"]
    views = []
    for i, s in enumerate(scans):
        p = _prepare(s, None)
        px, _, _ = _draw_view(p, rng, threat=False, randomise=False, jpeg_quality=92)
        views.append({"scan": i, "state": s.state, "threat": False, "pixels": px,
                      "mask": None, "mass_kg": 0.0, "kind": None})
        for lo, hi in HOLDOUT_MASS_BANDS:
            for d in range(draws):
                kind = "brick_stack" if d % 2 == 0 else str(rng.choice(others))
                mass = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
                px, mask, th = _draw_view(p, rng, threat=True, mass_kg=mass, kind=kind,
                                          randomise=True, jpeg_quality=92)
                views.append({"scan": i, "state": s.state, "threat": True, "pixels": px,
                              "mask": mask, "mass_kg": mass, "kind": kind})
    return views


def evaluate_views(model_dir: str | Path, views: Sequence[dict[str, Any]], kind: str,
                   *, thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """Score held-out views with a model directory (ONNX Runtime, as served) and report.

    Thresholds at 1 % / 5 % false alarms come from the clean views unless given.
    """
    from scanvision.infer import ScanTriage
    from scanvision.train import roc_auc, threshold_at_far

    engine = ScanTriage(model_dir, threads=2, batch_size=4)
    scores, empty_p, pointed = [], [], []
    for c0 in range(0, len(views), 8):
        part = views[c0:c0 + 8]
        res = engine.triage([_to_scan(v["pixels"], kind) for v in part])
        for v, r in zip(part, res, strict=True):
            scores.append(r.concealment_score)
            empty_p.append(r.empty_probability)
            pointed.append(_peak_in_mask(r.heatmap, v["mask"]) if v["threat"] else None)
    scores_a = np.array(scores)
    threat = np.array([v["threat"] for v in views])
    state = np.array([v["state"] or "unlabelled" for v in views])
    mass = np.array([v["mass_kg"] for v in views])
    tkind = np.array([v["kind"] or "" for v in views])
    clean = scores_a[~threat]
    thr = thresholds or {f"{f:g}": threshold_at_far(clean, f) for f in SITE_FARS}

    def pd(sel: np.ndarray, far: str) -> float | None:
        return float((scores_a[sel] > thr[far]).mean()) if sel.any() else None

    report: dict[str, Any] = {
        "n_clean": int((~threat).sum()), "n_threat": int(threat.sum()),
        "auc": roc_auc(threat, scores_a), "thresholds": thr,
        "false_alarm_rate": {f: float((clean > t).mean()) for f, t in thr.items()},
        "pointing_accuracy": float(np.mean([p for p in pointed if p is not None])),
        "by_state": {}, "by_mass": [], "brick_stacks_ge_10kg": {},
    }
    for st in sorted(set(state)):
        sel = state == st
        report["by_state"][st] = {
            "n_clean": int((sel & ~threat).sum()), "n_threat": int((sel & threat).sum()),
            "auc": roc_auc(threat[sel], scores_a[sel]),
            **{f"pd_at_{f}": pd(sel & threat, f) for f in thr},
            "stacks_ge_10kg": {f"pd_at_{f}": pd(sel & threat & (mass >= 10) & (tkind == "brick_stack"), f)
                               for f in thr},
        }
    for lo, hi in HOLDOUT_MASS_BANDS:
        sel = threat & (mass >= lo) & (mass < hi)
        report["by_mass"].append({"mass_kg": [lo, hi], "n": int(sel.sum()),
                                  **{f"pd_at_{f}": pd(sel, f) for f in thr},
                                  "auc": roc_auc(threat[sel | ~threat], scores_a[sel | ~threat])})
    ge10 = threat & (mass >= 10) & (tkind == "brick_stack")
    report["brick_stacks_ge_10kg"] = {
        "n": int(ge10.sum()), "auc": roc_auc(threat[ge10 | ~threat], scores_a[ge10 | ~threat]),
        **{f"pd_at_{f}": pd(ge10, f) for f in thr}}
    lab = np.array([v["state"] in ("empty", "loaded") for v in views]) & ~threat
    if lab.any():
        report["empty_auc"] = roc_auc(state[lab] == "empty", np.array(empty_p)[lab])
        report["empty_accuracy"] = float(((np.array(empty_p)[lab] > 0.5) == (state[lab] == "empty")).mean())
    return report


# --------------------------------------------------------------------------- the whole job


def _sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapt_to_site(
    scans: Sequence[SiteScan],
    out_dir: str | Path,
    cfg: AdaptConfig | None = None,
    *,
    base_dir: str | Path | None = None,
    site: str = "site",
    progress: Callable[[str, int, int], None] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Fine-tune ``base_dir`` (default: the shipped model) on a site's cleared scans.

    Writes ``out_dir`` (refused when it exists and is not empty) with ``model.onnx``,
    ``config.json`` (the site record under :data:`SITE_KEY`, thresholds included) and
    ``MODEL_CARD.md``. Returns the site record.

    ``progress(stage, done, total)`` is called as work advances.
    """
    import torch

    from scanvision.export import save_model_dir
    from scanvision.infer import default_model_dir, load_model_config

    cfg = cfg or AdaptConfig()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new directory for the site model")
    base = Path(base_dir) if base_dir is not None else default_model_dir()
    base_config = load_model_config(base)
    if base_config.get(SITE_KEY):
        logger.info("base %s is itself site-adapted (%s); adapting it further",
                    base, base_config[SITE_KEY].get("site"))
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for but torch sees no CUDA device; use --device cpu")
    if cfg.device == "auto":
        cfg = replace(cfg, device="cuda" if torch.cuda.is_available() else "cpu")
    kinds = {s.kind for s in scans}
    if len(kinds) != 1:
        raise SiteScanError("site scans must be all raw 16-bit or all 8-bit display images")
    kind = next(iter(kinds))
    if int(base_config["channels"]) != 1:
        raise SiteScanError("site adaptation supports single-energy models only")
    pcfg = PreprocessConfig.from_dict(base_config["preprocess"])
    t_start = time.perf_counter()

    fit_idx, hold_idx = split_holdout(len(scans), cfg.holdout, cfg.seed, [s.state for s in scans])
    if len(fit_idx) < 10 or len(hold_idx) < 5:
        raise SiteScanError(f"{len(scans)} scans split into {len(fit_idx)} to fit and {len(hold_idx)} "
                            "held out; give more scans or change --holdout")
    hold = [scans[i] for i in hold_idx]
    say = progress or (lambda *_a: None)

    say("held-out views", 0, 1)
    views = holdout_views(hold, cfg.seed, cfg.holdout_draws)
    say("held-out views", 1, 1)
    say("scoring held-out scans with the base model", 0, 1)
    before = evaluate_views(base, views, kind)
    say("scoring held-out scans with the base model", 1, 1)

    model = torch_model_from_onnx(base)
    prepared = [_prepare(scans[i], WORK_HEIGHT) for i in fit_idx]
    history = fine_tune(model, prepared, cfg, pcfg, base_config["class_names"],
                        progress=lambda e, n, _row: say("fine-tuning", e, n))
    a, b = calibrate_on_fit_scans(model, prepared, pcfg, cfg.seed)

    parity = [_view_tensor(p.pixels, np.zeros(p.pixels.shape, bool), p.kind, pcfg)[0]
              for p in prepared[:4]]
    training = {
        "source": "site adaptation", "site": site, "base_model": str(base),
        "base_onnx_sha256": base_config.get("onnx_sha256"),
        "config": asdict(cfg), "history": history, "score_calibration": {"scale": a, "bias": b},
        "command": command,
    }
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model_dir(model, tmp, model_name=base_config["model_name"], preprocess=pcfg.to_dict(),
                   samples=parity, class_names=base_config["class_names"],
                   mass_calibration=base_config.get("mass_calibration"), training=training,
                   metrics={"base_test": base_config.get("metrics", {}).get("test")})
    say("scoring held-out scans with the adapted model", 0, 1)
    after = evaluate_views(tmp, views, kind)
    say("scoring held-out scans with the adapted model", 1, 1)
    wall = time.perf_counter() - t_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    record = {
        "site": site,
        "kind": kind,
        "n_scans": len(scans), "n_fit": len(fit_idx), "n_holdout": len(hold_idx),
        "n_labelled": int(sum(s.state is not None for s in scans)),
        "holdout_files": [Path(s.path).name for s in hold],
        "thresholds": {k: float(v) for k, v in after["thresholds"].items()},
        "threshold_source": f"{len(hold_idx)} held-out clean scans of the site",
        "holdout": {"base": before, "adapted": after, "draws_per_band": cfg.holdout_draws,
                    "mass_bands_kg": [list(b) for b in HOLDOUT_MASS_BANDS], "jpeg_quality": 92},
        "base_model": {"dir": str(base), "onnx_sha256": base_config.get("onnx_sha256"),
                       "model_name": base_config["model_name"]},
        "wall_seconds": round(wall, 1), "peak_rss_mb": round(peak_mb, 1),
        "device": cfg.device, "threads": cfg.threads,
        "adapted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    cfg_path = tmp / "config.json"
    config = json.loads(cfg_path.read_text())
    config[SITE_KEY] = record
    cfg_path.write_text(json.dumps(config, indent=2) + "\n")
    write_site_card(tmp, config)
    out.mkdir(parents=True, exist_ok=True)
    for f in tmp.iterdir():
        shutil.move(str(f), out / f.name)
    tmp.rmdir()
    return record


def site_threshold(config: dict[str, Any], kind: str, far: str = "0.01") -> float | None:
    """The site's alarm threshold for scans of ``kind``, or ``None`` for a model without one."""
    rec = config.get(SITE_KEY)
    if not rec or rec.get("kind") != kind:
        return None
    try:
        return float(rec["thresholds"][far])
    except (KeyError, TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- model card


def _f(x: Any, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.1f} %" if pct else f"{x:.3f}"


def write_site_card(model_dir: str | Path, config: dict[str, Any]) -> Path:
    """``MODEL_CARD.md`` of a site-adapted model directory."""
    rec = config[SITE_KEY]
    h = rec["holdout"]
    lines = [
        f"# Scan triage model adapted to {rec['site']}",
        "",
        f"Fine-tuned from `{rec['base_model']['model_name']}` (ONNX sha256 "
        f"`{(rec['base_model']['onnx_sha256'] or '')[:12]}…`) on {rec['n_fit']} cleared "
        f"{rec['kind']} scans of the site, with concealments projected into them "
        "(threat image projection, `scanvision.tip`). Same architecture, input and speed as the "
        "base model. "
        f"{rec['n_holdout']} scans of the site were held out of fitting; every figure below is "
        "measured on them, with threats drawn afresh, through ONNX Runtime as served.",
        "",
        "## Alarm thresholds of this site",
        "",
        "| false alarms | threshold |",
        "|---|---:|",
        *[f"| {float(k):.0%} | {v:.4f} |" for k, v in rec["thresholds"].items()],
        "",
        f"Set on {rec['threshold_source']}: with so few clean scans the 1 % threshold is the highest "
        "clean score; recheck the alarm rate on the next few hundred cleared scans.",
        "",
        "## Held-out figures: base model vs adapted",
        "",
        "| | base | adapted |",
        "|---|---:|---:|",
        f"| AUC, all threats | {_f(h['base']['auc'])} | {_f(h['adapted']['auc'])} |",
    ]
    for st in h["adapted"]["by_state"]:
        b, a = h["base"]["by_state"][st], h["adapted"]["by_state"][st]
        lines.append(f"| AUC, {st} containers | {_f(b['auc'])} | {_f(a['auc'])} |")
        for far in ("0.01", "0.05"):
            lines.append(f"| Pd brick stacks ≥ 10 kg @ {float(far):.0%} FA, {st} | "
                         f"{_f(b['stacks_ge_10kg'].get(f'pd_at_{far}'), True)} | "
                         f"{_f(a['stacks_ge_10kg'].get(f'pd_at_{far}'), True)} |")
    for band_b, band_a in zip(h["base"]["by_mass"], h["adapted"]["by_mass"], strict=True):
        lo, hi = band_a["mass_kg"]
        lines.append(f"| Pd {lo:g}–{hi:g} kg @ 1 % / 5 % FA (n={band_a['n']}) | "
                     f"{_f(band_b['pd_at_0.01'], True)} / {_f(band_b['pd_at_0.05'], True)} | "
                     f"{_f(band_a['pd_at_0.01'], True)} / {_f(band_a['pd_at_0.05'], True)} |")
    lines += [
        f"| heatmap peak on the threat | {_f(h['base']['pointing_accuracy'], True)} | "
        f"{_f(h['adapted']['pointing_accuracy'], True)} |",
        f"| empty/loaded AUC | {_f(h['base'].get('empty_auc'))} | {_f(h['adapted'].get('empty_auc'))} |",
        "",
        f"Held-out views: {h['adapted']['n_clean']} clean, {h['adapted']['n_threat']} with a threat "
        f"({h['draws_per_band']} per scan and mass band, half brick stacks, the rest rip-on/rip-off "
        "bags, floor, roof, wall and reefer-unit loads), JPEG quality "
        f"{h['jpeg_quality']} for display images. Each model's Pd uses its own thresholds set on the "
        "same clean views.",
        "",
        "## Limits",
        "",
        "- The threats are simulated (physics of attenuation, the scan's own geometry), the "
        "backgrounds are real; a display image's window is estimated, so the threat's contrast is "
        "drawn over a range of windows. Real seizures are the test this card cannot give.",
        "- Held-out scans come from the same site and period as the fitting scans.",
        "",
        f"Adapted in {rec['wall_seconds'] / 60:.1f} min on {rec['device']} ({rec['threads']} threads), "
        f"peak memory {rec['peak_rss_mb']:.0f} MB, {rec['adapted_at']}.",
        "",
    ]
    path = Path(model_dir) / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
