"""Reading and writing X-ray scans.

Two kinds of image come off container scanners:

* ``raw16``: 16-bit single-channel PNG or TIFF holding the raw transmission
  ``T = I / I0`` scaled to ``round(T * 65535)``; dual-energy scanners write one per beam
  energy (``<id>_high.png`` / ``<id>_low.png``).
* ``display8``: 8-bit JPEG or PNG display images, already log-windowed by the scanner
  software, bright = air. Their transmission can only be approximated by inverting a
  typical display window (:func:`display8_to_transmission`).

Every reader checks the image header *before* decoding, so a file whose header claims
an absurd size (a decompression bomb) is refused without allocating memory for it, and
every failure raises :class:`ScanReadError` (a ``ValueError``) saying what was expected,
what was found and how to fix it.

Example::

    from scanvision.io import read_scan
    scan = read_scan("scans/SCAN000001.png")
    scan.transmission.shape, scan.kind, scan.sidecar["cargo_family"]
"""

from __future__ import annotations

import io as _io
import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

logger = logging.getLogger(__name__)

ScanKind = Literal["raw16", "display8"]

#: Default refusal threshold for ``width * height`` (a 40 ft scan at 5 mm/px is ~1.9 MP).
DEFAULT_MAX_PIXELS = 50_000_000
#: Smallest transmission a 16-bit raw image can represent; zero counts are clamped to it.
T_FLOOR = 1.0 / 65535.0
#: Typical display window: ``d = 255 * (1 - min(-ln T / log_range, 1)) ** gamma``.
DISPLAY_LOG_RANGE = 6.0
DISPLAY_GAMMA = 1.5

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# JPEG start-of-frame markers (baseline, extended, progressive, lossless, hierarchical, arithmetic).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_COLOUR_TYPES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}


class ScanReadError(ValueError):
    """A scan file could not be read; the message says why and how to fix it."""


@dataclass
class Scan:
    """One X-ray scan as the rest of the pipeline sees it.

    Attributes:
        transmission: float32 ``H x W`` transmission in ``(0, 1]`` (high-energy image for
            dual-energy scans; an approximation for ``display8`` images).
        transmission_low: float32 ``H x W`` low-energy transmission, or ``None``.
        kind: ``"raw16"`` (raw 16-bit transmission) or ``"display8"`` (8-bit display image).
        path: file the scan was read from (``None`` for uploads read from bytes).
        width: image width in pixels (along the container's length).
        height: image height in pixels.
        sidecar: metadata from ``<id>.json`` next to the image, or ``None``.
    """

    transmission: np.ndarray
    transmission_low: np.ndarray | None
    kind: ScanKind
    path: Path | None
    width: int
    height: int
    sidecar: dict[str, Any] | None = field(default=None)

    @property
    def dual_energy(self) -> bool:
        """True when a low-energy image is present."""
        return self.transmission_low is not None


@dataclass(frozen=True)
class _Header:
    fmt: Literal["png", "jpeg", "tiff"]
    width: int
    height: int
    bit_depth: int
    channels: int
    data_end: int = 0  # TIFF: last byte of image data the header points to


# --------------------------------------------------------------------------- header parsing


def _png_header(data: bytes, name: str) -> _Header:
    # IHDR is always the first chunk: length(4) type(4) width(4) height(4) depth(1) colour(1).
    if len(data) < 8 + 8 + 13:
        raise ScanReadError(
            f"{name}: truncated PNG ({len(data)} bytes, the header alone needs 29); "
            "copy the file again from the scanner."
        )
    length, ctype = struct.unpack(">I4s", data[8:16])
    if ctype != b"IHDR" or length != 13:
        raise ScanReadError(
            f"{name}: corrupt PNG: the first chunk is {ctype!r} (length {length}), expected IHDR "
            "(length 13); the file is damaged or not a PNG."
        )
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_COLOUR_TYPES:
        raise ScanReadError(f"{name}: corrupt PNG: unknown colour type {colour}.")
    # palette images hold one index per pixel and decode to grey like an 8-bit image
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    return _Header("png", width, height, depth, channels)


def _png_colour(data: bytes) -> int:
    return data[25]


