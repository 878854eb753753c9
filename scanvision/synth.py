"""Physics-based synthetic X-ray scans of shipping containers.

A scan is a side view: the beam crosses the container's width and each detector pixel
measures the transmission ``T = exp(-sum_m mu_m * rho_m * t_m)`` through everything in
its line of sight. The generator builds one *areal density* map per material
(``rho * t`` in g/cm², summed along the beam) with vectorised NumPy, converts it to
transmission with monoenergetic mass attenuation coefficients at the beam energies
(6 MeV high, 4 MeV low), blurs it with the detector point-spread function and adds
Poisson noise at a given dose plus per-detector-row gain errors (horizontal stripes).

Ground truth is exact by construction: the cargo mass and each concealment's mass are
the sums of the density maps that were placed, the mask is the set of pixels where a
concealment adds attenuation.

Example::

    import numpy as np
    from scanvision.synth import ScanSpec, ThreatSpec, render_scan
    spec = ScanSpec(size="20ft", reefer=True, cargo_family="fruit",
                    threats=(ThreatSpec("drugs", "doors", 60.0),), seed=1)
    scan = render_scan(spec)
    scan.transmission.shape, scan.meta["threats"][0]["box"]
"""

from __future__ import annotations

import json
import logging
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from riskengine.commodities import CARGO_FAMILIES
from scanvision.io import (
    DISPLAY_GAMMA,
    DISPLAY_LOG_RANGE,
    T_FLOOR,
    transmission_to_display8,
    write_transmission,
)

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.1"

#: Cargo families shared with the manifest side (exact strings, fixed order = class index).
THREAT_TYPES = ("drugs", "cigarettes", "weapon")
THREAT_LOCATIONS = ("cargo", "doors", "reefer_unit", "walls", "floor", "roof")
SIZES = ("20ft", "40ft")

#: Beam energies (MeV) of the high- and low-energy images.
ENERGIES_MEV = {"high": 6.0, "low": 4.0}


@dataclass(frozen=True)
class Material:
    """Mass attenuation coefficients (cm²/g) at the two beam energies."""

    name: str
    mu_high: float
    mu_low: float
    z_eff: float


#: Monoenergetic mass attenuation coefficients at 6 and 4 MeV, rounded from the NIST XCOM
#: tables (organic: between carbon and water; inorganic: aluminium; steel: iron).
MATERIALS: dict[str, Material] = {
    "organic": Material("organic", mu_high=0.0256, mu_low=0.0316, z_eff=7.0),
    "inorganic": Material("inorganic", mu_high=0.0265, mu_low=0.0310, z_eff=13.0),
    "steel": Material("steel", mu_high=0.0299, mu_low=0.0332, z_eff=26.0),
}

# densities, g/cm³
RHO_STEEL = 7.85
RHO_ALU = 2.70
RHO_WOOD = 0.65
RHO_RUBBER = 1.15
RHO_DRUG = 1.2  # pressed cocaine / heroin bricks
RHO_CIGARETTE_CASE = 0.27  # 10 kg master case of 50 x 25 x 30 cm
# one drug brick: 20 x 12 x 3.5 cm at 1.2 g/cm³ = 1.0 kg (length along the container,
# width along the beam, height)
BRICK_CM = (20.0, 12.0, 3.5)
BRICK_KG = RHO_DRUG * BRICK_CM[0] * BRICK_CM[1] * BRICK_CM[2] / 1000.0

#: Large uniform packages per cargo family (clean cargo that looks like dense blocks in a
#: scan: a network must not take every uniform block for a concealment).
BULK_CARGO: dict[str, tuple[str, ...]] = {
    "sacks": ("big_bags",),
    "general": ("paper_reels", "big_bags"),
    "textiles": ("fabric_rolls",),
    "machinery": ("cable_drums", "steel_coils"),
    "bottles_drums": ("ibc_tanks",),
}

#: Typical tare, used only when a manifest row gives the VGM but no cargo gross weight.
TARE_KG = {"20ft": 2200.0, "40ft": 3800.0}

# Mean cargo mass (kg) the generator places at fill=1 (measured over 8 seeds per cell).
_FULL_LOAD_KG = {
    "20ft": {"fruit": 9500.0, "frozen_meat": 12000.0, "sacks": 13300.0, "tyres": 5000.0,
             "machinery": 7500.0, "bottles_drums": 12100.0, "textiles": 5200.0, "general": 4300.0},
    "40ft": {"fruit": 20400.0, "frozen_meat": 25800.0, "sacks": 25700.0, "tyres": 10700.0,
             "machinery": 15200.0, "bottles_drums": 24700.0, "textiles": 10900.0, "general": 7900.0},
}

# Fallback HS-chapter map, used only when riskengine.commodities is not installed.
_FALLBACK_CHAPTER_FAMILY = {
    **{c: "fruit" for c in ("07", "08", "20")},
    **{c: "frozen_meat" for c in ("02", "03", "16")},
    **{c: "sacks" for c in ("09", "10", "11", "12", "17", "18", "23", "25", "31")},
    **{c: "bottles_drums" for c in ("15", "22", "27", "28", "29", "32", "34", "38", "39")},
    **{str(c): "textiles" for c in range(50, 64)},
    **{c: "machinery" for c in ("72", "73", "82", "84", "85", "86", "87", "90")},
}


@dataclass(frozen=True)
class ThreatSpec:
    """One concealment to place in a scan.

    Attributes:
        type: ``"drugs"`` (1 kg organic bricks or rip-on/rip-off bags), ``"cigarettes"``
            (master cases) or ``"weapon"`` (steel firearm silhouette).
        location: ``"cargo"``, ``"doors"``, ``"reefer_unit"``, ``"walls"``, ``"floor"``, ``"roof"``.
        mass_kg: mass placed (kg).
    """

    type: str
    location: str
    mass_kg: float


@dataclass(frozen=True)
class ScanSpec:
    """Everything that determines one synthetic scan (with ``seed``, exactly).

    Attributes:
        size: ``"20ft"`` or ``"40ft"``.
        reefer: refrigerated container (insulated walls, refrigeration unit at the front end).
        cargo_family: one of :data:`CARGO_FAMILIES`.
        fill: fraction of the interior length loaded, 0..1 (ignored for ``"empty"``).
        threats: concealments to place.
        seed: seed used when :func:`render_scan` gets no generator.
        high_cube: 9'6" container instead of 8'6".
        dual_energy: also render the low-energy (4 MeV) image.
        dose: photons per pixel in air at high energy (Poisson noise); low energy gets half.
        noise: add Poisson noise and detector-row gain errors (off: exact transmission).
        psf_sigma_px: detector point-spread function (Gaussian sigma, pixels; 0 = none).
        chassis: draw the trailer chassis and wheels below the container.
        flip: door end on the left instead of the right.
        cargo_mass_kg: target cargo mass; ``None`` = what the family and fill give.
        pixel_mm: pixel pitch (mm) along both axes.
        scan_id: identifier written into the sidecar.
        container_type: ISO 6346 size/type code for the sidecar (derived when ``None``).
        tractor: also draw the tractor unit (cab, engine, fuel tank, wheels) in front of the
            trailer, as drive-through portals image it (needs ``chassis``).
        bulk_cargo: load the box with large uniform packages instead of the family's default
            packing: one of :data:`BULK_CARGO` for the family (``None`` = default packing).
    """

    size: str = "20ft"
    reefer: bool = False
    cargo_family: str = "general"
    fill: float = 0.8
    threats: tuple[ThreatSpec, ...] = ()
    seed: int = 0
    high_cube: bool = False
    dual_energy: bool = False
    dose: float = 30_000.0
    noise: bool = True
    psf_sigma_px: float = 0.7
    chassis: bool = True
    flip: bool = False
    cargo_mass_kg: float | None = None
    pixel_mm: float = 5.0
    scan_id: str = "SCAN"
    container_type: str | None = None
    tractor: bool = False
    bulk_cargo: str | None = None

    def iso_type(self) -> str:
        """ISO 6346 size/type code (``22G1``, ``42G1``, ``45G1``, ``22R1``, ``45R1``...)."""
        if self.container_type:
            return self.container_type
        length = "2" if self.size == "20ft" else "4"
        height = "5" if self.high_cube else "2"
        return f"{length}{height}{'R1' if self.reefer else 'G1'}"


@dataclass
class RenderedScan:
    """A rendered scan with its ground truth.

    Attributes:
        transmission: float32 ``H x W`` high-energy transmission in ``(0, 1]``.
        transmission_low: float32 low-energy transmission, or ``None``.
        mask: bool ``H x W``, True where a concealment adds attenuation.
        meta: the sidecar dict (see :func:`generate_scans`).
    """

    transmission: np.ndarray
    transmission_low: np.ndarray | None
    mask: np.ndarray
    meta: dict[str, Any]


@dataclass(frozen=True)
class _Geom:
    pc: float  # pixel size, cm
    H: int
    W: int
    xc0: int  # container outer extent
    xc1: int
    yc0: int
    yc1: int
    xi0: int  # interior (cargo space); yi1 = floor top
    xi1: int
    yi0: int
    yi1: int
    depth_cm: float  # interior width crossed by the beam

    def px(self, mm: float) -> int:
        return max(1, int(round(mm / (self.pc * 10.0))))


@dataclass
class _Layer:
    """Areal density maps (g/cm²) of one object, placed at (y0, x0) on the canvas."""

    y0: int
    x0: int
    maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return next(iter(self.maps.values())).shape

    def total(self) -> np.ndarray:
        return sum(self.maps.values())  # type: ignore[return-value]

    def mass_kg(self, pc: float) -> float:
        return float(sum(float(m.sum(dtype=np.float64)) for m in self.maps.values()) * pc * pc / 1000.0)

    def scale(self, factor: float) -> None:
        for m in self.maps.values():
            m *= np.float32(factor)


class _Canvas:
    def __init__(self, h: int, w: int) -> None:
        self.maps = {m: np.zeros((h, w), dtype=np.float32) for m in MATERIALS}
        self.h, self.w = h, w

    def rect(self, mat: str, y0: int, y1: int, x0: int, x1: int, value: Any) -> None:
        y0, y1 = max(0, y0), min(self.h, y1)
        x0, x1 = max(0, x0), min(self.w, x1)
        if y1 > y0 and x1 > x0:
            self.maps[mat][y0:y1, x0:x1] += value

    def add_layer(self, layer: _Layer) -> np.ndarray:
        """Add a layer; return the part of it that landed on the canvas (bool, canvas-sized)."""
        h, w = layer.shape
        y0, x0 = layer.y0, layer.x0
        cy0, cy1 = max(0, y0), min(self.h, y0 + h)
        cx0, cx1 = max(0, x0), min(self.w, x0 + w)
        placed = np.zeros((self.h, self.w), dtype=bool)
        if cy1 <= cy0 or cx1 <= cx0:
            return placed
        src = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
        for mat, arr in layer.maps.items():
            self.maps[mat][cy0:cy1, cx0:cx1] += arr[src]
        placed[cy0:cy1, cx0:cx1] = layer.total()[src] > 0
        return placed


