"""Benchmark scan triage on the scanner's own hardware.

What is measured, in the manner of timm's ``benchmark.py`` (warm-up, then timed iterations,
per-iteration latencies kept, machine described) but end to end:

* **end to end**: generated full-resolution 16-bit scans are written as PNG files first, so
  every timed iteration decodes files, preprocesses them, runs the network and post-processes
  its outputs (:class:`scanvision.infer.ScanTriage`), exactly as ``riskengine triage`` does;
* **serial** (one batch after the other) and **pipelined** (a small thread pool decodes and
  preprocesses the next scans while ONNX Runtime runs the current batch; OpenCV and ONNX
  Runtime release the GIL, so the stages overlap on separate cores);
* **model only**: ``session.run`` on the same preprocessed tensors, the ceiling of the pipeline;
* **eager PyTorch** on the same tensors when torch is installed (the ratio is the reason the
  serving path uses ONNX Runtime);
* the **roofline**: the network's multiply-accumulates per scan, counted from the ONNX graph,
  against this machine's measured float32 matmul rate.

Example::

    from scanvision.bench import run_scanner_benchmark
    result = run_scanner_benchmark("models/scanvision", batch=4, scans=200)
    result["scans_per_s"], result["latency_ms_p99"], result["scanners_served"]
"""

from __future__ import annotations

import logging
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scanvision.io import Scan, read_scan, transmission_to_raw16, write_transmission
from scanvision.synth import render_scan, sample_spec

logger = logging.getLogger(__name__)

#: A rail scanner at 60 km/h passes about 1.4 wagons (containers) per second.
RAIL_SCANS_PER_S = 1.4
#: A drive-through portal scans about 150 trucks per hour.
PORTAL_SCANS_PER_H = 150.0
#: A gantry (mobile or fixed, truck parked) scans about 25 containers per hour.
GANTRY_SCANS_PER_H = 25.0

PROVIDERS = ("cpu", "cuda", "tensorrt")
_PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
#: Scans rendered once and written under many file names (rendering is slower than triage).
DEFAULT_DISTINCT_SCANS = 8

Progress = Callable[[str], None]


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def parse_size(size: str) -> tuple[str, int | None, int | None]:
    """``"20ft"`` / ``"40ft"`` / ``"WxH"`` → ``(container size, width, height)``.

    Width and height are ``None`` for the generator's own container sizes; a ``WxH`` scan is a
    40 ft scan resized to ``W x H`` pixels.

    >>> parse_size("40ft"), parse_size("1600x400")
    (('40ft', None, None), ('40ft', 1600, 400))
    """
    s = str(size).strip().lower()
    if s in ("20ft", "40ft"):
        return s, None, None
    parts = s.split("x")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        w, h = int(parts[0]), int(parts[1])
        if w >= 32 and h >= 32:
            return "40ft", w, h
    raise ValueError(
        f"size must be '20ft', '40ft' or WIDTHxHEIGHT in pixels (both >= 32, e.g. 2400x578), "
        f"got {size!r}"
    )


