"""Export a trained scan triage network to ONNX and write the model directory.

The exported graph takes ``image`` ``[batch, C, H, width]`` (float32, preprocessed) and
``width`` ``[batch]`` (int64, real width of each scan in pixels) with dynamic batch and width,
and returns ``heatmap_logits``, ``score``, ``empty_prob``, ``class_logits``.

The export checks itself, as timm's does: ``onnx.checker.check_model`` and a PyTorch-vs-ONNX
Runtime parity check on real (generated) scans of several widths, one at a time and together in
one padded batch. A model that fails parity is not written.

A model directory holds ``model.onnx`` and ``config.json`` (the sidecar: architecture,
preprocessing, class names, calibrations, training data, metrics, versions); serving
(:mod:`scanvision.infer`) needs nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scanvision.model import CARGO_CLASSES, INPUT_NAMES, OUTPUT_NAMES, ScanTriageNet

logger = logging.getLogger(__name__)

ONNX_FILENAME = "model.onnx"
CONFIG_FILENAME = "config.json"
SIDECAR_FORMAT_VERSION = 1
DEFAULT_OPSET = 17


class ExportParityError(RuntimeError):
    """The ONNX graph does not reproduce the PyTorch model within tolerance."""


def pad_batch(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Stack ``[C, H, W_i]`` arrays into ``[B, C, H, max W]`` padded with 0 (air) + widths."""
    if not images:
        raise ValueError("pad_batch needs at least one image, got an empty list")
    shapes = {im.shape[:2] for im in images}
    if len(shapes) != 1:
        raise ValueError(
            f"all images in a batch need the same channels and height, got {sorted(shapes)}; "
            "preprocess every scan with the same PreprocessConfig"
        )
    widths = np.array([im.shape[2] for im in images], dtype=np.int64)
    c, h = images[0].shape[:2]
    batch = np.zeros((len(images), c, h, int(widths.max())), dtype=np.float32)
    for i, im in enumerate(images):
        batch[i, :, :, : im.shape[2]] = im
    return batch, widths


def _torch_outputs(model: ScanTriageNet, batch: np.ndarray, widths: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(batch), torch.from_numpy(widths))
    return [o.numpy() for o in out]