# --------------------------------------------------------------------------- physics


def transmission_from_density(
    areal_density: Mapping[str, np.ndarray], energy: str = "high"
) -> np.ndarray:
    """Noise-free transmission ``exp(-sum_m mu_m(E) * D_m)`` from areal densities (g/cm²).

    ``areal_density`` maps material names of :data:`MATERIALS` to arrays of ``rho * t``
    summed along the beam; ``energy`` is ``"high"`` (6 MeV) or ``"low"`` (4 MeV).
    """
    if energy not in ENERGIES_MEV:
        raise ValueError(f"energy must be one of {sorted(ENERGIES_MEV)}, got {energy!r}.")
    atten: np.ndarray | None = None
    for name, dens in areal_density.items():
        if name not in MATERIALS:
            raise ValueError(f"unknown material {name!r}; expected one of {sorted(MATERIALS)}.")
        mat = MATERIALS[name]
        mu = np.float32(mat.mu_high if energy == "high" else mat.mu_low)
        term = np.asarray(dens, dtype=np.float32) * mu
        atten = term if atten is None else atten + term
    if atten is None:
        raise ValueError("areal_density is empty; give at least one material map.")
    return np.exp(-atten).astype(np.float32)


def _detect(
    t: np.ndarray, rng: np.random.Generator, dose: float, noise: bool, psf: float
) -> np.ndarray:
    """Detector model: PSF blur, Poisson counting, residual row/column gain errors."""
    if psf > 0:
        t = cv2.GaussianBlur(t, (0, 0), sigmaX=psf, sigmaY=psf, borderType=cv2.BORDER_REPLICATE)
    if noise:
        lam = t * np.float32(dose)
        # Poisson counting; above 50 expected counts the normal approximation is exact to
        # well under 1 % and ~8x faster, so only the dark pixels are drawn exactly
        counts = lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32)
        dark = lam < 50
        counts[dark] = rng.poisson(lam[dark]).astype(np.float32)
        row_gain = 1.0 + 0.004 * rng.standard_normal(t.shape[0]).astype(np.float32)
        col_gain = 1.0 + 0.002 * rng.standard_normal(t.shape[1]).astype(np.float32)
        t = counts * np.float32(1.0 / dose) * row_gain[:, None] * col_gain[None, :]
    return np.clip(t, T_FLOOR, 1.0).astype(np.float32)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float, amp: float) -> np.ndarray:
    """1 + amp * smooth Gaussian field with correlation length ~cell pixels."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    return 1.0 + amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _sheet(rho: float, length_cm: float, thick_cm: float, pc: float) -> float:
    """Areal density of a sheet lying in the beam plane, seen in one pixel row/column."""
    return rho * length_cm * min(1.0, thick_cm / pc)


# --------------------------------------------------------------------------- geometry

#: Length in front of the container taken by the tractor unit (mm).
TRACTOR_MM = 4400


def _geometry(spec: ScanSpec) -> _Geom:
    pmm = spec.pixel_mm

    def px(mm: float) -> int:
        return max(1, int(round(mm / pmm)))

    length = 6058 if spec.size == "20ft" else 12192
    height = 2896 if spec.high_cube else 2591
    xc0, yc0 = px(250 + (TRACTOR_MM if spec.tractor else 0)), px(150)
    xc1, yc1 = xc0 + px(length), yc0 + px(height)
    below = px(1200) if spec.chassis else px(150)
    if spec.reefer:
        xi0, xi1 = xc0 + px(450), xc1 - px(170)
        yi0, yi1 = yc0 + px(150), yc1 - px(230)
        depth = 228.6
    else:
        xi0, xi1 = xc0 + px(100), xc1 - px(120)
        yi0, yi1 = yc0 + px(60), yc1 - px(180)
        depth = 235.2
    return _Geom(pmm / 10.0, yc1 + below, xc1 + px(250), xc0, xc1, yc0, yc1, xi0, xi1, yi0, yi1, depth)


def _draw_container(c: _Canvas, g: _Geom, spec: ScanSpec, rng: np.random.Generator) -> None:
    pc, px = g.pc, g.px
    xs = np.arange(g.xc0, g.xc1)
    xl = xs - g.xc0
    var = lambda: float(rng.uniform(0.9, 1.1))  # noqa: E731  (per-scan manufacturing spread)

    # side walls, both crossed by the beam
    if spec.reefer:
        # sandwich panels: stainless outer skin, polyurethane foam, aluminium inner skin
        c.rect("steel", g.yc0, g.yc1, g.xc0, g.xc1, RHO_STEEL * 2 * 0.08 * var())
        c.rect("inorganic", g.yc0, g.yc1, g.xc0, g.xc1, RHO_ALU * 2 * 0.1 * var())
        c.rect("organic", g.yc0, g.yc1, g.xc0, g.xc1, 0.04 * 2 * 10.0)
        # shallow ribs of the outer skin every ~100 mm
        rib = (xl % px(100)) < px(10)
        c.maps["steel"][g.yc0:g.yc1, g.xc0:g.xc1] += (rib * RHO_STEEL * 2 * 0.05)[None, :]
    else:
        wall = RHO_STEEL * 2 * 0.20 * var()
        pitch = px(278)
        phase = int(rng.integers(0, pitch))
        loc = (xl + phase) % pitch
        # oblique faces of the trapezoidal corrugation: longer path through the sheet
        diag = ((loc >= px(70)) & (loc < px(70) + px(15))) | ((loc >= px(209)) & (loc < px(209) + px(15)))
        profile = wall * (1.0 + 0.8 * diag)
        c.maps["steel"][g.yc0:g.yc1, g.xc0:g.xc1] += profile[None, :].astype(np.float32)

    # roof: corrugated sheet lying in the beam plane, a dark line that steps every ~100 mm
    roof_d = _sheet(RHO_STEEL, g.depth_cm, 0.2, pc)
    step = ((xl // px(100)) % 2) * px(15)
    roof_rows = g.yc0 + px(10) + step
    c.maps["steel"][roof_rows, xs] += roof_d
    if spec.reefer:
        c.rect("organic", g.yc0 + px(30), g.yi0, g.xc0, g.xc1, 0.04 * g.depth_cm)
        c.rect("inorganic", g.yi0 - 1, g.yi0, g.xc0, g.xc1, _sheet(RHO_ALU, g.depth_cm, 0.1, pc))

    # top side rails: 60x60x3 mm hollow sections, one per side
    tr0, tr1 = g.yc0, g.yc0 + px(60)
    c.rect("steel", tr0, tr1, g.xc0, g.xc1, RHO_STEEL * 2 * 2 * 0.3)
    c.rect("steel", tr0, tr0 + 1, g.xc0, g.xc1, _sheet(RHO_STEEL, 2 * 6.0, 0.3, pc))
    c.rect("steel", tr1 - 1, tr1, g.xc0, g.xc1, _sheet(RHO_STEEL, 2 * 6.0, 0.3, pc))

    # bottom side rails: C-sections 158 mm high, web 4.5 mm, flanges 48 mm
    br0 = g.yc1 - px(158)
    c.rect("steel", br0, g.yc1, g.xc0, g.xc1, RHO_STEEL * 2 * 0.45)
    fl = _sheet(RHO_STEEL, 2 * 4.8, 0.45, pc)
    c.rect("steel", br0, br0 + 1, g.xc0, g.xc1, fl)
    c.rect("steel", g.yc1 - 1, g.yc1, g.xc0, g.xc1, fl)

    # floor
    if spec.reefer:
        # aluminium T-floor: webs crossed side-on, the top flanges lie in the beam plane
        c.rect("inorganic", g.yi1, g.yi1 + px(60), g.xc0, g.xc1, RHO_ALU * 40 * 0.3)
        c.rect("inorganic", g.yi1, g.yi1 + 1, g.xc0, g.xc1, _sheet(RHO_ALU, g.depth_cm * 0.6, 0.3, pc))
        c.rect("organic", g.yi1 + px(60), g.yc1 - px(20), g.xc0, g.xc1, 0.04 * g.depth_cm)
        cm_top = g.yc1 - px(120)
    else:
        c.rect("organic", g.yi1, g.yi1 + px(28), g.xc0, g.xc1, RHO_WOOD * g.depth_cm * var())
        cm_top = g.yi1 + px(28)
    # floor cross-members: C-sections running across the width, i.e. along the beam
    cm_pitch = px(300 if not spec.reefer else 600)
    cm_bottom = g.yc1 - px(10)
    web = _sheet(RHO_STEEL, g.depth_cm, 0.45, pc)
    web_cols = np.arange(g.xi0 + px(50), g.xi1, cm_pitch)
    flange_cols = (web_cols[:, None] + np.arange(px(45))[None, :]).ravel()
    flange_cols = flange_cols[flange_cols < c.w]
    c.maps["steel"][cm_top, flange_cols] += web
    c.maps["steel"][cm_bottom - 1, flange_cols] += web
    c.maps["steel"][cm_top:cm_bottom, web_cols] += web

    # end frames: front end (left) and door end (right)
    front_w = px(100)
    post = RHO_STEEL * 2 * 2 * 0.6  # corner posts, two plates each side
    c.rect("steel", g.yc0, g.yc1, g.xc0, g.xc0 + px(30), post)
    # corrugated front wall: 2 mm sheet developed over ~1.2x the width, spread over its depth
    fw = RHO_STEEL * 1.2 * g.depth_cm * 0.2 / (px(45) * pc)
    c.rect("steel", g.yc0, g.yc1, g.xc0 + px(30), g.xc0 + px(30) + px(45), fw * var())
    header = _sheet(RHO_STEEL, g.depth_cm, 0.5, pc) * 0.5
    c.rect("steel", g.yc0, g.yc0 + px(100), g.xc0, g.xc0 + front_w, header / 4)
    c.rect("steel", g.yc1 - px(100), g.yc1, g.xc0, g.xc0 + front_w, header / 4)

    door0 = g.xc1 - px(120)
    c.rect("steel", g.yc0, g.yc1, door0, door0 + px(40), post)
    c.rect("steel", g.yc0, g.yc1, door0 + px(40), door0 + px(80), fw * 1.1 * var())
    c.rect("steel", g.yc0, g.yc0 + px(110), door0, g.xc1, header / 3)
    c.rect("steel", g.yc1 - px(110), g.yc1, door0, g.xc1, header / 3)
    # four locking bars (27 mm rods) outside the doors: one column of overlapping circles
    r_cm = 1.35
    xb = np.arange(g.xc1 - px(40), g.xc1)
    centre = g.xc1 - px(20)
    dxc = (xb - centre) * pc
    chord = 2 * np.sqrt(np.clip(r_cm**2 - dxc**2, 0, None))
    bars = (4 * RHO_STEEL * chord).astype(np.float32)
    yb0, yb1 = g.yc0 + px(80), g.yc1 - px(80)
    c.maps["steel"][yb0:yb1, xb] += bars[None, :]
    # cams at both ends and handles at about 55 % of the height
    for yy in (yb0, yb1 - px(60), g.yc0 + int(0.55 * (g.yc1 - g.yc0))):
        c.rect("steel", yy, yy + px(50), centre - px(35), centre + px(35), 4 * RHO_STEEL * 1.5)

    # corner castings (178 x 118 mm, hollow, 10-12 mm walls), both sides overlapping
    cw, ch = px(178), px(118)
    for x0 in (g.xc0, g.xc1 - cw):
        for y0 in (g.yc0, g.yc1 - ch):
            c.rect("steel", y0, y0 + ch, x0, x0 + cw, 2 * 2 * 1.1 * RHO_STEEL)
            c.rect("steel", y0, y0 + 1, x0, x0 + cw, _sheet(RHO_STEEL, 2 * 16.2, 1.1, pc))
            c.rect("steel", y0 + ch - 1, y0 + ch, x0, x0 + cw, _sheet(RHO_STEEL, 2 * 16.2, 1.1, pc))

    if spec.reefer:
        _draw_reefer_unit(c, g, rng)


def _draw_reefer_unit(c: _Canvas, g: _Geom, rng: np.random.Generator) -> None:
    px, pc = g.px, g.pc
    x0, x1 = g.xc0, g.xi0
    # unit frame and insulated bulkhead towards the cargo space
    c.rect("steel", g.yc0, g.yc1, x0, x0 + px(40), RHO_STEEL * 2 * 0.6)
    c.rect("organic", g.yi0, g.yi1, x1 - px(100), x1, 0.04 * g.depth_cm)
    c.rect("inorganic", g.yi0, g.yi1, x1 - px(10), x1 - px(5), _sheet(RHO_ALU, g.depth_cm, 0.15, pc))
    # compressor: a vertical steel cylinder near the bottom
    cx0, cx1 = x0 + px(60), x0 + px(60) + px(int(rng.uniform(260, 320)))
    cy1 = g.yc1 - px(300)
    cy0 = cy1 - px(int(rng.uniform(450, 600)))
    u = (np.arange(cx0, cx1) - (cx0 + cx1) / 2) / ((cx1 - cx0) / 2)
    prof = np.sqrt(np.clip(1 - u**2, 0, None)) * RHO_STEEL * 12.0
    c.maps["steel"][cy0:cy1, cx0:cx1] += prof[None, :].astype(np.float32)
    c.rect("steel", cy0 - px(20), cy0, cx0 - px(20), cx1 + px(20), RHO_STEEL * 8.0)
    # condenser coil: aluminium fins with copper tubes (treated as steel) every 25 mm
    k0, k1 = cy0 - px(700), cy0 - px(80)
    c.rect("inorganic", k0, k1, x0 + px(50), x1 - px(120), RHO_ALU * 3.0)
    rows = np.arange(k0, k1, px(25))
    c.maps["steel"][rows, x0 + px(50):x1 - px(120)] += RHO_STEEL * 1.5
    # evaporator fans: discs with a dense motor hub in the upper part
    fr = px(int(rng.uniform(180, 230)))
    fy = g.yc0 + px(200) + fr
    fx = (x0 + x1) // 2
    yy, xx = np.ogrid[fy - fr:fy + fr, fx - fr:fx + fr]
    r = np.sqrt((yy - fy) ** 2 + (xx - fx) ** 2)
    c.maps["inorganic"][fy - fr:fy + fr, fx - fr:fx + fr] += ((r < fr) * RHO_ALU * 2.0).astype(np.float32)
    c.maps["steel"][fy - fr:fy + fr, fx - fr:fx + fr] += ((r < fr * 0.3) * RHO_STEEL * 6.0).astype(np.float32)
    # control box
    b0 = fy + fr + px(100)
    c.rect("steel", b0, b0 + px(300), x0 + px(60), x0 + px(220), RHO_STEEL * 2 * 0.15)


def _draw_chassis(c: _Canvas, g: _Geom, spec: ScanSpec, rng: np.random.Generator) -> None:
    px, pc = g.px, g.pc
    y0, y1 = g.yc1, g.yc1 + px(300)
    x0, x1 = g.xc0 - px(100), g.xc1 + px(60)
    # two longitudinal I-beams: webs crossed side-on, flanges lie in the beam plane
    c.rect("steel", y0 + px(20), y1, x0, x1, RHO_STEEL * 2 * 1.0)
    fl = _sheet(RHO_STEEL, 2 * 15.0, 1.2, pc)
    c.rect("steel", y0, y0 + px(20), x0, x1, fl * 0.5)  # deck plate / top flanges
    c.rect("steel", y1 - px(15), y1, x0, x1, fl * 0.5)
    # air tanks, toolbox and piping below the deck: a few dense boxes
    for _ in range(int(rng.integers(2, 5))):
        bx = int(rng.integers(x0, x1 - px(800)))
        bw, bh = px(int(rng.uniform(300, 800))), px(int(rng.uniform(150, 400)))
        c.rect("steel", y1, y1 + bh, bx, bx + bw, RHO_STEEL * float(rng.uniform(1.0, 4.0)))
    cols = np.arange(x0 + px(300), x1 - px(100), px(int(rng.uniform(550, 700))))
    cols = np.unique(np.clip((cols[:, None] + np.arange(px(20))[None, :]).ravel(), 0, c.w - 1))
    c.maps["steel"][y0:y1, cols] += _sheet(RHO_STEEL, 240.0, 0.5, pc) * 0.3
    # landing legs near the front
    lx = g.xc0 + px(2300)
    ground = g.yc1 + px(1100)
    c.rect("steel", y1, ground - px(150), lx, lx + px(100), 2 * 2 * 0.6 * RHO_STEEL)
    c.rect("steel", ground - px(150), ground - px(120), lx - px(60), lx + px(160), RHO_STEEL * 4.0)
    # wheels: three (40 ft) or two (20 ft) axles at the door end, dual tyres each side
    n_axles = 3 if spec.size == "40ft" else 2
    cy = g.yc1 + px(600)
    last = g.xc1 - px(int(rng.uniform(700, 1100)))
    tyre, wheel_steel = _wheel(g, n_tyres=4)
    R = tyre.shape[0] // 2
    for k in range(n_axles):
        cx = last - k * px(1310)
        c.add_layer(_Layer(cy - R, cx - R, {"organic": tyre, "steel": wheel_steel}))


def _wheel(g: _Geom, n_tyres: int) -> tuple[np.ndarray, np.ndarray]:
    """Rubber and steel areal density of one axle end-on: ``n_tyres`` tyres along the beam."""
    px, pc = g.px, g.pc
    R = px(500)
    yy, xx = np.ogrid[-R:R, -R:R]
    r = np.sqrt(yy.astype(np.float32) ** 2 + xx.astype(np.float32) ** 2)
    rim = px(286)
    # sidewalls everywhere, the tread band (parallel to the beam) as a dark outer ring;
    # steel rims, brake drums, hub and the axle itself
    ring = lambda r0, w: np.exp(-(((r - r0) / w) ** 2))  # noqa: E731
    n = float(n_tyres)
    tyre = (np.where((r < R) & (r >= rim), n * 2 * 2.5 * RHO_RUBBER, 0.0)
            + ring(R - px(12), px(10)) * n * 30.0 * RHO_RUBBER * 0.6) * (r < R)
    wheel_steel = (np.where(r < rim, n * 1.5 * RHO_STEEL, 0.0)
                   + ring(rim, px(8)) * n * 22.0 * 0.6 * RHO_STEEL * 0.5
                   + ring(rim * 0.75, px(12)) * n * 18.0 * 1.5 * RHO_STEEL * 0.4
                   + np.where(r < px(110), n * 6.0 * RHO_STEEL, 0.0)
                   + np.where(r < px(40), _sheet(RHO_STEEL, 240.0, 8.0, pc), 0.0))
    return tyre.astype(np.float32), wheel_steel.astype(np.float32)


def _draw_tractor(c: _Canvas, g: _Geom, rng: np.random.Generator) -> None:
    """Tractor unit in front of the trailer: frame, cab, engine and gearbox, fuel tank, wheels.

    Seen side-on the engine block is the densest thing in a truck scan (~40 cm of cast iron
    across); drive-through portals image it unless they skip the cab.
    """
    px, pc = g.px, g.pc
    ground = g.yc1 + px(1100)
    front = g.xc0 - px(TRACTOR_MM - 200)  # bumper
    var = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    # frame rails (two C-sections) from the bumper to behind the fifth wheel
    c.rect("steel", ground - px(1050), ground - px(750), front, g.xc0 + px(1300), RHO_STEEL * 2 * 0.8)
    # fifth-wheel plate and its mounting under the front of the trailer
    c.rect("steel", g.yc1 + px(300), g.yc1 + px(420), g.xc0 + px(200), g.xc0 + px(1500), RHO_STEEL * 9.0)
    # cab: two side skins crossed by the beam, front and back walls edge-on, seats and dashboard
    cab_x0, cab_x1 = front + px(100), front + px(int(var(2100, 2500)))
    cab_y0, cab_y1 = ground - px(int(var(3700, 4000))), ground - px(1150)
    c.rect("steel", cab_y0, cab_y1, cab_x0, cab_x1, RHO_STEEL * 2 * 0.15)
    for x in (cab_x0, cab_x1 - px(30)):
        c.rect("steel", cab_y0, cab_y1, x, x + px(30), _sheet(RHO_STEEL, 240.0, 0.2, pc))
    c.rect("steel", cab_y0, cab_y0 + px(40), cab_x0, cab_x1, _sheet(RHO_STEEL, 240.0, 0.15, pc))
    win = cab_y0 + px(int(var(1000, 1300)))
    c.rect("inorganic", cab_y0 + px(150), win, cab_x0, cab_x1, RHO_ALU * 2 * 0.5)
    c.rect("organic", win + px(300), cab_y1, cab_x0 + px(300), cab_x1 - px(200), var(15.0, 30.0))
    # engine block and gearbox under the cab; radiator at the front
    ex0 = front + px(int(var(250, 450)))
    ex1 = ex0 + px(int(var(1100, 1400)))
    ey0, ey1 = ground - px(int(var(1600, 1800))), ground - px(550)
    block = np.full((ey1 - ey0, ex1 - ex0), RHO_STEEL * var(30.0, 45.0), dtype=np.float32)
    yy, xx = np.mgrid[0:block.shape[0], 0:block.shape[1]]
    block *= (0.75 + 0.25 * np.cos(xx / max(1, px(160)) * np.pi) ** 2).astype(np.float32)  # cylinders
    block[: block.shape[0] // 5, : block.shape[1] // 3] *= 0.3
    c.add_layer(_Layer(ey0, ex0, {"steel": block}))
    c.rect("steel", ey0 + px(300), ey1 - px(200), ex1, ex1 + px(int(var(600, 900))), RHO_STEEL * var(15.0, 25.0))
    c.rect("steel", ey0 - px(200), ey1 - px(300), front, front + px(120), RHO_STEEL * 6.0)
    # fuel tank (diesel, partly full) between the axles
    tx0 = cab_x1 + px(100)
    tx1 = tx0 + px(int(var(1000, 1600)))
    ty0, ty1 = ground - px(1150), ground - px(500)
    level = ty1 - int((ty1 - ty0) * var(0.2, 0.95))
    c.rect("steel", ty0, ty1, tx0, tx1, RHO_STEEL * 2 * 0.3)
    c.rect("organic", level, ty1, tx0, tx1, 0.84 * var(50.0, 70.0))
    # wheels: a steered front axle (single tyres) and two drive axles (dual tyres)
    for cx, n in ((front + px(1300), 2), (g.xc0 + px(300), 4), (g.xc0 + px(1650), 4)):
        tyre, wheel_steel = _wheel(g, n_tyres=n)
        R = tyre.shape[0] // 2
        c.add_layer(_Layer(ground - px(500) - R, cx - R, {"organic": tyre, "steel": wheel_steel}))


# --------------------------------------------------------------------------- cargo


def _grid(h: int, w: int, cw: int, ch: int, stagger: int = 0) -> tuple[np.ndarray, ...]:
    """Cell indices and local coordinates of a regular grid (z-up, z=0 on the floor)."""
    z = np.arange(h)[:, None]
    x = np.arange(w)[None, :]
    row = np.broadcast_to(z // ch, (h, w))
    xs = x + (row % 2) * stagger
    col = xs // cw
    u = ((xs % cw) + 0.5) / cw
    v = np.broadcast_to(((z % ch) + 0.5) / ch, (h, w))
    return row, col, u.astype(np.float32), v.astype(np.float32)


def _edge_gap(u: np.ndarray, v: np.ndarray, cw: int, ch: int, gap_px: float = 1.0) -> np.ndarray:
    """1 inside an item, 0.4 on its outline (the gap between packages)."""
    edge = (u * cw < gap_px) | ((1 - u) * cw < gap_px) | (v * ch < gap_px) | ((1 - v) * ch < gap_px)
    return np.where(edge, 0.4, 1.0).astype(np.float32)


def _stack_tops(rng: np.random.Generator, n: int, lo: float, hi: float, quantum: int) -> np.ndarray:
    return (rng.uniform(lo, hi, n) // quantum * quantum).astype(np.int64)


def _pallets(h: int, w_load: int, pitch: int, g: _Geom) -> np.ndarray:
    """Wooden pallets (15 cm high) every ``pitch`` pixels; returns organic density (z-up)."""
    out = np.zeros((h, w_load), dtype=np.float32)
    ph = g.px(150)
    x = np.arange(w_load)
    u = (x % pitch) / pitch
    blocks = (u < 0.08) | ((u > 0.46) & (u < 0.54)) | ((u > 0.92) & (u < 1.0))
    out[:ph, :] = (blocks * RHO_WOOD * 0.3 * g.depth_cm)[None, :]
    board = RHO_WOOD * 0.6 * g.depth_cm * min(1.0, 2.2 / (g.px(22) * g.pc))
    out[:g.px(22), :] = board
    out[ph - g.px(22):ph, :] = board
    out[:, (x % pitch) >= pitch - g.px(20)] = 0
    return out


def _cargo(family: str, fill: float, g: _Geom, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Cargo density maps over the interior (z-up, shape Hi x Wi); empty dict for "empty"."""
    hi, wi = g.yi1 - g.yi0, g.xi1 - g.xi0
    if family == "empty" or fill <= 0:
        return {}
    load = max(g.px(300), int(round(fill * wi)))
    maps = {m: np.zeros((hi, wi), dtype=np.float32) for m in MATERIALS}
    px, depth = g.px, g.depth_cm
    sub = (slice(None), slice(0, load))
    org, ino, st = maps["organic"][sub], maps["inorganic"][sub], maps["steel"][sub]
    z = np.arange(hi)[:, None]

    if family in ("fruit", "frozen_meat", "textiles"):
        if family == "fruit":
            pitch, cw, ch, base = px(1220), px(600), px(250), px(150)
            dens, lo, hi_top, tex = 0.5 * depth, 0.7, 0.95, (px(60), 0.15)
        elif family == "frozen_meat":
            pitch, cw, ch, base = px(1200), px(600), px(150), 0
            dens, lo, hi_top, tex = 0.58 * depth, 0.75, 0.92, (px(300), 0.05)
        else:
            pitch, cw, ch, base = px(1000), px(1000), px(500), 0
            dens, lo, hi_top, tex = 0.28 * depth, 0.55, 1.0, (px(40), 0.2)
        if base:
            org += _pallets(hi, load, pitch, g)
        zz = np.maximum(z - base, 0)
        row, col, u, v = _grid(hi, load, cw, ch)
        row = np.broadcast_to(zz // ch, (hi, load))
        v = np.broadcast_to(((zz % ch) + 0.5) / ch, (hi, load)).astype(np.float32)
        group = (np.arange(load) // pitch)[None, :]
        n_groups = int(group.max()) + 1
        tops = _stack_tops(rng, n_groups, lo * (hi - base), hi_top * (hi - base), ch)
        inside = (zz < tops[group]) & (z >= base) & ((np.arange(load) % pitch) < pitch - px(20))[None, :]
        cell_d = rng.uniform(0.9, 1.1, (int(row.max()) + 2, int(col.max()) + 2)).astype(np.float32)
        d = dens * cell_d[row, col] * inside
        if family == "textiles":
            bulge = np.sqrt(np.clip(1 - np.abs(2 * u - 1) ** 8, 0, 1) * np.clip(1 - np.abs(2 * v - 1) ** 8, 0, 1))
            d = d * bulge
            straps = ((np.abs(u - 0.25) * cw < 1.5) | (np.abs(u - 0.75) * cw < 1.5)) & inside
            st += (straps * RHO_STEEL * 2 * 2 * 0.08).astype(np.float32)
        else:
            d = d * _edge_gap(u, v, cw, ch)
        texture = _smooth_noise(rng, hi, load, *tex)
        if family == "textiles":
            texture = texture * _smooth_noise(rng, hi, load, px(10), 0.08)
        org += (d * texture).astype(np.float32)

    elif family == "sacks":
        cw, ch = px(900), px(170)
        base = px(150) if rng.random() < 0.5 else 0
        if base:
            org += _pallets(hi, load, px(1200), g)
        zz = np.maximum(z - base, 0)
        row = np.broadcast_to(zz // ch, (hi, load))
        xs = np.arange(load)[None, :] + (row % 2) * (cw // 2)
        col = xs // cw
        u = ((xs % cw) + 0.5) / cw
        v = ((zz % ch) + 0.5) / ch
        pillow = np.sqrt(np.clip(1 - np.abs(2 * u - 1) ** 4, 0, 1) * np.clip(1 - np.abs(2 * v - 1) ** 2.5, 0, 1))
        group = (np.arange(load) // px(1800))[None, :]
        n_groups = int(group.max()) + 1
        tops = _stack_tops(rng, n_groups, 0.5 * (hi - base), 0.85 * (hi - base), ch)
        # rounded stacks: the top layer is shorter at the stack's ends
        gx = (np.arange(load) % px(1800)) / px(1800)
        top_x = tops[group] - ch * (np.abs(2 * gx - 1) > 0.8)[None, :]
        inside = (zz < top_x) & (z >= base)
        cell_d = rng.uniform(0.9, 1.1, (int(row.max()) + 2, int(col.max()) + 2)).astype(np.float32)
        rho = float(rng.uniform(0.8, 1.1))  # bulk density of a stack of full sacks
        org += (rho * 0.95 * depth * pillow * cell_d[row, col] * inside * _smooth_noise(rng, hi, load, px(30), 0.1)).astype(np.float32)

    elif family == "tyres":
        cell = px(700)
        R = cell / 2 - px(20)
        stagger = cell // 2 if rng.random() < 0.5 else 0
        row, col, u, v = _grid(hi, load, cell, cell, stagger=stagger)
        n_rows = int(rng.integers(max(1, hi // cell - 1), max(1, hi // cell) + 1))
        start = col * cell - (row % 2) * stagger  # first pixel of each tyre's cell
        r = np.sqrt((u - 0.5) ** 2 + (v - 0.5) ** 2) * cell
        # tyres are laced (interleaved) to fill the box: ~2.5x the rubber of one aligned row
        n_deep = float(rng.uniform(8, 11)) * 2.5
        inner = R * 0.62
        side = ((r >= inner) & (r < R)) * n_deep * 2 * 1.0 * RHO_RUBBER
        tread = np.exp(-(((r - (R - px(10))) / px(12)) ** 2)) * n_deep * 20.0 * RHO_RUBBER * 0.5
        bead = np.exp(-(((r - inner) / px(8)) ** 2)) * n_deep * 2 * RHO_STEEL * 0.2
        belt = np.exp(-(((r - (R - px(25))) / px(8)) ** 2)) * n_deep * 20 * 0.02 * RHO_STEEL
        present = (row < n_rows) & (start >= 0) & (start + cell <= load)
        org += ((side + tread) * present).astype(np.float32)
        st += ((bead + belt) * present).astype(np.float32)

    elif family == "bottles_drums":
        base = px(150)
        org += _pallets(hi, load, px(1200), g)
        zz = np.maximum(z - base, 0)
        if rng.random() < 0.6:  # 200 L drums, 4 across the width, 2 high
            cw, ch = px(585), px(880)
            row, col, u, v = _grid(hi - base, load, cw, ch)
            row = np.broadcast_to(zz // ch, (hi, load))
            v = np.broadcast_to(((zz % ch) + 0.5) / ch, (hi, load)).astype(np.float32)
            u = np.broadcast_to(u[:1], (hi, load))
            n_high = int(rng.integers(1, 3))
            inside = (z >= base) & (row < n_high)
            chord = np.sqrt(np.clip(1 - (2 * u - 1) ** 2, 1e-4, 1))
            level = float(rng.uniform(0.85, 0.95))
            liquid = 4 * 58.5 * chord * float(rng.uniform(0.85, 1.3)) * (v < level)
            plastic = rng.random() < 0.3
            wall_t = 0.5 if plastic else 0.12
            rho_w = 0.95 if plastic else RHO_STEEL
            shell = np.minimum(4 * 2 * wall_t / chord, 4 * 2 * wall_t * 12) * rho_w
            lids = ((v * ch < 1.5) | ((1 - v) * ch < 1.5)) * _sheet(rho_w, 4 * 58.5, wall_t, g.pc) * chord
            hoops = ((np.abs(v - 1 / 3) * ch < 1) | (np.abs(v - 2 / 3) * ch < 1)) * 4 * 2 * 1.0 * rho_w * 0.3
            org += (liquid * inside).astype(np.float32)
            wall_map = org if plastic else st
            wall_map += ((shell + lids + hoops) * inside).astype(np.float32)
        else:  # cartons of bottles: glass (inorganic) and liquid (organic)
            cw, ch = px(400), px(330)
            row, col, u, v = _grid(hi, load, cw, ch)
            row = np.broadcast_to(zz // ch, (hi, load))
            v = np.broadcast_to(((zz % ch) + 0.5) / ch, (hi, load)).astype(np.float32)
            n_high = int(rng.integers(4, 7))
            inside = (z >= base) & (row < n_high) & (row * ch + ch <= hi - base)
            ub = (np.arange(load) % px(80) + 0.5) / px(80)
            bottle = np.sqrt(np.clip(1 - (2 * ub - 1) ** 2, 0, 1))[None, :]
            neck = np.where(v > 0.7, 0.35, 1.0)
            n_deep = 14
            glass = n_deep * 2 * 0.3 * RHO_ALU * 0.93 / np.maximum(bottle, 0.3) * neck
            liquid = n_deep * 8.0 * bottle * neck * (v < 0.85)
            box = _edge_gap(u, v, cw, ch)
            ino += (glass * inside * box).astype(np.float32)
            org += (liquid * inside * box).astype(np.float32)

    elif family == "machinery":
        _machinery(org, st, hi, load, g, rng)

    elif family == "general":
        x = np.arange(load)
        widths = rng.integers(px(300), px(1000), size=load // px(300) + 2)
        edges = np.concatenate([[0], np.cumsum(widths)])
        col = np.searchsorted(edges, x, side="right") - 1
        u = ((x - edges[col]) + 0.5) / widths[col]
        box_h = rng.integers(px(200), px(700), size=len(widths))[col]
        top = (rng.uniform(0.3, 1.0, size=len(widths)) * hi).astype(np.int64)[col]
        row = z // box_h[None, :]
        v = ((z % box_h[None, :]) + 0.5) / box_h[None, :]
        inside = z < top[None, :]
        n_rows = int(row.max()) + 1
        dens = np.exp(rng.uniform(np.log(0.08), np.log(0.45), (n_rows, len(widths)))) * depth
        kind = rng.random((n_rows, len(widths)))
        edge = (u[None, :] * widths[col][None, :] < 1) | ((1 - u[None, :]) * widths[col][None, :] < 1) | (v * box_h[None, :] < 1)
        d = dens[row, col[None, :]] * inside * np.where(edge, 0.4, 1.0) * _smooth_noise(rng, hi, load, px(80), 0.3)
        k = kind[row, col[None, :]]
        org += (d * (k < 0.75)).astype(np.float32)
        ino += (d * ((k >= 0.75) & (k < 0.9)) * 0.8).astype(np.float32)
        st += (d * (k >= 0.9) * 0.15).astype(np.float32)
    else:
        raise ValueError(f"unknown cargo family {family!r}; expected one of {list(CARGO_FAMILIES)}.")
    return {m: a for m, a in maps.items() if a.any()}


def _machinery(org: np.ndarray, st: np.ndarray, h: int, w: int, g: _Geom, rng: np.random.Generator) -> None:
    """Crated machines: steel bodies with cut-outs and shafts on wooden skids (z-up)."""
    px = g.px
    x = 0
    while x < w - px(400):
        mw = int(min(w - x, px(int(rng.uniform(800, 2400)))))
        mh = int(min(h - px(150), px(int(rng.uniform(500, 2000)))))
        sk = px(150)
        org[:sk, x:x + mw] += RHO_WOOD * 0.4 * g.depth_cm
        # crate boards: thin walls crossed side-on, top/bottom boards along the beam
        org[sk:sk + mh + px(50), x:x + mw] += RHO_WOOD * 2 * 2.0
        org[sk + mh + px(30):sk + mh + px(50), x:x + mw] += RHO_WOOD * g.depth_cm * 0.5
        bw, bh = int(mw * rng.uniform(0.5, 0.9)), int(mh * rng.uniform(0.5, 0.95))
        bx = x + (mw - bw) // 2
        thick = float(rng.uniform(6, 35))
        body = np.full((bh, bw), RHO_STEEL * thick, dtype=np.float32)
        for _ in range(int(rng.integers(1, 4))):  # cut-outs (a handful per machine)
            hw, hh = int(bw * rng.uniform(0.1, 0.4)), int(bh * rng.uniform(0.1, 0.4))
            hx, hy = int(rng.integers(0, bw - hw + 1)), int(rng.integers(0, bh - hh + 1))
            body[hy:hy + hh, hx:hx + hw] *= np.float32(rng.uniform(0.1, 0.5))
        for _ in range(int(rng.integers(0, 3))):  # horizontal shafts / cylinders
            rr = int(px(int(rng.uniform(50, 200))))
            cy = int(rng.integers(0, max(1, bh - 2 * rr))) + rr
            yy = np.arange(bh)[:, None]
            chord = 2 * np.sqrt(np.clip(rr**2 - (yy - cy) ** 2, 0, None)) * g.pc
            body += (chord * RHO_STEEL * (np.abs(yy - cy) < rr)).astype(np.float32) * np.ones((1, bw), np.float32)
        st[sk:sk + bh, bx:bx + bw] += body
        x += mw + px(int(rng.uniform(50, 300)))


def _bulk_cargo(kind: str, fill: float, g: _Geom, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Large uniform packages (z-up, Hi x Wi): big bags, paper reels, fabric rolls, cable drums,
    steel coils, IBC tanks. Seen side-on, most are dense blocks of one material."""
    hi, wi = g.yi1 - g.yi0, g.xi1 - g.xi0
    load = max(g.px(1200), int(round(fill * wi)))
    maps = {m: np.zeros((hi, wi), dtype=np.float32) for m in MATERIALS}
    px, depth, pc = g.px, g.depth_cm, g.pc
    org, ino, st = (maps[m][:, :load] for m in ("organic", "inorganic", "steel"))
    x = np.arange(load)[None, :].astype(np.float32)
    z = np.arange(hi)[:, None].astype(np.float32)
    var = lambda lo, hi_: float(rng.uniform(lo, hi_))  # noqa: E731

    def chord(xc: np.ndarray, r: float) -> np.ndarray:
        """Length (cm) of the beam's path through an upright cylinder at offset ``xc`` px."""
        return 2.0 * np.sqrt(np.clip(r * r - xc * xc, 0.0, None)) * pc

    if kind == "big_bags":  # FIBC of granules or powder, two across, one or two high
        side, bag_h = px(int(var(900, 1100))), px(int(var(800, 1200)))
        pitch = side + px(50)
        n_high = 2 if 2 * bag_h < hi and rng.random() < 0.6 else 1
        u = (x % pitch) / side
        v = (z % bag_h) / bag_h
        col = (x // pitch).astype(np.int64)
        row = (z // bag_h).astype(np.int64)
        rho = rng.uniform(0.6, 1.3, (n_high + 1, int(col.max()) + 2)).astype(np.float32)
        shape = np.sqrt(np.clip(1 - np.abs(2 * u - 1) ** 6, 0, 1) * np.clip(1 - np.abs(2 * v - 1) ** 4, 0, 1))
        inside = (u < 1.0) & (row < n_high)
        org += (rho[np.minimum(row, n_high), col] * 0.95 * depth * shape * inside).astype(np.float32)
    elif kind in ("paper_reels", "fabric_rolls"):  # upright cylinders side by side
        if kind == "paper_reels":
            diam, rho, core = px(int(var(800, 1400))), var(0.6, 0.9), px(50)
            height = px(int(var(1000, 2300)))
        else:
            diam, rho, core = px(int(var(250, 450))), var(0.3, 0.6), px(40)
            height = px(int(var(1800, 2350)))
        height = min(height, hi)
        n_high = 2 if 2 * height <= hi else 1
        n_across = max(1, int(depth // (diam * pc)))
        r = diam / 2.0
        xc = (x % (diam + 1)) - r
        col = (x // (diam + 1)).astype(np.int64)
        row = (z // height).astype(np.int64)
        tops = (height * rng.uniform(0.85, 1.0, int(col.max()) + 2)).astype(np.float32)
        profile = (chord(xc, r) - chord(xc, core / 2.0)) * n_across * rho
        inside = (row < n_high) & ((z % height) < tops[col])
        org += (profile * inside).astype(np.float32)
    elif kind in ("cable_drums", "steel_coils"):  # discs with their axis along the beam
        x0 = 0
        while x0 < load - px(900):
            if kind == "cable_drums":
                diam = min(px(int(var(1000, 2200))), hi - px(100))
                width_cm, inner = var(60.0, 120.0), var(0.35, 0.55)
            else:
                diam = min(px(int(var(1000, 1800))), hi - px(300))
                width_cm, inner = var(90.0, 150.0), var(0.3, 0.4)
            if x0 + diam > load:
                break
            r = diam / 2.0
            cradle = px(150) if kind == "steel_coils" else 0
            yy, xx = np.mgrid[0:diam, 0:diam].astype(np.float32)
            rr = np.sqrt((yy - r + 0.5) ** 2 + (xx - r + 0.5) ** 2)
            disc = rr < r
            if kind == "cable_drums":
                fill_r = r * var(0.7, 0.95)
                wound = (rr >= inner * r) & (rr < fill_r)
                flange = disc * (RHO_WOOD * 2 * 5.0)
                org[cradle:cradle + diam, x0:x0 + diam][::-1] += (flange + wound * width_cm * 1.2).astype(np.float32)
                st[cradle:cradle + diam, x0:x0 + diam][::-1] += (wound * width_cm * 0.35 * RHO_STEEL * 0.3).astype(np.float32)
            else:
                ring = (rr >= inner * r) & disc
                st[cradle:cradle + diam, x0:x0 + diam][::-1] += (ring * width_cm * RHO_STEEL * 0.95).astype(np.float32)
                org[:cradle, x0:x0 + diam] += RHO_WOOD * 0.5 * depth
            x0 += diam + px(int(var(200, 1500)))
    elif kind == "ibc_tanks":  # 1000 l tanks in steel cages on pallets, two across
        unit, tank_h, base = px(1200), px(1000), px(150)
        n_high = 2 if 2 * (tank_h + base) <= hi and rng.random() < 0.5 else 1
        u = x % unit
        zz = z % (tank_h + base)
        row = (z // (tank_h + base)).astype(np.int64)
        col = (x // unit).astype(np.int64)
        level = rng.uniform(0.75, 0.98, (n_high + 1, int(col.max()) + 2)).astype(np.float32)
        rho = var(0.9, 1.3)
        in_tank = (zz >= base) & (u >= px(30)) & (u < unit - px(30)) & (row < n_high)
        liquid = in_tank & ((zz - base) < tank_h * level[np.minimum(row, n_high), col])
        org += (liquid * 2 * 100.0 * rho + in_tank * 2 * 2 * 0.15 * 0.95).astype(np.float32)
        bars = ((u % px(160)) < 1) | ((zz % px(250)) < 1)
        st += ((bars & (zz >= base) & (row < n_high)) * 4 * 0.6 * RHO_STEEL
               + ((zz < base) & (row < n_high)) * RHO_STEEL * 2 * 0.3).astype(np.float32)
    else:
        raise ValueError(f"unknown bulk cargo {kind!r}; expected one of "
                         f"{sorted({k for v in BULK_CARGO.values() for k in v})}.")
    return {m: a for m, a in maps.items() if a.any()}


# --------------------------------------------------------------------------- threats


def _brick_block(n_bricks: int, n_beam: int, g: _Geom, rng: np.random.Generator,
                 max_w: int | None = None, max_h: int | None = None) -> np.ndarray:
    """Organic density of a stack of 1 kg bricks (image: length x height), unscaled."""
    bw, bh = g.px(BRICK_CM[0] * 10), g.px(BRICK_CM[2] * 10)
    n_cells = math.ceil(n_bricks / n_beam)
    n_x = max(1, int(round(math.sqrt(n_cells * bh / bw * rng.uniform(0.5, 2.0)))))
    if max_w is not None:
        n_x = max(1, min(n_x, max_w // bw))
    n_z = math.ceil(n_cells / n_x)
    if max_h is not None and n_z * bh > max_h:
        n_z = max(1, max_h // bh)
        n_x = math.ceil(n_cells / n_z)
    counts = np.full(n_z * n_x, n_beam, dtype=np.float32)
    counts[n_cells:] = 0
    counts[n_cells - 1] = n_bricks - n_beam * (n_cells - 1)
    counts = counts.reshape(n_z, n_x)[::-1]  # fill from the bottom layer up
    block = np.repeat(np.repeat(counts, bh, axis=0), bw, axis=1) * (RHO_DRUG * BRICK_CM[1])
    # wrapped bricks: slightly lighter outlines
    yy = (np.arange(block.shape[0]) % bh)[:, None]
    xx = (np.arange(block.shape[1]) % bw)[None, :]
    block = block * np.where((yy == 0) | (xx == 0), 0.7, 1.0)
    return block.astype(np.float32)


def _bags(n_bags: int, g: _Geom, rng: np.random.Generator) -> np.ndarray:
    """Rip-on/rip-off sports bags piled against the doors (image, unscaled)."""
    bw, bh = g.px(700), g.px(320)
    per_col = int(rng.integers(2, 5))
    n_cols = math.ceil(n_bags / per_col)
    out = np.zeros((per_col * bh, n_cols * bw), dtype=np.float32)
    yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
    u, v = (xx + 0.5) / bw * 2 - 1, (yy + 0.5) / bh * 2 - 1
    bag = np.sqrt(np.clip(1 - np.abs(u) ** 3 - np.abs(v) ** 2.2, 0, 1)).astype(np.float32)
    for i in range(n_bags):  # one slice-add per bag (a few dozen at most)
        cz, cx = i % per_col, i // per_col
        y0 = (per_col - 1 - cz) * bh
        out[y0:y0 + bh, cx * bw:(cx + 1) * bw] += bag * np.float32(rng.uniform(0.8, 1.2))
    return out


_PISTOL_CM = [(0, 0), (20, 0), (20, 3.2), (9, 3.2), (8.5, 5.5), (6.5, 5.5), (7.5, 13), (3, 13),
              (2.5, 3.2), (0, 3.2)]
_RIFLE_CM = [(0, 3), (22, 1), (24, 0), (60, 0), (88, 0.5), (88, 2), (60, 2.5), (52, 4.5), (49, 4.5),
             (46, 16), (41, 16), (43, 5), (35, 5), (31, 10), (27, 10), (27, 5), (22, 5), (0, 12)]


def _weapon(mass_kg: float, g: _Geom, rng: np.random.Generator) -> np.ndarray:
    poly = _RIFLE_CM if mass_kg >= 2.0 else _PISTOL_CM
    pts = np.array(poly, dtype=np.float32) * (10.0 / (g.pc * 10.0))
    size = int(np.ceil(pts.max())) + 4
    img = np.zeros((size * 2, size * 2), dtype=np.uint8)
    cv2.fillPoly(img, [np.round(pts + size / 2).astype(np.int32)], 255)
    rot = cv2.getRotationMatrix2D((size, size), float(rng.uniform(0, 360)), 1.0)
    img = cv2.warpAffine(img, rot, (size * 2, size * 2), flags=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(img)
    img = img[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    return (img.astype(np.float32) / 255.0) * RHO_STEEL * 2.5


def _threat_layer(t: ThreatSpec, g: _Geom, spec: ScanSpec, cargo_top: np.ndarray,
                  rng: np.random.Generator) -> tuple[_Layer, str]:
    """Render one concealment and place it; returns the layer and its material."""
    px = g.px
    hi, wi = g.yi1 - g.yi0, g.xi1 - g.xi0
    n_bricks = max(1, int(round(t.mass_kg / BRICK_KG)))
    if t.type == "weapon":
        img, mat = _weapon(t.mass_kg, g, rng), "steel"
    elif t.type == "cigarettes":
        n_cases = max(1, int(round(t.mass_kg / 10.0)))
        n_beam = int(min(9, max(1, round(n_cases ** (1 / 3)))))
        cells = math.ceil(n_cases / n_beam)
        cw, ch = px(500), px(300)
        n_x = max(1, int(round(math.sqrt(cells * ch / cw))), math.ceil(cells / max(1, hi // ch)))
        n_z = math.ceil(cells / n_x)
        img = np.full((n_z * ch, n_x * cw), RHO_CIGARETTE_CASE * 25.0 * n_beam, dtype=np.float32)
        img[:, np.arange(n_x * cw) % cw == 0] *= 0.6
        img[np.arange(n_z * ch) % ch == 0, :] *= 0.6
        mat = "organic"
    elif t.location == "doors":
        n_bags = max(1, math.ceil(t.mass_kg / float(rng.uniform(20, 35))))
        img, mat = _bags(n_bags, g, rng), "organic"
    elif t.location == "reefer_unit":
        n_beam = int(min(19, max(2, math.ceil(n_bricks / 40))))
        img = _brick_block(n_bricks, n_beam, g, rng, max_w=px(1000), max_h=px(1500))
        mat = "organic"
    elif t.location == "walls":
        # a false wall: bricks standing on edge, two deep (2 x 3.5 cm along the beam)
        img = _brick_block(n_bricks, 1, g, rng, max_h=int(hi * 0.9))
        img = np.ascontiguousarray(img.T) * np.float32(2 * BRICK_CM[2] / BRICK_CM[1])
        if img.shape[0] > hi:
            img = img[:hi]
        mat = "organic"
    elif t.location in ("floor", "roof"):
        layers = 3 if t.location == "floor" else 2
        n_beam = int(min(19, max(1, math.ceil(n_bricks / 60))))
        img = _brick_block(n_bricks, n_beam, g, rng, max_h=layers * px(BRICK_CM[2] * 10))
        mat = "organic"
    else:
        n_beam = int(rng.integers(1, 5))
        img = _brick_block(n_bricks, min(n_beam, n_bricks), g, rng, max_h=int(hi * 0.8))
        mat = "organic"
    # whatever the shape, a concealment stays inside the box (mass is rescaled after placing)
    img = img[: max(1, min(img.shape[0], hi)), : max(1, min(img.shape[1], wi))]
    h, w = img.shape

    # placement (front end on the left, doors on the right)
    loaded = int(np.count_nonzero(cargo_top))
    if t.location == "doors":
        x0 = g.xi1 - w - int(rng.integers(0, px(100)))
        top = int(cargo_top[max(0, x0 - g.xi0):].max()) if cargo_top.size else 0
        if top + h > hi:
            top = max(0, hi - h)
        y0 = g.yi1 - top - h
    elif t.location == "reefer_unit":
        x0 = g.xc0 + px(60) + int(rng.integers(0, max(1, g.xi0 - g.xc0 - px(160) - w)))
        y0 = g.yc0 + px(150) + int(rng.integers(0, max(1, g.yc1 - g.yc0 - px(450) - h)))
    elif t.location == "floor":
        x0 = g.xi0 + int(rng.integers(0, max(1, wi - w)))
        y0 = g.yi1 + px(30)
    elif t.location == "roof":
        x0 = g.xi0 + int(rng.integers(0, max(1, wi - w)))
        y0 = g.yi0 - h if spec.reefer else g.yc0 + px(65)
    elif t.location == "walls":
        x0 = g.xi0 + int(rng.integers(0, max(1, wi - w)))
        y0 = g.yi1 - h - int(rng.integers(0, max(1, hi - h)))
    else:  # inside the cargo (or on the floor of an empty container)
        span = max(1, (loaded if loaded > w else wi) - w)
        x0 = g.xi0 + int(rng.integers(0, span))
        top = int(cargo_top[x0 - g.xi0: x0 - g.xi0 + w].min()) if loaded else 0
        z0 = int(rng.integers(0, max(1, top - h))) if top > h else 0
        y0 = g.yi1 - z0 - h
    layer = _Layer(int(y0), int(x0), {mat: np.ascontiguousarray(img, dtype=np.float32)})
    return layer, mat


# --------------------------------------------------------------------------- public API


def _validate(spec: ScanSpec) -> None:
    if spec.size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {spec.size!r}.")
    if spec.cargo_family not in CARGO_FAMILIES:
        raise ValueError(
            f"unknown cargo family {spec.cargo_family!r}; expected one of {list(CARGO_FAMILIES)}."
        )
    if not 0.0 <= spec.fill <= 1.0:
        raise ValueError(f"fill must be between 0 and 1 (fraction of the length loaded), got {spec.fill}.")
    if spec.dose <= 0:
        raise ValueError(f"dose must be > 0 photons per pixel, got {spec.dose}.")
    if not 1.0 <= spec.pixel_mm <= 20.0:
        raise ValueError(f"pixel_mm must be between 1 and 20 mm, got {spec.pixel_mm}.")
    if spec.tractor and not spec.chassis:
        raise ValueError("tractor=True needs chassis=True (the tractor pulls the trailer chassis).")
    if spec.bulk_cargo is not None and spec.bulk_cargo not in BULK_CARGO.get(spec.cargo_family, ()):
        raise ValueError(
            f"bulk_cargo {spec.bulk_cargo!r} does not fit cargo family {spec.cargo_family!r}; "
            f"expected one of {list(BULK_CARGO.get(spec.cargo_family, ()))} or None."
        )
    for t in spec.threats:
        if t.type not in THREAT_TYPES:
            raise ValueError(f"unknown threat type {t.type!r}; expected one of {list(THREAT_TYPES)}.")
        if t.location not in THREAT_LOCATIONS:
            raise ValueError(
                f"unknown concealment location {t.location!r}; expected one of {list(THREAT_LOCATIONS)}."
            )
        if t.location == "reefer_unit" and not spec.reefer:
            raise ValueError(
                "concealment location 'reefer_unit' needs a reefer container (reefer=True, "
                "ISO type with 'R' in the third character)."
            )
        if not t.mass_kg > 0 or not math.isfinite(t.mass_kg):
            raise ValueError(f"threat mass_kg must be a positive number, got {t.mass_kg}.")


def render_scan(spec: ScanSpec, rng: np.random.Generator | None = None) -> RenderedScan:
    """Render one synthetic scan and its ground truth.

    Args:
        spec: what to render.
        rng: random generator; ``np.random.default_rng(spec.seed)`` when ``None``.

    Returns:
        RenderedScan with high-energy (and optional low-energy) transmission, the threat mask
        and the sidecar metadata (boxes are ``[x0, y0, x1, y1]``, end-exclusive pixels).
    """
    _validate(spec)
    rng = np.random.default_rng(spec.seed) if rng is None else rng
    g = _geometry(spec)
    canvas = _Canvas(g.H, g.W)
    _draw_container(canvas, g, spec, rng)
    if spec.chassis:
        _draw_chassis(canvas, g, spec, rng)
    # tractor and bulk packing come from their own stream: a scan without them is exactly
    # the scan generator 1.0 made from the same seed
    side = np.random.default_rng([spec.seed & 0xFFFFFFFF, zlib.crc32(spec.scan_id.encode("utf-8")), 17])
    if spec.tractor:
        _draw_tractor(canvas, g, side)

    cargo = _cargo(spec.cargo_family, spec.fill, g, rng)
    if cargo and spec.bulk_cargo:
        cargo = _bulk_cargo(spec.bulk_cargo, spec.fill, g, side)
    cargo_layer = _Layer(g.yi0, g.xi0, {m: a[::-1].copy() for m, a in cargo.items()})
    cargo_mass = cargo_layer.mass_kg(g.pc) if cargo else 0.0
    if cargo and spec.cargo_mass_kg is not None:
        factor = spec.cargo_mass_kg / cargo_mass if cargo_mass > 0 else 1.0
        bounded = float(np.clip(factor, 0.125, 8.0))
        if bounded != factor:
            logger.warning(
                "scan %s: %s cargo of %.0f kg needs density x%.2f for this fill; limited to x%.2f",
                spec.scan_id, spec.cargo_family, spec.cargo_mass_kg, factor, bounded,
            )
        cargo_layer.scale(bounded)
        cargo_mass = cargo_layer.mass_kg(g.pc)
    if cargo:
        canvas.add_layer(cargo_layer)
        occupied = cargo_layer.total()[::-1] > 0  # z-up
        cargo_top = np.where(occupied.any(axis=0), occupied.shape[0] - np.argmax(occupied[::-1], axis=0), 0)
    else:
        cargo_top = np.zeros(g.xi1 - g.xi0, dtype=np.int64)

    mask = np.zeros((g.H, g.W), dtype=bool)
    threats_meta: list[dict[str, Any]] = []
    for t in spec.threats:
        layer, mat = _threat_layer(t, g, spec, cargo_top, rng)
        m = layer.mass_kg(g.pc)
        layer.scale(t.mass_kg / m)
        placed = canvas.add_layer(layer)
        ys, xs = np.nonzero(placed)
        mask |= placed
        box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        threats_meta.append({"type": t.type, "location": t.location, "mass_kg": round(float(t.mass_kg), 3),
                             "material": mat, "box": box})

    t_high = transmission_from_density(canvas.maps, "high")
    t_low = transmission_from_density(canvas.maps, "low") if spec.dual_energy else None
    t_high = _detect(t_high, rng, spec.dose, spec.noise, spec.psf_sigma_px)
    if t_low is not None:
        t_low = _detect(t_low, rng, spec.dose * 0.5, spec.noise, spec.psf_sigma_px)

    if spec.flip:
        t_high = np.ascontiguousarray(t_high[:, ::-1])
        t_low = None if t_low is None else np.ascontiguousarray(t_low[:, ::-1])
        mask = np.ascontiguousarray(mask[:, ::-1])
        for tm in threats_meta:
            x0, y0, x1, y1 = tm["box"]
            tm["box"] = [g.W - x1, y0, g.W - x0, y1]

    meta: dict[str, Any] = {
        "scan_id": spec.scan_id,
        "container_type": spec.iso_type(),
        "size": spec.size,
        "reefer": spec.reefer,
        "high_cube": spec.high_cube,
        "cargo_family": spec.cargo_family,
        "cargo_mass_kg": round(cargo_mass, 1),
        "empty": spec.cargo_family == "empty" or cargo_mass == 0.0,
        "fill": round(spec.fill, 3) if cargo else 0.0,
        "dual_energy": spec.dual_energy,
        "energies_mev": [ENERGIES_MEV["high"], ENERGIES_MEV["low"]] if spec.dual_energy else [ENERGIES_MEV["high"]],
        "pixel_mm": spec.pixel_mm,
        "dose": spec.dose if spec.noise else None,
        "chassis": spec.chassis,
        "tractor": spec.tractor,
        "bulk_cargo": spec.bulk_cargo if cargo else None,
        "door_end": "left" if spec.flip else "right",
        "width": g.W,
        "height": g.H,
        "container_box": ([g.W - g.xc1, g.yc0, g.W - g.xc0, g.yc1] if spec.flip
                          else [g.xc0, g.yc0, g.xc1, g.yc1]),
        "threats": threats_meta,
        "seed": spec.seed,
        "generator": f"scanvision.synth {GENERATOR_VERSION}",
    }
    return RenderedScan(t_high, t_low, mask, meta)


def render_threat(
    threat_type: str, mass_kg: float, rng: np.random.Generator, *, location: str = "cargo",
    pixel_mm: float = 5.0, energy: str = "high",
) -> tuple[np.ndarray, np.ndarray]:
    """A concealment's own transmission map, for projecting into existing scans.

    Returns ``(transmission, mask)`` of the threat's bounding box; use with
    :func:`project_threat`. Example::

        t_threat, m = render_threat("drugs", 25.0, np.random.default_rng(0), location="doors")
        scan_tip = project_threat(scan.transmission, t_threat, x=800, y=300)
    """
    spec = ScanSpec(size="20ft", reefer=location == "reefer_unit", cargo_family="empty",
                    threats=(ThreatSpec(threat_type, location, mass_kg),), pixel_mm=pixel_mm)
    _validate(spec)
    g = _geometry(spec)
    layer, mat = _threat_layer(spec.threats[0], g, spec, np.zeros(g.xi1 - g.xi0, np.int64), rng)
    layer.scale(mass_kg / layer.mass_kg(g.pc))
    t = transmission_from_density(layer.maps, energy)
    return t, layer.total() > 0


def project_threat(transmission: np.ndarray, threat_transmission: np.ndarray, x: int, y: int) -> np.ndarray:
    """Threat Image Projection: ``T_new = T_scan * T_threat`` with the threat's top-left at (x, y).

    Works on any scan (synthetic or real, raw or approximate display transmission) given as an
    ``H x W`` float array in ``(0, 1]``. The part of the threat outside the scan is cut off.
    Returns a new float32 array; the input is not modified.

    Raises:
        ValueError: arrays not 2-D, values outside ``(0, 1]``, or no overlap with the scan.
    """
    scan = np.asarray(transmission)
    threat = np.asarray(threat_transmission)
    for name, arr in (("transmission", scan), ("threat_transmission", threat)):
        if arr.ndim != 2:
            raise ValueError(f"{name} must be a 2-D (H x W) array, got shape {arr.shape}.")
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() <= 0 or arr.max() > 1.0 + 1e-6):
            raise ValueError(
                f"{name} must hold transmission values in (0, 1], got range "
                f"[{float(np.nanmin(arr)):.4g}, {float(np.nanmax(arr)):.4g}]; convert raw counts "
                "with scanvision.io.raw16_to_transmission first."
            )
    h, w = threat.shape
    H, W = scan.shape
    y0, y1, x0, x1 = max(0, y), min(H, y + h), max(0, x), min(W, x + w)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(
            f"threat of {w} x {h} px at (x={x}, y={y}) does not overlap the {W} x {H} scan."
        )
    out = scan.astype(np.float32, copy=True)
    out[y0:y1, x0:x1] *= threat[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


def to_display8(transmission: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Make an 8-bit display image as scanners export them (bright = air).

    Without ``rng``: the default window of :func:`scanvision.io.transmission_to_display8`
    (its exact inverse is what :func:`scanvision.io.read_scan` applies to 8-bit images).

    With ``rng`` (augmentation), in this order, each drawn at random:

    * with probability 0.7, a tone curve on the attenuation ``A = -ln T``:
      ``A' = a * A + b * (1 - exp(-A / 0.05))`` with ``a`` in [1, 1.8] (a real 6 MeV
      bremsstrahlung beam attenuates more than the monoenergetic 6 MeV model, its mean energy
      is ~2 MeV) and ``b`` in [0, 0.7] (vendor windows that lift thin steel, such as the walls
      of an empty box, well above air; real exports show walls near 220/255, the plain
      model near 250/255);
    * a log window (range x0.7-1.4 of the default) and gamma (x0.7-1.3);
    * with probability 0.6, a downscale by 0.3-1 (so the output may be smaller);
    * with probability 0.6, a JPEG round trip at quality 50-95.
    """
    if rng is None:
        return transmission_to_display8(transmission)
    t = np.clip(np.asarray(transmission, dtype=np.float32), T_FLOOR, 1.0)
    if rng.random() < 0.7:
        a = -np.log(t)
        gain, lift = np.float32(rng.uniform(1.0, 1.8)), np.float32(rng.uniform(0.0, 0.7))
        t = np.exp(-(gain * a + lift * (1.0 - np.exp(-a / np.float32(0.05))))).astype(np.float32)
    img = transmission_to_display8(
        t,
        log_range=float(rng.uniform(0.7, 1.4) * DISPLAY_LOG_RANGE),
        gamma=float(rng.uniform(0.7, 1.3) * DISPLAY_GAMMA),
    )
    if rng.random() < 0.6:
        f = float(rng.uniform(0.3, 1.0))
        size = (max(8, int(round(img.shape[1] * f))), max(8, int(round(img.shape[0] * f))))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    if rng.random() < 0.6:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 96))])
        if not ok:
            raise RuntimeError("JPEG encoding failed in to_display8")
        img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return img


# --------------------------------------------------------------------------- sampling and files


#: Default share of scans with the tractor unit in the image, and of loaded boxes (of the
#: families in :data:`BULK_CARGO`) packed with large uniform packages.
TRACTOR_RATE = 0.3
BULK_RATE = 0.3


def sample_spec(rng: np.random.Generator, *, scan_id: str, seed: int, size: str = "mixed",
                threat_rate: float = 0.3, dual_energy: bool = False,
                tractor_rate: float = TRACTOR_RATE, bulk_rate: float = BULK_RATE) -> ScanSpec:
    """Draw a random, plausible :class:`ScanSpec` (the mix used by :func:`generate_scans`).

    ``tractor_rate`` and ``bulk_rate`` are drawn from a stream of their own (seeded by
    ``seed`` and ``scan_id``): with both at 0 the spec equals generator 1.0's.
    """
    if size == "mixed":
        size = "40ft" if rng.random() < 0.6 else "20ft"
    reefer = bool(rng.random() < 0.2)
    high_cube = bool(size == "40ft" and (reefer or rng.random() < 0.5))
    if reefer:
        family = str(rng.choice(["fruit", "frozen_meat", "general", "empty"], p=[0.45, 0.35, 0.1, 0.1]))
    else:
        others = [f for f in CARGO_FAMILIES if f not in ("fruit", "frozen_meat", "empty")]
        family = "empty" if rng.random() < 0.12 else str(rng.choice(others))
    fill = 1.0 if rng.random() < 0.4 else float(rng.uniform(0.3, 1.0))
    threats: list[ThreatSpec] = []
    if rng.random() < threat_rate:
        for _ in range(1 if rng.random() < 0.85 else 2):
            threats.append(_sample_threat(rng, reefer))
    dose = float(np.exp(rng.uniform(np.log(1e4), np.log(1e5))))
    chassis, flip = bool(rng.random() < 0.7), bool(rng.random() < 0.5)
    side = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(scan_id.encode("utf-8")), 18])
    draws = side.random(3)
    tractor = chassis and bool(draws[0] < tractor_rate)
    kinds = BULK_CARGO.get(family, ())
    bulk = str(kinds[int(draws[2] * len(kinds))]) if kinds and draws[1] < bulk_rate else None
    return ScanSpec(
        size=size, reefer=reefer, cargo_family=family, fill=fill, threats=tuple(threats),
        seed=seed, high_cube=high_cube, dual_energy=dual_energy, dose=dose,
        chassis=chassis, flip=flip, scan_id=scan_id, tractor=tractor, bulk_cargo=bulk,
    )


def _sample_threat(rng: np.random.Generator, reefer: bool) -> ThreatSpec:
    kind = str(rng.choice(THREAT_TYPES, p=[0.7, 0.15, 0.15]))
    if kind == "weapon":
        return ThreatSpec("weapon", str(rng.choice(["cargo", "doors", "walls"])),
                          float(rng.uniform(0.7, 1.2) if rng.random() < 0.6 else rng.uniform(3.0, 4.5)))
    if kind == "cigarettes":
        return ThreatSpec("cigarettes", "cargo", float(np.exp(rng.uniform(np.log(100), np.log(2000)))))
    locs = ["cargo", "doors", "walls", "floor", "roof"] + (["reefer_unit"] if reefer else [])
    p = np.array([0.35, 0.25, 0.12, 0.1, 0.05] + ([0.15] if reefer else []))
    return ThreatSpec("drugs", str(rng.choice(locs, p=p / p.sum())),
                      float(np.exp(rng.uniform(np.log(1.0), np.log(500.0)))))


def write_rendered(scan: RenderedScan, out_dir: str | Path, fmt: str = "png") -> dict[str, Any]:
    """Write a rendered scan: image(s), ``<id>_mask.png`` when it has threats, ``<id>.json``.

    Returns the sidecar (with a ``files`` entry naming what was written).
    """
    if fmt not in ("png", "tiff"):
        raise ValueError(f"format must be 'png' or 'tiff', got {fmt!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ext = ".png" if fmt == "png" else ".tif"
    sid = scan.meta["scan_id"]
    files: dict[str, str] = {}
    if scan.transmission_low is not None:
        files["high"] = write_transmission(out / f"{sid}_high{ext}", scan.transmission).name
        files["low"] = write_transmission(out / f"{sid}_low{ext}", scan.transmission_low).name
    else:
        files["image"] = write_transmission(out / f"{sid}{ext}", scan.transmission).name
    if scan.meta["threats"]:
        mask_path = out / f"{sid}_mask.png"
        if not cv2.imwrite(str(mask_path), scan.mask.astype(np.uint8) * 255):
            raise OSError(f"could not write {mask_path}")
        files["mask"] = mask_path.name
    meta = {**scan.meta, "files": files}
    (out / f"{sid}.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta


def generate_scans(
    out_dir: str | Path,
    count: int,
    seed: int,
    threat_rate: float = 0.3,
    dual_energy: bool = False,
    size: str = "mixed",
    fmt: str = "png",
    progress: Callable[[int], None] | None = None,
    tractor_rate: float = TRACTOR_RATE,
    bulk_rate: float = BULK_RATE,
) -> list[dict[str, Any]]:
    """Generate ``count`` random scans into ``out_dir`` and return their sidecars.

    Files per scan: ``<id>.png`` (or ``<id>_high.png`` + ``<id>_low.png`` with dual energy;
    ``.tif`` with ``fmt="tiff"``), ``<id>_mask.png`` when it has a threat, and ``<id>.json``.
    ``index.jsonl`` lists all sidecars. Scan *i* depends only on ``seed`` and *i*.
    ``progress`` is called with 1 after each scan. ``tractor_rate`` / ``bulk_rate``: see
    :func:`sample_spec`.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}.")
    if not 0.0 <= threat_rate <= 1.0:
        raise ValueError(f"threat_rate must be between 0 and 1, got {threat_rate}.")
    if size not in ("20ft", "40ft", "mixed"):
        raise ValueError(f"size must be '20ft', '40ft' or 'mixed', got {size!r}.")
    if fmt not in ("png", "tiff"):
        raise ValueError(f"format must be 'png' or 'tiff', got {fmt!r}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sidecars = []
    children = np.random.SeedSequence(seed).spawn(count)
    for i, child in enumerate(children):
        rng = np.random.default_rng(child)
        spec = sample_spec(rng, scan_id=f"SCAN{i:06d}", seed=seed, size=size,
                           threat_rate=threat_rate, dual_energy=dual_energy,
                           tractor_rate=tractor_rate, bulk_rate=bulk_rate)
        meta = write_rendered(render_scan(spec, rng), out, fmt)
        meta["seed_index"] = i
        sidecars.append(meta)
        if progress is not None:
            progress(1)
    with open(out / "index.jsonl", "w", encoding="utf-8") as fh:
        for meta in sidecars:
            fh.write(json.dumps(meta) + "\n")
    logger.info("wrote %d scans to %s", count, out)
    return sidecars


# --------------------------------------------------------------------------- manifest link


def _cargo_family_of(hs_code: str, goods_description: str) -> str:
    try:
        import pandas as pd

        from riskengine.commodities import cargo_family
    except ImportError:
        if goods_description.strip().upper() == "EMPTY CONTAINER" or not hs_code.strip():
            return "empty"
        hs = hs_code.strip()
        if hs.startswith("4011"):
            return "tyres"
        return _FALLBACK_CHAPTER_FAMILY.get(hs[:2], "general")
    fam = cargo_family(pd.Series([hs_code]), pd.Series([goods_description]))
    return str(fam.iloc[0])


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        import pandas as pd

        if pd.isna(value):
            return ""
    except (ImportError, TypeError, ValueError):
        pass
    return str(value)


def _number(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def parse_container_type(code: str) -> tuple[str, bool, bool]:
    """ISO 6346 size/type code to ``(size, high_cube, reefer)``; e.g. ``"45R1"`` -> 40ft, HC, reefer."""
    code = str(code).strip().upper()
    if len(code) != 4 or code[0] not in "24" or code[1] not in "0123456789":
        raise ValueError(
            f"container_type {code!r} is not a supported ISO 6346 size/type code; expected 4 "
            "characters starting with 2 (20 ft) or 4 (40 ft), e.g. 22G1, 42G1, 45G1, 22R1, 45R1."
        )
    size = "20ft" if code[0] == "2" else "40ft"
    return size, code[1] in "56", code[2] == "R"


def render_scan_for_manifest(row: Mapping[str, Any], seed: int, *, dual_energy: bool = False,
                             chassis: bool = True, dose: float = 30_000.0) -> RenderedScan:
    """Render the scan a manifest row would produce.

    Uses ``container_type`` (size, high-cube, reefer), the cargo family of ``hs_code`` /
    ``goods_description``, a cargo mass equal to ``gross_weight_kg`` (the native schema's
    gross weight is the cargo's, the tare is only in ``vgm_kg``; when ``gross_weight_kg`` is
    missing, ``vgm_kg`` minus a typical tare of 2200 kg (20 ft) or 3800 kg (40 ft) is used)
    and, when ``is_illicit == 1``, a drugs concealment of ``amount_kg`` at
    ``concealment_location``. The scan depends on ``seed`` and ``manifest_id`` only.

    Raises:
        KeyError: a needed column is missing.
        ValueError: unsupported container type, no usable weight, or a concealment that
            cannot exist in this container (``reefer_unit`` in a dry box).
    """
    if "container_type" not in row or "hs_code" not in row:
        missing = [c for c in ("container_type", "hs_code") if c not in row]
        raise KeyError(f"manifest row has no {missing} column(s); needed to render its scan.")
    size, high_cube, reefer = parse_container_type(row["container_type"])
    desc = _text(row.get("goods_description"))
    family = _cargo_family_of(_text(row["hs_code"]), desc)
    gross, vgm = _number(row.get("gross_weight_kg")), _number(row.get("vgm_kg"))
    if gross is not None:
        target = max(0.0, gross)
    elif vgm is not None:
        target = max(0.0, vgm - TARE_KG[size])
    else:
        raise ValueError(
            f"manifest {row.get('manifest_id', '?')}: neither gross_weight_kg nor vgm_kg is a "
            "number; one is needed for the cargo mass."
        )
    threats: tuple[ThreatSpec, ...] = ()
    illicit = _number(row.get("is_illicit"))
    if illicit == 1:
        loc = _text(row.get("concealment_location")) or "cargo"
        amount = _number(row.get("amount_kg")) or 0.0
        if loc != "none" and amount > 0:
            threats = (ThreatSpec("drugs", loc, amount),)
    mid = str(row.get("manifest_id", ""))
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(mid.encode("utf-8"))])
    rng = np.random.default_rng(ss)
    # fill from the declared mass relative to what a full box of this family weighs here;
    # heavier declarations make the cargo denser (render_scan bounds that to x8)
    full = _FULL_LOAD_KG[size][family] if family != "empty" else 1.0
    fill = 0.0 if family == "empty" else float(np.clip(target / full * rng.uniform(0.9, 1.1), 0.15, 1.0))
    spec = ScanSpec(
        size=size, reefer=reefer, high_cube=high_cube, cargo_family=family, fill=fill,
        threats=threats, seed=int(seed), dual_energy=dual_energy, dose=dose, chassis=chassis,
        flip=bool(rng.random() < 0.5), cargo_mass_kg=target if family != "empty" else None,
        scan_id=mid or "SCAN", container_type=str(row["container_type"]).strip().upper(),
    )
    scan = render_scan(spec, rng)
    scan.meta["manifest_id"] = mid
    if "container_id" in row:
        scan.meta["container_id"] = str(row["container_id"])
    scan.meta["declared_gross_weight_kg"] = gross
    return scan
