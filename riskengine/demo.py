"""The main job on embedded defaults: one day of arrivals at a port, end to end.

generate the day (same synthetic world as the shipped model's year of history)
  → validate (bad rows quarantined) → store (SQLite) → score (LightGBM + indicator packs)
  → stage-1 lanes per terminal and shift → render and triage the scans of the scan lane (ONNX)
  → fuse → stage-2 inspections → queues with reasons → HTML report.

Everything goes through the same functions the service uses (``riskengine.service.workflow``),
so what the demo shows is what a port would run. Library code: no printing; the CLI prints.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskengine.queue import QueueConfig, shift_of

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"

# The synthetic world of the shipped manifest model: 396 days at NLRTM (~5,000 containers a day).
# The model is trained on the first 365 days (the Makefile's `models` target leaves out the last
# 31) and evaluated on the 31 after; the demo draws the last day, a month after training.
SHIPPED_WORLD: dict[str, Any] = {
    "rows": 1_980_000,
    "seed": 11,
    "start": "2026-01-01",
    "days": 396,
    "port": "NLRTM",
    "illicit_rate": 0.01,
}
LANE_ORDER = ("hold", "red", "inspect", "scan", "cleared", "green")
#: The day after the shipped model's history ends, when models/manifest/model.json cannot be read.
_SHIPPED_HISTORY_NEXT_DAY = "2027-01-02"


def shipped_model_dir() -> Path:
    """The shipped manifest model, found from the package's location (not the working directory).

    Raises FileNotFoundError with what to do when it is not there (an installed package without
    the repository's ``models/``).
    """
    path = MODELS_DIR / "manifest"
    if not (path / "model.txt").is_file():
        raise FileNotFoundError(
            f"the shipped manifest model is not at {path} (model.txt missing): run `make models` in the "
            "repository, or pass the directory of a model written by `riskengine train` with --model DIR")
    return path


def day_after_shipped_history() -> str:
    """First day after the shipped model's history (YYYY-MM-DD): generated traffic from then on
    is new to the model, as real arrivals would be."""
    try:
        meta = json.loads((MODELS_DIR / "manifest" / "model.json").read_text(encoding="utf-8"))
        end = pd.Timestamp((meta.get("history") or meta["training"])["end"])
    except (OSError, ValueError, KeyError, TypeError):
        return _SHIPPED_HISTORY_NEXT_DAY
    return str((end + pd.Timedelta(days=1)).date())


@dataclass
class DemoConfig:
    """Parameters of one demo run (defaults: the shipped world, NLRTM, ~5,000 containers)."""

    out_dir: Path = Path("demo_out")
    db_url: str | None = None  # default: sqlite file in out_dir
    model_dir: Path = MODELS_DIR / "manifest"
    scan_model_dir: Path = MODELS_DIR / "scanvision"
    corrupt_rate: float = 0.002
    scan_capacity: int = 12          # per terminal and shift
    inspection_capacity: int = 6     # per terminal and shift
    exploration_share: float = 0.05
    provider: str = "cpu"
    max_scans: int | None = None     # cap on rendered scans (None: the whole scan lane)
    report_scans: int = 12           # scans with heatmaps in the report
    world: dict[str, Any] = field(default_factory=lambda: dict(SHIPPED_WORLD))


@dataclass
class DemoResult:
    """What the demo did: counts, timings, the queue, where the files are."""

    day: str
    port: str
    received: int
    valid: int
    rejected: int
    scans: int
    lane_counts: pd.DataFrame
    queue: pd.DataFrame
    truth: dict[str, Any]
    timings: dict[str, float]
    out_dir: Path
    db_url: str
    report: Path
    quarantine: Path | None
    indicator_hits: pd.DataFrame

    def summary(self) -> dict[str, Any]:
        return {
            "day": self.day, "port": self.port, "received": self.received, "valid": self.valid,
            "rejected": self.rejected, "scans": self.scans,
            "lanes": self.lane_counts.groupby("lane")["containers"].sum().to_dict(),
            "ground_truth": self.truth, "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "db_url": self.db_url, "report": str(self.report),
            "quarantine": str(self.quarantine) if self.quarantine else None,
        }


def arrival_shift(day: pd.DataFrame) -> pd.Series:
    """Shift of each container from its vessel's berthing hour (one vessel, one hour).

    The manifests carry the arrival day; a vessel's containers are discharged together, so the
    hour comes from a hash of (vessel, voyage): stable across runs, spread over the day.
    """
    key = day["vessel_imo"].astype(str) + "|" + day["voyage"].astype(str)
    hours = (pd.util.hash_pandas_object(key, index=False).to_numpy() % np.uint64(24)).astype(int)
    ts = pd.to_datetime(day["arrival_date"]) + pd.to_timedelta(hours, unit="h")
    return shift_of(ts)


class _RepeatedWarnings(logging.Filter):
    """Holds back the warnings that the demo says once, in one line each, with the count.

    The day's rows are validated again with every scan batch (the same invalid IMO check
    digits each time), and the renderer warns per scan when a declared weight needs a denser
    cargo than it draws.
    """

    _NOISY = {"riskengine.schema": "invalid IMO check digit kept", "scanvision.synth": "needs density x"}

    def __init__(self) -> None:
        super().__init__()
        self.density: list[tuple[Any, ...]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if self._NOISY["riskengine.schema"] in text:
            return False
        if self._NOISY["scanvision.synth"] in text:
            self.density.append(tuple(record.args or ()))
            return False
        return True

    def __enter__(self) -> _RepeatedWarnings:
        for name in self._NOISY:
            logging.getLogger(name).addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self._NOISY:
            logging.getLogger(name).removeFilter(self)


def run_demo(cfg: DemoConfig, *, progress: Callable[[str], None] | None = None) -> DemoResult:
    """Run the main job; ``progress`` receives one line per stage."""
    with _RepeatedWarnings() as noise:
        return _run_demo(cfg, progress, noise)


def _run_demo(cfg: DemoConfig, progress: Callable[[str], None] | None, noise: _RepeatedWarnings) -> DemoResult:
    from riskengine.schema import validate
    from riskengine.service.scoring import ModelScorer, OnnxScanTriager
    from riskengine.service.workflow import ingest_manifests, ingest_scans
    from riskengine.store import Store
    from riskengine.synth import generate_manifests

    say = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    for what, path in (("manifest model", cfg.model_dir / "model.txt"),
                       ("scan model", cfg.scan_model_dir / "model.onnx")):
        if not path.is_file():
            raise FileNotFoundError(f"the {what} is missing ({path}); run `make models` or pass its directory")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    db_url = cfg.db_url or f"sqlite:///{(out / 'riskengine.db').resolve()}"
    if cfg.db_url is None:
        # A demo run starts from an empty store so that its numbers are its own.
        for suffix in ("", "-wal", "-shm"):
            (out / f"riskengine.db{suffix}").unlink(missing_ok=True)
    for sub in ("scans", "overlays"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)

    t = time.perf_counter()
    world = dict(cfg.world)
    day = generate_manifests(world.pop("rows"), **world, last_days=1, corrupt_rate=cfg.corrupt_rate)
    truth_cols = ["is_illicit", "modus_operandi", "concealment_location", "amount_kg"]
    truth = day[["manifest_id", *truth_cols]].drop_duplicates("manifest_id")
    # Today's manifests are fresh: no inspection has happened yet, the ground truth stays hidden.
    raw = day.drop(columns=[*truth_cols, "inspected", "selection", "outcome_at"], errors="ignore")
    raw["shift"] = arrival_shift(raw)
    day_name = str(pd.to_datetime(day["arrival_date"], errors="coerce").dropna().iloc[0].date())
    timings["generate"] = time.perf_counter() - t
    say(f"generated {len(raw):,} arrivals at {cfg.world['port']} for {day_name}")

    store = Store(db_url)
    qcfg = QueueConfig(scan_capacity=cfg.scan_capacity, inspection_capacity=cfg.inspection_capacity,
                       exploration_share=cfg.exploration_share)
    scorer = ModelScorer(cfg.model_dir)
    t = time.perf_counter()
    report = ingest_manifests(store, scorer, raw, qcfg, actor="demo")
    timings["validate_store_score_plan"] = time.perf_counter() - t
    quarantine = None
    if report.rejected:
        from riskengine.schema import write_table

        quarantine = write_table(report.rejects.astype(str), out / "quarantine.csv")
    imo = int((report.warnings["column"] == "vessel_imo").sum()) if "column" in report.warnings.columns else 0
    if imo:
        log.warning("%d row(s) kept with an invalid IMO check digit", imo)
    say(f"validated {report.valid:,} ({report.rejected:,} quarantined), scored and planned "
        f"in {timings['validate_store_score_plan']:.1f} s")

    t = time.perf_counter()
    valid_ids = set(store.manifest_ids())
    valid_rows = raw[raw["manifest_id"].isin(valid_ids)].drop_duplicates("manifest_id")
    hit_ids, matrix = indicator_hits_with_history(scorer.load(), validate(valid_rows).valid)
    hit_table = _indicator_table(matrix, truth.set_index("manifest_id").reindex(hit_ids)["is_illicit"].to_numpy())
    timings["indicators"] = time.perf_counter() - t

    t = time.perf_counter()
    queue = _full_queue(store, cfg.world["port"])
    to_scan = queue[queue["lane"] == "scan"]["manifest_id"].tolist()
    if cfg.max_scans is not None:
        to_scan = to_scan[: cfg.max_scans]
    scans, ids, paths = _render_scans(day.set_index("manifest_id").loc[to_scan].reset_index(),
                                      (out / "scans").resolve(), seed=int(cfg.world["seed"]))
    timings["render_scans"] = time.perf_counter() - t
    if noise.density:
        # One line, short enough for an 80-column terminal; the scan ids at debug level.
        limit = max((float(a[4]) for a in noise.density if len(a) > 4), default=float("nan"))
        log.warning("%d scan(s) lighter than declared: cargo density capped at x%g", len(noise.density), limit)
        log.debug("scans with the density cap: %s", ", ".join(str(a[0]) for a in noise.density if a))
    say(f"rendered {len(scans):,} scans of the scan lane in {timings['render_scans']:.1f} s")

    # The store keeps absolute paths of the scans and overlays, so that `riskengine serve` started
    # from another folder still finds them.
    t = time.perf_counter()
    triager = OnnxScanTriager(cfg.scan_model_dir, provider=cfg.provider)
    batch = 32
    for i in range(0, len(scans), batch):
        ingest_scans(store, triager, scans[i:i + batch], ids[i:i + batch], qcfg, actor="demo",
                     image_paths=paths[i:i + batch], overlay_dir=(out / "overlays").resolve())
    timings["triage_fuse_replan"] = time.perf_counter() - t
    say(f"triaged, fused and re-planned {len(scans):,} scans in {timings['triage_fuse_replan']:.1f} s")

    queue = _full_queue(store, cfg.world["port"])
    counts = (queue.groupby(["terminal", "shift", "lane"]).size().rename("containers").reset_index())
    truth_summary = _ground_truth(queue, truth)
    res = DemoResult(
        day=day_name, port=cfg.world["port"], received=report.received, valid=report.valid,
        rejected=report.rejected, scans=len(scans), lane_counts=counts, queue=queue, truth=truth_summary,
        timings=timings, out_dir=out, db_url=db_url, report=out / "report.html", quarantine=quarantine,
        indicator_hits=hit_table,
    )
    t = time.perf_counter()
    write_report(res, truth, n_scans=cfg.report_scans)
    (out / "summary.json").write_text(json.dumps(res.summary(), indent=2, default=str))
    timings["report"] = time.perf_counter() - t
    store.close()
    return res


def _full_queue(store: Any, port: str) -> pd.DataFrame:
    q = store.queue(port)
    q["lane_order"] = q["lane"].map({k: i for i, k in enumerate(LANE_ORDER)}).fillna(len(LANE_ORDER))
    score = q["fused_score"].fillna(q["risk_score"]) if "fused_score" in q.columns else q["risk_score"]
    q["score"] = score
    # What an officer reads: the decision and, after a scan, the manifest's own reasons too.
    from riskengine.fusion import join_reasons
    from riskengine.queue import distinct_reasons

    decision = q["decision_reasons"] if "decision_reasons" in q.columns else q["reasons"]
    scanned = q["lane"].isin(["inspect", "cleared"])
    q["why"] = distinct_reasons(join_reasons([decision.fillna(""), q["reasons"].fillna("").where(scanned, "")]))
    # The heatmap overlay files of the scanned containers (the queue itself only says whether
    # there is one).
    with_overlay = q.loc[q["has_overlay"].fillna(False).astype(bool), "manifest_id"].tolist() \
        if "has_overlay" in q.columns else []
    scans = store.latest_scans(with_overlay) if with_overlay else pd.DataFrame(columns=["manifest_id", "heatmap_path"])
    q["heatmap_path"] = q["manifest_id"].map(scans.set_index("manifest_id")["heatmap_path"])
    return q.sort_values(["lane_order", "score"], ascending=[True, False]).reset_index(drop=True)


def _render_scans(rows: pd.DataFrame, folder: Path, *, seed: int) -> tuple[list[Any], list[str], list[str]]:
    """Render the scan of each manifest row, write it as a 16-bit PNG, read it back as a scanner would."""
    from scanvision.io import read_scan, write_transmission
    from scanvision.synth import render_scan_for_manifest

    scans, ids, paths = [], [], []
    for row in rows.to_dict("records"):
        try:
            rendered = render_scan_for_manifest(row, seed)
        except (ValueError, KeyError) as exc:
            log.warning("no scan rendered for %s: %s", row.get("manifest_id"), exc)
            continue
        path = folder / f"{row['manifest_id']}.png"
        write_transmission(path, rendered.transmission)
        scans.append(read_scan(path))
        ids.append(str(row["manifest_id"]))
        paths.append(str(path))
    return scans, ids, paths


def indicator_hits_with_history(model: Any, manifests: pd.DataFrame) -> tuple[pd.Series, pd.DataFrame]:
    """Which indicator of the model's packs fires on which manifest, with the model's history.

    Evaluated on one day alone, every consignee is "first seen today" and ``new_consignee``
    fires on every row; the model carries the as-of party history of its training year
    (first seen, prior shipments, commodities), which is what the indicators are evaluated
    with here, exactly as the model's features see them. Returns the manifest ids and a bool
    frame with one column per indicator id, row-aligned.
    """
    rows, _ = model.prepare(manifests)
    X = model.transform(rows)
    cols = [c for c in X.columns if c.startswith("ind.") and c != "ind._count"]
    matrix = pd.DataFrame(X[cols].to_numpy() >= 0.5, columns=[c.removeprefix("ind.") for c in cols])
    id_col = model.features_.mapping_.id
    return rows[id_col].astype(str).reset_index(drop=True), matrix


def _indicator_table(m: pd.DataFrame, is_illicit: np.ndarray) -> pd.DataFrame:
    y = np.nan_to_num(np.asarray(is_illicit, dtype=float)).astype(bool)
    n_hits = m.sum(axis=0).to_numpy()
    on_illicit = m[y].sum(axis=0).to_numpy() if y.any() else np.zeros(m.shape[1])
    return pd.DataFrame({
        "indicator": m.columns,
        "hits": n_hits.astype(int),
        "hit_rate": n_hits / max(len(m), 1),
        "illicit_hit_rate": on_illicit / max(int(y.sum()), 1),
        "licit_hit_rate": (n_hits - on_illicit) / max(int((~y).sum()), 1),
    }).sort_values("hits", ascending=False).reset_index(drop=True)


def _ground_truth(queue: pd.DataFrame, truth: pd.DataFrame) -> dict[str, Any]:
    """How the day's (hidden) ground truth fell into the lanes: what the queue would find."""
    q = queue.merge(truth[["manifest_id", "is_illicit", "amount_kg"]], on="manifest_id", how="left")
    y = q["is_illicit"].fillna(0).astype(int)
    physical = q["lane"].isin(["hold", "red", "inspect"])
    scanned = q["scanned"].fillna(False).astype(bool) if "scanned" in q.columns else q["lane"].isin(["inspect", "cleared"])
    n_phys = int(physical.sum())
    found = int((physical & (y == 1)).sum())
    total = int(y.sum())
    # What the same number of purely random inspections would find on average.
    expected_random = n_phys * total / max(len(q), 1)
    return {
        "containers": len(q),
        "illicit": total,
        "physical_inspections": n_phys,
        "illicit_found": found,
        "illicit_scanned": int((scanned & (y == 1)).sum()),
        "kg_found": float(q.loc[physical & (y == 1), "amount_kg"].sum()),
        "kg_total": float(q.loc[y == 1, "amount_kg"].sum()),
        "hit_rate": found / n_phys if n_phys else 0.0,
        "random_inspection_expected_found": round(expected_random, 2),
        "lift_over_random": round(found / expected_random, 1) if expected_random else None,
    }


