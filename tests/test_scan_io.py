"""Scan reading (every format, corrupt files, decompression bombs) and preprocessing."""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from scanvision import io as sio
from scanvision.io import (
    ScanReadError,
    read_dual_energy,
    read_header,
    read_mask,
    read_scan,
    read_scan_bytes,
    transmission_to_display8,
    write_transmission,
)
from scanvision.preprocess import (
    MAX_ATTENUATION,
    PreprocessConfig,
    estimate_mass_kg,
    log_attenuation,
    output_width,
    preprocess,
)

REFERENCE = Path("/work/shared/data/xray_reference")


@pytest.fixture
def trans() -> np.ndarray:
    rng = np.random.default_rng(3)
    t = rng.uniform(0.02, 1.0, (60, 140)).astype(np.float32)
    t[:5, :5] = 0.0  # fully opaque corner: stored as 0, read back at the 16-bit floor
    return t


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A tiny PNG whose header claims a huge 16-bit grey image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(sio.cv2, "imdecode", boom)
    monkeypatch.setattr(tifffile, "imread", boom)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("ext", [".png", ".tif", ".tiff"])
def test_raw16_round_trip(tmp_path: Path, trans: np.ndarray, ext: str) -> None:
    path = write_transmission(tmp_path / f"scan{ext}", trans)
    scan = read_scan(path)
    assert scan.kind == "raw16"
    assert (scan.width, scan.height) == (140, 60)
    assert scan.transmission.dtype == np.float32
    assert np.abs(scan.transmission[5:, 5:] - trans[5:, 5:]).max() <= 0.5 / 65535 + 1e-7
    assert scan.transmission.min() == pytest.approx(1 / 65535)  # opaque pixels clamped, not 0
    assert scan.transmission.max() <= 1.0
    assert scan.transmission_low is None and scan.sidecar is None and scan.path == path


def test_raw16_values_are_counts_over_65535(tmp_path: Path) -> None:
    raw = np.array([[0, 1, 32768, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "r.png"), raw)
    t = read_scan(tmp_path / "r.png").transmission
    np.testing.assert_allclose(t, [[1 / 65535, 1 / 65535, 32768 / 65535, 1.0]], rtol=1e-6)


def test_display8_jpeg_and_png_approximate_transmission(tmp_path: Path) -> None:
    t = np.tile(np.exp(-np.linspace(0, 5, 200, dtype=np.float32)), (40, 1))
    d8 = transmission_to_display8(t)
    cv2.imwrite(str(tmp_path / "d.png"), d8)
    cv2.imwrite(str(tmp_path / "d.jpg"), d8, [cv2.IMWRITE_JPEG_QUALITY, 95])
    png, jpg = read_scan(tmp_path / "d.png"), read_scan(tmp_path / "d.jpg")
    assert png.kind == jpg.kind == "display8"
    # the 8-bit window inverts to within ~0.05 in -ln T over the windowed range
    err_png = np.abs(-np.log(png.transmission) + np.log(t)).max()
    err_jpg = np.abs(-np.log(jpg.transmission) + np.log(t))[:, 5:-5].max()
    assert err_png < 0.1 and err_jpg < 0.25
    assert png.transmission[:, 0].mean() > 0.99  # bright = air


def test_colour_jpeg_is_converted_to_grey(tmp_path: Path) -> None:
    grey = np.tile(np.linspace(20, 250, 120).astype(np.uint8), (30, 1))
    cv2.imwrite(str(tmp_path / "c.jpg"), np.dstack([grey, grey, grey]), [cv2.IMWRITE_JPEG_QUALITY, 98])
    assert read_header((tmp_path / "c.jpg").read_bytes())[4] == 3
    scan = read_scan(tmp_path / "c.jpg")
    assert scan.transmission.shape == (30, 120) and scan.kind == "display8"
    back = transmission_to_display8(scan.transmission).astype(int)
    assert np.abs(back - grey).max() <= 4


def test_dual_energy_pair_and_sidecar(tmp_path: Path, trans: np.ndarray) -> None:
    write_transmission(tmp_path / "S1_high.png", trans)
    write_transmission(tmp_path / "S1_low.png", trans ** 1.2)
    (tmp_path / "S1.json").write_text(json.dumps({"scan_id": "S1", "cargo_family": "fruit"}))
    scan = read_dual_energy(tmp_path / "S1_high.png", tmp_path / "S1_low.png")
    assert scan.dual_energy and scan.transmission_low is not None
    assert scan.transmission_low.shape == scan.transmission.shape
    assert scan.transmission_low.mean() < scan.transmission.mean()
    assert scan.sidecar == {"scan_id": "S1", "cargo_family": "fruit"}
    assert log_attenuation(scan).shape == (2, 60, 140)


def test_dual_energy_pair_must_match(tmp_path: Path, trans: np.ndarray) -> None:
    write_transmission(tmp_path / "a_high.png", trans)
    write_transmission(tmp_path / "a_low.png", trans[:, :100])
    with pytest.raises(ScanReadError, match="different sizes"):
        read_dual_energy(tmp_path / "a_high.png", tmp_path / "a_low.png")
    cv2.imwrite(str(tmp_path / "b_low.png"), transmission_to_display8(trans))
    with pytest.raises(ScanReadError, match="mixes kinds"):
        read_dual_energy(tmp_path / "a_high.png", tmp_path / "b_low.png")


def test_bad_sidecar_is_an_error_not_ignored(tmp_path: Path, trans: np.ndarray) -> None:
    write_transmission(tmp_path / "x.png", trans)
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ScanReadError, match=r"x\.json: sidecar is not valid JSON"):
        read_scan(tmp_path / "x.png")


