"""`riskengine bench scanner|manifests`, the roofline arithmetic and the INT8 variant."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from riskengine.cli import main
from scanvision.bench import (
    count_model_macs,
    default_results_name,
    latency_stats,
    parse_size,
    scanners_served,
)

SCANNER_KEYS = {
    "scans_per_s", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "model_only_scans_per_s",
    "torch_eager_scans_per_s", "provider", "threads", "batch", "width", "height", "serial",
    "pipelined", "scanners_served", "machine", "versions", "roofline",
}


@pytest.fixture(scope="module")
def scan_model(tmp_path_factory):
    """An untrained tiny scan model exported like a real one (speed plumbing only)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from scanvision.export import save_model_dir
    from scanvision.model import create_model
    from scanvision.preprocess import PreprocessConfig

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("scan_model")
    rng = np.random.default_rng(0)
    save_model_dir(create_model("triage_tiny").eval(), out, model_name="triage_tiny",
                   preprocess=PreprocessConfig().to_dict(),
                   samples=[rng.random((1, 192, w), dtype=np.float32) for w in (64, 96)])
    return out


@pytest.fixture(scope="module")
def manifest_model(tmp_path_factory):
    from riskengine.model import RiskModel
    from riskengine.synth import generate_manifests

    train = generate_manifests(4_000, days=60, seed=1, illicit_rate=0.05)
    model = RiskModel(n_estimators=20, early_stopping_rounds=5, seed=1).fit(train)
    return model.save(tmp_path_factory.mktemp("manifest") / "model")


# --------------------------------------------------------------------------------- arithmetic


def test_scanners_served_uses_the_scanner_rates():
    s = scanners_served(14.0)
    assert s == {"rail_scanners": 10.0, "drive_through_portals": 336.0, "gantries": 2016.0}


def test_latency_percentiles_in_ms():
    stats = latency_stats([i / 1000 for i in range(1, 101)])  # 1..100 ms
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["max"] == pytest.approx(100.0)


def test_parse_size_and_results_name():
    assert parse_size("40ft") == ("40ft", None, None)
    assert parse_size("2400x578") == ("40ft", 2400, 578)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size("53ft")
    assert default_results_name("cpu", 2, 4, "40ft") == "scanner_cpu_t2_b4_40ft.json"
    assert default_results_name("cuda", None, 8, "40ft") == "scanner_cuda_tauto_b8_40ft.json"