def render_bench_scans(
    count: int, size: str = "40ft", *, seed: int = 0
) -> list[np.ndarray]:
    """Render ``count`` full-resolution transmissions of one container size (float32 ``H x W``).

    Cargo, fill and concealments vary as in :func:`scanvision.synth.sample_spec`; the size,
    height class and chassis are fixed so every scan has the same dimensions (standard 8'6"
    container, no chassis: 2538 x 578 pixels for 40 ft at 5 mm per pixel).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    container, width, height = parse_size(size)
    children = np.random.SeedSequence(seed).spawn(count)
    out = []
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        spec = sample_spec(rng, scan_id=f"BENCH{i:04d}", seed=seed, size=container)
        # no tractor either: it needs the chassis and would change the scan length
        fixed = replace(spec, high_cube=False, chassis=False, tractor=False)
        t = render_scan(fixed, rng).transmission
        if width is not None and height is not None:
            t = cv2.resize(t, (width, height), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(t, dtype=np.float32))
    return out


FILE_FORMATS = ("png", "tiff")


def write_scan_files(
    transmissions: Sequence[np.ndarray], out_dir: str | Path, count: int, fmt: str = "png"
) -> list[Path]:
    """Write ``count`` 16-bit scan files cycling through ``transmissions``.

    ``fmt="png"``: zlib-compressed 16-bit PNG, as the generator (and most scanner exports) write
    them; ``"tiff"``: uncompressed 16-bit TIFF, which costs almost nothing to decode. Each
    distinct scan is encoded once; the other files are hard links (or copies where links are
    not supported), so every file is decoded on read like a scan fresh off the scanner.
    """
    if not transmissions:
        raise ValueError("write_scan_files needs at least one transmission image")
    if fmt not in FILE_FORMATS:
        raise ValueError(f"file format must be one of {list(FILE_FORMATS)}, got {fmt!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = ".png" if fmt == "png" else ".tif"
    originals = []
    for k, t in enumerate(transmissions):
        path = out / f"distinct_{k:03d}{ext}"
        if fmt == "png":
            write_transmission(path, t)
        else:
            import tifffile

            tifffile.imwrite(path, transmission_to_raw16(t))  # no compression
        originals.append(path)
    files = []
    for i in range(count):
        src = originals[i % len(originals)]
        dst = out / f"scan_{i:05d}{ext}"
        try:
            os.link(src, dst)
        except OSError:
            dst.write_bytes(src.read_bytes())
        files.append(dst)
    return files


# --------------------------------------------------------------------------------------------
# Machine and statistics
# --------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, load average and OS of this machine."""
    import psutil

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_1_5_15_min": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries on the measured path (torch: ``None`` when not installed)."""
    import onnxruntime

    versions: dict[str, str | None] = {
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    try:
        import torch

        versions["torch"] = torch.__version__
    except ImportError:
        versions["torch"] = None
    return versions


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99, mean, min and max of per-iteration latencies, in milliseconds."""
    a = np.asarray(seconds, dtype=np.float64) * 1000.0
    if a.size == 0:
        raise ValueError("latency_stats needs at least one latency")
    return {
        "p50": round(float(np.median(a)), 3),
        "p90": round(float(np.percentile(a, 90)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "mean": round(float(a.mean()), 3),
        "min": round(float(a.min()), 3),
        "max": round(float(a.max()), 3),
    }


def scanners_served(scans_per_s: float) -> dict[str, float]:
    """How many scanners of each kind a triage rate keeps up with.

    Rail scanners (~1.4 scans/s at 60 km/h), drive-through portals (150 scans/h) and gantries
    (25 scans/h), each running flat out.
    """
    return {
        "rail_scanners": round(scans_per_s / RAIL_SCANS_PER_S, 1),
        "drive_through_portals": round(scans_per_s * 3600.0 / PORTAL_SCANS_PER_H, 1),
        "gantries": round(scans_per_s * 3600.0 / GANTRY_SCANS_PER_H, 1),
    }


def matmul_gflops(n: int = 1024, repeats: int = 8, threads: int | None = None) -> float:
    """This machine's float32 matrix-multiply rate (GFLOP/s, best of ``repeats``) with NumPy.

    The compute ceiling of the roofline: a convolution network cannot run faster than its
    FLOPs at this rate (depthwise convolutions reach far less: they are memory-bound).
    ``threads`` limits the BLAS threads (through threadpoolctl, when installed) so that the
    ceiling matches the inference thread count.
    """
    if threads is not None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            logger.info("threadpoolctl not installed; matmul rate measured with NumPy's default threads")
        else:
            with threadpool_limits(limits=threads, user_api="blas"):
                return matmul_gflops(n, repeats)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # noqa: B018 - warm-up: thread pool start, page faults
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b  # noqa: B018
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def count_model_macs(onnx_path: str | Path, shape: Sequence[int]) -> dict[str, Any]:
    """Multiply-accumulates of the Conv / Gemm / MatMul nodes for one input ``[B, C, H, W]``.

    Shapes come from ``onnx.shape_inference`` with the input fixed to ``shape``. Returns
    ``{"macs", "gflops" (2 x MACs / 1e9), "by_op", "nodes_counted", "nodes_unknown"}``.
    """
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path))
    shape = [int(x) for x in shape]
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if inp.name == model.graph.input[0].name:
            values = shape
        else:  # the per-scan width vector
            values = [shape[0]] + [1] * (len(dims) - 1)
        for d, v in zip(dims, values, strict=False):
            d.Clear()
            d.dim_value = v
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        shapes[vi.name] = [
            d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim
        ]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)

    by_op: dict[str, int] = {}
    counted = unknown = 0
    for node in inferred.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out = shapes.get(node.output[0])
        if node.op_type == "Conv":
            w = shapes.get(node.input[1])
            per_output = int(np.prod(w[1:])) if w and None not in w else None
        else:
            a = shapes.get(node.input[0])
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            per_output = (a[-2] if trans_a else a[-1]) if a and None not in a else None
        if out is None or None in out or per_output is None:
            unknown += 1
            continue
        macs = int(np.prod(out)) * int(per_output)
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
        counted += 1
    total = sum(by_op.values())
    return {
        "input_shape": shape,
        "macs": total,
        "gflops": round(2.0 * total / 1e9, 4),
        "by_op": by_op,
        "nodes_counted": counted,
        "nodes_unknown": unknown,
    }


# --------------------------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------------------------


def make_session(
    onnx_path: str | Path,
    *,
    provider: str = "cpu",
    threads: int | None = None,
    optimization: str = "all",
    spinning: bool = True,
) -> Any:
    """An ONNX Runtime session with explicit threading and graph-optimisation settings.

    Args:
        provider: ``"cpu"``, ``"cuda"`` or ``"tensorrt"``.
        threads: intra-op threads (``None``: ONNX Runtime's default, one per core).
        optimization: graph optimisation level ``"disable"``, ``"basic"``, ``"extended"``
            or ``"all"``.
        spinning: let idle intra-op threads spin; turning it off frees the cores for decode
            threads running beside inference.

    Raises:
        ValueError: unknown provider or level, or the provider is not usable here.
    """
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {list(levels)}, got {optimization!r}")
    providers = provider_chain(provider)
    options = ort.SessionOptions()
    options.graph_optimization_level = levels[optimization]
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    session = ort.InferenceSession(str(onnx_path), options, providers=providers)
    check_provider(session, provider)
    return session


def provider_chain(provider: str) -> list[str]:
    """ONNX Runtime providers for ``provider``, checked against what this install offers."""
    import onnxruntime as ort

    if provider not in _PROVIDER_NAMES:
        raise ValueError(f"unknown provider {provider!r}; expected one of {list(PROVIDERS)}")
    chain = {
        "cpu": ["CPUExecutionProvider"],
        "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "tensorrt": [
            "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider",
        ],
    }[provider]
    available = ort.get_available_providers()
    if provider != "cpu" and chain[0] in available and hasattr(ort, "preload_dlls"):
        # CUDA / cuDNN installed as Python wheels are not on the loader path: load them now.
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - system-wide libraries may still work
            logger.debug("onnxruntime.preload_dlls failed: %s", exc)
    if chain[0] not in available:
        raise ValueError(
            f"provider {provider!r} needs {chain[0]}, but this onnxruntime "
            f"{ort.__version__} offers only {available}; install the GPU build "
            "(`pip uninstall onnxruntime && pip install onnxruntime-gpu`, with matching CUDA and "
            "cuDNN libraries) or use --provider cpu"
        )
    return chain


def check_provider(session: Any, provider: str) -> None:
    """Raise when ONNX Runtime silently fell back from the requested provider to another one."""
    wanted = _PROVIDER_NAMES[provider]
    active = session.get_providers()
    if not active or active[0] != wanted:
        raise ValueError(
            f"ONNX Runtime could not start {wanted} (active: {active}); check the CUDA / cuDNN / "
            "TensorRT libraries against the onnxruntime-gpu release notes, or use --provider cpu. "
            "A benchmark that silently ran on another provider would report the wrong hardware."
        )


# --------------------------------------------------------------------------------------------
# The timed passes
# --------------------------------------------------------------------------------------------


def pad_batch(images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``[B, C, H, max W]`` zero-padded (air) batch and the real widths, as the model expects."""
    widths = np.array([im.shape[-1] for im in images], dtype=np.int64)
    c, h = images[0].shape[:2]
    batch = np.zeros((len(images), c, h, int(widths.max())), dtype=np.float32)
    for i, im in enumerate(images):
        batch[i, :, :, : im.shape[-1]] = im
    return batch, widths


def _chunks(items: Sequence[Any], size: int) -> list[list[Any]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _serial_pass(triage: Any, batches: Sequence[Sequence[Path]]) -> dict[str, Any]:
    """Decode → preprocess → infer + postprocess, one batch after the other."""
    lat, decode, prep, infer = [], 0.0, 0.0, 0.0
    for files in batches:
        t0 = time.perf_counter()
        scans = [read_scan(f) for f in files]
        t1 = time.perf_counter()
        images = [triage.prepare(s) for s in scans]
        t2 = time.perf_counter()
        triage._results(scans, images)
        t3 = time.perf_counter()
        lat.append(t3 - t0)
        decode += t1 - t0
        prep += t2 - t1
        infer += t3 - t2
    n = sum(len(b) for b in batches)
    return {
        "latencies": lat,
        "seconds": sum(lat),
        "scans": n,
        "stage_ms_per_scan": {
            "decode": round(1000 * decode / n, 3),
            "preprocess": round(1000 * prep / n, 3),
            "inference_and_postprocess": round(1000 * infer / n, 3),
        },
    }


def _load_one(triage: Any, path: Path) -> tuple[Scan, np.ndarray, float]:
    t0 = time.perf_counter()
    scan = read_scan(path)
    return scan, triage.prepare(scan), t0


def _pipelined_pass(
    triage: Any, batches: Sequence[Sequence[Path]], workers: int, depth: int = 2
) -> dict[str, Any]:
    """Decode and preprocess upcoming scans in a thread pool while the current batch runs.

    Up to ``depth`` batches are in flight ahead of inference, so memory stays bounded. A
    batch's latency runs from the start of its first decode to the end of its postprocessing.
    """
    lat: list[float] = []
    t_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan-decode") as pool:
        pending: list[list[Future[tuple[Scan, np.ndarray, float]]]] = []
        nxt = 0
        for _ in range(min(depth, len(batches))):
            pending.append([pool.submit(_load_one, triage, f) for f in batches[nxt]])
            nxt += 1
        while pending:
            futures = pending.pop(0)
            loaded = [f.result() for f in futures]
            if nxt < len(batches):
                pending.append([pool.submit(_load_one, triage, f) for f in batches[nxt]])
                nxt += 1
            triage._results([x[0] for x in loaded], [x[1] for x in loaded])
            lat.append(time.perf_counter() - min(x[2] for x in loaded))
    seconds = time.perf_counter() - t_start
    return {"latencies": lat, "seconds": seconds, "scans": sum(len(b) for b in batches)}


def _timed_runs(fn: Callable[[Any], Any], batches: Sequence[Any], warmup: int,
                max_seconds: float | None = None, min_iters: int = 3) -> dict[str, Any]:
    """Warm up, then time ``fn(batch)`` per batch (stopping early after ``max_seconds``)."""
    for i in range(warmup):
        fn(batches[i % len(batches)])
    lat: list[float] = []
    scans = 0
    start = time.perf_counter()
    for b in batches:
        t0 = time.perf_counter()
        fn(b)
        lat.append(time.perf_counter() - t0)
        scans += len(b[1]) if isinstance(b, tuple) else len(b)
        if max_seconds is not None and len(lat) >= min_iters and time.perf_counter() - start > max_seconds:
            break
    return {"latencies": lat, "seconds": sum(lat), "scans": scans, "iterations": len(lat)}


def torch_eager_model(config: dict[str, Any], model_dir: Path) -> tuple[Any, str]:
    """The eager PyTorch network of a model directory and where its weights came from.

    Uses a ``*.pt`` / ``*.pth`` state dict beside the ONNX file when there is one; otherwise the
    same architecture with fresh random weights (speed does not depend on weight values).
    """
    import torch

    from scanvision.model import create_model

    name = config.get("model_name")
    if not name:
        raise ValueError(f"{model_dir}/config.json names no model_name; cannot build the torch model")
    arch = dict(config.get("architecture") or {})
    model = create_model(
        name, in_channels=int(config.get("channels", 1)),
        num_classes=len(config["class_names"]), **arch,
    )
    weights = sorted([*model_dir.glob("*.pt"), *model_dir.glob("*.pth")])
    source = "random (same architecture; speed does not depend on weight values)"
    for w in weights:
        state = torch.load(w, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError):
            continue
        source = w.name
        break
    return model.eval(), source


def _time_torch(config: dict[str, Any], model_dir: Path, batches: Sequence[tuple[np.ndarray, np.ndarray]],
                threads: int | None, warmup: int, max_seconds: float,
                gpu: bool = False) -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    model, source = torch_eager_model(config, model_dir)
    device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
    model = model.to(device)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        tensors = [(torch.from_numpy(x).to(device), torch.from_numpy(w).to(device))
                   for x, w in batches]

        def run(b: tuple[Any, Any]) -> None:
            with torch.inference_mode():
                model(*b)
            if device == "cuda":
                torch.cuda.synchronize()  # read the clock only when the GPU is done

        res = _timed_runs(run, tensors, max(1, warmup), max_seconds=max_seconds)
    finally:
        torch.set_num_threads(old_threads)
    res["weights"] = source
    res["threads"] = torch.get_num_threads() if threads is None else threads
    res["device"] = device
    return res


def _ms_list(seconds: Sequence[float]) -> list[float]:
    return [round(1000.0 * x, 3) for x in seconds]


def _rate(res: dict[str, Any]) -> float:
    return res["scans"] / res["seconds"] if res["seconds"] > 0 else float("nan")


def default_results_name(provider: str, threads: int | None, batch: int, size: str,
                         file_format: str = "png") -> str:
    """``scanner_<provider>_t<threads>_b<batch>_<size>.json`` (``tauto`` for default threads).

    A non-default file format is appended (``..._40ft_tiff.json``).
    """
    t = "auto" if threads is None else str(threads)
    suffix = "" if file_format == "png" else f"_{file_format}"
    return f"scanner_{provider}_t{t}_b{batch}_{size.lower()}{suffix}.json"


def run_scanner_benchmark(
    model_dir: str | Path | None = None,
    *,
    provider: str = "cpu",
    threads: int | None = None,
    batch: int = 4,
    scans: int = 200,
    size: str = "40ft",
    warmup: int = 3,
    seed: int = 0,
    file_format: str = "png",
    workers: int | None = None,
    distinct: int = DEFAULT_DISTINCT_SCANS,
    torch_eager: bool = True,
    torch_max_seconds: float = 20.0,
    flops: bool = True,
    work_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure end-to-end scan triage throughput and latency on this machine.

    Args:
        model_dir: scan model directory (default: :func:`scanvision.infer.default_model_dir`).
        provider: ``"cpu"``, ``"cuda"`` or ``"tensorrt"``.
        threads: ONNX Runtime intra-op threads (``None``: one per core).
        batch: scans per inference call (one timed iteration = one batch).
        scans: scans timed in each pass (rounded up to whole batches).
        size: ``"20ft"``, ``"40ft"`` or ``"WxH"`` (pixels).
        warmup: untimed iterations before each pass.
        seed: seed of the generated scans.
        file_format: ``"png"`` (16-bit PNG, the default) or ``"tiff"`` (uncompressed 16-bit
            TIFF: shows what decoding costs).
        workers: decode / preprocess threads of the pipelined pass (default: cores).
        distinct: scans rendered (then written under ``scans`` file names).
        torch_eager: also time eager PyTorch when torch is installed.
        torch_max_seconds: stop timing eager PyTorch after this long (at least 3 iterations).
        flops: count the network's MACs and measure the matmul rate (roofline).
        work_dir: where the scan files go (default: a temporary directory, removed after).
        progress: called with a short description of each step.

    Returns:
        One JSON-ready dict: ``scans_per_s`` (best end-to-end mode), ``latency_ms_p50/p90/p99``
        (serial iterations), ``model_only_scans_per_s``, ``torch_eager_scans_per_s`` (``None``
        without torch), ``serial`` / ``pipelined`` details, per-stage times, the roofline,
        ``scanners_served``, machine and library versions.
    """
    from scanvision.infer import ScanTriage, default_model_dir, load_model_config

    say = progress or (lambda _msg: None)
    if batch < 1 or scans < 1 or warmup < 0:
        raise ValueError(
            f"batch and scans must be >= 1 and warmup >= 0, got batch={batch}, scans={scans}, "
            f"warmup={warmup}"
        )
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; expected one of {list(PROVIDERS)}")
    parse_size(size)
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file_format must be one of {list(FILE_FORMATS)}, got {file_format!r}")
    model_path = Path(model_dir) if model_dir is not None else default_model_dir()
    config = load_model_config(model_path)
    provider_chain(provider)
    workers = workers or os.cpu_count() or 2
    load_before = machine_info()["load_average_1_5_15_min"]

    say("loading the model")
    triage = ScanTriage(model_path, provider=provider, threads=threads, batch_size=batch)
    check_provider(triage.session, provider)
    if triage.channels != 1:
        raise ValueError(
            f"{model_path} expects {triage.channels}-channel (dual-energy) input; the benchmark "
            "generates single-energy scans. Benchmark a single-energy model."
        )
    iterations = math.ceil(scans / batch)
    timed = iterations * batch
    tmp = tempfile.TemporaryDirectory(prefix="scanbench-") if work_dir is None else None
    scan_dir = Path(tmp.name if tmp is not None else work_dir)
    try:
        say(f"rendering {min(distinct, timed)} distinct {size} scans")
        images = render_bench_scans(min(distinct, timed), size, seed=seed)
        height, width = images[0].shape
        say(f"writing {timed} 16-bit {file_format.upper()} files")
        files = write_scan_files(images, scan_dir, timed, file_format)
        batches = _chunks(files, batch)
        warm = batches[: max(1, warmup)] if warmup else []

        say("end to end, serial")
        if warm:
            _serial_pass(triage, warm)
        serial = _serial_pass(triage, batches)

        say(f"end to end, pipelined ({workers} decode threads)")
        if warm:
            _pipelined_pass(triage, warm, workers)
        piped = _pipelined_pass(triage, batches, workers)

        say("model only (session.run)")
        prepared = [triage.prepare(read_scan(f)) for f in files[: min(len(files), len(images))]]
        tensors = [pad_batch([prepared[(i * batch + j) % len(prepared)] for j in range(batch)])
                   for i in range(iterations)]
        outputs = list(config["outputs"])

        def run_model(b: tuple[np.ndarray, np.ndarray]) -> None:
            triage.session.run(outputs, {"image": b[0], "width": b[1]})

        model_only = _timed_runs(run_model, tensors, warmup)

        torch_res = None
        if torch_eager:
            say("eager PyTorch on the same tensors")
            torch_res = _time_torch(config, model_path, tensors, threads, warmup, torch_max_seconds,
                                    gpu=provider != "cpu")
    finally:
        if tmp is not None:
            tmp.cleanup()

    serial_rate, piped_rate, model_rate = _rate(serial), _rate(piped), _rate(model_only)
    best_mode = "pipelined" if piped_rate >= serial_rate else "serial"
    best_rate = max(serial_rate, piped_rate)
    lat = latency_stats(serial["latencies"])
    plat = latency_stats(piped["latencies"])
    mlat = latency_stats(model_only["latencies"])
    in_shape = [batch, triage.channels, int(tensors[0][0].shape[2]), int(tensors[0][0].shape[3])]

    roofline: dict[str, Any] | None = None
    if flops:
        say("counting FLOPs and measuring the matmul rate")
        macs = count_model_macs(triage.model_dir / config.get("onnx_file", "model.onnx"),
                                [1, *in_shape[1:]])
        matmul_threads = threads or os.cpu_count() or 1
        gf = matmul_gflops(threads=matmul_threads)
        per_scan = macs["gflops"]
        roofline = {
            "gflops_per_scan": per_scan,
            "macs_per_scan": macs["macs"],
            "macs_by_op": macs["by_op"],
            "matmul_gflops_per_s": round(gf, 2),
            "matmul_threads": matmul_threads,
            "compute_bound_scans_per_s": round(gf / per_scan, 1) if per_scan > 0 else None,
            "model_only_achieved_gflops_per_s": round(model_rate * per_scan, 2),
            "model_only_fraction_of_matmul_peak": round(model_rate * per_scan / gf, 4),
        }

    torch_rate = _rate(torch_res) if torch_res else None
    stages = serial["stage_ms_per_scan"]
    return {
        "benchmark": "scanner",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scans_per_s": round(best_rate, 2),
        "best_mode": best_mode,
        "latency_ms_p50": lat["p50"],
        "latency_ms_p90": lat["p90"],
        "latency_ms_p99": lat["p99"],
        "latency_unit": "ms per iteration: one batch from file bytes to triage results, serial",
        "model_only_scans_per_s": round(model_rate, 2),
        "torch_eager_scans_per_s": round(torch_rate, 2) if torch_rate else None,
        "onnxruntime_vs_torch_eager": round(model_rate / torch_rate, 2) if torch_rate else None,
        "end_to_end_fraction_of_model_only": round(best_rate / model_rate, 3),
        "provider": provider,
        "providers_active": list(triage.providers),
        "threads": threads,
        "batch": batch,
        "width": int(width),
        "height": int(height),
        "size": size,
        "network_input": in_shape,
        "scans": serial["scans"],
        "iterations": iterations,
        "warmup": warmup,
        "decode_workers": workers,
        "serial": {
            "scans_per_s": round(serial_rate, 2),
            "latency_ms": lat,
            "stage_ms_per_scan": stages,
            "latencies_ms": _ms_list(serial["latencies"]),
        },
        "pipelined": {
            "scans_per_s": round(piped_rate, 2),
            "latency_ms": plat,
            "workers": workers,
            "depth_batches": 2,
            "latencies_ms": _ms_list(piped["latencies"]),
        },
        "model_only": {
            "scans_per_s": round(model_rate, 2),
            "latency_ms": mlat,
            "ms_per_scan": round(1000.0 / model_rate, 3),
            "latencies_ms": _ms_list(model_only["latencies"]),
        },
        "torch_eager": None if torch_res is None else {
            "scans_per_s": round(torch_rate, 2),
            "latency_ms": latency_stats(torch_res["latencies"]),
            "iterations": torch_res["iterations"],
            "weights": torch_res["weights"],
            "threads": torch_res["threads"],
            "device": torch_res["device"],
        },
        "roofline": roofline,
        "scanners_served": scanners_served(best_rate),
        "model": {
            "dir": str(model_path),
            "name": config.get("model_name"),
            "onnx_sha256": config.get("onnx_sha256"),
        },
        "scan_files": {"format": file_format, "bits": 16,
                       "compression": "zlib (PNG)" if file_format == "png" else "none",
                       "distinct_scans": len(images), "seed": seed},
        "machine": {**machine_info(), "load_average_before": load_before},
        "versions": library_versions(),
    }
