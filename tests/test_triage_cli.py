"""`riskengine triage` and `riskengine train scans`: the command-line contract."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from riskengine.cli import main
from scanvision.infer import default_model_dir
from scanvision.io import write_transmission
from scanvision.synth import ScanSpec, ThreatSpec, render_scan, to_display8

CONTRACT_KEYS = {"path", "concealment_score", "alarm", "threshold", "threshold_source", "empty",
                 "empty_probability", "cargo_class", "estimated_mass_kg", "heatmap"}
SHIPPED = default_model_dir()
needs_shipped = pytest.mark.skipif(
    not (SHIPPED / "config.json").is_file(), reason="the shipped scan model is not built"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained tiny model exported like a real one (fast; for the plumbing)."""
    torch = pytest.importorskip("torch")
    from scanvision.export import save_model_dir
    from scanvision.model import create_model
    from scanvision.preprocess import PreprocessConfig

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny")
    save_model_dir(create_model("triage_tiny").eval(), out, model_name="triage_tiny",
                   preprocess=PreprocessConfig().to_dict(),
                   samples=[np.random.default_rng(0).random((1, 192, w), dtype=np.float32)
                            for w in (64, 96)],
                   mass_calibration={"mu_m_cm2_g": 0.027, "pixel_mm": 5.0, "intercept": 0.0,
                                     "coef": {"physics_kg": 1.0}})
    return out


@pytest.fixture(scope="module")
def scan_files(tmp_path_factory):
    """Two raw 16-bit scans (one with a 300 kg concealment), an 8-bit JPEG and a corrupt file.

    300 kg just inside the doors is a load the shipped model detects reliably (see its card:
    Pd by mass and location); smaller loads inside dense cargo are in the card's statistics,
    not in a single-scan test.
    """
    d = tmp_path_factory.mktemp("scans")
    clean = render_scan(ScanSpec(size="20ft", cargo_family="general", seed=11))
    loaded = render_scan(ScanSpec(size="40ft", cargo_family="general", seed=12,
                                  threats=(ThreatSpec("drugs", "doors", 300.0),)))
    raw1 = write_transmission(d / "clean.png", clean.transmission)
    raw2 = write_transmission(d / "hidden.png", loaded.transmission)
    (d / "clean.json").write_text(json.dumps(clean.meta))
    jpg = d / "display.jpg"
    small = cv2.resize(to_display8(clean.transmission), (457, 263), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(jpg), small, [cv2.IMWRITE_JPEG_QUALITY, 85])
    bad = d / "corrupt.jpg"
    bad.write_bytes(jpg.read_bytes()[:300])
    return {"clean": raw1, "hidden": raw2, "jpg": jpg, "bad": bad}


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.strip().splitlines() if line.startswith("{")]


def test_help_documents_the_commands():
    res = CliRunner().invoke(main, ["triage", "--help"])
    assert res.exit_code == 0
    for opt in ("--model", "--provider", "--json", "--heatmaps", "cpu|cuda|tensorrt"):
        assert opt in res.output
    res = CliRunner().invoke(main, ["train", "scans", "--help"])
    assert res.exit_code == 0
    for opt in ("--data", "--out", "--epochs", "--seed"):
        assert opt in res.output


def test_json_contract_on_raw_scans_and_a_display_jpeg(tiny_model, scan_files, tmp_path):
    files = [scan_files["clean"], scan_files["jpg"]]
    res = CliRunner().invoke(main, ["triage", "--model", str(tiny_model), "--json",
                                    "--heatmaps", str(tmp_path / "hm"), *map(str, files)])
    assert res.exit_code == 0, res.output
    rows = _lines(res.output)
    assert [r["path"] for r in rows] == [str(f) for f in files]
    for r in rows:
        assert set(r) == CONTRACT_KEYS
        assert 0.0 <= r["concealment_score"] <= 1.0
        assert 0.0 <= r["empty_probability"] <= 1.0
        assert r["cargo_class"] in {"fruit", "frozen_meat", "sacks", "tyres", "machinery",
                                    "bottles_drums", "textiles", "general", "empty"}
        assert r["heatmap"] is not None and cv2.imread(r["heatmap"]) is not None
        # the alarm is the score against the threshold it names; empty agrees with the class
        assert r["alarm"] == (r["concealment_score"] > r["threshold"])
        assert r["threshold_source"] == "model card"
        assert r["empty"] == (r["empty_probability"] >= 0.5) == (r["cargo_class"] == "empty")
    assert isinstance(rows[0]["estimated_mass_kg"], float)  # raw transmission
    assert rows[1]["estimated_mass_kg"] is None  # display image: no physics


