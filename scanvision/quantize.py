"""Faster scan inference, measured honestly: graph optimisation levels, threads, static INT8.

Every variant is judged on speed *and* accuracy: the AUC of the concealment score and the
cargo-class accuracy on generated scans from a fixed seed the model never saw in training,
next to the FP32 model on the same scans. A variant that loses accuracy is reported, not kept.

Static INT8 quantisation uses ONNX Runtime's ``quantize_static`` in QDQ format with per-channel
weight scales, calibrated (min/max of every activation) on preprocessed generated scans through
:class:`ScanCalibrationReader`.

Example::

    from scanvision.quantize import run_inference_variants
    report = run_inference_variants("models/scanvision", eval_count=200)
    [(v["name"], v["scans_per_s"], v["auc"], v["holds_accuracy"]) for v in report["variants"]]
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader

from scanvision.io import Scan
from scanvision.preprocess import PreprocessConfig, preprocess
from scanvision.synth import GENERATOR_VERSION, render_scan, sample_spec

logger = logging.getLogger(__name__)

#: Default seeds of the evaluation and calibration scans (never used for training).
EVAL_SEED = 20270
CALIBRATION_SEED = 31337
#: Graph optimisation levels of ONNX Runtime, slowest first.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
#: A variant holds accuracy when its AUC drops by at most this much against FP32 ...
MAX_AUC_DROP = 0.005
#: ... and its cargo-class accuracy by at most this much.
MAX_CLASS_ACCURACY_DROP = 0.01

Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Generated evaluation / calibration scans
# --------------------------------------------------------------------------------------------


@dataclass
class ScanSet:
    """Preprocessed generated scans with their ground truth.

    Attributes:
        images: network inputs ``[C, H, W]`` (widths vary with container size).
        concealed: 1 where the scan holds a concealment.
        cargo_family: the true cargo family of each scan.
        seed: generator seed.
    """

    images: list[np.ndarray]
    concealed: np.ndarray
    cargo_family: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.images)


def generate_scan_set(
    count: int,
    seed: int,
    preprocess_config: PreprocessConfig,
    *,
    threat_rate: float = 0.5,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> ScanSet:
    """Render ``count`` random scans (mixed 20/40 ft, as the generator draws them) and preprocess.

    Scan *i* depends only on ``seed`` and *i*. With ``cache_dir``, the preprocessed set is
    stored as ``.npz`` keyed by count, seed, threat rate, preprocessing and generator version,
    and read back on the next call.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if preprocess_config.channels != 1:
        raise ValueError(
            "generate_scan_set renders single-energy scans; the model expects "
            f"{preprocess_config.channels} channels"
        )
    key = json.dumps(
        [count, seed, threat_rate, preprocess_config.to_dict(), GENERATOR_VERSION], sort_keys=True
    )
    cache = None
    if cache_dir is not None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        cache = Path(cache_dir) / f"scanset_{seed}_{count}_{digest}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                widths = z["widths"]
                flat = z["images"]
                images = np.split(flat, np.cumsum(widths)[:-1], axis=-1)
                return ScanSet([np.ascontiguousarray(im) for im in images], z["concealed"],
                               z["cargo_family"].astype(str), seed)
    images, concealed, family = [], [], []
    children = np.random.SeedSequence(seed).spawn(count)
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        spec = sample_spec(rng, scan_id=f"EVAL{i:05d}", seed=seed, threat_rate=threat_rate)
        r = render_scan(spec, rng)
        h, w = r.transmission.shape
        scan = Scan(r.transmission, None, "raw16", None, w, h, r.meta)
        images.append(preprocess(scan, preprocess_config))
        concealed.append(1 if r.meta["threats"] else 0)
        family.append(r.meta["cargo_family"])
        if progress is not None and (i + 1) % 25 == 0:
            progress(f"generated {i + 1}/{count} scans (seed {seed})")
    out = ScanSet(images, np.asarray(concealed, dtype=np.int64), np.asarray(family), seed)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=np.concatenate(images, axis=-1),
                 widths=np.array([im.shape[-1] for im in images]),
                 concealed=out.concealed, cargo_family=out.cargo_family.astype("U"))
        tmp.replace(cache)
    return out


# --------------------------------------------------------------------------------------------
# Static INT8 quantisation
# --------------------------------------------------------------------------------------------


