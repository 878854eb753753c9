"""The scan CNN: registry, shapes, ONNX export parity, ONNX Runtime inference, training helpers."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from scanvision.export import ExportParityError, export_onnx, pad_batch, save_model_dir  # noqa: E402
from scanvision.infer import (  # noqa: E402
    ScanTriage,
    TriageError,
    TriageResult,
    save_heatmap_overlay,
    triage_paths,
    width_batches,
)
from scanvision.io import Scan, read_scan, write_transmission  # noqa: E402
from scanvision.model import CARGO_CLASSES, create_model, list_models, model_spec  # noqa: E402
from scanvision.preprocess import PreprocessConfig, preprocess  # noqa: E402
from scanvision.synth import ScanSpec, ThreatSpec, render_scan, to_display8  # noqa: E402
from scanvision.train import (  # noqa: E402
    Sample,
    cell_targets,
    detection_report,
    fit_mass_calibration,
    threshold_at_far,
)

PCFG = PreprocessConfig()


def _scan(spec: ScanSpec) -> Scan:
    r = render_scan(spec)
    t = r.transmission
    return Scan(t, None, "raw16", None, t.shape[1], t.shape[0], r.meta)


@pytest.fixture(scope="module")
def scans() -> list[Scan]:
    """Raw scans of three different widths (10 mm pixels keep them small)."""
    return [
        _scan(ScanSpec(size="20ft", cargo_family="sacks", pixel_mm=10.0, seed=3)),
        _scan(ScanSpec(size="40ft", cargo_family="tyres", pixel_mm=10.0, seed=4,
                       threats=(ThreatSpec("drugs", "cargo", 40.0),))),
        _scan(ScanSpec(size="40ft", cargo_family="empty", chassis=False, pixel_mm=12.0, seed=5)),
    ]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, scans):
    """A freshly initialised tiny model exported with its sidecar."""
    torch.manual_seed(0)
    model = create_model("triage_tiny")
    # BatchNorm statistics from real scans, so that outputs depend on the input
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        model.train()
        for s in scans:
            model(torch.from_numpy(preprocess(s, PCFG))[None])
    model.eval()
    out = tmp_path_factory.mktemp("tiny_model")
    save_model_dir(
        model, out, model_name="triage_tiny", preprocess=PCFG.to_dict(),
        samples=[preprocess(s, PCFG) for s in scans],
        mass_calibration={"mu_m_cm2_g": 0.027, "pixel_mm": 5.0,
                          "coef": {"physics_kg": 1.0, "scan_length_m": 0.0, "scan_height_m": 0.0},
                          "intercept": -1000.0},
    )
    return out


# --------------------------------------------------------------------------- registry / model


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(KeyError) as exc:
        create_model("resnet9000")
    msg = str(exc.value)
    assert "unknown scan model 'resnet9000'" in msg
    for name in list_models():
        assert name in msg


def test_unknown_override_is_refused_and_known_override_applies():
    with pytest.raises(TypeError, match="unknown override"):
        create_model("triage_tiny", depth=12)
    assert model_spec("triage_tiny", topk=5).topk == 5
    assert create_model("triage_tiny", in_channels=2).in_channels == 2
    with pytest.raises(ValueError, match="in_channels must be 1"):
        create_model("triage_tiny", in_channels=3)


def test_outputs_have_the_documented_shapes_for_any_width():
    model = create_model("triage_tiny").eval()
    for width in (64, 320, 1216):
        with torch.no_grad():
            heat, score, empty, cls = model(torch.rand(2, 1, 192, width))
        assert heat.shape == (2, 1, 12, width // 16)
        assert score.shape == empty.shape == (2,)
        assert cls.shape == (2, len(CARGO_CLASSES))
        assert bool(((score > 0) & (score < 1)).all()) and bool(((empty > 0) & (empty < 1)).all())


def test_padded_columns_are_masked_out_of_the_pooled_heads_and_the_score():
    torch.manual_seed(1)
    model = create_model("triage_tiny").eval()
    padded = torch.zeros(2, 1, 192, 768)
    padded[0, ..., :256] = torch.rand(1, 192, 256)
    padded[1] = torch.rand(1, 192, 768)
    seen = {}
    model.pooled.register_forward_hook(lambda mod, inp, out: seen.update(pooled=inp[0]))
    with torch.no_grad():
        out = model.forward_train(padded, torch.tensor([256, 768]))
        f32 = model.stage32(model.stage16(padded))
    # pooled features: the mean over the real columns only (256 px = 8 columns at stride 32)
    assert torch.allclose(seen["pooled"][0], f32[0, :, :, :8].mean(dim=(1, 2)), atol=1e-5)
    assert torch.allclose(seen["pooled"][1], f32[1].mean(dim=(1, 2)), atol=1e-5)
    # the score ignores heatmap cells beyond the real width, even if they are the hottest
    with torch.no_grad():
        model.heat_out.bias.fill_(0.0)
        hot = model.forward_train(padded, torch.tensor([256, 768]))
        heat = hot["heatmap_logits"][0, 0, :, :16]
        expected = heat.flatten().topk(model.spec.topk).values.mean()
    assert hot["score_logit"][0] == pytest.approx(float(expected), abs=1e-5)
    assert out["heat_mask"][0, 0, 0].tolist() == [True] * 16 + [False] * 32


# --------------------------------------------------------------------------- export


def test_export_checks_parity_on_several_widths(tmp_path, scans):
    model = create_model("triage_tiny").eval()
    samples = [preprocess(s, PCFG) for s in scans]
    assert len({s.shape[2] for s in samples}) == 3
    report = export_onnx(model, tmp_path / "m.onnx", samples)
    assert set(report) == {"heatmap_logits", "score", "empty_prob", "class_logits"}
    assert max(report.values()) < 1e-3

    import onnx

    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    image_dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert image_dims == ["batch", 1, 192, "width"]


def test_export_that_fails_parity_leaves_no_file(tmp_path, scans):
    model = create_model("triage_tiny").eval()
    with pytest.raises(ExportParityError, match="differs from PyTorch"):
        export_onnx(model, tmp_path / "m.onnx", [preprocess(scans[0], PCFG)], atol=-1.0)
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_samples_with_the_wrong_channels(tmp_path):
    model = create_model("triage_tiny", in_channels=2)
    with pytest.raises(ValueError, match="expects 2"):
        export_onnx(model, tmp_path / "m.onnx", [np.zeros((1, 192, 64), np.float32)])


def test_sidecar_carries_everything_serving_needs(model_dir):
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["model_name"] == "triage_tiny"
    assert cfg["preprocess"] == PCFG.to_dict()
    assert cfg["class_names"] == list(CARGO_CLASSES)
    assert cfg["heatmap_stride"] == 16
    assert cfg["outputs"] == ["heatmap_logits", "score", "empty_prob", "class_logits"]
    assert cfg["score_calibration"]["method"] == "platt"
    assert {"torch", "onnx", "onnxruntime"} <= set(cfg["versions"])
    assert len(cfg["onnx_sha256"]) == 64


# --------------------------------------------------------------------------- inference


def test_infer_does_not_import_torch():
    code = "import sys, scanvision.infer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_onnx_matches_torch_for_mixed_widths_in_one_batch(model_dir, scans):
    engine = ScanTriage(model_dir, threads=1, batch_size=8)
    one_by_one = ScanTriage(model_dir, threads=1, batch_size=1)
    mixed = engine.triage(scans)
    alone = one_by_one.triage(scans)
    assert abs(mixed[0].empty_probability - mixed[2].empty_probability) > 1e-3
    for a, b, s in zip(mixed, alone, scans, strict=True):
        assert isinstance(a, TriageResult)
        assert 0.0 < a.concealment_score < 1.0
        assert a.concealment_score == pytest.approx(b.concealment_score, abs=1e-4)
        assert a.empty_probability == pytest.approx(b.empty_probability, abs=1e-4)
        assert a.class_probabilities == pytest.approx(b.class_probabilities, abs=1e-4)
        assert a.cargo_class in CARGO_CLASSES
        assert sum(a.class_probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        w = preprocess(s, PCFG).shape[2]
        assert a.heatmap.shape == (12, -(-w // 16))


def test_width_batches_groups_similar_widths():
    batches = width_batches([320, 640, 330, 1200, 650, 340], batch_size=2)
    assert [sorted(b.tolist()) for b in batches] == [[0, 2], [5], [1, 4], [3]]


def test_unavailable_provider_falls_back_to_cpu_with_a_warning(model_dir, caplog):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here; the fallback cannot be observed")
    with caplog.at_level(logging.WARNING, logger="scanvision.infer"):
        engine = ScanTriage(model_dir, provider="cuda")
    assert engine.providers == ["CPUExecutionProvider"]
    assert "falling back to CPUExecutionProvider" in caplog.text


def test_unknown_provider_and_missing_model_are_clear_errors(tmp_path, model_dir):
    with pytest.raises(ValueError, match="unknown provider 'opengl'"):
        ScanTriage(model_dir, provider="opengl")
    with pytest.raises(FileNotFoundError, match="scan model directory not found"):
        ScanTriage(tmp_path / "nope")


def test_mass_only_for_raw_scans(model_dir, scans):
    engine = ScanTriage(model_dir)
    raw = scans[1]
    d8 = to_display8(raw.transmission)
    from scanvision.io import display8_to_transmission

    display = Scan(display8_to_transmission(d8), None, "display8", None, d8.shape[1], d8.shape[0])
    res_raw, res_disp = engine.triage([raw, display])
    assert res_raw.estimated_mass_kg is not None and res_raw.estimated_mass_kg > 0
    assert res_disp.estimated_mass_kg is None
    assert res_disp.to_json()["estimated_mass_kg"] is None


def test_triage_paths_reports_a_corrupt_file_and_triages_the_others(tmp_path, model_dir, scans):
    good1 = write_transmission(tmp_path / "a.png", scans[0].transmission)
    bad = tmp_path / "b.png"
    bad.write_bytes(good1.read_bytes()[:200])  # truncated PNG
    jpg = tmp_path / "c.jpg"
    cv2.imwrite(str(jpg), to_display8(scans[1].transmission))
    out = list(triage_paths([good1, bad, jpg], model_dir=model_dir, heatmap_dir=tmp_path / "hm"))
    assert [type(o) for o in out] == [TriageResult, TriageError, TriageResult]
    assert out[1].path == str(bad) and "truncated PNG" in out[1].error
    assert out[0].estimated_mass_kg is not None and out[2].estimated_mass_kg is None
    for res, src in ((out[0], good1), (out[2], jpg)):
        overlay = cv2.imread(res.heatmap_path)
        assert overlay.shape[:2] == cv2.imread(str(src), cv2.IMREAD_UNCHANGED).shape[:2]


def test_heatmap_overlay_colours_only_the_hot_cells(tmp_path):
    t = np.full((96, 320), 0.5, dtype=np.float32)
    scan = Scan(t, None, "raw16", None, 320, 96)
    heat = np.zeros((6, 20), dtype=np.float32)
    heat[:, 15:] = 1.0  # the right quarter is hot
    path = save_heatmap_overlay(scan, heat, tmp_path / "o.png")
    img = cv2.imread(str(path)).astype(int)
    grey = round(0.5 * 255)
    assert np.all(img[:, :200] == grey)  # cold: the plain grey scan
    assert np.abs(img[:, 260:, 2] - img[:, 260:, 0]).min() > 50  # hot: coloured (red, not grey)


def test_read_back_png_gives_the_same_result_as_in_memory(tmp_path, model_dir, scans):
    engine = ScanTriage(model_dir)
    p = write_transmission(tmp_path / "x.png", scans[2].transmission)
    from_file = engine.triage([read_scan(p)])[0]
    in_memory = engine.triage([scans[2]])[0]
    assert from_file.concealment_score == pytest.approx(in_memory.concealment_score, abs=1e-4)


# --------------------------------------------------------------------------- training helpers


def test_cell_targets_mark_a_sub_cell_concealment_and_ignore_its_fringe():
    frac = np.zeros((192, 64), dtype=np.float32)
    frac[20:26, 5:12] = 1.0  # 42 px inside cell (row 1, col 0): 16 % of the cell
    frac[32, 5:12] = 1.0  # 7 px spilling into cell (2, 0): under 30 % of the peak cell
    pos, ign = cell_targets(frac)
    assert pos.shape == (12, 4)
    assert np.argwhere(pos).tolist() == [[1, 0]]
    assert np.argwhere(ign).tolist() == [[2, 0]]
    empty_pos, empty_ign = cell_targets(np.zeros((192, 64), np.float32))
    assert not empty_pos.any() and not empty_ign.any()


def test_cell_targets_fringe_cells_are_ignored_not_negative():
    frac = np.zeros((32, 32), dtype=np.float32)
    frac[0:16, 0:16] = 1.0  # a full cell
    frac[16, 0:4] = 1.0  # 4 px touching the cell below
    pos, ign = cell_targets(frac)
    assert pos.tolist() == [[True, False], [False, False]]
    assert ign.tolist() == [[False, False], [True, False]]


def test_threshold_at_far_and_pd_by_mass():
    neg = np.linspace(0.0, 0.99, 100)  # 100 clean scans
    thr = threshold_at_far(neg, 0.01)
    assert (neg > thr).sum() == 1
    labels = np.r_[np.zeros(100, bool), np.ones(4, bool)]
    scores = np.r_[neg, [0.995, 0.2, 0.999, 0.995]]
    masses = np.r_[np.zeros(100), [2.0, 10.0, 50.0, 300.0]]
    rep = detection_report(labels, scores, masses)
    bins = {tuple(b["mass_kg"]): b["pd"] for b in rep["at_far"]["0.01"]["by_mass"]}
    assert bins[(1, 5)] == 1.0 and bins[(5, 20)] == 0.0 and bins[(20, 100)] == 1.0
    assert rep["at_far"]["0.01"]["pd_ge_5kg"] == pytest.approx(2 / 3)
    assert rep["n_negative"] == 100 and rep["n_positive"] == 4


def test_mass_calibration_recovers_a_linear_relation():
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(60):
        length = float(rng.choice([6.8, 13.2]))
        cargo = float(rng.uniform(0, 20000))
        physics = 0.9 * cargo + 300.0 * length + 50.0
        samples.append(Sample("s", [], False, 0.0, [], [], cargo == 0, 0, cargo,
                              {"physics_kg": physics, "scan_length_m": length, "scan_height_m": 4.0}))
    cal = fit_mass_calibration(samples)
    assert cal["coef"]["physics_kg"] == pytest.approx(1 / 0.9, rel=1e-3)
    assert cal["fit_median_abs_pct_error_loaded"] < 0.1


def test_pad_batch_refuses_mixed_heights():
    with pytest.raises(ValueError, match="same channels and height"):
        pad_batch([np.zeros((1, 192, 64), np.float32), np.zeros((1, 160, 64), np.float32)])


def test_dual_energy_model_reads_high_low_pairs(tmp_path):
    r = render_scan(ScanSpec(size="20ft", cargo_family="machinery", dual_energy=True,
                             pixel_mm=10.0, seed=8))
    high = write_transmission(tmp_path / "S1_high.png", r.transmission)
    write_transmission(tmp_path / "S1_low.png", r.transmission_low)
    single = write_transmission(tmp_path / "S2.png", r.transmission)
    pcfg = PreprocessConfig(channels=2)
    scan = Scan(r.transmission, r.transmission_low, "raw16", None, r.transmission.shape[1],
                r.transmission.shape[0])
    out = tmp_path / "dual"
    save_model_dir(create_model("triage_tiny", in_channels=2).eval(), out, model_name="triage_tiny",
                   preprocess=pcfg.to_dict(), samples=[preprocess(scan, pcfg)])
    res = list(triage_paths([high, single], model_dir=out))
    assert isinstance(res[0], TriageResult) and res[0].estimated_mass_kg is None  # no calibration
    assert isinstance(res[1], TriageError) and "expects dual-energy scans" in res[1].error
