"""Draw the figures of datasets/synthetic_scans.md: synthetic_scans.png and synthetic_scans_bulk.png.

    python datasets/figures/make_synthetic_scans.py

Fixed seeds; the figure changes only when the generator does.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scanvision.synth import MATERIALS, ScanSpec, ThreatSpec, render_scan, to_display8  # noqa: E402

OUT = Path(__file__).with_name("synthetic_scans.png")
OUT_BULK = Path(__file__).with_name("synthetic_scans_bulk.png")


def _panel(ax: plt.Axes, title: str, spec: ScanSpec) -> None:
    """One scan through the default display window, its concealments boxed in red."""
    scan = render_scan(spec)
    ax.imshow(to_display8(scan.transmission), cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
    for th in scan.meta["threats"]:
        x0, y0, x1, y1 = th["box"]
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="red", lw=1.2))
        ax.text(x0, y0 - 8, f"{th['type']} {th['mass_kg']:.0f} kg", color="red", fontsize=8)
    ax.set_title(f"{title}\ncargo {scan.meta['cargo_mass_kg'] / 1000:.1f} t", fontsize=9)
    ax.set_axis_off()


def main() -> None:
    panels = [
        ("20 ft reefer (22R1), fruit, 36 kg rip-on/rip-off bags at the doors",
         ScanSpec(size="20ft", reefer=True, cargo_family="fruit", fill=0.9, seed=11,
                  threats=(ThreatSpec("drugs", "doors", 36.0),))),
        ("40 ft (42G1), tyres, door end left",
         ScanSpec(size="40ft", cargo_family="tyres", fill=0.85, seed=12, flip=True)),
        ("20 ft (22G1), declared and really empty",
         ScanSpec(size="20ft", cargo_family="empty", seed=13)),
    ]
    de_spec = ScanSpec(size="20ft", cargo_family="general", fill=0.7, seed=14, dual_energy=True,
                       chassis=False, dose=1e5,
                       threats=(ThreatSpec("drugs", "cargo", 150.0), ThreatSpec("weapon", "doors", 3.8)))

    fig, axes = plt.subplots(2, 2, figsize=(16, 7.6), dpi=110)
    for ax, (title, spec) in zip(axes.ravel()[:3], panels, strict=True):
        _panel(ax, title, spec)

    de = render_scan(de_spec)
    a_hi, a_lo = -np.log(de.transmission), -np.log(de.transmission_low)
    ratio = np.where((a_hi > 0.3) & (a_hi < 6.0), a_hi / np.maximum(a_lo, 1e-6), np.nan)
    ax = axes[1, 1]
    ax.imshow(to_display8(de.transmission), cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
    im = ax.imshow(ratio, cmap="turbo", vmin=0.78, vmax=0.93, alpha=0.75, interpolation="antialiased")
    for th in de.meta["threats"]:
        x0, y0, x1, y1 = th["box"]
        ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="white", lw=1.2))
        ax.text(x0, y0 - 8, f"{th['type']} ({th['material']})", color="white", fontsize=8)
    ax.set_title("dual energy: ratio -ln T(6 MeV) / -ln T(4 MeV) (mixed boxes, 150 kg drugs, rifle)",
                 fontsize=9)
    ax.set_axis_off()
    cb = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
    ratios = {name: mat.mu_high / mat.mu_low for name, mat in MATERIALS.items()}
    for r in ratios.values():
        cb.ax.axhline(r, color="k", lw=1)
    cb.set_ticks(list(ratios.values()), labels=[f"{n} {r:.3f}" for n, r in ratios.items()], fontsize=7)
    fig.suptitle("Synthetic transmission scans (5 mm/px, 6 MeV, Poisson noise, detector gain stripes), "
                 "shown with the default display window", fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT)
    print(f"wrote {OUT}")
    bulk_figure()


def bulk_figure() -> None:
    """Generator 1.1: the tractor unit and large uniform packages (all clean but one)."""
    panels = [
        ("40 ft, big bags (sacks), with the tractor unit", ScanSpec(
            size="40ft", cargo_family="sacks", bulk_cargo="big_bags", fill=0.9, seed=21, tractor=True)),
        ("20 ft, paper reels (general)", ScanSpec(
            size="20ft", cargo_family="general", bulk_cargo="paper_reels", fill=0.9, seed=22)),
        ("20 ft, fabric rolls (textiles)", ScanSpec(
            size="20ft", cargo_family="textiles", bulk_cargo="fabric_rolls", fill=0.95, seed=23)),
        ("20 ft, cable drums (machinery), with the tractor unit", ScanSpec(
            size="20ft", cargo_family="machinery", bulk_cargo="cable_drums", fill=0.9, seed=24, tractor=True)),
        ("20 ft, steel coils (machinery)", ScanSpec(
            size="20ft", cargo_family="machinery", bulk_cargo="steel_coils", fill=0.9, seed=25)),
        ("20 ft, IBC tanks (bottles_drums) with 60 kg of drug bricks among them", ScanSpec(
            size="20ft", cargo_family="bottles_drums", bulk_cargo="ibc_tanks", fill=0.9, seed=26,
            threats=(ThreatSpec("drugs", "cargo", 60.0),))),
    ]
    fig, axes = plt.subplots(3, 2, figsize=(16, 10), dpi=100)
    for ax, (title, spec) in zip(axes.ravel(), panels, strict=True):
        _panel(ax, title, spec)
    fig.suptitle("Generator 1.1: tractor unit and large uniform packages (clean cargo that looks like "
                 "dense blocks), default display window", fontsize=10)
    fig.tight_layout()
    fig.savefig(OUT_BULK)
    print(f"wrote {OUT_BULK}")


if __name__ == "__main__":
    main()