def _jpeg_header(data: bytes, name: str) -> tuple[_Header, int]:
    """Walk JPEG segments up to the start-of-frame; return the header and the SOS offset."""
    pos = 2
    header: _Header | None = None
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise ScanReadError(
                f"{name}: corrupt JPEG: expected a marker at byte {pos}, found 0x{data[pos]:02x}."
            )
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (seg_len,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if seg_len < 2:
            raise ScanReadError(f"{name}: corrupt JPEG: segment 0xFF{marker:02X} has length {seg_len}.")
        if marker in _JPEG_SOF:
            if pos + 2 + seg_len > n or seg_len < 8:
                break
            precision, height, width, comps = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            header = _Header("jpeg", width, height, precision, comps)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            if header is None:
                raise ScanReadError(f"{name}: corrupt JPEG: image data before any frame header.")
            return header, pos
        pos += 2 + seg_len
    raise ScanReadError(
        f"{name}: truncated JPEG ({n} bytes): the file ends before the image data starts; "
        "copy the file again from the scanner."
    )


def _tiff_header(data: bytes, name: str) -> _Header:
    import tifffile

    try:
        with tifffile.TiffFile(_io.BytesIO(data)) as tif:
            if not tif.pages:
                raise ScanReadError(f"{name}: the TIFF file holds no image.")
            page = tif.pages.first
            shape = tuple(int(s) for s in page.shape)
            bits = int(page.bitspersample)
            spp = int(page.samplesperpixel)
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            counts = np.asarray(page.databytecounts, dtype=np.int64)
            width, height = int(page.imagewidth), int(page.imagelength)
            ndim_extra = len(shape) - (3 if spp > 1 else 2)
    except ScanReadError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged headers
        raise ScanReadError(
            f"{name}: corrupt or truncated TIFF header ({type(exc).__name__}: {exc}); "
            "copy the file again from the scanner."
        ) from exc
    if ndim_extra > 0:
        raise ScanReadError(
            f"{name}: TIFF page has shape {shape}; expected a single 2-D image (H x W)."
        )
    data_end = int((offsets + counts).max()) if offsets.size else 0
    return _Header("tiff", width, height, bits, spp, data_end)


def _sniff(data: bytes, name: str) -> str:
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data[:4] in _TIFF_MAGICS:
        return "tiff"
    head = data[:8]
    raise ScanReadError(
        f"{name}: not an image: the file starts with {head!r}; expected a PNG, JPEG or TIFF "
        "scan (16-bit raw transmission or 8-bit display image)."
    )


def read_header(data: bytes, name: str = "<bytes>") -> tuple[str, int, int, int, int]:
    """Parse an image header without decoding pixels.

    Returns ``(format, width, height, bit_depth, channels)``; raises :class:`ScanReadError`
    for bytes that are not a PNG/JPEG/TIFF or whose header is damaged.
    """
    fmt = _sniff(data, name)
    if fmt == "png":
        h = _png_header(data, name)
    elif fmt == "jpeg":
        h, _ = _jpeg_header(data, name)
    else:
        h = _tiff_header(data, name)
    return h.fmt, h.width, h.height, h.bit_depth, h.channels


# --------------------------------------------------------------------------- conversions


def raw16_to_transmission(pixels: np.ndarray) -> np.ndarray:
    """uint16 raw counts (``round(T * 65535)``) to float32 transmission in ``(0, 1]``.

    Zero counts (fully opaque) are clamped to :data:`T_FLOOR` so that ``-ln T`` stays finite.
    """
    t = pixels.astype(np.float32) * np.float32(1.0 / 65535.0)
    return np.maximum(t, np.float32(T_FLOOR), out=t)


def transmission_to_raw16(transmission: np.ndarray) -> np.ndarray:
    """float transmission to uint16 raw counts ``round(T * 65535)`` (values clipped to [0, 1])."""
    t = np.clip(np.asarray(transmission, dtype=np.float64), 0.0, 1.0)
    return np.rint(t * 65535.0).astype(np.uint16)


def display8_to_transmission(
    pixels: np.ndarray, *, log_range: float = DISPLAY_LOG_RANGE, gamma: float = DISPLAY_GAMMA
) -> np.ndarray:
    """Approximate transmission from an 8-bit display image (bright = air).

    Inverts the typical display window ``d = 255 * (1 - min(-ln T / log_range, 1)) ** gamma``;
    black pixels map to ``exp(-log_range)``. Scanner vendors use their own windows, so the
    result is an approximation good enough for a common network input, not for physics.
    """
    d = pixels.astype(np.float32) * np.float32(1.0 / 255.0)
    atten = np.float32(log_range) * (1.0 - np.power(d, np.float32(1.0 / gamma)))
    return np.exp(-atten).astype(np.float32)


def transmission_to_display8(
    transmission: np.ndarray, *, log_range: float = DISPLAY_LOG_RANGE, gamma: float = DISPLAY_GAMMA
) -> np.ndarray:
    """Window a transmission image to an 8-bit display image (inverse of :func:`display8_to_transmission`)."""
    t = np.clip(np.asarray(transmission, dtype=np.float32), T_FLOOR, 1.0)
    frac = np.clip(-np.log(t) / np.float32(log_range), 0.0, 1.0)
    return np.rint(255.0 * np.power(1.0 - frac, np.float32(gamma))).astype(np.uint8)


# --------------------------------------------------------------------------- decoding


def _check_size(h: _Header, name: str, max_pixels: int) -> None:
    if h.width <= 0 or h.height <= 0:
        raise ScanReadError(
            f"{name}: the image header says {h.width} x {h.height} pixels; an image needs both > 0."
        )
    if h.width * h.height > max_pixels:
        raise ScanReadError(
            f"{name}: the image header says {h.width} x {h.height} = {h.width * h.height:,} pixels, "
            f"more than the limit of {max_pixels:,}; refused before decoding (a scan at 5 mm/px "
            "is a few million pixels). Raise max_pixels only if you trust the file."
        )


def _decode_png_jpeg(data: bytes, h: _Header, name: str) -> tuple[np.ndarray, ScanKind]:
    buf = np.frombuffer(data, dtype=np.uint8)
    if h.fmt == "png":
        if data.rfind(b"IEND") < 0:
            raise ScanReadError(
                f"{name}: truncated PNG: the end marker (IEND) is missing ({len(data)} bytes); "
                "copy the file again from the scanner."
            )
        colour = _png_colour(data)
        if h.bit_depth == 16:
            if colour != 0:
                raise ScanReadError(
                    f"{name}: 16-bit PNG with {_PNG_COLOUR_TYPES[colour]} channels; a raw "
                    "transmission scan has one grey channel. Export each energy as a separate "
                    "single-channel 16-bit image."
                )
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
            kind: ScanKind = "raw16"
        elif h.bit_depth == 8 or colour == 3:
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
            kind = "display8"
        else:
            raise ScanReadError(
                f"{name}: {h.bit_depth}-bit PNG is not supported; expected 16-bit grey (raw "
                "transmission) or 8-bit (display image)."
            )
    else:
        if h.bit_depth != 8:
            raise ScanReadError(
                f"{name}: {h.bit_depth}-bit JPEG is not supported; expected an 8-bit display image. "
                "Export raw scans as 16-bit PNG or TIFF instead."
            )
        if h.channels not in (1, 3):
            raise ScanReadError(
                f"{name}: JPEG with {h.channels} colour components is not supported; expected "
                "grey (1) or colour (3)."
            )
        _, sos = _jpeg_header(data, name)
        if data.rfind(b"\xff\xd9", sos) < 0:
            raise ScanReadError(
                f"{name}: truncated JPEG: the end-of-image marker is missing ({len(data)} bytes); "
                "copy the file again from the scanner."
            )
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        kind = "display8"
    if img is None:
        raise ScanReadError(
            f"{name}: the {h.fmt.upper()} data could not be decoded (damaged or truncated); "
            "copy the file again from the scanner."
        )
    if img.shape != (h.height, h.width):
        raise ScanReadError(
            f"{name}: decoded image is {img.shape[1]} x {img.shape[0]} but the header says "
            f"{h.width} x {h.height}; the file is damaged."
        )
    return img, kind


def _decode_tiff(data: bytes, h: _Header, name: str) -> tuple[np.ndarray, ScanKind]:
    import tifffile

    if h.bit_depth not in (8, 16):
        raise ScanReadError(
            f"{name}: {h.bit_depth}-bit TIFF is not supported; expected 16-bit grey (raw "
            "transmission) or 8-bit (display image)."
        )
    if h.bit_depth == 16 and h.channels != 1:
        raise ScanReadError(
            f"{name}: 16-bit TIFF with {h.channels} samples per pixel; a raw transmission scan "
            "has one grey channel. Export each energy as a separate single-channel image."
        )
    try:
        img = tifffile.imread(_io.BytesIO(data), key=0)
    except Exception as exc:
        raise ScanReadError(
            f"{name}: the TIFF data could not be decoded ({type(exc).__name__}: {exc}); the file "
            "is damaged or uses an unsupported compression."
        ) from exc
    if img.ndim == 3:
        if img.shape[-1] in (3, 4):
            img = cv2.cvtColor(np.ascontiguousarray(img[..., :3]), cv2.COLOR_RGB2GRAY)
        else:
            raise ScanReadError(f"{name}: TIFF image has shape {img.shape}; expected H x W.")
    if h.bit_depth == 16:
        return np.asarray(img, dtype=np.uint16), "raw16"
    return np.asarray(img, dtype=np.uint8), "display8"


def _decode(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, ScanKind]:
    if len(data) == 0:
        raise ScanReadError(f"{name}: the file is empty (0 bytes); expected a PNG, JPEG or TIFF scan.")
    fmt = _sniff(data, name)
    if fmt == "png":
        h = _png_header(data, name)
    elif fmt == "jpeg":
        h, _ = _jpeg_header(data, name)
    else:
        h = _tiff_header(data, name)
    _check_size(h, name, max_pixels)
    if fmt == "tiff":
        if h.data_end > len(data):
            raise ScanReadError(
                f"{name}: truncated TIFF: image data runs to byte {h.data_end} but the file has "
                f"{len(data)} bytes; copy the file again from the scanner."
            )
        return _decode_tiff(data, h, name)
    return _decode_png_jpeg(data, h, name)


def _to_transmission(img: np.ndarray, kind: ScanKind) -> np.ndarray:
    return raw16_to_transmission(img) if kind == "raw16" else display8_to_transmission(img)


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise FileNotFoundError(f"scan file not found: {path}")
    if path.is_dir():
        raise ScanReadError(f"{path}: is a directory; expected a PNG, JPEG or TIFF scan file.")
    return path.read_bytes()


def _sidecar_for(path: Path) -> dict[str, Any] | None:
    stem = path.stem
    candidates = [path.with_name(stem + ".json")]
    for suffix in ("_high", "_low"):
        if stem.endswith(suffix):
            candidates.append(path.with_name(stem[: -len(suffix)] + ".json"))
    for cand in candidates:
        if cand.is_file():
            try:
                meta = json.loads(cand.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ScanReadError(
                    f"{cand}: sidecar is not valid JSON ({exc}); fix or remove it to read {path.name}."
                ) from exc
            if not isinstance(meta, dict):
                raise ScanReadError(
                    f"{cand}: sidecar holds a {type(meta).__name__}; expected a JSON object."
                )
            return meta
    return None


# --------------------------------------------------------------------------- public readers


def read_scan_bytes(data: bytes, name: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Scan:
    """Read a scan from bytes (an upload); ``name`` is used in error messages only.

    Raises:
        ScanReadError: empty, non-image, truncated, oversized or unsupported data.
    """
    img, kind = _decode(bytes(data), name, max_pixels)
    t = _to_transmission(img, kind)
    return Scan(t, None, kind, None, int(t.shape[1]), int(t.shape[0]), None)


def read_scan(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Scan:
    """Read one scan image: 16-bit raw PNG/TIFF or 8-bit display JPEG/PNG/TIFF.

    Colour display images are converted to grey. The sidecar ``<stem>.json`` (or
    ``<id>.json`` for ``<id>_high``/``<id>_low`` files) is loaded when present.

    Raises:
        FileNotFoundError: the file does not exist.
        ScanReadError: empty, non-image, truncated, oversized or unsupported file.
    """
    path = Path(path)
    data = _read_bytes(path)
    img, kind = _decode(data, str(path), max_pixels)
    t = _to_transmission(img, kind)
    logger.debug("read %s: %s %dx%d", path, kind, t.shape[1], t.shape[0])
    return Scan(t, None, kind, path, int(t.shape[1]), int(t.shape[0]), _sidecar_for(path))


def read_dual_energy(
    high_path: str | Path, low_path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Scan:
    """Read a dual-energy pair (high- and low-energy images of the same scan).

    Both images must be of the same kind and size. The sidecar comes from the high-energy file.
    """
    high = read_scan(high_path, max_pixels=max_pixels)
    low = read_scan(low_path, max_pixels=max_pixels)
    if high.kind != low.kind:
        raise ScanReadError(
            f"dual-energy pair mixes kinds: {high.path} is {high.kind}, {low.path} is {low.kind}; "
            "both energies must be raw 16-bit (or both display images)."
        )
    if high.transmission.shape != low.transmission.shape:
        raise ScanReadError(
            f"dual-energy pair has different sizes: {high.path} is {high.width} x {high.height}, "
            f"{low.path} is {low.width} x {low.height}; they must be the same scan."
        )
    high.transmission_low = low.transmission
    return high


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask (``<id>_mask.png``, 8-bit, non-zero = threat) as a bool array.

    ``shape`` (H, W), when given, is checked against the mask's size.
    """
    path = Path(path)
    data = _read_bytes(path)
    img, _ = _decode(data, str(path), DEFAULT_MAX_PIXELS)
    if shape is not None and img.shape != tuple(shape):
        raise ScanReadError(
            f"{path}: mask is {img.shape[1]} x {img.shape[0]}, expected {shape[1]} x {shape[0]} "
            "(the size of its scan)."
        )
    return img > 0


def write_transmission(path: str | Path, transmission: np.ndarray) -> Path:
    """Write float transmission as a 16-bit raw image (``.png``, ``.tif`` or ``.tiff``)."""
    path = Path(path)
    raw = transmission_to_raw16(transmission)
    suffix = path.suffix.lower()
    if suffix == ".png":
        if not cv2.imwrite(str(path), raw):
            raise OSError(f"could not write {path}")
    elif suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, raw, compression="zlib")
    else:
        raise ValueError(
            f"cannot write a 16-bit scan as {suffix or 'no extension'!r}; use .png, .tif or .tiff."
        )
    return path
