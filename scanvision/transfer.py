"""Transfer stage of the shipped scan model: make it hold up on real display images.

The shipped model is trained on generated scans only (never on real ones). A network trained
on one renderer's concealments and one family of display windows learns that renderer: on
real 8-bit exports it was at chance. This stage fine-tunes a trained model directory on
generated scans seen the ways real scans reach us:

* **threat image projection into generated backgrounds** (:mod:`scanvision.tip`): clean
  generated scans exported as display images, with brick stacks, bags and structural loads
  projected into them through an estimated display window, exactly as ``scanner adapt``
  does with a site's real scans; the renderer's own concealments stay in the mix;
* **display-domain augmentation**: vendor windows (gain, lift, log range, gamma), resizing
  to real display heights (600-800 px), edge enhancement (unsharp masking, as scanner
  software applies it), blur, noise, JPEG at several qualities, and colour exports turned
  to grey.

Run as ``python -m scanvision.transfer --base DIR --out DIR`` (``make models-scan`` runs it
after the base training).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scanvision.io import (
    DISPLAY_LOG_RANGE,
    Scan,
    display8_to_transmission,
    raw16_to_transmission,
    transmission_to_raw16,
)
from scanvision.preprocess import PreprocessConfig, preprocess

logger = logging.getLogger(__name__)

#: Real display exports are 600-800 px high for a container (a 5 mm render is ~850 px).
DISPLAY_HEIGHTS = (600, 800)


def augment_display(d8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A display image as another vendor's software would export it (8-bit grey in and out).

    Each step is drawn at random: a resize to a real display height, an unsharp mask (edge
    enhancement), a blur, grey noise, a colour export turned back to grey, a JPEG round trip.
    """
    img = d8
    h, w = img.shape
    if rng.random() < 0.8:
        nh = int(rng.integers(DISPLAY_HEIGHTS[0], DISPLAY_HEIGHTS[1] + 1))
        nw = max(8, int(round(w * nh / h * rng.uniform(0.85, 1.15))))  # axes sampled differently
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if nh < h else cv2.INTER_LINEAR)
    f = img.astype(np.float32)
    if rng.random() < 0.4:
        sigma = float(rng.uniform(1.0, 4.0))
        amount = float(rng.uniform(0.3, 1.5))
        f = f + amount * (f - cv2.GaussianBlur(f, (0, 0), sigma))
    elif rng.random() < 0.3:
        f = cv2.GaussianBlur(f, (0, 0), float(rng.uniform(0.5, 1.3)))
    if rng.random() < 0.5:
        f = f + rng.normal(0.0, rng.uniform(0.5, 4.0), f.shape).astype(np.float32)
    img = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        # a pseudo-colour export (slightly different channel gains) read back as grey
        gains = rng.uniform(0.9, 1.1, 3).astype(np.float32)
        rgb = np.clip(img[..., None].astype(np.float32) * gains, 0, 255).astype(np.uint8)
        img = cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY)
    if rng.random() < 0.7:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(50, 98))])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return img


