"""Synthetic scans: physics, ground truth, geometry, determinism, files and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from riskengine.cli import main
from scanvision.io import (
    display8_to_transmission,
    read_dual_energy,
    read_mask,
    read_scan,
)
from scanvision.preprocess import estimate_mass_kg
from scanvision.synth import (
    BULK_CARGO,
    MATERIALS,
    TRACTOR_MM,
    ScanSpec,
    ThreatSpec,
    generate_scans,
    parse_container_type,
    project_threat,
    render_scan,
    render_scan_for_manifest,
    render_threat,
    sample_spec,
    to_display8,
    transmission_from_density,
)

CLEAN = dict(noise=False, psf_sigma_px=0.0)
PIXEL_AREA_CM2 = 0.25  # 5 mm pixels


def _interior(scan, margin: int = 120) -> tuple[slice, slice]:
    x0, y0, x1, y1 = scan.meta["container_box"]
    return slice(y0 + 60, y1 - 60), slice(x0 + margin, x1 - margin)


# --------------------------------------------------------------------------- physics


@pytest.mark.parametrize("material,rho,t_cm", [("organic", 1.2, 20.0), ("inorganic", 2.7, 5.0), ("steel", 7.85, 3.0)])
def test_slab_transmits_exp_minus_mu_rho_t(material: str, rho: float, t_cm: float) -> None:
    dens = np.full((4, 5), rho * t_cm, np.float32)
    for energy in ("high", "low"):
        mat = MATERIALS[material]
        mu = mat.mu_high if energy == "high" else mat.mu_low
        t = transmission_from_density({material: dens}, energy)
        np.testing.assert_allclose(t, np.exp(-mu * rho * t_cm), rtol=1e-6)


def test_mass_attenuation_values_are_physical() -> None:
    org, ino, st = MATERIALS["organic"], MATERIALS["inorganic"], MATERIALS["steel"]
    assert 0.024 <= org.mu_high <= 0.027 and 0.028 <= st.mu_high <= 0.031
    for m in (org, ino, st):
        assert m.mu_low > m.mu_high  # attenuation falls with energy in this range
    # the dual-energy ratio separates materials: organic < inorganic < steel
    assert org.mu_high / org.mu_low < ino.mu_high / ino.mu_low < st.mu_high / st.mu_low


def test_dual_energy_ratio_tells_organic_from_steel() -> None:
    spec = ScanSpec(cargo_family="empty", dual_energy=True, chassis=False, **CLEAN,
                    threats=(ThreatSpec("drugs", "cargo", 80.0), ThreatSpec("weapon", "walls", 4.0)))
    s = render_scan(spec)
    base = render_scan(ScanSpec(cargo_family="empty", dual_energy=True, chassis=False, **CLEAN))
    ratios = {}
    for th in s.meta["threats"]:
        x0, y0, x1, y1 = th["box"]
        hi = -np.log(s.transmission[y0:y1, x0:x1] / base.transmission[y0:y1, x0:x1])
        lo = -np.log(s.transmission_low[y0:y1, x0:x1] / base.transmission_low[y0:y1, x0:x1])
        sel = hi > 0.05
        ratios[th["material"]] = float(np.median(hi[sel] / lo[sel]))
    m = MATERIALS
    assert ratios["organic"] == pytest.approx(m["organic"].mu_high / m["organic"].mu_low, rel=1e-3)
    assert ratios["steel"] == pytest.approx(m["steel"].mu_high / m["steel"].mu_low, rel=1e-3)


def test_poisson_noise_matches_the_dose() -> None:
    kw = dict(size="20ft", cargo_family="empty", chassis=False, psf_sigma_px=0.0, seed=2, dose=1e4)
    clean = render_scan(ScanSpec(**kw, noise=False))
    noisy = render_scan(ScanSpec(**kw))
    reg = _interior(clean, 200)
    t = clean.transmission[reg]
    rel = noisy.transmission[reg] / t - 1
    expected = np.sqrt(1 / (1e4 * t.mean()) + 0.004**2 + 0.002**2)  # counting + gain errors
    assert rel.std() == pytest.approx(expected, rel=0.1)
    assert abs(rel.mean()) < 1e-3
    # row gain errors: rows differ more than counting noise alone allows
    row_means = rel.mean(axis=1)
    assert row_means.std() > 3 * rel.std() / np.sqrt(rel.shape[1])


@pytest.mark.parametrize(
    "threat,reefer",
    [(ThreatSpec("drugs", "cargo", 40.0), False), (ThreatSpec("drugs", "doors", 120.0), False),
     (ThreatSpec("drugs", "walls", 30.0), False), (ThreatSpec("drugs", "roof", 25.0), False),
     (ThreatSpec("drugs", "reefer_unit", 60.0), True), (ThreatSpec("drugs", "cargo", 1.0), True),
     (ThreatSpec("cigarettes", "cargo", 500.0), False), (ThreatSpec("weapon", "cargo", 3.5), False)],
)
def test_threat_mass_is_recoverable_from_the_image(threat: ThreatSpec, reefer: bool) -> None:
    """sum(-ln(T_with / T_without)) / mu * pixel area == placed mass, and only inside the mask."""
    kw = dict(size="20ft", reefer=reefer, cargo_family="frozen_meat" if reefer else "general",
              fill=0.7, seed=5, **CLEAN)
    without = render_scan(ScanSpec(**kw))
    with_t = render_scan(ScanSpec(**kw, threats=(threat,)))
    meta = with_t.meta["threats"][0]
    extra = -np.log(with_t.transmission / without.transmission)
    mu = MATERIALS[meta["material"]].mu_high
    assert extra.sum() / mu * PIXEL_AREA_CM2 / 1000 == pytest.approx(threat.mass_kg, rel=1e-3)
    assert np.all(extra[~with_t.mask] == 0)
    assert np.all(extra[with_t.mask] > 0)
    assert meta["mass_kg"] == threat.mass_kg and meta["location"] == threat.location
    assert without.meta["cargo_mass_kg"] == with_t.meta["cargo_mass_kg"]


def test_floor_concealment_is_partly_hidden_behind_cross_members() -> None:
    kw = dict(size="20ft", cargo_family="sacks", fill=0.9, seed=8, **CLEAN)
    a = render_scan(ScanSpec(**kw))
    b = render_scan(ScanSpec(**kw, threats=(ThreatSpec("drugs", "floor", 80.0),)))
    x0, y0, x1, y1 = b.meta["threats"][0]["box"]
    assert y0 >= _interior(b)[0].stop - 60  # below the floor top
    est = (-np.log(b.transmission / a.transmission)).sum() / MATERIALS["organic"].mu_high * PIXEL_AREA_CM2 / 1000
    assert 0.9 * 80 < est <= 80.0 + 1e-3  # opaque steel webs hide a little of it


@pytest.mark.parametrize("threat", [ThreatSpec("cigarettes", "cargo", 2000.0), ThreatSpec("drugs", "doors", 500.0),
                                    ThreatSpec("drugs", "walls", 500.0), ThreatSpec("drugs", "roof", 500.0)])
def test_large_concealments_stay_inside_the_box(threat: ThreatSpec) -> None:
    s = render_scan(ScanSpec(size="20ft", cargo_family="general", fill=1.0, seed=1, threats=(threat,), **CLEAN))
    bx0, by0, bx1, by1 = s.meta["threats"][0]["box"]
    cx0, cy0, cx1, cy1 = s.meta["container_box"]
    assert cx0 <= bx0 < bx1 <= cx1 and cy0 <= by0 < by1 <= cy1


def test_cargo_mass_follows_the_target() -> None:
    s = render_scan(ScanSpec(size="40ft", cargo_family="sacks", fill=0.8, cargo_mass_kg=18_000.0, **CLEAN))
    assert s.meta["cargo_mass_kg"] == pytest.approx(18_000.0, rel=1e-3)
    assert not s.meta["empty"]


# --------------------------------------------------------------------------- geometry


def test_geometry_sizes_and_structures() -> None:
    s20 = render_scan(ScanSpec(size="20ft", cargo_family="empty", chassis=False, **CLEAN))
    s40 = render_scan(ScanSpec(size="40ft", cargo_family="empty", chassis=False, **CLEAN))
    hc = render_scan(ScanSpec(size="40ft", high_cube=True, cargo_family="empty", chassis=False, **CLEAN))
    w20 = s20.meta["container_box"][2] - s20.meta["container_box"][0]
    w40 = s40.meta["container_box"][2] - s40.meta["container_box"][0]
    assert w20 == pytest.approx(6058 / 5, abs=2) and w40 == pytest.approx(12192 / 5, abs=2)
    assert s40.transmission.shape[1] > s20.transmission.shape[1] + 1000
    assert hc.transmission.shape[0] > s40.transmission.shape[0]
    box = s20.meta["container_box"]
    assert box[3] - box[1] == pytest.approx(2591 / 5, abs=1)  # ~520 px high
    assert s20.transmission.shape[0] < 600  # plus a little air without a chassis
    # air above the container, steel walls inside it, opaque rails at top and bottom
    assert s20.transmission[:10].min() > 0.999
    x0, y0, x1, y1 = s20.meta["container_box"]
    interior = s20.transmission[_interior(s20)]
    assert 0.8 < np.median(interior) < 0.95
    assert s20.transmission[y0:y0 + 12, x0 + 300:x1 - 300].min(axis=0).max() < 0.2  # roof line
    assert s20.transmission[y1 - 36:y1, x0 + 300:x1 - 300].min(axis=0).max() < 0.1  # floor/rails
    # corrugated walls: periodic vertical lines along the length
    profile = -np.log(s20.transmission[y0 + 200, x0 + 100:x1 - 100])
    spectrum = np.abs(np.fft.rfft(profile - profile.mean()))
    freq = int(np.argmax(spectrum[5:])) + 5
    # two oblique faces per 278 mm corrugation pitch: lines every 139 mm = 27.8 px
    assert len(profile) / freq == pytest.approx(278 / 5 / 2, rel=0.05)


def test_loaded_attenuates_more_than_empty() -> None:
    kw = dict(size="20ft", chassis=False, seed=1, **CLEAN)
    empty = render_scan(ScanSpec(cargo_family="empty", **kw))
    assert empty.meta["empty"] and empty.meta["cargo_mass_kg"] == 0.0
    a_empty = -np.log(empty.transmission[_interior(empty)]).mean()
    for fam in ("fruit", "frozen_meat", "sacks", "tyres", "machinery", "bottles_drums", "textiles", "general"):
        s = render_scan(ScanSpec(cargo_family=fam, fill=1.0, **kw))
        assert not s.meta["empty"] and s.meta["cargo_mass_kg"] > 1000, fam
        assert -np.log(s.transmission[_interior(s)]).mean() > a_empty + 0.2, fam


def test_reefer_unit_at_the_front_end() -> None:
    kw = dict(size="20ft", cargo_family="empty", chassis=False, **CLEAN)
    dry, reefer = render_scan(ScanSpec(**kw)), render_scan(ScanSpec(reefer=True, **kw))
    x0, y0, _, y1 = reefer.meta["container_box"]
    front = (slice(y0 + 40, y1 - 40), slice(x0 + 10, x0 + 90))
    assert -np.log(reefer.transmission[front]).mean() > -np.log(dry.transmission[front]).mean() + 0.5
    assert reefer.meta["container_type"] == "22R1" and dry.meta["container_type"] == "22G1"
    # flipped: the unit (and the door end) swap sides
    flipped = render_scan(ScanSpec(reefer=True, flip=True, **kw))
    np.testing.assert_array_equal(flipped.transmission, reefer.transmission[:, ::-1])
    assert flipped.meta["door_end"] == "left"


def test_chassis_and_wheels_below() -> None:
    kw = dict(size="40ft", cargo_family="empty", **CLEAN)
    with_c, without = render_scan(ScanSpec(**kw)), render_scan(ScanSpec(chassis=False, **kw))
    assert with_c.transmission.shape[0] > without.transmission.shape[0] + 150
    y1 = with_c.meta["container_box"][3]
    below = with_c.transmission[y1 + 100:]
    assert (below < 0.01).any()  # axles / hubs
    assert below.mean() < 0.97


def test_tractor_unit_in_front_of_the_trailer() -> None:
    kw = dict(size="20ft", cargo_family="empty", seed=3, **CLEAN)
    plain, truck = render_scan(ScanSpec(**kw)), render_scan(ScanSpec(tractor=True, **kw))
    assert truck.meta["tractor"] and not plain.meta["tractor"]
    # the image grows by the tractor's length at the front; the container moves with it
    assert truck.transmission.shape[1] - plain.transmission.shape[1] == pytest.approx(TRACTOR_MM / 5, abs=1)
    assert truck.meta["container_box"][0] - plain.meta["container_box"][0] == pytest.approx(TRACTOR_MM / 5, abs=1)
    front = truck.transmission[:, : truck.meta["container_box"][0] - 40]
    # the engine block: ~30-45 cm of cast iron across, nearly opaque
    assert (-np.log(front)).max() > 7.0
    # the container and what is behind it are the same scan, shifted
    dx = truck.meta["container_box"][0] - plain.meta["container_box"][0]
    x0, _, x1, y1 = plain.meta["container_box"]
    np.testing.assert_allclose(truck.transmission[: y1, x0 + dx + 2000 // 5: x1 + dx],
                               plain.transmission[: y1, x0 + 2000 // 5: x1], atol=1e-6)
    # mirrored with the door end
    flipped = render_scan(ScanSpec(tractor=True, flip=True, **kw))
    np.testing.assert_array_equal(flipped.transmission, truck.transmission[:, ::-1])
    with pytest.raises(ValueError, match="tractor=True needs chassis=True"):
        render_scan(ScanSpec(tractor=True, chassis=False))


@pytest.mark.parametrize("family,kind", [(f, k) for f, kinds in BULK_CARGO.items() for k in kinds])
def test_bulk_cargo_renders_large_uniform_packages(family: str, kind: str) -> None:
    kw = dict(size="20ft", cargo_family=family, fill=0.9, chassis=False, seed=5, **CLEAN)
    default, bulk = render_scan(ScanSpec(**kw)), render_scan(ScanSpec(bulk_cargo=kind, **kw))
    assert bulk.meta["bulk_cargo"] == kind and default.meta["bulk_cargo"] is None
    assert bulk.meta["cargo_family"] == family and not bulk.meta["empty"]
    assert bulk.meta["cargo_mass_kg"] > 1000 and not bulk.mask.any()
    assert not np.array_equal(bulk.transmission, default.transmission)
    # same container, same structure outside the cargo space
    x0, y0, x1, y1 = bulk.meta["container_box"]
    np.testing.assert_array_equal(bulk.transmission[:y0], default.transmission[:y0])


def test_bulk_cargo_and_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="bulk_cargo 'steel_coils' does not fit cargo family 'fruit'"):
        render_scan(ScanSpec(cargo_family="fruit", bulk_cargo="steel_coils"))
    # with both rates at 0 the sampled specs are generator 1.0's (no tractor, default packing);
    # at 1 every trailer has a tractor and every bulk-capable family is packed in bulk
    none = [sample_spec(np.random.default_rng(i), scan_id=f"S{i}", seed=1, tractor_rate=0, bulk_rate=0)
            for i in range(60)]
    assert not any(s.tractor or s.bulk_cargo for s in none)
    every = [sample_spec(np.random.default_rng(i), scan_id=f"S{i}", seed=1, tractor_rate=1, bulk_rate=1)
             for i in range(60)]
    for a, b in zip(none, every, strict=True):
        assert b.tractor == a.chassis
        assert (b.bulk_cargo is not None) == (a.cargo_family in BULK_CARGO)
        assert (a.size, a.cargo_family, a.fill, a.threats, a.dose, a.flip) == (b.size, b.cargo_family, b.fill, b.threats, b.dose, b.flip)


# --------------------------------------------------------------------------- TIP


def test_project_threat_is_multiplicative() -> None:
    rng = np.random.default_rng(0)
    scan = rng.uniform(0.05, 1.0, (50, 80)).astype(np.float32)
    th1 = rng.uniform(0.3, 1.0, (10, 20)).astype(np.float32)
    th2 = rng.uniform(0.3, 1.0, (12, 6)).astype(np.float32)
    out = project_threat(scan, th1, x=30, y=5)
    np.testing.assert_allclose(out[5:15, 30:50], scan[5:15, 30:50] * th1, rtol=1e-6)
    untouched = np.ones_like(scan, bool)
    untouched[5:15, 30:50] = False
    np.testing.assert_array_equal(out[untouched], scan[untouched])
    # projections commute and compose like stacked absorbers
    a = project_threat(project_threat(scan, th1, 30, 5), th2, 40, 8)
    b = project_threat(project_threat(scan, th2, 40, 8), th1, 30, 5)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # onto air the result is the threat itself; the input is not modified
    np.testing.assert_allclose(project_threat(np.ones((10, 20), np.float32), th1, 0, 0), th1)
    assert out is not scan and scan.max() <= 1.0


def test_project_threat_crops_and_validates() -> None:
    scan = np.full((20, 20), 0.5, np.float32)
    th = np.full((10, 10), 0.5, np.float32)
    out = project_threat(scan, th, x=15, y=-5)
    assert (out == 0.25).sum() == 5 * 5
    with pytest.raises(ValueError, match="does not overlap"):
        project_threat(scan, th, x=25, y=0)
    with pytest.raises(ValueError, match=r"values in \(0, 1\]"):
        project_threat(scan * 300, th, 0, 0)
    with pytest.raises(ValueError, match="2-D"):
        project_threat(scan[None], th, 0, 0)


def test_tip_into_a_scan_adds_the_threat_mass() -> None:
    base = render_scan(ScanSpec(cargo_family="textiles", seed=4, **CLEAN))
    t_threat, mask = render_threat("drugs", 25.0, np.random.default_rng(1), location="doors")
    assert mask.shape == t_threat.shape and mask.any()
    out = project_threat(base.transmission, t_threat, x=900, y=300)
    extra = -np.log(out / base.transmission).sum() / MATERIALS["organic"].mu_high
    assert extra * PIXEL_AREA_CM2 / 1000 == pytest.approx(25.0, rel=1e-3)


@pytest.mark.skipif(not Path("/work/shared/data/xray_reference/tests_cheio.jpg").exists(),
                    reason="reference display scans not available")
def test_tip_works_on_real_display_scans() -> None:
    real = read_scan("/work/shared/data/xray_reference/tests_cheio.jpg")
    t_threat, _ = render_threat("weapon", 1.0, np.random.default_rng(2), pixel_mm=10.0)
    out = project_threat(real.transmission, t_threat, x=100, y=100)
    h, w = t_threat.shape
    np.testing.assert_allclose(out[100:100 + h, 100:100 + w], real.transmission[100:100 + h, 100:100 + w] * t_threat, rtol=1e-6)


# --------------------------------------------------------------------------- display images


def test_to_display8() -> None:
    s = render_scan(ScanSpec(cargo_family="fruit", reefer=True, seed=3))
    d = to_display8(s.transmission)
    assert d.dtype == np.uint8 and d.shape == s.transmission.shape
    assert d[:5].mean() > 240  # air is bright
    # the reader's display inverse recovers -ln T within the window
    a = -np.log(s.transmission)
    back = -np.log(display8_to_transmission(d))
    sel = a < 4.0
    assert np.abs(back[sel] - a[sel]).max() < 0.15
    rng = np.random.default_rng(0)
    shapes = {to_display8(s.transmission, rng).shape for _ in range(8)}
    assert len(shapes) > 1 and all(h <= d.shape[0] for h, _ in shapes)


# --------------------------------------------------------------------------- files, determinism


def test_generate_scans_files_sidecars_and_masks(tmp_path: Path) -> None:
    metas = generate_scans(tmp_path, count=4, seed=11, threat_rate=1.0, size="20ft")
    assert len(metas) == 4
    index = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert [m["scan_id"] for m in index] == [f"SCAN{i:06d}" for i in range(4)]
    for meta in metas:
        sid = meta["scan_id"]
        side = json.loads((tmp_path / f"{sid}.json").read_text())
        for key in ("scan_id", "container_type", "size", "reefer", "cargo_family", "cargo_mass_kg",
                    "empty", "dual_energy", "pixel_mm", "dose", "threats"):
            assert key in side, key
        assert side["size"] == "20ft" and side["pixel_mm"] == 5.0 and side["threats"]
        scan = read_scan(tmp_path / side["files"]["image"])
        assert scan.sidecar == side and scan.kind == "raw16"
        mask = read_mask(tmp_path / side["files"]["mask"], shape=scan.transmission.shape)
        in_boxes = np.zeros_like(mask)
        total = 0.0
        for th in side["threats"]:
            x0, y0, x1, y1 = th["box"]
            assert mask[y0:y1, x0:x1].any()
            assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()  # tight boxes
            in_boxes[y0:y1, x0:x1] = True
            assert th["material"] in MATERIALS and th["mass_kg"] > 0
            total += th["mass_kg"]
        assert not (mask & ~in_boxes).any()
        assert total > 0


def test_threat_free_scans_have_no_mask(tmp_path: Path) -> None:
    metas = generate_scans(tmp_path, count=2, seed=1, threat_rate=0.0)
    assert all(not m["threats"] and "mask" not in m["files"] for m in metas)
    assert not list(tmp_path.glob("*_mask.png"))


def test_dual_energy_tiff_files(tmp_path: Path) -> None:
    (meta,) = generate_scans(tmp_path, count=1, seed=2, dual_energy=True, fmt="tiff", size="20ft")
    assert meta["dual_energy"] and meta["energies_mev"] == [6.0, 4.0]
    assert set(meta["files"]) >= {"high", "low"}
    scan = read_dual_energy(tmp_path / meta["files"]["high"], tmp_path / meta["files"]["low"])
    assert scan.sidecar["scan_id"] == meta["scan_id"]
    assert scan.transmission_low.mean() < scan.transmission.mean()  # lower energy, more attenuation


def test_determinism_by_seed(tmp_path: Path) -> None:
    spec = ScanSpec(size="20ft", cargo_family="tyres", threats=(ThreatSpec("drugs", "cargo", 10.0),), seed=9)
    a, b = render_scan(spec), render_scan(spec)
    np.testing.assert_array_equal(a.transmission, b.transmission)
    assert a.meta == b.meta
    c = render_scan(ScanSpec(**{**spec.__dict__, "seed": 10}))
    assert not np.array_equal(a.transmission, c.transmission)
    generate_scans(tmp_path / "x", count=3, seed=5)
    generate_scans(tmp_path / "y", count=2, seed=5)
    for i in range(2):  # scan i depends only on (seed, i)
        assert (tmp_path / "x" / f"SCAN{i:06d}.json").read_text() == (tmp_path / "y" / f"SCAN{i:06d}.json").read_text()
        xs = sorted((tmp_path / "x").glob(f"SCAN{i:06d}*.png"))
        for p in xs:
            assert p.read_bytes() == (tmp_path / "y" / p.name).read_bytes()


def test_estimated_mass_tracks_ground_truth() -> None:
    s = render_scan(ScanSpec(size="20ft", cargo_family="frozen_meat", reefer=True, fill=1.0, chassis=False, seed=3))
    from scanvision.io import Scan

    scan = Scan(s.transmission, None, "raw16", None, s.transmission.shape[1], s.transmission.shape[0], s.meta)
    empty = render_scan(ScanSpec(size="20ft", cargo_family="empty", reefer=True, chassis=False, seed=3))
    e_scan = Scan(empty.transmission, None, "raw16", None, s.transmission.shape[1], s.transmission.shape[0], None)
    mu = MATERIALS["organic"].mu_high
    cargo = estimate_mass_kg(scan, mu, 5.0) - estimate_mass_kg(e_scan, mu, 5.0)
    assert cargo == pytest.approx(s.meta["cargo_mass_kg"], rel=0.1)


# --------------------------------------------------------------------------- manifest link


@pytest.fixture
def row() -> dict:
    return {"manifest_id": "M-0001", "container_id": "CSQU3054383", "container_type": "45R1",
            "hs_code": "080390", "goods_description": "FRESH BANANAS CAVENDISH",
            "gross_weight_kg": 19_000.0, "vgm_kg": 23_650.0, "is_illicit": 1,
            "modus_operandi": "rip_on_rip_off", "concealment_location": "doors", "amount_kg": 36.0}


def test_render_scan_for_manifest(row: dict) -> None:
    s = render_scan_for_manifest(row, seed=1)
    m = s.meta
    assert (m["size"], m["reefer"], m["high_cube"], m["container_type"]) == ("40ft", True, True, "45R1")
    assert m["cargo_family"] == "fruit" and m["manifest_id"] == "M-0001"
    assert m["cargo_mass_kg"] == pytest.approx(19_000.0, rel=0.01)
    assert [(t["type"], t["location"], t["mass_kg"]) for t in m["threats"]] == [("drugs", "doors", 36.0)]
    assert s.mask.any()
    again = render_scan_for_manifest(row, seed=1)
    np.testing.assert_array_equal(s.transmission, again.transmission)
    other = render_scan_for_manifest({**row, "manifest_id": "M-0002"}, seed=1)
    assert not np.array_equal(s.transmission, other.transmission)


def test_render_scan_for_manifest_licit_empty_and_errors(row: dict) -> None:
    licit = render_scan_for_manifest({**row, "is_illicit": 0}, seed=1)
    assert licit.meta["threats"] == [] and not licit.mask.any()
    empty = render_scan_for_manifest({**row, "container_type": "22G1", "hs_code": "", "is_illicit": 0,
                                      "goods_description": "EMPTY CONTAINER", "gross_weight_kg": 0.0}, seed=1)
    assert empty.meta["empty"] and empty.meta["size"] == "20ft"
    with pytest.raises(ValueError, match="'reefer_unit' needs a reefer"):
        render_scan_for_manifest({**row, "container_type": "22G1", "concealment_location": "reefer_unit"}, seed=1)
    with pytest.raises(ValueError, match="not a supported ISO 6346"):
        render_scan_for_manifest({**row, "container_type": "L5G1"}, seed=1)
    with pytest.raises(KeyError, match="container_type"):
        render_scan_for_manifest({"hs_code": "080390"}, seed=1)
    assert parse_container_type("42G1") == ("40ft", False, False)
    assert parse_container_type("22r1") == ("20ft", False, True)


def test_spec_validation_messages() -> None:
    with pytest.raises(ValueError, match=r"unknown cargo family 'bananas'; expected one of \['fruit'"):
        render_scan(ScanSpec(cargo_family="bananas"))
    with pytest.raises(ValueError, match="fill must be between 0 and 1"):
        render_scan(ScanSpec(fill=1.5))
    with pytest.raises(ValueError, match="unknown concealment location 'engine'"):
        render_scan(ScanSpec(threats=(ThreatSpec("drugs", "engine", 5.0),)))
    with pytest.raises(ValueError, match="threat_rate must be between 0 and 1"):
        generate_scans("/nonexistent-never-created", count=1, seed=0, threat_rate=2.0)


# --------------------------------------------------------------------------- CLI


def test_cli_generate_scans(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["generate", "scans", "--help"])
    assert res.exit_code == 0 and "--dual-energy" in res.output and "--threat-rate" in res.output
    out = tmp_path / "scans"
    res = runner.invoke(main, ["generate", "scans", "--count", "3", "--seed", "4", "--out", str(out),
                               "--threat-rate", "1", "--size", "20ft", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["scans"] == 3 and summary["with_threat"] == 3 and summary["sizes"] == {"20ft": 3}
    assert len(list(out.glob("SCAN*.json"))) == 3 and len(list(out.glob("SCAN*_mask.png"))) == 3
    res = runner.invoke(main, ["generate", "scans", "--count", "1", "--out", str(out), "--size", "45ft"])
    assert res.exit_code == 2 and "45ft" in res.output
    res = runner.invoke(main, ["generate", "scans", "--count", "1", "--out", str(tmp_path / "t"), "--format", "tiff"])
    assert res.exit_code == 0 and "1 scans" in res.output
    assert list((tmp_path / "t").glob("SCAN000000*.tif"))
    res = runner.invoke(main, ["generate", "scans", "--count", "4", "--seed", "2", "--out", str(tmp_path / "b"),
                               "--tractor-rate", "1", "--bulk-rate", "1", "--size", "20ft", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    sidecars = [json.loads(p.read_text()) for p in sorted((tmp_path / "b").glob("SCAN*.json"))]
    assert summary["with_tractor"] == sum(m["chassis"] for m in sidecars)
    assert sum(summary["bulk_cargo"].values()) == sum(m["cargo_family"] in BULK_CARGO for m in sidecars)
