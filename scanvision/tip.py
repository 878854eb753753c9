"""Threat image projection (TIP): physically simulated concealments inserted into real scans.

What every port has in abundance is scans of containers released or inspected as clean. TIP
turns them into training and test data for threat detection (Rogers et al. 2017, Jaccard et
al. 2016): a threat's projected thickness ``t`` (cm along the beam) attenuates the
transmission by ``exp(-mu_m * rho * t)``, i.e. adds ``mu_m * rho * t`` to the attenuation
``A = -ln T`` of whatever is already in the beam (cargo, walls, the reefer unit), so cargo in
front of or behind the threat occludes it the way it would in the scanner.

8-bit display images carry no calibration, so the projection goes through an *estimated*
transmission domain (:class:`DisplayMapping`): the scan's own air and black levels, and a
display window ``d = black + (air - black) * (1 - min(A / L, 1)) ** gamma``. The window
``L, gamma`` of a vendor's export is not recoverable from one image; training draws it at
random per insertion (domain randomisation), so the model learns the threat's shape and
relative contrast rather than one vendor's grey levels. Saturated (black) background hides a
threat completely; placements that would fall mostly there are redrawn.

Sizes come from the scan's own geometry (:func:`estimate_geometry`): the container's outline
in the image and the ISO dimensions of a 20 ft or 40 ft box give millimetres per pixel along
both axes (scanners sample the two axes at different pitches).

Example::

    rng = np.random.default_rng(0)
    grey = cv2.imread("cleared.jpg", cv2.IMREAD_GRAYSCALE)
    geo = estimate_geometry(grey)
    threat = draw_threat(rng, geo, grey, mass_kg=10.0, kind="brick_stack")
    with_threat, mask = project_threat(grey, threat, DisplayMapping.estimate(grey), rng)
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: ISO container outer dimensions (mm): height of a standard box, lengths of 20 / 40 ft.
CONTAINER_HEIGHT_MM = 2700.0
CONTAINER_LENGTH_MM = {"20ft": 6058.0, "40ft": 12192.0}
#: Beam path inside a container (its inner width, mm): nothing thicker fits along the beam.
CONTAINER_INNER_WIDTH_MM = 2350.0
#: Effective mass attenuation coefficient of organic matter in a MeV cargo beam (cm²/g).
ORGANIC_MU_M_CM2_G = 0.027
#: Threat kinds drawn by :func:`draw_threat`, with the place each one stands for.
THREAT_KINDS: dict[str, str] = {
    "brick_stack": "organic bricks (1 kg each, wrapped) hidden among the cargo",
    "door_bags": "rip-on/rip-off holdalls just inside the doors",
    "floor": "a flat load in the floor",
    "roof": "a flat load under the roof",
    "wall": "a thin layer in a side wall",
    "reefer": "a package in the reefer unit / front end",
}
#: Share of each kind when drawing without a kind (brick stacks dominate, as in seizures).
THREAT_MIX: dict[str, float] = {
    "brick_stack": 0.45, "door_bags": 0.2, "floor": 0.1, "roof": 0.08, "wall": 0.07, "reefer": 0.1,
}
#: A display pixel darker than this (as a share of the air level above black) is saturated.
SATURATED_U = 0.06


# --------------------------------------------------------------------------- display mapping


@dataclass(frozen=True)
class DisplayMapping:
    """An 8-bit display window, estimated per scan, with its inverse.

    ``u = (d - black) / (air - black)`` in [0, 1]; ``A = L * (1 - u ** (1 / gamma))``.

    Attributes:
        air: grey level of air (the brightest background).
        black: grey level of fully opaque matter (saturation).
        log_range: attenuation shown as black (``L``).
        gamma: display gamma.
    """

    air: float
    black: float
    log_range: float = 6.0
    gamma: float = 1.5

    @classmethod
    def estimate(cls, grey: np.ndarray, *, log_range: float = 6.0, gamma: float = 1.5) -> DisplayMapping:
        """Air and black levels of one display image (robust percentiles); the window given."""
        sample = grey[::4, ::4] if grey.size > 400_000 else grey
        hi, lo = np.percentile(sample, [99.7, 0.3])
        air = float(np.clip(hi, 150.0, 255.0))
        black = float(np.clip(lo, 0.0, min(60.0, air - 100.0)))
        return cls(air=air, black=black, log_range=log_range, gamma=gamma)

    def with_window(self, log_range: float, gamma: float) -> DisplayMapping:
        """The same air / black levels with another window."""
        return DisplayMapping(self.air, self.black, float(log_range), float(gamma))

    def unit(self, grey: np.ndarray) -> np.ndarray:
        """Grey levels as ``u`` in [0, 1] (float32)."""
        u = (grey.astype(np.float32) - np.float32(self.black)) / np.float32(self.air - self.black)
        return np.clip(u, 0.0, 1.0, out=u)

    def to_attenuation(self, grey: np.ndarray) -> np.ndarray:
        """Estimated ``A = -ln T`` of display pixels (float32)."""
        u = self.unit(grey)
        return np.float32(self.log_range) * (1.0 - np.power(u, np.float32(1.0 / self.gamma)))

    def to_grey(self, atten: np.ndarray) -> np.ndarray:
        """Display grey levels (float32, not rounded) of attenuation ``A``."""
        frac = np.clip(atten / np.float32(self.log_range), 0.0, 1.0)
        return np.float32(self.black) + np.float32(self.air - self.black) * np.power(
            1.0 - frac, np.float32(self.gamma))


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class ScanGeometry:
    """Where the container is in a scan image and its pixel pitches.

    Attributes:
        x0, x1, y0, y1: the container's outline in pixels (end exclusive).
        length: ``"20ft"`` or ``"40ft"`` (from the outline's aspect ratio).
        mm_per_px_x, mm_per_px_y: pitches along the scan (x) and the detector (y).
    """

    x0: int
    x1: int
    y0: int
    y1: int
    length: str
    mm_per_px_x: float
    mm_per_px_y: float
    floor: int = -1

    @property
    def floor_y(self) -> int:
        """Row of the load floor: 0.2 m above the lowest row dense along the whole length
        (the bottom rails and cross members, or a chassis frame, lie below the load)."""
        bottom = self.floor if self.floor > self.y0 else self.y1
        return bottom - int(self.px_y(0.2))

    def px_x(self, metres: float) -> float:
        return metres * 1000.0 / self.mm_per_px_x

    def px_y(self, metres: float) -> float:
        return metres * 1000.0 / self.mm_per_px_y


def estimate_geometry(grey: np.ndarray) -> ScanGeometry:
    """The container outline (rows/columns that are mostly not air) and its pitches.

    Falls back to the whole image when the outline is implausibly small (a crop of the
    container's inside, say).
    """
    h, w = grey.shape
    u = DisplayMapping.estimate(grey).unit(grey)
    not_air = u < 0.93
    rows = np.flatnonzero(not_air.mean(axis=1) > 0.25)
    cols = np.flatnonzero(not_air.mean(axis=0) > 0.25)
    y0, y1 = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, h)
    x0, x1 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (0, w)
    if (y1 - y0) < 0.4 * h or (x1 - x0) < 0.4 * w:
        y0, y1, x0, x1 = 0, h, 0, w
    # The floor is dense along the whole length; wheels and a tractor below it are not. The
    # lowest such row in the lower part of the outline bounds the box (a chassis hangs below).
    dense_rows = np.flatnonzero(not_air[y0:y1, x0:x1].mean(axis=1) > 0.85) + y0
    dense_rows = dense_rows[dense_rows > y0 + 0.55 * (y1 - y0)]
    floor = int(dense_rows[-1]) if dense_rows.size else y1
    box_h = max(1, floor - y0)
    aspect = (x1 - x0) / box_h
    length = "40ft" if aspect > 3.4 else "20ft"
    return ScanGeometry(x0, x1, y0, y1, length,
                        mm_per_px_x=CONTAINER_LENGTH_MM[length] / (x1 - x0),
                        mm_per_px_y=CONTAINER_HEIGHT_MM / box_h, floor=floor)


# --------------------------------------------------------------------------- threats


@dataclass
class Threat:
    """One concealment as the beam sees it: a thickness map placed in the image.

    Attributes:
        kind: one of :data:`THREAT_KINDS`.
        mass_kg: mass of the drug load.
        density_g_cm3: density of the load (bricks 1.0-1.4).
        x, y: top-left pixel of ``thickness_cm`` in the image.
        thickness_cm: float32 ``[h, w]`` path length through the load along the beam.
    """

    kind: str
    mass_kg: float
    density_g_cm3: float
    x: int
    y: int
    thickness_cm: np.ndarray = field(repr=False)

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("thickness_cm")
        d["size_px"] = list(self.thickness_cm.shape[::-1])
        return d


def _brick_layout(n: int, rng: np.random.Generator, brick_xy_m: tuple[float, float],
                  depth_m: float, max_depth_layers: int) -> tuple[int, int, np.ndarray]:
    """Columns, rows and layers-along-the-beam per face cell of a stack of ``n`` bricks."""
    layers = int(rng.integers(1, max(1, min(max_depth_layers, n)) + 1))
    faces = math.ceil(n / layers)
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.5))))  # width / height of the face
    cols = max(1, round(math.sqrt(faces * aspect * brick_xy_m[1] / brick_xy_m[0])))
    rows = math.ceil(faces / cols)
    count = np.full(rows * cols, n // (rows * cols), dtype=np.float32)
    count[: n % (rows * cols)] += 1
    rng.shuffle(count)
    return cols, rows, count.reshape(rows, cols) * np.float32(depth_m * 100.0)


def _brick_stack_map(mass_kg: float, rho: float, geo: ScanGeometry,
                     rng: np.random.Generator) -> np.ndarray:
    """Thickness (cm) of a stack of ~1 kg bricks, with the thinner wrapping seams between them."""
    n = max(1, round(mass_kg))
    brick_vol_m3 = (mass_kg / n) / (rho * 1000.0)
    bx, by = rng.uniform(0.17, 0.3), rng.uniform(0.04, 0.08)   # face of one brick (m)
    bz = brick_vol_m3 / (bx * by)                               # its depth along the beam
    max_layers = max(1, int(CONTAINER_INNER_WIDTH_MM / 1000.0 * 0.5 / bz))
    cols, rows, cells = _brick_layout(n, rng, (bx, by), bz, max_layers)
    w = max(2, round(geo.px_x(cols * bx)))
    h = max(2, round(geo.px_y(rows * by)))
    yy = np.minimum((np.arange(h) * rows) // h, rows - 1)
    xx = np.minimum((np.arange(w) * cols) // w, cols - 1)
    t = cells[yy[:, None], xx[None, :]].copy()
    # wrapping seams: the tape and air between bricks carry ~15 % less matter
    seam_y = np.diff(yy, prepend=-1) != 0
    seam_x = np.diff(xx, prepend=-1) != 0
    t[seam_y, :] *= 0.85
    t[:, seam_x] *= 0.85
    return t


def _ellipsoid(w: int, h: int, depth_cm: float) -> np.ndarray:
    yy = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1
    xx = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    r2 = yy[:, None] ** 2 + xx[None, :] ** 2
    return np.float32(depth_cm) * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))


def _bags_map(mass_kg: float, rho: float, geo: ScanGeometry, rng: np.random.Generator) -> np.ndarray:
    """One to five holdalls stacked on the floor (ellipsoidal profiles)."""
    k = int(np.clip(round(mass_kg / rng.uniform(18.0, 32.0)), 1, 5))
    per = mass_kg / k
    bags = []
    for _ in range(k):
        vol_cm3 = per * 1000.0 / rho
        bw, bh = rng.uniform(0.5, 0.85), rng.uniform(0.25, 0.45)
        # volume of an ellipsoid = pi/6 * w * h * d
        depth_cm = vol_cm3 / (math.pi / 6.0 * bw * 100 * bh * 100)
        bags.append(_ellipsoid(max(2, round(geo.px_x(bw))), max(2, round(geo.px_y(bh))),
                               min(depth_cm, 120.0)))
    # stack: up to two per column, columns side by side
    cols = math.ceil(k / 2)
    w = sum(b.shape[1] for b in bags[:cols]) + 2
    h = max(b.shape[0] for b in bags) * (2 if k > 1 else 1) + 2
    t = np.zeros((h, w), np.float32)
    x = 0
    for i, b in enumerate(bags):
        col, tier = i % cols, i // cols
        if tier == 0 and col > 0:
            x = sum(bb.shape[1] for bb in bags[:col])
        elif tier == 1:
            x = sum(bb.shape[1] for bb in bags[:col])
        y = h - b.shape[0] * (tier + 1)
        y = max(0, y)
        hh, ww = min(b.shape[0], h - y), min(b.shape[1], w - x)
        t[y:y + hh, x:x + ww] += b[:hh, :ww]
    return t


def _slab_map(mass_kg: float, rho: float, geo: ScanGeometry, rng: np.random.Generator,
              *, thin_along_beam: bool) -> np.ndarray:
    """A flat load: in the floor / roof (thin vertically, long along the beam) or in a side
    wall (thin along the beam, spread over the wall)."""
    vol_m3 = mass_kg / (rho * 1000.0)
    if thin_along_beam:
        depth = rng.uniform(0.03, 0.08)                      # along the beam (m)
        area = vol_m3 / depth
        aspect = float(np.exp(rng.uniform(np.log(0.6), np.log(3.0))))
        wm, hm = math.sqrt(area * aspect), math.sqrt(area / aspect)
    else:
        hm = rng.uniform(0.03, 0.08)                         # slab thickness, vertical (m)
        depth = rng.uniform(0.6, CONTAINER_INNER_WIDTH_MM / 1000.0)
        wm = vol_m3 / (hm * depth)
    w, h = max(2, round(geo.px_x(wm))), max(2, round(geo.px_y(hm)))
    return np.full((h, w), np.float32(depth * 100.0))


def _compact_map(mass_kg: float, rho: float, geo: ScanGeometry, rng: np.random.Generator) -> np.ndarray:
    """A compact package (reefer unit, front end): a box with rounded edges."""
    vol_m3 = mass_kg / (rho * 1000.0)
    depth = min(rng.uniform(0.2, 0.9), max(0.05, vol_m3 / 0.01))
    area = vol_m3 / depth
    aspect = float(np.exp(rng.uniform(np.log(0.4), np.log(1.5))))
    wm, hm = math.sqrt(area * aspect), math.sqrt(area / aspect)
    w, h = max(2, round(geo.px_x(wm))), max(2, round(geo.px_y(hm)))
    t = np.full((h, w), np.float32(depth * 100.0))
    return cv2.GaussianBlur(t, (0, 0), max(0.5, min(w, h) / 8.0))


def _placement(kind: str, shape: tuple[int, int], geo: ScanGeometry, img_shape: tuple[int, int],
               rng: np.random.Generator) -> tuple[int, int]:
    """Top-left pixel for a threat of ``shape`` of this kind inside the container outline."""
    h, w = shape
    H, W = img_shape
    x0, x1, y0, y1 = geo.x0, geo.x1, geo.y0, geo.y1
    floor_y = geo.floor_y
    end = rng.random() < 0.5                      # which end: doors and reefer unit are opposite
    if kind == "door_bags":
        reach = int(geo.px_x(1.5))
        x = x0 + int(rng.integers(0, max(1, reach - w) + 1)) if end else x1 - w - int(rng.integers(0, max(1, reach - w) + 1))
        y = floor_y - h
    elif kind == "reefer":
        reach = int(geo.px_x(0.6))
        x = x0 + int(rng.integers(0, max(1, reach) + 1)) if end else x1 - w - int(rng.integers(0, max(1, reach) + 1))
        y = int(rng.integers(y0, max(y0 + 1, y1 - h)))
    elif kind == "floor":
        x = int(rng.integers(x0, max(x0 + 1, x1 - w)))
        y = floor_y - h + int(rng.integers(0, max(1, h // 2) + 1))
    elif kind == "roof":
        x = int(rng.integers(x0, max(x0 + 1, x1 - w)))
        y = y0 + int(geo.px_y(0.05)) + int(rng.integers(0, max(1, h) + 1))
    else:  # brick_stack, wall: anywhere in the box, most often resting on the floor or cargo
        x = int(rng.integers(x0, max(x0 + 1, x1 - w)))
        if kind == "brick_stack" and rng.random() < 0.4:
            y = floor_y - h
        else:
            y = int(rng.integers(y0, max(y0 + 1, floor_y - h)))
    return int(np.clip(x, 0, max(0, W - w))), int(np.clip(y, 0, max(0, H - h)))


def draw_threat(rng: np.random.Generator, geo: ScanGeometry, grey: np.ndarray, *,
                mass_kg: float | None = None, kind: str | None = None,
                mapping: DisplayMapping | None = None, tries: int = 25) -> Threat:
    """Draw a concealment for this scan: kind, mass (log-uniform 1-500 kg if not given),
    density, shape and a placement where most of it is not hidden by saturated background.
    """
    if kind is None:
        kinds = list(THREAT_MIX)
        kind = str(rng.choice(kinds, p=np.array([THREAT_MIX[k] for k in kinds])))
    if kind not in THREAT_KINDS:
        raise ValueError(f"unknown threat kind {kind!r}; valid: {sorted(THREAT_KINDS)}")
    if mass_kg is None:
        lo, hi = {"door_bags": (15.0, 150.0), "wall": (1.0, 60.0), "reefer": (1.0, 80.0),
                  "floor": (2.0, 150.0), "roof": (2.0, 100.0)}.get(kind, (1.0, 500.0))
        mass_kg = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
    if not mass_kg > 0:
        raise ValueError(f"mass_kg must be > 0, got {mass_kg}")
    rho = float(rng.uniform(1.0, 1.4)) if kind != "door_bags" else float(rng.uniform(0.7, 1.1))
    if kind == "brick_stack":
        t = _brick_stack_map(mass_kg, rho, geo, rng)
    elif kind == "door_bags":
        t = _bags_map(mass_kg, rho, geo, rng)
    elif kind in ("floor", "roof"):
        t = _slab_map(mass_kg, rho, geo, rng, thin_along_beam=False)
    elif kind == "wall":
        t = _slab_map(mass_kg, rho, geo, rng, thin_along_beam=True)
    else:
        t = _compact_map(mass_kg, rho, geo, rng)
    H, W = grey.shape
    if t.shape[0] > H or t.shape[1] > W:
        t = t[: min(H, t.shape[0]), : min(W, t.shape[1])]
    mapping = mapping or DisplayMapping.estimate(grey)
    best: tuple[float, int, int] | None = None
    for _ in range(tries):
        x, y = _placement(kind, t.shape, geo, (H, W), rng)
        region = mapping.unit(grey[y:y + t.shape[0], x:x + t.shape[1]])
        visible = float((region[t[: region.shape[0], : region.shape[1]] > 0] > SATURATED_U).mean())
        if best is None or visible > best[0]:
            best = (visible, x, y)
        if visible >= 0.6:
            break
    assert best is not None
    return Threat(kind, float(mass_kg), rho, best[1], best[2], t)


def project_threat(grey: np.ndarray, threat: Threat, mapping: DisplayMapping,
                   rng: np.random.Generator | None = None, *,
                   mu_m_cm2_g: float = ORGANIC_MU_M_CM2_G, blur_px: float = 0.8,
                   noise_grey: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Insert ``threat`` into a display image; returns ``(uint8 image, bool mask)``.

    In the estimated transmission domain ``T' = T * exp(-mu_m * rho * t)``: attenuation adds,
    so occlusion by cargo is physical and saturated pixels stay saturated. The thickness map
    is blurred by the detector's point spread (``blur_px``) and the changed pixels get a
    little extra noise (more matter, fewer photons). The mask marks where the threat adds
    at least 0.02 to the attenuation (what a heatmap should point at).
    """
    H, W = grey.shape
    th = threat.thickness_cm
    pad = int(math.ceil(3 * blur_px)) + 1
    x0, y0 = max(0, threat.x - pad), max(0, threat.y - pad)
    x1, y1 = min(W, threat.x + th.shape[1] + pad), min(H, threat.y + th.shape[0] + pad)
    local = np.zeros((y1 - y0, x1 - x0), np.float32)
    ty, tx = threat.y - y0, threat.x - x0
    hh, ww = min(th.shape[0], local.shape[0] - ty), min(th.shape[1], local.shape[1] - tx)
    local[ty:ty + hh, tx:tx + ww] = th[:hh, :ww]
    if blur_px > 0:
        local = cv2.GaussianBlur(local, (0, 0), blur_px)
    delta = local * np.float32(mu_m_cm2_g * threat.density_g_cm3)
    patch = grey[y0:y1, x0:x1]
    new = mapping.to_grey(mapping.to_attenuation(patch) + delta)
    changed = delta > 0.02
    if rng is not None and noise_grey > 0:
        new = new + changed * rng.normal(0.0, noise_grey, new.shape).astype(np.float32)
    # outside the threat keep the original bytes exactly (the round trip is not lossless)
    out_patch = np.where(delta > 1e-4, np.clip(np.rint(new), 0, 255), patch).astype(np.uint8)
    out = grey.copy()
    out[y0:y1, x0:x1] = out_patch
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = changed
    return out, mask


def jpeg_roundtrip(grey: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode an 8-bit grey image as JPEG (what scanner exports go through)."""
    ok, buf = cv2.imencode(".jpg", grey, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
