"""Scan preprocessing: one function for training and serving.

The network sees log-attenuation ``A = -ln T`` (proportional to the areal density of matter
in the beam), resized to a fixed height with the aspect ratio kept, width rounded to a
multiple of 32, scaled by ``atten_scale`` and clipped at ``clip_max``. Raw 16-bit scans and
8-bit display images go through the same path (display images via their approximate
transmission, see :func:`scanvision.io.display8_to_transmission`), so one network serves both.

The :class:`PreprocessConfig` travels with the model artifact (``to_dict``/``from_dict``),
so serving code has no magic constants.

Example::

    from scanvision.io import read_scan
    from scanvision.preprocess import PreprocessConfig, preprocess
    x = preprocess(read_scan("SCAN000001.png"), PreprocessConfig())   # float32 [1, 192, W']
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import cv2
import numpy as np

from scanvision.io import T_FLOOR, Scan

logger = logging.getLogger(__name__)

#: ``-ln`` of the smallest transmission a 16-bit raw image represents (~11.09).
MAX_ATTENUATION = float(-math.log(T_FLOOR))


@dataclass(frozen=True)
class PreprocessConfig:
    """How a scan becomes a network input.

    Attributes:
        height: output height in pixels (the scan is resized to it, aspect ratio kept).
        channels: 1 (high-energy attenuation) or 2 (high and low energy; dual-energy scans only).
        atten_scale: ``-ln T`` is divided by this (6.0 maps ``T = e^-6 = 0.25 %`` to 1.0).
        clip_max: upper clip of the scaled attenuation (lower clip is 0).
        width_multiple: output width is rounded to a multiple of this (network stride).
    """

    height: int = 192
    channels: int = 1
    atten_scale: float = 6.0
    clip_max: float = 1.5
    width_multiple: int = 32

    def __post_init__(self) -> None:
        if self.height < 8:
            raise ValueError(f"PreprocessConfig.height must be >= 8, got {self.height}.")
        if self.channels not in (1, 2):
            raise ValueError(
                f"PreprocessConfig.channels must be 1 (single energy) or 2 (dual energy), "
                f"got {self.channels}."
            )
        if not self.atten_scale > 0:
            raise ValueError(f"PreprocessConfig.atten_scale must be > 0, got {self.atten_scale}.")
        if not self.clip_max > 0:
            raise ValueError(f"PreprocessConfig.clip_max must be > 0, got {self.clip_max}.")
        if self.width_multiple < 1:
            raise ValueError(
                f"PreprocessConfig.width_multiple must be >= 1, got {self.width_multiple}."
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a model's JSON sidecar."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys are an error (a newer artifact)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown preprocessing keys {unknown}; this version understands {sorted(known)}. "
                "The model artifact was written by a newer version: upgrade the package."
            )
        return cls(**d)

    def output_width(self, width: int, height: int) -> int:
        """Width of the network input for a ``width x height`` scan."""
        return output_width(width, height, self)


def output_width(width: int, height: int, cfg: PreprocessConfig) -> int:
    """Aspect-preserving width at ``cfg.height``, rounded to the nearest ``cfg.width_multiple``."""
    m = cfg.width_multiple
    w = width * cfg.height / height
    return max(m, int(round(w / m)) * m)


def log_attenuation(scan: Scan) -> np.ndarray:
    """``-ln T`` per pixel as float32 ``[C, H, W]`` (C = 2 for dual-energy scans, high first).

    Transmission is floored at ``1/65535`` (the 16-bit raw resolution), so opaque pixels give
    ``~11.09`` rather than infinity.
    """
    planes = [scan.transmission]
    if scan.transmission_low is not None:
        planes.append(scan.transmission_low)
    out = np.empty((len(planes), *scan.transmission.shape), dtype=np.float32)
    for i, t in enumerate(planes):
        if t.shape != scan.transmission.shape:
            raise ValueError(
                f"low-energy image is {t.shape[::-1]} but the high-energy one is "
                f"{scan.transmission.shape[::-1]} (W x H); they must be the same scan."
            )
        np.clip(t, T_FLOOR, 1.0, out=out[i])
        np.log(out[i], out=out[i])
        np.negative(out[i], out=out[i])
    return out


def preprocess(scan: Scan, cfg: PreprocessConfig) -> np.ndarray:
    """Turn a scan into the network input: float32 ``[cfg.channels, cfg.height, W']``.

    Attenuation (not transmission) is resized with ``cv2.INTER_AREA``, so the sum of
    attenuation (and hence the mass estimate) is preserved by the resize.

    Raises:
        ValueError: ``cfg.channels == 2`` and the scan has no low-energy image.
    """
    if cfg.channels == 2 and scan.transmission_low is None:
        raise ValueError(
            f"the model expects dual-energy input (2 channels) but scan {scan.path or '<upload>'} "
            "has one energy; read the pair with read_dual_energy(high, low) or use a "
            "single-energy model."
        )
    atten = log_attenuation(scan)[: cfg.channels]
    h, w = atten.shape[1:]
    out_w = output_width(w, h, cfg)
    out = np.empty((cfg.channels, cfg.height, out_w), dtype=np.float32)
    inv = np.float32(1.0 / cfg.atten_scale)
    for c in range(cfg.channels):
        resized = cv2.resize(atten[c], (out_w, cfg.height), interpolation=cv2.INTER_AREA)
        np.multiply(resized, inv, out=out[c])
    np.clip(out, 0.0, cfg.clip_max, out=out)
    return out


def estimate_mass_kg(scan: Scan, mu_m_cm2_g: float, pixel_mm: float) -> float | None:
    """Mass in the beam from the raw transmission: ``sum(-ln T) / mu_m * pixel area``.

    ``mu_m_cm2_g`` is an effective mass attenuation coefficient (cm²/g) and ``pixel_mm``
    the pixel pitch (mm, same along both axes). Returns ``None`` for display images, whose
    windowing destroys the physics. Opaque pixels (``T`` at the 16-bit floor) make this an
    underestimate.
    """
    if scan.kind != "raw16":
        return None
    if mu_m_cm2_g <= 0 or pixel_mm <= 0:
        raise ValueError(
            f"mu_m_cm2_g and pixel_mm must be > 0, got {mu_m_cm2_g} and {pixel_mm}."
        )
    t = np.clip(scan.transmission, T_FLOOR, 1.0)
    areal_g_cm2 = -np.log(t, dtype=np.float64).sum() / mu_m_cm2_g
    pixel_area_cm2 = (pixel_mm / 10.0) ** 2
    return float(areal_g_cm2 * pixel_area_cm2 / 1000.0)