def test_read_scan_bytes_for_uploads(tmp_path: Path, trans: np.ndarray) -> None:
    data = write_transmission(tmp_path / "u.png", trans).read_bytes()
    scan = read_scan_bytes(data, "upload.png")
    assert scan.kind == "raw16" and scan.path is None and scan.sidecar is None
    with pytest.raises(ScanReadError, match="upload.png: truncated PNG"):
        read_scan_bytes(data[: len(data) // 2], "upload.png")


def test_read_mask(tmp_path: Path) -> None:
    m = np.zeros((20, 30), np.uint8)
    m[5:9, 10:20] = 255
    cv2.imwrite(str(tmp_path / "m_mask.png"), m)
    mask = read_mask(tmp_path / "m_mask.png", shape=(20, 30))
    assert mask.dtype == bool and mask.sum() == 40
    with pytest.raises(ScanReadError, match="expected 31 x 20"):
        read_mask(tmp_path / "m_mask.png", shape=(20, 31))


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference display scans not available")
def test_real_display_scans_are_readable() -> None:
    for path in sorted(REFERENCE.glob("*.jpg")):
        scan = read_scan(path)
        assert scan.kind == "display8"
        assert 0 < scan.transmission.min() and scan.transmission.max() <= 1
        x = preprocess(scan, PreprocessConfig())
        assert x.shape[:2] == (1, 192) and x.shape[2] % 32 == 0


# --------------------------------------------------------------------------- corrupt files


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="scan file not found"):
        read_scan(tmp_path / "nope.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ScanReadError, match=r"empty \(0 bytes\)"):
        read_scan(tmp_path / "empty.png")


def test_non_image_bytes(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_bytes(b"manifest_id,container_id\nM1,CSQU3054383\n")
    with pytest.raises(ScanReadError, match="not an image: the file starts with b'manifest'"):
        read_scan(tmp_path / "notes.png")


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_truncated_files(tmp_path: Path, trans: np.ndarray, ext: str) -> None:
    path = tmp_path / f"t{ext}"
    if ext == ".jpg":
        cv2.imwrite(str(path), transmission_to_display8(trans))
    else:
        write_transmission(path, trans)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(ScanReadError, match="truncated"):
        read_scan(path)


def test_truncated_inside_header(tmp_path: Path, trans: np.ndarray) -> None:
    data = write_transmission(tmp_path / "h.png", trans).read_bytes()
    with pytest.raises(ScanReadError, match="truncated PNG"):
        read_scan_bytes(data[:20], "h.png")


def test_sixteen_bit_colour_png_is_refused(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "rgb16.png"), np.zeros((10, 10, 3), np.uint16))
    with pytest.raises(ScanReadError, match="one grey channel"):
        read_scan(tmp_path / "rgb16.png")


def test_png_bomb_refused_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bomb.png").write_bytes(_png_bomb())
    _no_decoding(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(ScanReadError, match=r"50000 x 50000 = 2,500,000,000 pixels.*refused before decoding"):
        read_scan(tmp_path / "bomb.png")
    assert time.perf_counter() - t0 < 0.5


def test_jpeg_bomb_refused_without_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cv2.imwrite(str(tmp_path / "small.jpg"), np.full((8, 8), 200, np.uint8))
    data = bytearray((tmp_path / "small.jpg").read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", 60_000, 60_000)  # height, width
    _no_decoding(monkeypatch)
    with pytest.raises(ScanReadError, match="60000 x 60000"):
        read_scan_bytes(bytes(data), "bomb.jpg")


def test_tiff_bomb_refused_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # hand-made little-endian TIFF: 50000 x 50000 8-bit grey, one strip, no pixel data
    entries = [(256, 4, 1, 50_000), (257, 4, 1, 50_000), (258, 3, 1, 8), (259, 3, 1, 1),
               (262, 3, 1, 1), (273, 4, 1, 200), (277, 3, 1, 1), (278, 4, 1, 50_000),
               (279, 4, 1, 2_500_000_000)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, typ, n, val) if typ == 4 else struct.pack("<HHIHH", tag, typ, n, val, 0)
        for tag, typ, n, val in entries) + struct.pack("<I", 0)
    data = b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64
    _no_decoding(monkeypatch)
    with pytest.raises(ScanReadError, match="50000 x 50000"):
        read_scan_bytes(data, "bomb.tif")


def test_max_pixels_is_configurable(tmp_path: Path, trans: np.ndarray) -> None:
    path = write_transmission(tmp_path / "s.png", trans)
    with pytest.raises(ScanReadError, match="more than the limit of 1,000"):
        read_scan(path, max_pixels=1000)
    assert read_scan(path, max_pixels=60 * 140).width == 140


# --------------------------------------------------------------------------- preprocessing


def _scan(h: int, w: int, low: bool = False) -> sio.Scan:
    rng = np.random.default_rng(h * 7 + w)
    t = rng.uniform(1e-4, 1.0, (h, w)).astype(np.float32)
    return sio.Scan(t, t ** 1.2 if low else None, "raw16", None, w, h, None)


@pytest.mark.parametrize("h,w", [(788, 1312), (849, 2538), (251, 467), (542, 40), (100, 3000)])
def test_preprocess_shapes(h: int, w: int) -> None:
    cfg = PreprocessConfig()
    x = preprocess(_scan(h, w), cfg)
    assert x.dtype == np.float32 and x.ndim == 3
    assert x.shape[:2] == (1, 192)
    assert x.shape[2] % 32 == 0 and x.shape[2] >= 32
    assert abs(x.shape[2] - w * 192 / h) <= 16 or x.shape[2] == 32
    assert x.shape[2] == output_width(w, h, cfg) == cfg.output_width(w, h)
    assert 0.0 <= x.min() and x.max() <= cfg.clip_max


def test_preprocess_dual_energy_and_channel_mismatch() -> None:
    cfg2 = PreprocessConfig(channels=2, height=96)
    assert preprocess(_scan(200, 500, low=True), cfg2).shape == (2, 96, 256)
    with pytest.raises(ValueError, match="expects dual-energy input"):
        preprocess(_scan(200, 500), cfg2)
    # a single-energy model takes the high-energy plane of a dual-energy scan
    assert preprocess(_scan(200, 500, low=True), PreprocessConfig(height=96)).shape == (1, 96, 256)


def test_preprocess_values_are_scaled_attenuation() -> None:
    t = np.full((100, 300), np.exp(-3.0), np.float32)
    scan = sio.Scan(t, None, "raw16", None, 300, 100, None)
    x = preprocess(scan, PreprocessConfig(height=50, atten_scale=6.0, clip_max=2.0))
    np.testing.assert_allclose(x, 0.5, atol=1e-5)
    x = preprocess(scan, PreprocessConfig(height=50, atten_scale=1.0, clip_max=2.0))
    np.testing.assert_allclose(x, 2.0)  # clipped


def test_log_attenuation_is_finite_for_opaque_pixels() -> None:
    t = np.array([[1.0, 0.5, 0.0]], np.float32)
    a = log_attenuation(sio.Scan(t, None, "raw16", None, 3, 1, None))
    np.testing.assert_allclose(a[0, 0], [0.0, np.log(2.0), MAX_ATTENUATION], rtol=1e-5)
    assert MAX_ATTENUATION == pytest.approx(11.09, abs=0.01)


def test_config_round_trip_and_errors() -> None:
    cfg = PreprocessConfig(height=160, channels=2, atten_scale=5.0, clip_max=1.8)
    assert PreprocessConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"unknown preprocessing keys \['mean'\]"):
        PreprocessConfig.from_dict({**cfg.to_dict(), "mean": 0.5})
    with pytest.raises(ValueError, match="channels must be 1"):
        PreprocessConfig(channels=3)


def test_estimate_mass_from_a_known_slab() -> None:
    # 40 x 20 px at 5 mm = 200 cm² of 12 g/cm² organic (mu 0.0256) = 2.4 kg
    t = np.ones((100, 200), np.float32)
    t[10:30, 50:90] = np.exp(-0.0256 * 12.0)
    scan = sio.Scan(t, None, "raw16", None, 200, 100, None)
    assert estimate_mass_kg(scan, 0.0256, 5.0) == pytest.approx(2.4, rel=1e-4)
    disp = sio.Scan(t, None, "display8", None, 200, 100, None)
    assert estimate_mass_kg(disp, 0.0256, 5.0) is None
    with pytest.raises(ValueError, match="must be > 0"):
        estimate_mass_kg(scan, 0.0, 5.0)


def test_resize_keeps_the_attenuation_sum() -> None:
    # INTER_AREA on attenuation: sum(x) * pixel area scales with the resize, so mass survives
    scan = _scan(384, 960)
    a = log_attenuation(scan)[0]
    x = preprocess(scan, PreprocessConfig(height=192, atten_scale=1.0, clip_max=20.0))
    assert x.shape == (1, 192, 480)
    assert x.sum() * 4 == pytest.approx(a.sum(), rel=1e-3)