def check_parity(
    model: ScanTriageNet,
    onnx_path: str | Path,
    samples: Sequence[np.ndarray],
    *,
    atol: float = 1e-3,
) -> dict[str, float]:
    """Compare PyTorch and ONNX Runtime outputs on ``samples`` (each ``[C, H, W]``).

    Each sample is run alone, then all samples together in one padded batch. Heatmap cells
    outside a scan's real width are ignored in the padded batch.

    Returns:
        The largest absolute difference per output name.

    Raises:
        ExportParityError: an output differs by more than ``atol``.
    """
    import onnxruntime as ort

    model = model.eval()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = dict.fromkeys(OUTPUT_NAMES, 0.0)
    runs = [[s] for s in samples]
    if len(samples) > 1:
        runs.append(list(samples))
    for run in runs:
        batch, widths = pad_batch(run)
        ref = _torch_outputs(model, batch, widths)
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAMES[0]: batch, INPUT_NAMES[1]: widths})
        for name, r, g in zip(OUTPUT_NAMES, ref, got, strict=True):
            if r.shape != g.shape:
                raise ExportParityError(
                    f"ONNX output {name!r} has shape {g.shape}, PyTorch gives {r.shape} "
                    f"(batch widths {widths.tolist()})"
                )
            diff = np.abs(r - g)
            if name == "heatmap_logits":
                cols = np.arange(r.shape[-1])[None, :] < -(-widths[:, None] // 16)
                diff = np.where(cols[:, None, None, :], diff, 0.0)
            worst[name] = max(worst[name], float(diff.max()))
    bad = {k: v for k, v in worst.items() if v > atol}
    if bad:
        raise ExportParityError(
            f"ONNX Runtime differs from PyTorch by more than atol={atol}: {bad} "
            f"(widths {[s.shape[2] for s in samples]}); check the opset and unsupported ops, "
            "or export with a newer onnx / onnxruntime"
        )
    logger.info("ONNX parity ok on %d samples: %s", len(samples), worst)
    return worst


def export_onnx(
    model: ScanTriageNet,
    path: str | Path,
    samples: Sequence[np.ndarray],
    *,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-3,
) -> dict[str, float]:
    """Export ``model`` to ONNX (dynamic batch and width), check it, and verify parity.

    Args:
        model: a trained (or fresh) :class:`~scanvision.model.ScanTriageNet`.
        path: where to write the ``.onnx`` file.
        samples: preprocessed scans ``[C, H, W]`` (``W`` multiples of 32) of several widths,
            used for the parity check; at least one.
        opset: ONNX opset (at least 17).
        atol: largest tolerated absolute difference between PyTorch and ONNX Runtime.

    Returns:
        The parity report: largest absolute difference per output.

    Raises:
        ValueError: no samples, or samples that do not match the model's channels.
        ExportParityError: the exported graph does not match PyTorch (the file is removed).
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")
    if not samples:
        raise ValueError("export_onnx needs at least one preprocessed sample scan for parity")
    channels = {s.shape[0] for s in samples}
    if channels != {model.in_channels}:
        raise ValueError(
            f"samples have {sorted(channels)} channel(s) but the model expects "
            f"{model.in_channels}; preprocess them with the model's PreprocessConfig"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    batch, widths = pad_batch(list(samples[:2]))
    dynamic_axes = {
        "image": {0: "batch", 3: "width"},
        "width": {0: "batch"},
        "heatmap_logits": {0: "batch", 3: "cells_w"},
        "score": {0: "batch"},
        "empty_prob": {0: "batch"},
        "class_logits": {0: "batch"},
    }
    with warnings.catch_warnings():
        # The TorchScript exporter warns about traced shape arithmetic that is in fact dynamic.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.from_numpy(batch), torch.from_numpy(widths)),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    try:
        report = check_parity(model, path, samples, atol=atol)
    except ExportParityError:
        path.unlink(missing_ok=True)
        raise
    logger.info("exported %s (opset %d, %.1f kB)", path, opset, path.stat().st_size / 1024)
    return report


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produced the artifact."""
    import onnx
    import onnxruntime
    import torchvision

    try:
        from importlib.metadata import version

        riskengine_version = version("riskengine")
    except Exception:  # noqa: BLE001 - not installed as a distribution (source checkout)
        riskengine_version = "unknown"
    return {
        "riskengine": riskengine_version,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def save_model_dir(
    model: ScanTriageNet,
    out_dir: str | Path,
    *,
    model_name: str,
    preprocess: dict[str, Any],
    samples: Sequence[np.ndarray],
    class_names: Sequence[str] = CARGO_CLASSES,
    mass_calibration: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` to ``out_dir/model.onnx`` and write the ``config.json`` sidecar.

    Args:
        model: the trained network (its score calibration already set).
        out_dir: the model directory (created if missing).
        model_name: registry name the network was built from.
        preprocess: ``PreprocessConfig.to_dict()`` of the preprocessing used in training.
        samples: preprocessed scans of several widths for the parity check.
        class_names: cargo class names in output order.
        mass_calibration: the fitted mass calibration (see :mod:`scanvision.train`), or None.
        training: training data and run description (seeds, sizes, epochs).
        metrics: evaluation metrics to record.

    Returns:
        The path of ``config.json``.
    """
    if len(class_names) != model.num_classes:
        raise ValueError(
            f"{len(class_names)} class names given but the model has {model.num_classes} classes"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ONNX_FILENAME
    parity = export_onnx(model, onnx_path, samples, opset=opset)
    height = int(samples[0].shape[1])
    config = {
        "format_version": SIDECAR_FORMAT_VERSION,
        "model_name": model_name,
        "architecture": asdict(model.spec),
        "onnx_file": ONNX_FILENAME,
        "onnx_sha256": file_sha256(onnx_path),
        "opset": opset,
        "input_height": height,
        "channels": model.in_channels,
        "width_multiple": 32,
        "preprocess": dict(preprocess),
        "inputs": [
            {"name": INPUT_NAMES[0], "shape": ["batch", model.in_channels, height, "width"],
             "dtype": "float32", "padding": "zero attenuation (air)"},
            {"name": INPUT_NAMES[1], "shape": ["batch"], "dtype": "int64",
             "meaning": "real width of each scan in pixels before batch padding"},
        ],
        "outputs": list(OUTPUT_NAMES),
        "class_names": list(class_names),
        "heatmap_stride": model.spec.heatmap_stride,
        "score_calibration": {
            "method": "platt",
            "scale": float(model.calib_scale),
            "bias": float(model.calib_bias),
            "applied_in_graph": True,
            "formula": "score = sigmoid(scale * pooled_logit + bias)",
        },
        "mass_calibration": mass_calibration,
        "training": training or {},
        "metrics": metrics or {},
        "export_parity_max_abs_diff": parity,
        "versions": library_versions(),
    }
    config_path = out / CONFIG_FILENAME
    config_path.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
    logger.info("wrote %s", config_path)
    return config_path