def _display_export(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A generated transmission exported the way real display images are (hard windows)."""
    from scanvision.synth import to_display8
    from scanvision.train import DISPLAY_WINDOW_RANGE

    window = float(np.exp(rng.uniform(np.log(DISPLAY_WINDOW_RANGE[0]), np.log(DISPLAY_WINDOW_RANGE[1]))))
    return to_display8(np.power(t, np.float32(DISPLAY_LOG_RANGE / window)), rng)


def _view(d8: np.ndarray, mask: np.ndarray, pcfg: PreprocessConfig) -> tuple[np.ndarray, np.ndarray]:
    from scanvision.train import mask_fraction

    x = preprocess(Scan(display8_to_transmission(d8), None, "display8", None, d8.shape[1], d8.shape[0]), pcfg)
    return x, mask_fraction(mask, x.shape[2], x.shape[1])


def _transfer_samples(args: tuple[Any, ...]) -> list[Any]:
    """Render generated scan ``index``; return its training views as single-view samples.

    Every scan gives its raw view and a display view (renderer concealments as drawn). A
    clean loaded or empty scan also gives a TIP view: a display export with a projected threat.
    """
    from scanvision.synth import render_scan, sample_spec
    from scanvision.tip import DisplayMapping, draw_threat, estimate_geometry, project_threat
    from scanvision.train import Variant, build_sample

    child, index, seed, threat_rate, pcfg_dict, pixel_mm, tip_prob = args
    rng = np.random.default_rng(child)
    pcfg = PreprocessConfig.from_dict(pcfg_dict)
    spec = sample_spec(rng, scan_id=f"TR{index:06d}", seed=seed, threat_rate=threat_rate)
    if pixel_mm is not None and pixel_mm != spec.pixel_mm:
        spec = replace(spec, pixel_mm=pixel_mm, dose=spec.dose * (pixel_mm / spec.pixel_mm) ** 2)
    scan = render_scan(spec, rng)
    aug = np.random.default_rng([seed, index, 29])
    base = build_sample(scan.transmission, None, scan.mask, scan.meta, pcfg, aug, with_display=False)
    t = raw16_to_transmission(transmission_to_raw16(scan.transmission))
    out = [base]
    # the renderer's own scene, exported and re-exported as real display images are
    d8 = augment_display(_display_export(t, aug), aug)
    mask = cv2.resize(scan.mask.astype(np.uint8), (d8.shape[1], d8.shape[0]),
                      interpolation=cv2.INTER_NEAREST).astype(bool)
    x, frac = _view(d8, mask, pcfg)
    out.append(replace(base, variants=[Variant(x.astype(np.float16), frac.astype(np.float16), "display8")]))
    if not base.threat and aug.random() < tip_prob:
        d8 = _display_export(t, aug)
        d8 = cv2.resize(d8, (max(8, int(round(d8.shape[1] * 700 / d8.shape[0]))), 700),
                        interpolation=cv2.INTER_AREA if d8.shape[0] > 700 else cv2.INTER_LINEAR)
        mapping = DisplayMapping.estimate(d8).with_window(
            float(np.exp(aug.uniform(np.log(1.5), np.log(10.0)))), float(aug.uniform(0.9, 2.2)))
        geo = estimate_geometry(d8)
        threat = draw_threat(aug, geo, d8, mapping=mapping)
        d8t, tmask = project_threat(d8, threat, mapping, aug, mu_m_cm2_g=float(aug.uniform(0.02, 0.04)))
        d8t = augment_display(d8t, aug)
        tmask = cv2.resize(tmask.astype(np.uint8), (d8t.shape[1], d8t.shape[0]),
                           interpolation=cv2.INTER_NEAREST).astype(bool)
        x, frac = _view(d8t, tmask, pcfg)
        out.append(replace(base, variants=[Variant(x.astype(np.float16), frac.astype(np.float16), "display8")],
                           threat=bool(tmask.any()), threat_mass_kg=threat.mass_kg,
                           threat_types=[f"tip_{threat.kind}"], threat_locations=["tip"]))
    return out


def transfer_samples(count: int, seed: int, *, pcfg: PreprocessConfig, threat_rate: float = 0.4,
                     pixel_mm: float | None = 10.0, tip_prob: float = 0.8, workers: int = 2) -> list[Any]:
    """Training views of ``count`` generated scans (2-3 per scan; see :func:`_transfer_samples`)."""
    children = np.random.SeedSequence(seed).spawn(count)
    jobs = [(c, i, seed, threat_rate, pcfg.to_dict(), pixel_mm, tip_prob) for i, c in enumerate(children)]
    t0 = time.perf_counter()
    out: list[Any] = []
    if workers <= 1:
        for j in jobs:
            out.extend(_transfer_samples(j))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for i, views in enumerate(pool.map(_transfer_samples, jobs, chunksize=8)):
                out.extend(views)
                if (i + 1) % 250 == 0:
                    logger.info("transfer views: %d/%d scans", i + 1, count)
    logger.info("transfer views: %d views of %d scans in %.0f s", len(out), count, time.perf_counter() - t0)
    return out


def fine_tune_transfer(model: Any, train: Sequence[Any], val: Sequence[Any], *, epochs: int, lr: float,
                       seed: int, threads: int = 2) -> dict[str, Any]:
    """Fine-tune with the base training's losses (batch norms frozen); keep the best epoch.

    The selection metric is the base training's (raw and display detection, empty and class
    accuracy) on ``val`` plus the AUC on its TIP views.
    """
    import torch

    from scanvision.adapt import _freeze_batchnorm
    from scanvision.train import (
        TrainConfig,
        compute_losses,
        epoch_batches,
        optimise_epoch,
        predict_torch,
        roc_auc,
    )

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    cfg = TrainConfig(epochs=epochs, lr=lr, seed=seed, display_prob=0.0, threads=threads)
    rng = np.random.default_rng([seed, 43])
    steps = epochs * math.ceil(len(train) / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    val_images = [s.variants[0].image for s in val]
    val_labels = np.array([s.threat for s in val])
    val_kinds = np.array([s.variants[0].kind for s in val])
    val_tip = np.array([bool(s.threat_types) and s.threat_types[0].startswith("tip_") for s in val])

    def metric() -> tuple[float, dict[str, float]]:
        p = predict_torch(model, val_images)
        d: dict[str, float] = {}
        for name, sel in (("raw", val_kinds == "raw16"),
                          ("display", (val_kinds == "display8") & ~val_tip),
                          ("tip", val_tip | ((val_kinds == "display8") & ~val_labels))):
            d[f"{name}_auc"] = roc_auc(val_labels[sel], p.score_logit[sel])
        d["empty_accuracy"] = float(((p.empty_prob > 0.5) == np.array([s.empty for s in val])).mean())
        d["class_accuracy"] = float((p.class_pred == np.array([s.cls for s in val])).mean())
        m = (d["raw_auc"] + d["display_auc"] + d["tip_auc"]) / 3 + 0.1 * (d["empty_accuracy"] + d["class_accuracy"])
        return m, d

    best = None
    history = []
    m0, d0 = metric()
    logger.info("transfer epoch 0 metric=%.4f %s", m0, d0)
    history.append({"epoch": 0, "val_metric": round(m0, 4), **{k: round(v, 4) for k, v in d0.items()}})
    t_start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        _freeze_batchnorm(model)
        sums, n = optimise_epoch(model, epoch_batches(train, cfg, rng),
                                 lambda out, batch: compute_losses(out, batch, cfg), opt, sched)
        m, d = metric()
        row = {"epoch": epoch, "seconds": round(time.perf_counter() - t0, 1),
               **{f"loss_{k}": round(v / max(n, 1), 4) for k, v in sums.items()},
               "val_metric": round(m, 4), **{k: round(v, 4) for k, v in d.items()}}
        history.append(row)
        logger.info("transfer epoch %s", " ".join(f"{k}={v}" for k, v in row.items()))
        if best is None or m > best[0]:
            best = (m, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()}, d)
    assert best is not None
    model.load_state_dict(best[2])
    model.eval()
    from scanvision.train import fit_platt

    p = predict_torch(model, val_images)
    a, b = fit_platt(p.score_logit, val_labels)
    model.set_score_calibration(a, b)
    return {"best_epoch": best[1], "val": {k: round(v, 4) for k, v in best[3].items()},
            "history": history, "train_seconds": round(time.perf_counter() - t_start, 1),
            "score_calibration": {"scale": a, "bias": b}}


def build_transferred_model(base_dir: str | Path, out_dir: str | Path, *, count: int = 1500,
                            val_count: int = 300, epochs: int = 8, lr: float = 1e-3, seed: int = 3,
                            eval_count: int = 1000, eval_seed: int = 20240, workers: int = 2,
                            threads: int = 2, reference_dir: str | Path | None = None,
                            command: str = "") -> dict[str, Any]:
    """Fine-tune ``base_dir`` with TIP and display augmentation; export, evaluate, write card."""
    from scanvision.adapt import torch_model_from_onnx
    from scanvision.export import save_model_dir
    from scanvision.infer import load_model_config
    from scanvision.train import (
        GENERATOR_1_0_MIX,
        _export_samples,
        _short_report,
        evaluate_model_dir,
        time_model_only,
        triage_reference_images,
        write_card_from_sidecar,
    )

    if eval_seed in (seed, seed + 1):
        raise ValueError(f"eval_seed {eval_seed} must differ from the transfer seeds {seed}, {seed + 1}")
    t0 = time.perf_counter()
    base_config = load_model_config(base_dir)
    pcfg = PreprocessConfig.from_dict(base_config["preprocess"])
    model = torch_model_from_onnx(base_dir)
    train = transfer_samples(count, seed, pcfg=pcfg, workers=workers)
    val = transfer_samples(val_count, seed + 1, pcfg=pcfg, workers=workers, pixel_mm=None)
    summary = fine_tune_transfer(model, train, val, epochs=epochs, lr=lr, seed=seed, threads=threads)
    training = dict(base_config.get("training") or {})
    training["transfer"] = {
        "what": "fine-tuned with threat image projection into generated display exports and "
                "display-domain augmentation (scanvision.transfer)",
        "base_onnx_sha256": base_config.get("onnx_sha256"), "seed": seed, "val_seed": seed + 1,
        "n_scans": count, "n_views": len(train), "n_val_scans": val_count, "n_val_views": len(val),
        "epochs": epochs, "lr": lr, **summary, "command": command,
    }
    out = Path(out_dir)
    parity = _export_samples(val)
    config_path = save_model_dir(model, out, model_name=base_config["model_name"],
                                 preprocess=pcfg.to_dict(), samples=parity,
                                 class_names=base_config["class_names"],
                                 mass_calibration=base_config.get("mass_calibration"),
                                 training=training, metrics={"validation": summary["val"]})
    evaluation = evaluate_model_dir(out, eval_count, eval_seed, workers=workers)
    evaluation_1_0 = evaluate_model_dir(out, eval_count, eval_seed, workers=workers, mix=GENERATOR_1_0_MIX)
    config = json.loads(config_path.read_text())
    config["metrics"]["test"] = evaluation
    config["metrics"]["test_generator_1_0"] = _short_report(evaluation_1_0)
    config["metrics"]["onnx_model_only_40ft"] = [time_model_only(out, w) for w in (576, 768)]
    if reference_dir is not None and Path(reference_dir).is_dir():
        config["metrics"]["real_display_images"] = triage_reference_images(out, reference_dir)
    config["training"]["build_seconds"] = round(
        float(base_config.get("training", {}).get("build_seconds", 0.0)) + time.perf_counter() - t0, 1)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    write_card_from_sidecar(out)
    return {"out": str(out), "minutes": round((time.perf_counter() - t0) / 60, 1), "test": evaluation}


def real_site_figures(model_dir: str | Path, site_dir: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """Concealment and empty figures of a model on a site's real scans (never trained on).

    Every scan of ``site_dir`` (``scans/`` and ``labels.csv``, as in ``xray_site_dev``) is a
    test scan, clean and with threats projected in (:func:`scanvision.adapt.holdout_views`).
    """
    from scanvision.adapt import evaluate_views, holdout_views, load_site_scans

    site_dir = Path(site_dir)
    labels = site_dir / "labels.csv"
    paths = sorted(p for p in (site_dir / "scans").rglob("*")
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".tif", ".tiff"))
    scans = load_site_scans(paths, labels_csv=labels if labels.is_file() else None)
    views = holdout_views(scans, seed, 2)
    rep = evaluate_views(model_dir, views, scans[0].kind)
    return {"site": site_dir.name, "n_scans": len(scans), "seed": seed,
            "views": {"clean": rep["n_clean"], "threat": rep["n_threat"]},
            **{k: rep[k] for k in ("auc", "by_state", "by_mass", "brick_stacks_ge_10kg",
                                   "pointing_accuracy")}, "empty_auc": rep.get("empty_auc")}


def record_real_site(model_dir: str | Path, site_dir: str | Path) -> dict[str, Any]:
    """Measure :func:`real_site_figures`, store them in the sidecar and rewrite the card."""
    from scanvision.train import write_card_from_sidecar

    figures = real_site_figures(model_dir, site_dir)
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    config.setdefault("metrics", {})["real_site_scans"] = figures
    path.write_text(json.dumps(config, indent=2) + "\n")
    write_card_from_sidecar(model_dir)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m scanvision.transfer``: the transfer stage of the shipped scan model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="trained model directory to start from")
    parser.add_argument("--out", required=True, help="model directory to write (may be --base)")
    parser.add_argument("--generate", type=int, default=1500, help="generated scans for the views")
    parser.add_argument("--val", type=int, default=300, help="validation scans (seed + 1)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--eval", type=int, default=1000, help="test scans for the model card")
    parser.add_argument("--eval-seed", type=int, default=20240)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reference-dir", default=None,
                        help="directory of real display JPEGs to report in the card (not trained on)")
    parser.add_argument("--site-dir", default=None,
                        help="a site's real scans (scans/ + labels.csv) to measure in the card "
                             "(never trained on)")
    parser.add_argument("--site-only", action="store_true",
                        help="only measure --site-dir on --out and rewrite its card")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.site_only:
        if not args.site_dir:
            parser.error("--site-only needs --site-dir")
        record_real_site(args.out, args.site_dir)
        return 0
    cmd = " ".join(["python -m scanvision.transfer", f"--base {args.base}", f"--out {args.out}",
                    f"--generate {args.generate}", f"--val {args.val}", f"--epochs {args.epochs}",
                    f"--lr {args.lr:g}", f"--seed {args.seed}", f"--eval {args.eval}",
                    f"--eval-seed {args.eval_seed}"])
    build_transferred_model(args.base, args.out, count=args.generate, val_count=args.val,
                            epochs=args.epochs, lr=args.lr, seed=args.seed, eval_count=args.eval,
                            eval_seed=args.eval_seed, workers=args.workers, threads=args.threads,
                            reference_dir=args.reference_dir, command=cmd)
    if args.site_dir and Path(args.site_dir).is_dir():
        record_real_site(args.out, args.site_dir)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    from scanvision.transfer import main as _main

    raise SystemExit(_main())