def test_mac_count_of_a_known_graph(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    # Conv 3x3, 1 -> 4 channels, same padding on 1x1x8x16, then a 4 -> 3 Gemm after pooling.
    w = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    g = numpy_helper.from_array(np.ones((3, 4), np.float32), "g")
    nodes = [
        helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["out"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["b", 1, 8, "w"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=[w, g],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    res = count_model_macs(path, [1, 1, 8, 16])
    assert res["by_op"] == {"Conv": 4 * 8 * 16 * 9, "Gemm": 3 * 4}
    assert res["nodes_unknown"] == 0
    assert res["gflops"] == pytest.approx(2 * (4 * 8 * 16 * 9 + 12) / 1e9, abs=1e-4)


# ------------------------------------------------------------------------------- bench scanner


def test_bench_scanner_json_contract(scan_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, [
        "bench", "scanner", "--model", str(scan_model), "--scans", "4", "--warmup", "1",
        "--batch", "2", "--threads", "1", "--size", "640x192", "--json", "--results-file", "auto",
    ])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert SCANNER_KEYS <= set(out)
    for key in ("scans_per_s", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99",
                "model_only_scans_per_s", "torch_eager_scans_per_s"):
        assert out[key] > 0, key
    assert out["latency_ms_p50"] <= out["latency_ms_p90"] <= out["latency_ms_p99"]
    assert (out["provider"], out["threads"], out["batch"]) == ("cpu", 1, 2)
    assert (out["width"], out["height"]) == (640, 192)
    assert out["scans"] == 4 and out["network_input"] == [2, 1, 192, 640]
    assert out["serial"]["scans_per_s"] > 0 and out["pipelined"]["scans_per_s"] > 0
    assert len(out["serial"]["latencies_ms"]) == 2  # per-iteration latencies are kept
    assert out["scans_per_s"] == max(out["serial"]["scans_per_s"], out["pipelined"]["scans_per_s"])
    assert out["roofline"]["macs_per_scan"] > 0 and out["roofline"]["matmul_gflops_per_s"] > 0
    assert out["versions"]["onnxruntime"] and out["machine"]["logical_cores"] >= 1
    assert "random" in out["torch_eager"]["weights"]
    written = tmp_path / "benchmarks" / "results" / "scanner_cpu_t1_b2_640x192.json"
    assert json.loads(written.read_text())["scans_per_s"] == out["scans_per_s"]


def test_bench_scanner_bad_input(scan_model, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["bench", "scanner", "--model", str(tmp_path / "none")])
    assert res.exit_code == 1 and "scan model directory not found" in res.output
    res = runner.invoke(main, ["bench", "scanner", "--model", str(scan_model), "--size", "53ft"])
    assert res.exit_code == 1 and "WIDTHxHEIGHT" in res.output
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        res = runner.invoke(main, ["bench", "scanner", "--model", str(scan_model), "--provider", "cuda"])
        assert res.exit_code == 1 and "pip install onnxruntime-gpu" in res.output
    res = runner.invoke(main, ["bench", "scanner", "--batch", "0"])
    assert res.exit_code == 2


def test_bench_help():
    res = CliRunner().invoke(main, ["bench", "--help"])
    assert res.exit_code == 0 and "scanner" in res.output and "manifests" in res.output
    res = CliRunner().invoke(main, ["bench", "scanner", "--help"])
    for flag in ("--provider", "--threads", "--batch", "--scans", "--size", "--warmup", "--model",
                 "--results-file", "--json"):
        assert flag in res.output


# ----------------------------------------------------------------------------- bench manifests


def test_bench_manifests_json_contract(manifest_model, tmp_path):
    res = CliRunner().invoke(main, ["bench", "manifests", "--model", str(manifest_model),
                                    "--rows", "1500", "--repeat", "1", "--json",
                                    "--results-file", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["rows"] == 1500
    assert out["rows_per_s"] > 0 and out["raw_predict_rows_per_s"] > out["rows_per_s"]
    assert {"read", "validate", "indicators", "features", "predict", "reasons"} <= set(out["stages"])
    assert all(v > 0 for v in out["stages"].values())
    assert out["peak_rss_mb"] >= out["rss_at_start_mb"] > 0
    assert json.loads((tmp_path / "m.json").read_text())["rows"] == 1500


def test_bench_manifests_missing_model(tmp_path):
    res = CliRunner().invoke(main, ["bench", "manifests", "--model", str(tmp_path / "nope")])
    assert res.exit_code == 1 and "model directory not found" in res.output


# ----------------------------------------------------------------------------------- INT8


def test_int8_model_dir_serves_and_stays_close(scan_model, tmp_path):
    pytest.importorskip("onnx")
    from scanvision.bench import render_bench_scans
    from scanvision.infer import ScanTriage
    from scanvision.io import Scan
    from scanvision.quantize import write_int8_model_dir

    scans = [Scan(t, None, "raw16", None, t.shape[1], t.shape[0])
             for t in render_bench_scans(4, "320x96", seed=3)]
    fp32 = ScanTriage(scan_model, threads=1)
    calib = [fp32.prepare(s) for s in scans]
    q_dir = write_int8_model_dir(scan_model, tmp_path / "int8", calib)
    cfg = json.loads((q_dir / "config.json").read_text())
    assert cfg["quantization"]["format"] == "QDQ" and cfg["quantization"]["per_channel"]
    assert cfg["quantization"]["quantize_linear_nodes"] > 0
    int8 = ScanTriage(q_dir, threads=1)
    a, b = fp32.triage(scans), int8.triage(scans)
    assert [r.heatmap.shape for r in a] == [r.heatmap.shape for r in b]
    assert max(abs(x.concealment_score - y.concealment_score) for x, y in zip(a, b, strict=True)) < 0.05


def test_variants_refuse_a_training_seed(scan_model, tmp_path):
    pytest.importorskip("onnx")
    from scanvision.quantize import run_inference_variants

    d = tmp_path / "m"
    shutil.copytree(scan_model, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["training"] = {"seed": 5, "val_seed": 6}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="eval_seed=6 is a seed the model saw"):
        run_inference_variants(d, eval_seed=6)


def test_variants_report_speed_and_accuracy(scan_model, tmp_path):
    pytest.importorskip("onnx")
    from scanvision.quantize import run_inference_variants

    rep = run_inference_variants(scan_model, eval_count=6, calibration_count=3, threads=(1,),
                                 levels=("disable", "all"), speed_size="320x96",
                                 speed_iterations=2, cache_dir=tmp_path)
    names = [v["name"] for v in rep["variants"]]
    assert names == ["fp32_disable", "fp32_all", "int8_qdq_all"]
    for v in rep["variants"]:
        assert v["scans_per_s"] > 0 and 0 <= v["class_accuracy"] <= 1
    fp32 = rep["variants"][1]
    assert fp32["vs_fp32"]["score_max_abs_diff"] < 1e-4 and fp32["holds_accuracy"]
    assert rep["recommended"]["name"] in names
    assert rep["evaluation"]["scans"] == 6


@pytest.mark.parametrize("fmt", ["png", "tiff"])
def test_scan_files_decode_to_the_rendered_transmission(tmp_path, fmt):
    from scanvision.bench import render_bench_scans, write_scan_files
    from scanvision.io import read_scan

    images = render_bench_scans(2, "256x64", seed=1)
    files = write_scan_files(images, tmp_path, 5, fmt)
    assert len(files) == 5 and len({f.name for f in files}) == 5
    scan = read_scan(files[3])  # the 4th file holds the 2nd distinct scan
    assert scan.kind == "raw16" and (scan.width, scan.height) == (256, 64)
    assert np.abs(scan.transmission - images[1]).max() <= 1.0 / 65535 + 1e-7
