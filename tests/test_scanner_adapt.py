"""Site adaptation (`riskengine scanner adapt`) and threat image projection (scanvision.tip)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from riskengine.cli import main
from scanvision.adapt import (
    SITE_KEY,
    SiteScanError,
    load_site_scans,
    read_labels,
    split_holdout,
    torch_model_from_onnx,
)
from scanvision.infer import ScanTriage, default_model_dir
from scanvision.io import display8_to_transmission
from scanvision.tip import (
    DisplayMapping,
    ScanGeometry,
    draw_threat,
    estimate_geometry,
    project_threat,
)

SITE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "xray_site_dev"
needs_site = pytest.mark.skipif(not (SITE_DIR / "labels.csv").is_file(),
                                reason="the site scans of ../shared/data/xray_site_dev are not here")


def _container_image(w: int = 1600, h: int = 640, grey: int = 215) -> np.ndarray:
    """An empty-container-like display image: air margins, a light box, dark rails."""
    img = np.full((h, w), 252, np.uint8)
    img[20:h - 10, 10:w - 10] = grey
    img[h - 60:h - 40, 10:w - 10] = 90  # floor / rails
    return img


# --------------------------------------------------------------------------- projection physics


def test_projection_multiplies_the_estimated_transmission_by_exp_minus_mu_rho_t() -> None:
    img = _container_image()
    mapping = DisplayMapping(air=252.0, black=0.0, log_range=6.0, gamma=1.5)
    geo = estimate_geometry(img)
    threat = draw_threat(np.random.default_rng(1), geo, img, mass_kg=20.0, kind="brick_stack",
                         mapping=mapping)
    out, mask = project_threat(img, threat, mapping, None, blur_px=0.0, noise_grey=0.0)
    a0, a1 = mapping.to_attenuation(img), mapping.to_attenuation(out)
    t = np.zeros(img.shape, np.float32)
    th = threat.thickness_cm
    t[threat.y:threat.y + th.shape[0], threat.x:threat.x + th.shape[1]] = th
    expected = 0.027 * threat.density_g_cm3 * t
    inside = t > 0
    # in the estimated transmission domain, T' / T = exp(-mu * rho * t) (8-bit rounding aside)
    assert np.abs((a1 - a0)[inside] - expected[inside]).max() < 0.05
    assert np.median(np.abs((a1 - a0)[inside] - expected[inside])) < 0.01
    # nothing outside the threat changes; the mask is where it adds attenuation
    assert np.array_equal(out[~inside], img[~inside])
    assert mask.sum() == pytest.approx(inside.sum(), rel=0.05)


def test_saturated_background_stays_saturated() -> None:
    img = np.zeros((400, 1200), np.uint8)
    mapping = DisplayMapping(air=255.0, black=0.0)
    geo = ScanGeometry(0, 1200, 0, 400, "20ft", 5.0, 6.75)
    threat = draw_threat(np.random.default_rng(0), geo, img, mass_kg=50.0, kind="brick_stack",
                         mapping=mapping)
    out, _ = project_threat(img, threat, mapping, None, noise_grey=0.0)
    assert out.max() == 0  # black cargo hides the threat: no dark rectangle is pasted


@pytest.mark.parametrize("kind", ["brick_stack", "door_bags", "floor", "roof", "wall", "reefer"])
def test_threat_mass_is_what_its_thickness_map_weighs(kind: str) -> None:
    img = _container_image()
    geo = estimate_geometry(img)
    threat = draw_threat(np.random.default_rng(3), geo, img, mass_kg=40.0, kind=kind)
    pixel_cm2 = geo.mm_per_px_x * geo.mm_per_px_y / 100.0
    grams = float(threat.thickness_cm.sum()) * pixel_cm2 * threat.density_g_cm3
    # seams between bricks, blurred edges and pixel rounding cost up to about a fifth
    assert grams / 1000.0 == pytest.approx(40.0, rel=0.25)


def test_geometry_from_the_container_outline() -> None:
    forty = estimate_geometry(_container_image(w=2400, h=600))
    twenty = estimate_geometry(_container_image(w=1400, h=600))
    assert (forty.length, twenty.length) == ("40ft", "20ft")
    assert forty.mm_per_px_x == pytest.approx(12192 / 2380, rel=0.02)
    assert twenty.mm_per_px_y == pytest.approx(2700 / 570, rel=0.05)


def test_unknown_threat_kind_names_the_valid_ones() -> None:
    img = _container_image()
    with pytest.raises(ValueError, match="valid: .*brick_stack"):
        draw_threat(np.random.default_rng(0), estimate_geometry(img), img, kind="cocaine")


# --------------------------------------------------------------------------- inputs and errors


def _write_jpegs(d: Path, n: int, seed: int = 0) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = _container_image(w=int(rng.integers(1300, 2000)))
        img = np.clip(img.astype(int) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
        p = d / f"scan{i:03d}.jpg"
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(p)
    return paths


def test_too_few_readable_scans_and_unreadable_ones_listed(tmp_path: Path) -> None:
    paths = _write_jpegs(tmp_path / "s", 6)
    bad = tmp_path / "s" / "broken.jpg"
    bad.write_bytes(paths[0].read_bytes()[:500])
    skipped: list[str] = []
    with pytest.raises(SiteScanError, match=r"6 readable scan\(s\) \(1 unreadable\).*at least 20"):
        load_site_scans([*paths, bad], on_skip=lambda p, _r: skipped.append(p))
    assert skipped == [str(bad)]


def test_mixed_raw_and_display_refused(tmp_path: Path) -> None:
    paths = _write_jpegs(tmp_path / "s", 20)
    raw = tmp_path / "s" / "raw.png"
    cv2.imwrite(str(raw), np.full((300, 900), 40000, np.uint16))
    with pytest.raises(SiteScanError, match=r"mix image kinds \(20 display8, 1 raw16\)"):
        load_site_scans([*paths, raw])


def test_labels_csv_errors(tmp_path: Path) -> None:
    p = tmp_path / "labels.csv"
    p.write_text("file,status\na.jpg,empty\n")
    with pytest.raises(SiteScanError, match="needs columns 'file' and 'state'"):
        read_labels(p)
    p.write_text("file,state\na.jpg,empty\nb.jpg,full\n")
    with pytest.raises(SiteScanError, match="line 3: state 'full'"):
        read_labels(p)


def test_holdout_split_is_stratified_and_disjoint() -> None:
    states = ["empty"] * 40 + ["loaded"] * 20
    fit, hold = split_holdout(60, 0.25, 0, states)
    assert len(set(fit) & set(hold)) == 0 and len(fit) + len(hold) == 60
    assert sum(states[i] == "empty" for i in hold) == 10
    assert sum(states[i] == "loaded" for i in hold) == 5


def test_cli_refuses_a_non_empty_out_dir(tmp_path: Path) -> None:
    _write_jpegs(tmp_path / "s", 20)
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("keep me")
    res = CliRunner().invoke(main, ["scanner", "adapt", "--scans", str(tmp_path / "s"), "--out", str(out)])
    assert res.exit_code != 0
    assert "exists and is not empty" in " ".join(res.output.split())
    assert (out / "x").read_text() == "keep me"


def test_cli_help() -> None:
    res = CliRunner().invoke(main, ["scanner", "adapt", "--help"])
    assert res.exit_code == 0
    for opt in ("--scans", "--out", "--labels", "--epochs", "--holdout", "--seed", "--device"):
        assert opt in res.output


# --------------------------------------------------------------------------- the network


@needs_site
def test_network_rebuilt_from_onnx_matches_onnx_runtime_on_a_real_scan() -> None:
    import torch

    from scanvision.preprocess import PreprocessConfig, preprocess

    model = torch_model_from_onnx(default_model_dir())
    engine = ScanTriage()
    path = sorted((SITE_DIR / "scans").iterdir())[0]
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    from scanvision.io import Scan

    scan = Scan(display8_to_transmission(grey), None, "display8", None, grey.shape[1], grey.shape[0])
    x = preprocess(scan, PreprocessConfig.from_dict(engine.config["preprocess"]))[None]
    ref = engine.session.run(None, {"image": x, "width": np.array([x.shape[-1]])})
    with torch.no_grad():
        out = model(torch.from_numpy(x), torch.tensor([x.shape[-1]]))
    for a, b in zip(out, ref, strict=True):
        assert np.abs(a.numpy() - b).max() < 1e-3


# --------------------------------------------------------------------------- end to end


def _site_subset(tmp_path: Path, n: int = 28) -> tuple[Path, Path]:
    """``n`` real site scans (symlinked, never copied into the project) + their labels."""
    rows = list(csv.DictReader((SITE_DIR / "labels.csv").open()))
    rng = np.random.default_rng(5)
    empty = [r for r in rows if r["state"] == "empty"]
    loaded = [r for r in rows if r["state"] == "loaded"]
    pick = [empty[i] for i in rng.choice(len(empty), n // 2, replace=False)]
    pick += [loaded[i] for i in rng.choice(len(loaded), n - n // 2, replace=False)]
    d = tmp_path / "site"
    (d / "scans").mkdir(parents=True)
    for r in pick:
        (d / r["file"]).symlink_to(SITE_DIR / r["file"])
    labels = d / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "state", "declared_hs4"])
        for r in pick:
            w.writerow([r["file"], r["state"], r["declared_hs4"]])
    return d, labels


@pytest.mark.slow
@needs_site
def test_adapt_cli_at_its_defaults_writes_a_servable_site_model(tmp_path: Path) -> None:
    site, labels = _site_subset(tmp_path)
    out = tmp_path / "site_model"
    res = CliRunner().invoke(main, ["scanner", "adapt", "--scans", str(site), "--labels", str(labels),
                                    "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output.strip().splitlines()[-1])
    assert (rec["n_scans"], rec["n_holdout"], rec["n_fit"]) == (28, 8, 20)  # 4 empty + 4 loaded held out
    assert rec["unreadable"] == []
    # the held-out scans were never fitted: none of them is among the parity/fit inputs
    cfg = json.loads((out / "config.json").read_text())
    site_rec = cfg[SITE_KEY]
    assert set(site_rec["holdout_files"]) <= {p.name for p in (site / "scans").iterdir()}
    assert len(site_rec["holdout_files"]) == 8
    a, b = site_rec["holdout"]["adapted"], site_rec["holdout"]["base"]
    # thresholds are set on the held-out clean scans: at most the allowed share alarms
    n_clean = a["n_clean"]
    for far, thr in site_rec["thresholds"].items():
        assert a["false_alarm_rate"][far] <= math.floor(float(far) * n_clean) / n_clean + 1e-9
        assert thr == a["thresholds"][far]
    assert a["n_threat"] == 8 * 4 * 2 and a["n_clean"] == 8
    assert set(a["by_state"]) == {"empty", "loaded"}
    # the base model is at chance on these real backgrounds; adapting must not be worse
    assert a["auc"] > b["auc"] - 0.02
    assert 0.0 <= a["pointing_accuracy"] <= 1.0 and a["empty_auc"] >= 0.8
    card = (out / "MODEL_CARD.md").read_text()
    assert "held out" in card and "Alarm thresholds of this site" in card
    # the directory is a model directory like any other: triage loads it as it is
    engine = ScanTriage(out)
    scan_path = next((site / "scans").iterdir())
    res = CliRunner().invoke(main, ["triage", "--model", str(out), "--json", str(scan_path)])
    assert res.exit_code == 0, res.output
    assert engine.config[SITE_KEY]["site"] == "site"
    out_rows = [json.loads(x) for x in res.output.strip().splitlines()]
    assert out_rows[0]["threshold_source"] == "site"
    assert out_rows[0]["threshold"] == pytest.approx(site_rec["thresholds"]["0.01"], abs=1e-6)
    # and the scanner benchmark loads it too (40 scans: the count generator 1.1 broke)
    res = CliRunner().invoke(main, ["bench", "scanner", "--model", str(out), "--scans", "40",
                                    "--warmup", "1", "--no-torch", "--json"])
    assert res.exit_code == 0, res.output
    bench = json.loads(res.output.strip().splitlines()[-1])
    assert bench["scans"] == 40 and Path(bench["model"]["dir"]).resolve() == out.resolve()
    assert bench["model"]["onnx_sha256"] == cfg["onnx_sha256"]
    assert bench["serial"]["scans_per_s"] > 0


# --------------------------------------------------------------------------- transfer stage


def test_display_augmentation_gives_real_display_heights_and_stays_8_bit() -> None:
    from scanvision.transfer import DISPLAY_HEIGHTS, augment_display

    img = _container_image(w=2500, h=850)
    heights = set()
    for i in range(20):
        out = augment_display(img, np.random.default_rng(i))
        assert out.dtype == np.uint8 and out.ndim == 2
        heights.add(out.shape[0])
    resized = {h for h in heights if h != 850}
    assert resized and all(DISPLAY_HEIGHTS[0] <= h <= DISPLAY_HEIGHTS[1] for h in resized)


@pytest.mark.slow
def test_transfer_views_carry_projected_threats_and_fine_tune_keeps_the_best_epoch() -> None:
    from scanvision.preprocess import PreprocessConfig
    from scanvision.transfer import fine_tune_transfer, transfer_samples

    pcfg = PreprocessConfig()
    views = transfer_samples(10, 5, pcfg=pcfg, workers=1, tip_prob=1.0)
    kinds = [v.variants[0].kind for v in views]
    assert kinds.count("raw16") == 10 and kinds.count("display8") >= 10
    tip = [v for v in views if v.threat_types and v.threat_types[0].startswith("tip_")]
    assert tip, "every clean scan with tip_prob=1 gives a projected-threat view"
    for v in tip:
        # the heatmap target sits where the threat was projected
        assert v.threat and float(v.variants[0].frac.max()) > 0.3
    model = torch_model_from_onnx(default_model_dir())
    summary = fine_tune_transfer(model, views, views, epochs=1, lr=1e-4, seed=0, threads=1)
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
    assert summary["best_epoch"] == 1
    assert float(model.calib_scale) == pytest.approx(summary["score_calibration"]["scale"])