class ScanCalibrationReader(CalibrationDataReader):
    """Feeds preprocessed scans to ONNX Runtime's calibrator, one scan per call.

    Each item is ``{"image": [1, C, H, W], "width": [W]}``, the model's serving inputs.
    """

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        if not images:
            raise ValueError("calibration needs at least one preprocessed scan")
        self.images = list(images)
        self._it: Iterator[np.ndarray] = iter(self.images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        if x is None:
            return None
        return {"image": x[None].astype(np.float32),
                "width": np.array([x.shape[-1]], dtype=np.int64)}

    def rewind(self) -> None:
        """Start again from the first scan."""
        self._it = iter(self.images)


class _DropQuantizerChatter(logging.Filter):
    """The quantiser logs per-node advice on the root logger; keep it out of user output."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" in record.pathname and "quantization" in record.pathname:
            self.dropped += 1
            return False
        return True


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    root = logging.getLogger()
    f = _DropQuantizerChatter()
    root.addFilter(f)
    try:
        yield
    finally:
        root.removeFilter(f)
        if f.dropped:
            logger.debug("suppressed %d quantiser log records", f.dropped)


def quantize_int8(
    src_onnx: str | Path,
    dst_onnx: str | Path,
    calibration_images: Sequence[np.ndarray],
    *,
    per_channel: bool = True,
    activation: str = "uint8",
    op_types: Sequence[str] | None = ("Conv", "Gemm", "MatMul"),
    exclude_nodes: Sequence[str] = (),
) -> dict[str, Any]:
    """Static INT8 quantisation (QDQ format) calibrated on preprocessed scans.

    The graph is first pre-processed (constant folding, ONNX shape inference) as ONNX Runtime
    recommends, then ``quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs whose
    activation ranges come from min/max calibration on ``calibration_images``.

    Args:
        per_channel: one weight scale per output channel (keeps depthwise convolutions usable).
        activation: ``"uint8"`` (U8S8, ONNX Runtime's fast path on x86) or ``"int8"``.
        op_types: operator types to quantise (``None``: every type ONNX Runtime supports). The
            default keeps the masking and top-k pooling of the score head in float: their
            ``-1e4`` fill values would wipe out an 8-bit range.
        exclude_nodes: node names left in float.

    Returns:
        A description (settings, node counts, file size) for the model sidecar.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if activation not in ("uint8", "int8"):
        raise ValueError(f"activation must be 'uint8' or 'int8', got {activation!r}")
    src, dst = Path(src_onnx), Path(dst_onnx)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX model not found: {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="quant-") as tmp, _quiet_quantizer():
        pre = Path(tmp) / "preprocessed.onnx"
        # Symbolic shape inference cannot follow the dynamic width arithmetic; ONNX shape
        # inference plus ONNX Runtime's constant folding is what the quantiser needs.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(dst), ScanCalibrationReader(calibration_images),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(op_types) if op_types is not None else None,
            nodes_to_exclude=list(exclude_nodes),
            calibrate_method=CalibrationMethod.MinMax,
        )
    import onnx

    graph = onnx.load(str(dst)).graph
    n_q = sum(1 for n in graph.node if n.op_type == "QuantizeLinear")
    return {
        "method": "onnxruntime.quantization.quantize_static",
        "format": "QDQ",
        "per_channel": per_channel,
        "weights": "int8",
        "activations": activation,
        "calibration": "MinMax",
        "calibration_scans": len(calibration_images),
        "op_types": list(op_types) if op_types is not None else "all supported",
        "excluded_nodes": list(exclude_nodes),
        "quantize_linear_nodes": n_q,
        "bytes": dst.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def write_int8_model_dir(
    model_dir: str | Path,
    out_dir: str | Path,
    calibration_images: Sequence[np.ndarray],
    **quantize_kwargs: Any,
) -> Path:
    """Copy a scan model directory with its ONNX graph quantised to INT8.

    ``config.json`` keeps everything (preprocessing, class names, calibrations) and records the
    quantisation; :class:`scanvision.infer.ScanTriage` serves the result unchanged.
    """
    from scanvision.export import file_sha256
    from scanvision.infer import load_model_config

    src = Path(model_dir)
    config = load_model_config(src)
    out = Path(out_dir)
    if out.resolve() == src.resolve():
        raise ValueError(f"out_dir {out} is the source model directory; choose another folder")
    out.mkdir(parents=True, exist_ok=True)
    onnx_name = config.get("onnx_file", "model.onnx")
    info = quantize_int8(src / onnx_name, out / onnx_name, calibration_images, **quantize_kwargs)
    for extra in src.iterdir():
        if extra.is_file() and extra.name not in (onnx_name, "config.json") and extra.suffix in (
            ".md", ".png", ".json"
        ):
            shutil.copy2(extra, out / extra.name)
    config = {**config, "onnx_sha256": file_sha256(out / onnx_name), "quantization": info,
              "quantized_from": {"dir": str(src), "onnx_sha256": config.get("onnx_sha256")}}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


# --------------------------------------------------------------------------------------------
# Accuracy and speed of one variant
# --------------------------------------------------------------------------------------------


def predict_set(session: Any, images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Concealment score, empty probability and class logits of each scan (run one at a time)."""
    scores, empties, logits = [], [], []
    for x in images:
        _, score, empty, cls = session.run(
            ["heatmap_logits", "score", "empty_prob", "class_logits"],
            {"image": x[None], "width": np.array([x.shape[-1]], dtype=np.int64)},
        )
        scores.append(float(score[0]))
        empties.append(float(empty[0]))
        logits.append(cls[0])
    return {"score": np.asarray(scores), "empty_prob": np.asarray(empties),
            "class_logits": np.stack(logits)}


def accuracy(pred: dict[str, np.ndarray], data: ScanSet, class_names: Sequence[str]) -> dict[str, Any]:
    """AUC of the concealment score and cargo-class accuracy against the ground truth."""
    from sklearn.metrics import roc_auc_score

    y = data.concealed
    auc = float(roc_auc_score(y, pred["score"])) if 0 < y.sum() < len(y) else None
    names = np.asarray(list(class_names))
    predicted = names[pred["class_logits"].argmax(axis=1)]
    return {
        "auc": None if auc is None else round(auc, 4),
        "class_accuracy": round(float((predicted == data.cargo_family).mean()), 4),
        "empty_accuracy": round(float(((pred["empty_prob"] > 0.5) == (data.cargo_family == "empty")).mean()), 4),
    }


def model_only_speed(session: Any, image: np.ndarray, *, batch: int = 1, iterations: int = 20,
                     warmup: int = 3) -> dict[str, float]:
    """``session.run`` on one repeated scan: scans/s from the median and the fastest iteration."""
    x = np.repeat(image[None], batch, axis=0)
    feed = {"image": x, "width": np.full(batch, image.shape[-1], dtype=np.int64)}
    for _ in range(warmup):
        session.run(None, feed)
    lat = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        session.run(None, feed)
        lat.append(time.perf_counter() - t0)
    med = float(np.median(lat))
    return {
        "scans_per_s": round(batch / med, 2),
        # The fastest iteration: what the hardware can do when nothing else competes for it.
        "scans_per_s_best": round(batch / float(np.min(lat)), 2),
        "latency_ms_p50": round(1000 * med, 3),
        "latency_ms_p90": round(1000 * float(np.percentile(lat, 90)), 3),
    }


def run_inference_variants(
    model_dir: str | Path | None = None,
    *,
    eval_count: int = 200,
    eval_seed: int = EVAL_SEED,
    calibration_count: int = 64,
    calibration_seed: int = CALIBRATION_SEED,
    threads: Sequence[int] = (1, 2),
    levels: Sequence[str] = OPTIMIZATION_LEVELS,
    int8: bool = True,
    speed_size: str = "40ft",
    speed_iterations: int = 20,
    cache_dir: str | Path | None = None,
    int8_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Speed and accuracy of every inference variant of a scan model.

    Variants: FP32 at each graph optimisation level in ``levels`` and static INT8 (QDQ,
    per-channel, U8S8) at level ``all``; each timed with each intra-op thread count in
    ``threads`` on one full-resolution scan of ``speed_size``, and scored on ``eval_count``
    generated scans from ``eval_seed`` (AUC of the concealment score, cargo-class accuracy)
    next to FP32.

    A variant ``holds_accuracy`` when its AUC is at most :data:`MAX_AUC_DROP` and its class
    accuracy at most :data:`MAX_CLASS_ACCURACY_DROP` below FP32; ``recommended`` is the fastest
    variant that holds accuracy.

    Raises:
        ValueError: ``eval_seed`` or ``calibration_seed`` is a seed the model was trained,
            validated or tested on (per its ``config.json``).
    """
    from scanvision.bench import machine_info, make_session, render_bench_scans
    from scanvision.infer import default_model_dir, load_model_config

    say = progress or (lambda _m: None)
    model_path = Path(model_dir) if model_dir is not None else default_model_dir()
    config = load_model_config(model_path)
    used = _training_seeds(config)
    for name, s in (("eval_seed", eval_seed), ("calibration_seed", calibration_seed)):
        if s in used:
            raise ValueError(
                f"{name}={s} is a seed the model saw during training/validation/test "
                f"({sorted(used)}); choose an unseen seed"
            )
    for lv in levels:
        if lv not in OPTIMIZATION_LEVELS:
            raise ValueError(f"unknown optimisation level {lv!r}; expected {list(OPTIMIZATION_LEVELS)}")
    pcfg = PreprocessConfig.from_dict(config["preprocess"])
    class_names = list(config["class_names"])
    onnx_path = model_path / config.get("onnx_file", "model.onnx")

    say(f"generating {eval_count} evaluation scans (seed {eval_seed})")
    data = generate_scan_set(eval_count, eval_seed, pcfg, cache_dir=cache_dir, progress=say)
    t = render_bench_scans(1, speed_size, seed=eval_seed)[0]
    speed_image = preprocess(Scan(t, None, "raw16", None, t.shape[1], t.shape[0]), pcfg)

    variants: list[dict[str, Any]] = []
    models: list[tuple[str, Path, str, dict[str, Any] | None]] = [
        (f"fp32_{lv}", onnx_path, lv, None) for lv in levels
    ]
    tmp = tempfile.TemporaryDirectory(prefix="int8-")
    try:
        if int8:
            say(f"calibrating INT8 on {calibration_count} scans (seed {calibration_seed})")
            calib = generate_scan_set(calibration_count, calibration_seed, pcfg, cache_dir=cache_dir,
                                      progress=say)
            if int8_dir is not None:
                qdir = write_int8_model_dir(model_path, int8_dir, calib.images)
                q_path = qdir / config.get("onnx_file", "model.onnx")
                q_info = json.loads((qdir / "config.json").read_text())["quantization"]
            else:
                q_path = Path(tmp.name) / "model_int8.onnx"
                q_info = quantize_int8(onnx_path, q_path, calib.images)
            models.append(("int8_qdq_all", q_path, "all", q_info))

        reference: dict[str, np.ndarray] | None = None
        for name, path, level, qinfo in models:
            say(f"{name}: accuracy on {eval_count} scans")
            sess = make_session(path, threads=max(threads), optimization=level)
            pred = predict_set(sess, data.images)
            if reference is None and name.startswith("fp32"):
                reference = pred
            acc = accuracy(pred, data, class_names)
            agreement = None
            if reference is not None:
                agreement = {
                    "score_max_abs_diff": round(float(np.abs(pred["score"] - reference["score"]).max()), 6),
                    "class_agreement": round(float((pred["class_logits"].argmax(1)
                                                    == reference["class_logits"].argmax(1)).mean()), 4),
                }
            for th in threads:
                say(f"{name}: speed with {th} thread(s)")
                s = make_session(path, threads=th, optimization=level)
                sp = model_only_speed(s, speed_image, iterations=speed_iterations)
                variants.append({
                    "name": name, "precision": "int8" if qinfo else "fp32", "optimization": level,
                    "threads": th, **sp, **acc, "vs_fp32": agreement,
                    "quantization": qinfo,
                })
    finally:
        tmp.cleanup()

    base = {v["threads"]: v for v in variants if v["name"] == f"fp32_{levels[-1]}"}
    ref_acc = base[max(threads)] if base else variants[0]
    for v in variants:
        b = base.get(v["threads"])
        v["speedup_vs_fp32_all"] = round(v["scans_per_s"] / b["scans_per_s"], 3) if b else None
        auc_ok = (v["auc"] is None or ref_acc["auc"] is None
                  or v["auc"] >= ref_acc["auc"] - MAX_AUC_DROP)
        cls_ok = v["class_accuracy"] >= ref_acc["class_accuracy"] - MAX_CLASS_ACCURACY_DROP
        v["holds_accuracy"] = bool(auc_ok and cls_ok)
    keep = [v for v in variants if v["holds_accuracy"]]
    best = max(keep, key=lambda v: v["scans_per_s"]) if keep else None
    return {
        "benchmark": "inference_variants",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"dir": str(model_path), "name": config.get("model_name"),
                  "onnx_sha256": config.get("onnx_sha256")},
        "evaluation": {
            "scans": len(data), "seed": eval_seed, "concealed": int(data.concealed.sum()),
            "sizes": "mixed 20/40 ft as generated", "threat_rate": 0.5,
            "training_seeds_excluded": sorted(used),
        },
        "speed_input": {"size": speed_size, "shape": [1, *speed_image.shape], "batch": 1,
                        "iterations": speed_iterations},
        "rule": (f"holds accuracy: AUC >= FP32 AUC - {MAX_AUC_DROP} and class accuracy >= "
                 f"FP32 - {MAX_CLASS_ACCURACY_DROP}"),
        "variants": variants,
        "recommended": None if best is None else {
            "name": best["name"], "threads": best["threads"], "scans_per_s": best["scans_per_s"],
        },
        "machine": machine_info(),
    }


def _training_seeds(config: dict[str, Any]) -> set[int]:
    """Seeds named in a model sidecar's training record and test metrics."""
    seeds: set[int] = set()
    training = config.get("training") or {}
    for key in ("seed", "val_seed", "test_seed"):
        if isinstance(training.get(key), int):
            seeds.add(training[key])
    test = (config.get("metrics") or {}).get("test") or {}
    if isinstance(test.get("seed"), int):
        seeds.add(test["seed"])
    return seeds
