"""Per-scanner calibration of the concealment score (`riskengine scanner calibrate`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from riskengine.cli import main
from scanvision.calibrate import (
    CALIBRATION_KEY,
    ScannerCalibration,
    card_threshold,
    fit_scanner_calibration,
    score_logit,
    write_calibrated_model,
)
from scanvision.infer import ScanTriage, default_model_dir
from scanvision.io import Scan, display8_to_transmission, read_scan
from scanvision.synth import ScanSpec, render_scan, to_display8


def _sig(z):
    return 1 / (1 + np.exp(-np.asarray(z)))


def test_fit_puts_the_scanner_clean_scores_on_the_reference() -> None:
    rng = np.random.default_rng(0)
    reference = _sig(rng.normal(-3.0, 1.0, 2000))
    # a scanner whose clean containers score much higher and wider than the reference
    scanner = _sig(rng.normal(1.0, 2.0, 400))
    thr = float(np.quantile(reference, 0.99))
    cal = fit_scanner_calibration(scanner, reference, scanner="lane3", kind="display8", threshold=thr)
    assert cal.scale == pytest.approx(0.5, rel=0.15) and cal.bias == pytest.approx(-3.5, abs=0.4)
    assert cal.alarm_rate_before > 0.7
    assert cal.alarm_rate_after == pytest.approx(0.01, abs=0.015)
    # held out scans of the same scanner: the card's 1 % is 1 % again
    held_out = _sig(rng.normal(1.0, 2.0, 5000))
    assert (cal.apply(held_out) > thr).mean() == pytest.approx(0.01, abs=0.006)
    # monotone: the order of scans (and so the AUC) is unchanged
    s = np.sort(held_out)
    assert np.all(np.diff(cal.apply(s)) >= 0)


def test_fit_is_robust_to_a_few_uncleared_concealments() -> None:
    rng = np.random.default_rng(1)
    reference = _sig(rng.normal(-3.0, 1.0, 1000))
    clean = _sig(rng.normal(0.0, 1.0, 300))
    polluted = clean.copy()
    polluted[:15] = 0.9999  # 5 % of the "cleared" scans were not clean after all
    a = fit_scanner_calibration(clean, reference, scanner="x", kind="raw16")
    b = fit_scanner_calibration(polluted, reference, scanner="x", kind="raw16")
    assert abs(a.bias - b.bias) < 0.3 and abs(a.scale - b.scale) / a.scale < 0.15


def test_fit_refuses_too_few_scans_and_bounds_the_scale() -> None:
    ref = _sig(np.linspace(-5, 0, 100))
    with pytest.raises(ValueError, match="12 cleared scan.* needs at least 20"):
        fit_scanner_calibration(_sig(np.zeros(12)), ref, scanner="x", kind="raw16")
    with pytest.raises(ValueError, match="kind must be 'raw16' or 'display8'"):
        fit_scanner_calibration(_sig(np.zeros(30)), ref, scanner="x", kind="tiff")
    # identical clean scores (spread ~0) would ask for an infinite scale: bounded at 4
    cal = fit_scanner_calibration(np.full(30, 0.7), ref, scanner="x", kind="raw16")
    assert cal.scale == pytest.approx(4.0)
    assert np.isfinite(score_logit([0.0, 1.0])).all()


def test_calibration_round_trips_and_rejects_bad_sidecars() -> None:
    cal = fit_scanner_calibration(_sig(np.linspace(-1, 1, 50)), _sig(np.linspace(-4, -2, 50)),
                                  scanner="RTM-3", kind="display8", threshold=0.8)
    again = ScannerCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    with pytest.raises(ValueError, match=r"lacks \['bias'\]"):
        ScannerCalibration.from_dict({"scanner": "a", "kind": "raw16", "scale": 1.0})
    with pytest.raises(ValueError, match="kind must be 'raw16' or 'display8'"):
        ScannerCalibration.from_dict({**cal.to_dict(), "kind": "jpeg"})
    # the map alone is enough (a hand-written calibration); the report fields are optional
    minimal = ScannerCalibration.from_dict({"scanner": "a", "kind": "raw16", "scale": 2.0, "bias": -1.0})
    assert minimal.apply([0.5])[0] == pytest.approx(1 / (1 + np.exp(1.0)))


def _display_scan(seed: int) -> Scan:
    r = render_scan(ScanSpec(size="20ft", cargo_family="general", pixel_mm=10.0, seed=seed))
    d8 = to_display8(r.transmission)
    return Scan(display8_to_transmission(d8), None, "display8", None, d8.shape[1], d8.shape[0])


def test_triage_applies_the_calibration_to_its_kind_only(tmp_path: Path, caplog) -> None:
    cal = ScannerCalibration("lane3", "display8", 1.0, -3.0, 50, 0, 1, -3, 1, 0.5, 0.5, 0.0, "t")
    out = write_calibrated_model(default_model_dir(), tmp_path / "cal", cal)
    assert json.loads((out / "config.json").read_text())[CALIBRATION_KEY]["scanner"] == "lane3"
    plain, calibrated = ScanTriage(threads=1), ScanTriage(out, threads=1)
    disp = _display_scan(3)
    s0 = plain.triage([disp])[0].concealment_score
    s1 = calibrated.triage([disp])[0].concealment_score
    assert s1 == pytest.approx(float(_sig(score_logit([s0])[0] - 3.0)), rel=1e-6)
    assert s1 < s0
    r = render_scan(ScanSpec(size="20ft", cargo_family="general", pixel_mm=10.0, seed=3))
    raw = Scan(r.transmission, None, "raw16", None, r.transmission.shape[1], r.transmission.shape[0])
    with caplog.at_level(logging.WARNING, logger="scanvision.infer"):
        assert calibrated.triage([raw])[0].concealment_score == pytest.approx(
            plain.triage([raw])[0].concealment_score)
    assert "keeps the uncalibrated score" in caplog.text
    # never over the source, never into a non-empty directory
    with pytest.raises(FileExistsError, match="not empty"):
        write_calibrated_model(default_model_dir(), out, cal)
    with pytest.raises(ValueError, match="new directory"):
        write_calibrated_model(out, out, cal)


def test_card_threshold_reads_the_model_card() -> None:
    cfg = json.loads((default_model_dir() / "config.json").read_text())
    assert card_threshold(cfg, "display8") == cfg["metrics"]["test"]["display"]["at_far"]["0.01"]["threshold"]
    assert card_threshold(cfg, "raw16") == cfg["metrics"]["test"]["raw"]["at_far"]["0.01"]["threshold"]
    assert card_threshold({}, "raw16") == 0.5


@pytest.mark.slow
def test_cli_scanner_calibrate(tmp_path: Path) -> None:
    cleared = tmp_path / "cleared"
    cleared.mkdir()
    for i in range(22):
        r = render_scan(ScanSpec(size="20ft", cargo_family=["general", "sacks", "empty"][i % 3],
                                 pixel_mm=10.0, seed=100 + i))
        cv2.imwrite(str(cleared / f"c{i:02d}.jpg"), to_display8(r.transmission))
    (cleared / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    files = sorted(str(p) for p in cleared.iterdir())
    runner = CliRunner()
    out = tmp_path / "model-lane3"
    res = runner.invoke(main, ["scanner", "calibrate", "--scanner", "lane3", "--out", str(out),
                               "--reference-count", "50", "--json", *files])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output[res.output.index("{"):])
    assert summary["scanner"] == "lane3" and summary["kind"] == "display8"
    assert summary["n_clean"] == 22 and summary["unreadable"] == 1
    cfg = json.loads((out / "config.json").read_text())
    assert cfg[CALIBRATION_KEY]["scale"] == summary["scale"]
    assert (out / "model.onnx").read_bytes() == (default_model_dir() / "model.onnx").read_bytes()
    # the calibrated directory triages, and cannot be calibrated again
    res = runner.invoke(main, ["triage", "--json", "--model", str(out), str(cleared / "c00.jpg")])
    assert res.exit_code == 0 and '"concealment_score"' in res.output
    res = runner.invoke(main, ["scanner", "calibrate", "--scanner", "x", "--model", str(out),
                               "--out", str(tmp_path / "again"), *files])
    assert res.exit_code != 0 and "already carries a calibration for scanner 'lane3'" in res.output
    # too few readable scans, mixed kinds, an existing output directory
    res = runner.invoke(main, ["scanner", "calibrate", "--scanner", "x", "--out", str(tmp_path / "few"), *files[:5]])
    assert res.exit_code != 0 and "4 readable cleared scan(s) (1 unreadable)" in res.output
    raw = tmp_path / "raw.png"
    cv2.imwrite(str(raw), (read_scan(str(cleared / "c00.jpg")).transmission * 65535).astype(np.uint16))
    res = runner.invoke(main, ["scanner", "calibrate", "--scanner", "x", "--out", str(tmp_path / "mix"),
                               str(raw), *files])
    assert res.exit_code != 0 and "mix image kinds (22 display8, 1 raw16)" in res.output
    res = runner.invoke(main, ["scanner", "calibrate", "--scanner", "x", "--out", str(out), *files])
    assert res.exit_code != 0 and "exists and is not empty" in res.output
