import numpy as np
import pandas as pd
import pytest

from riskengine.fusion import (
    FusionConfig,
    ImageCalibration,
    fit_image_calibration,
    fuse,
    logit,
    sigmoid,
)


def manifests(**extra):
    base = {
        "manifest_id": ["A", "B", "C", "D"],
        "risk_score": [0.01, 0.01, 0.2, 0.5],
        "declared_family": ["fruit", "fruit", "machinery", "empty"],
        "declared_empty": [False, False, False, True],
        "gross_weight_kg": [20000.0, 20000.0, 10000.0, 0.0],
    }
    base.update(extra)
    return pd.DataFrame(base)


def triage():
    return pd.DataFrame({
        "manifest_id": ["A", "C", "D"],
        "concealment_score": [0.5, 0.9, 0.1],
        "empty_probability": [0.05, 0.05, 0.02],
        "cargo_class": ["fruit", "fruit", "general"],
        "cargo_class_probability": [0.9, 0.95, 0.5],
        "estimated_mass_kg": [20500.0, 15000.0, np.nan],
    })


def test_log_odds_add_up_with_known_values():
    cal = ImageCalibration(a=1.0, b=0.0, prior=0.5)
    cfg = FusionConfig()
    out = fuse(manifests(), triage(), calibration=cal, config=cfg).set_index("manifest_id")
    # A: scan score 0.5 at a 50% prior is no evidence; weight within tolerance; class agrees
    assert out.loc["A", "image_llr"] == pytest.approx(0.0, abs=1e-9)
    assert out.loc["A", "fused_score"] == pytest.approx(0.01, rel=1e-6)
    # C: image llr = logit(0.9); mass +50% -> (0.5-0.25)/0.25 * 0.75 = 0.75; class mismatch +1.0
    assert out.loc["C", "image_llr"] == pytest.approx(np.log(9))
    assert out.loc["C", "mass_term"] == pytest.approx(0.75)
    assert out.loc["C", "class_term"] == pytest.approx(1.0)
    expected = logit(0.2) + np.log(9) + 0.75 + 1.0
    assert out.loc["C", "fused_logodds"] == pytest.approx(float(expected))
    assert out.loc["C", "fused_score"] == pytest.approx(float(sigmoid(expected)))
    assert "declared machinery but the scan looks like fruit" in out.loc["C", "fusion_reasons"]
    assert "scan mass 15.0 t vs declared 10.0 t (+50%)" in out.loc["C", "fusion_reasons"]
    # D: declared empty, scan loaded -> +2.5
    assert out.loc["D", "empty_term"] == pytest.approx(2.5)
    assert "declared EMPTY but the scan shows cargo" in out.loc["D", "fusion_reasons"]


def test_missing_scan_means_no_update_never_clean():
    out = fuse(manifests(), triage()).set_index("manifest_id")
    assert not out.loc["B", "scanned"]
    assert out.loc["B", "fused_score"] == pytest.approx(0.01, rel=1e-6)
    assert "not scanned" in out.loc["B", "fusion_reasons"]
    out_none = fuse(manifests(), None)
    np.testing.assert_allclose(out_none["fused_score"], manifests()["risk_score"], rtol=1e-6)


def test_prior_is_removed_from_the_image_evidence():
    # A calibration fitted at a 20% prevalence: a calibrated 20% is no evidence at all.
    cal = ImageCalibration(a=1.0, b=float(logit(0.2)), prior=0.2)
    assert cal.llr(np.array([0.5]))[0] == pytest.approx(0.0, abs=1e-9)


def test_fit_image_calibration_recovers_prevalence_and_direction():
    rng = np.random.default_rng(0)
    y = (rng.random(4000) < 0.25).astype(int)
    s = sigmoid(rng.normal(np.where(y == 1, 2.0, -2.0), 1.0))
    cal = fit_image_calibration(s, y)
    assert cal.prior == pytest.approx(y.mean())
    assert cal.a > 0
    assert cal.llr(np.array([0.95]))[0] > 2 > 0 > cal.llr(np.array([0.05]))[0]
    with pytest.raises(ValueError, match="with and without"):
        fit_image_calibration(s, np.zeros_like(y))


def test_duplicate_scans_and_missing_columns_are_clear_errors():
    t = pd.concat([triage(), triage().iloc[:1]])
    with pytest.raises(ValueError, match="several scans for one manifest_id"):
        fuse(manifests(), t)
    with pytest.raises(ValueError, match="missing \\['cargo_class'\\]"):
        fuse(manifests(), triage().drop(columns=["cargo_class"]))