# ---------------------------------------------------------------------------------------------
# HTML report
# ---------------------------------------------------------------------------------------------

def write_report(res: DemoResult, truth: pd.DataFrame, *, n_scans: int = 12) -> Path:
    """Write ``report.html`` with figures next to it (score distributions, lanes, top scans)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = res.out_dir
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    q = res.queue.merge(truth[["manifest_id", "is_illicit"]], on="manifest_id", how="left")
    y = q["is_illicit"].fillna(0).astype(int).to_numpy()

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    bins = np.logspace(-4, 0, 41)
    risk = q["risk_score"].clip(1e-4, 1).to_numpy()
    axes[0].hist(risk[y == 0], bins=bins, alpha=0.7, label="licit (ground truth)", color="#4c72b0")
    axes[0].hist(risk[y == 1], bins=bins, alpha=0.9, label="illicit (ground truth)", color="#c44e52")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("manifest risk score")
    axes[0].set_ylabel("containers")
    axes[0].legend()
    axes[0].set_title("Manifest risk")
    lanes = q["lane"].value_counts().reindex(LANE_ORDER).fillna(0)
    colours = {"hold": "#7b1fa2", "red": "#c62828", "inspect": "#ef6c00", "scan": "#1565c0",
               "cleared": "#2e7d32", "green": "#66bb6a"}
    axes[1].bar(lanes.index, lanes.to_numpy(), color=[colours[k] for k in lanes.index])
    axes[1].set_yscale("log")
    axes[1].set_title("Containers per lane")
    axes[1].set_ylim(bottom=0.8)
    for i, v in enumerate(lanes.to_numpy()):
        axes[1].text(i, max(v, 0.9), f"{int(v):,}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(fig_dir / "scores_and_lanes.png", dpi=110)
    plt.close(fig)

    scanned = q[q["lane"].isin(["inspect", "cleared"])].copy()
    if "fused_score" in scanned.columns:
        scanned = scanned.sort_values("fused_score", ascending=False)
    top_scans = scanned.head(n_scans)
    scan_cards = []
    for r in top_scans.to_dict("records"):
        overlay = r.get("heatmap_path")
        if isinstance(overlay, str) and overlay and Path(overlay).is_file():
            img = (f'<img src="{html.escape(_href(Path(overlay), out))}" '
                   f'alt="scan of {html.escape(_text(r.get("container_id")))} with heatmap">')
        else:
            img = "<p>(no overlay)</p>"
        truth_txt = "illicit" if r.get("is_illicit") == 1 else "licit"
        scan_cards.append(
            f'<div class="card"><h4>{html.escape(_text(r.get("container_id")))} '
            f'<small>{html.escape(str(r["manifest_id"]))}</small> — {html.escape(str(r["lane"]))} '
            f'— fused {float(r.get("fused_score") or 0):.3f} <small>(ground truth: {truth_txt})</small></h4>'
            f'<p class="goods">{html.escape(_goods(r))}</p>'
            f'{img}{_reason_list(r.get("why"))}</div>')

    top = q.head(40)

    def fmt(v: Any) -> str:
        return "" if v is None or pd.isna(v) else f"{float(v):.3f}"

    rows_html = "\n".join(
        f'<tr class="{html.escape(str(r["lane"]))}"><td>{i + 1}</td>'
        f'<td><b class="mono">{html.escape(_text(r.get("container_id")))}</b><br>'
        f'<small>{html.escape(str(r["manifest_id"]))}</small></td>'
        f'<td>{html.escape(_goods(r))}</td>'
        f'<td class="nowrap">{html.escape(str(r["terminal"]))}<br><small>{html.escape(str(r["shift"]))}</small></td>'
        f'<td>{html.escape(str(r["lane"]))}</td><td>{html.escape(_text(r.get("selection")))}</td>'
        f'<td class="num">{fmt(r["risk_score"])}</td><td class="num">{fmt(r.get("fused_score"))}</td>'
        f'<td>{_reason_list(r.get("why"))}</td></tr>'
        for i, r in enumerate(top.to_dict("records")))
    ind_rows = "\n".join(
        f"<tr><td>{html.escape(str(r['indicator']))}</td><td class=\"num\">{r['hits']:,}</td>"
        f"<td class=\"num\">{r['hit_rate']:.1%}</td>"
        f"<td class=\"num\">{r['illicit_hit_rate']:.1%}</td><td class=\"num\">{r['licit_hit_rate']:.1%}</td></tr>"
        for r in res.indicator_hits.to_dict("records"))
    timing_rows = "\n".join(
        f'<tr><td>{html.escape(_TIMING_NAMES.get(k, k))}</td><td class="num">{v:.1f}</td></tr>'
        for k, v in res.timings.items())
    total_s = sum(res.timings.values())
    t = res.truth
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>riskengine demo {res.port} {res.day}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1300px;color:#1d2330}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}}th{{background:#eef0f4}}
td.nowrap{{white-space:nowrap}}td.num{{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}}.mono{{font-family:ui-monospace,monospace}}
tr.hold td:nth-child(5){{color:#7b1fa2;font-weight:bold}}tr.red td:nth-child(5){{color:#c62828;font-weight:bold}}
tr.inspect td:nth-child(5){{color:#ef6c00;font-weight:bold}}.cards{{display:flex;flex-wrap:wrap;gap:12px}}
ul.why{{margin:0;padding-left:16px}}ul.why li:first-child{{font-weight:600}}
.card{{width:620px;border:1px solid #ccc;padding:8px}}.card img{{width:600px}}.card h4{{margin:2px 0}}
.card p.goods{{margin:2px 0 6px}}small{{color:#666}}</style></head><body>
<h1>Inspection queues — {html.escape(res.port)}, {res.day}</h1>
<p>{res.received:,} manifests received, {res.valid:,} valid, {res.rejected:,} quarantined with reasons
(<code>quarantine.csv</code>); {res.scans:,} containers scanned and triaged.</p>
<h2>What the queue finds (generated ground truth, hidden from the engine)</h2>
<p>{t['illicit']} illicit containers among {t['containers']:,}; {t['physical_inspections']} physical inspections
found {t['illicit_found']} of them ({t['kg_found']:.0f} of {t['kg_total']:.0f} kg), a hit rate of {t['hit_rate']:.1%};
the same number of random inspections would find {t['random_inspection_expected_found']} on average
(lift {t['lift_over_random']}×).</p>
<img src="figures/scores_and_lanes.png" alt="score distributions and lanes" style="width:1000px">
<h2>Top of the queue</h2><table><tr><th>#</th><th>container</th><th>goods</th><th>terminal, shift</th><th>lane</th>
<th>selection</th><th>manifest risk</th><th>fused</th><th>reasons (most important first)</th></tr>{rows_html}</table>
<h2>Top scans with heatmaps</h2><div class="cards">{''.join(scan_cards)}</div>
<h2>Indicator hits</h2>
<p>Evaluated with the party history of the shipped model's year (a consignee first seen months ago is not new).</p>
<table><tr><th>indicator</th><th>hits</th><th>hit rate</th><th>on illicit</th><th>on licit</th></tr>{ind_rows}</table>
<h2>Timings</h2><table><tr><th>stage</th><th>seconds</th></tr>{timing_rows}
<tr><th>total</th><th class="num">{total_s:.1f}</th></tr></table>
</body></html>"""
    res.report.write_text(page, encoding="utf-8")
    return res.report


_TIMING_NAMES = {
    "generate": "generate the day's arrivals",
    "validate_store_score_plan": "validate, store, score and plan",
    "indicators": "evaluate the indicator packs",
    "render_scans": "render the scans of the scan lane",
    "triage_fuse_replan": "triage, fuse and re-plan",
    "report": "write the report",
}


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else str(v)


def _goods(r: dict[str, Any]) -> str:
    """What an officer reads about the cargo: goods text, HS code and origin."""
    parts = [_text(r.get("goods_description"))]
    if _text(r.get("hs_code")):
        parts.append(f"HS {_text(r.get('hs_code'))}")
    if _text(r.get("origin_country")):
        parts.append(f"from {_text(r.get('origin_country'))}")
    return " · ".join(p for p in parts if p)


def _reason_list(why: Any) -> str:
    items = [p for p in _text(why).split(" | ") if p]
    return '<ul class="why">' + "".join(f"<li>{html.escape(p)}</li>" for p in items) + "</ul>" if items else ""


def _href(path: Path, base: Path) -> str:
    """A link from the report to ``path``: relative when it lies under the report's folder."""
    p, b = path.resolve(), base.resolve()
    return p.relative_to(b).as_posix() if p.is_relative_to(b) else p.as_uri()