def test_a_corrupt_file_is_reported_and_the_others_still_triaged(tiny_model, scan_files):
    files = [scan_files["clean"], scan_files["bad"], scan_files["jpg"]]
    res = CliRunner().invoke(main, ["triage", "--model", str(tiny_model), "--json",
                                    *map(str, files)])
    assert res.exit_code == 1
    rows = _lines(res.output)
    assert len(rows) == 3
    assert set(rows[1]) == {"path", "error"} and rows[1]["path"] == str(scan_files["bad"])
    assert "JPEG" in rows[1]["error"]
    assert set(rows[0]) == set(rows[2]) == CONTRACT_KEYS


def test_table_output_and_missing_file(tiny_model, scan_files, tmp_path):
    res = CliRunner().invoke(main, ["triage", "--model", str(tiny_model), str(scan_files["clean"]),
                                    str(tmp_path / "missing.png")])
    assert res.exit_code == 1
    assert "clean.png" in res.output and "error" in res.output
    assert "scan file not found" in res.output
    assert "1 of 2 scan(s) could not be triaged" in res.output


def test_missing_model_directory_is_a_clear_error(scan_files, tmp_path):
    res = CliRunner().invoke(main, ["triage", "--model", str(tmp_path / "none"),
                                    str(scan_files["clean"])])
    assert res.exit_code == 1
    assert "FileNotFoundError: scan model directory not found" in res.output


def test_default_model_comes_from_the_environment(tiny_model, scan_files, monkeypatch):
    monkeypatch.setenv("RISKENGINE_SCAN_MODEL", str(tiny_model))
    res = CliRunner().invoke(main, ["triage", "--json", str(scan_files["clean"])])
    assert res.exit_code == 0, res.output
    assert _lines(res.output)[0]["path"] == str(scan_files["clean"])


def test_unavailable_gpu_provider_still_triages(tiny_model, scan_files):
    res = CliRunner().invoke(main, ["triage", "--model", str(tiny_model), "--provider", "tensorrt",
                                    "--json", str(scan_files["clean"])])
    assert res.exit_code == 0, res.output
    assert len(_lines(res.output)) == 1


def test_train_scans_without_torch_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    res = CliRunner().invoke(main, ["train", "scans", "--data", str(tmp_path), "--out",
                                    str(tmp_path / "m")])
    assert res.exit_code == 1
    assert "pip install 'riskengine[train]'" in res.output


@needs_shipped
def test_shipped_model_flags_a_concealment_and_clears_a_clean_scan(scan_files):
    res = CliRunner().invoke(main, ["triage", "--json", str(scan_files["clean"]),
                                    str(scan_files["hidden"]), str(scan_files["jpg"])])
    assert res.exit_code == 0, res.output
    clean, hidden, jpg = _lines(res.output)
    # the operating points of the card: alarm at 1 % false alarms, clear below the 5 % one
    at_far = json.loads((default_model_dir() / "config.json").read_text())["metrics"]["test"]["raw"]["at_far"]
    assert hidden["concealment_score"] > at_far["0.01"]["threshold"]
    assert clean["concealment_score"] < at_far["0.05"]["threshold"]
    # 8-bit display images of clean cargo score higher than raw scans (a known limit, in the model
    # card); they must still rank well below a real concealment.
    assert jpg["concealment_score"] < hidden["concealment_score"] - 0.3
    assert clean["cargo_class"] == "general" and clean["empty_probability"] < 0.5
    # mass from the raw scan: the cargo mass of the sidecar within 35 %
    truth = json.loads(scan_files["clean"].with_suffix(".json").read_text())["cargo_mass_kg"]
    assert abs(clean["estimated_mass_kg"] - truth) < 0.35 * truth


@pytest.mark.slow
def test_train_scans_end_to_end_on_a_small_directory(tmp_path):
    pytest.importorskip("torch")
    from scanvision.synth import generate_scans

    data = tmp_path / "scans"
    generate_scans(data, count=10, seed=3, threat_rate=0.5)
    out = tmp_path / "model"
    res = CliRunner().invoke(main, ["train", "scans", "--data", str(data), "--out", str(out),
                                    "--epochs", "1", "--model", "triage_tiny", "--val-fraction",
                                    "0.3", "--json"])
    assert res.exit_code == 0, res.output
    summary = _lines(res.output)[-1]
    assert summary["n_train"] + summary["n_val"] == 10
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"]["n_train"] == summary["n_train"]
    assert cfg["mass_calibration"]["coef"]["physics_kg"] > 0
    res = CliRunner().invoke(main, ["triage", "--model", str(out), "--json",
                                    str(data / "SCAN000000.png")])
    assert res.exit_code == 0, res.output


def test_a_damaged_model_file_is_a_clear_error(tiny_model, scan_files, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    res = CliRunner().invoke(main, ["triage", "--model", str(broken), str(scan_files["clean"])])
    assert res.exit_code == 1
    assert "ValueError" in res.output and "re-export the model" in res.output
