"""Inspection outcomes as labels: hit rates, retraining from the store, and the feedback loop.

Every physical inspection ends with an outcome (``seizure`` or ``nothing_found``) recorded in the
:class:`~riskengine.store.Store`. Those outcomes are the only labels a port ever gets, and they
are biased: the model chose most of the containers it now learns from. This module closes the
loop and keeps the bias in view:

* :func:`hit_rate_summary` turns :meth:`Store.hit_rates` into the numbers an analyst asks for:
  the hit rate of the **random** exploration picks (an unbiased estimate of how often a container
  carries something), the hit rate of the **targeted** inspections, and their ratio, the **lift**,
  each with a 95% interval.
* :func:`retrain_from_store` trains a new :class:`~riskengine.model.RiskModel` from the store's
  outcomes (only inspected containers are labelled; the other manifests feed the entity profiles)
  and writes it with a ``retrain.json`` record of what it learned from.
* :func:`simulate_feedback_loop` runs the loop on generated traffic with drifting smugglers: score a
  week, inspect within a capacity, learn only what the inspections reveal, retrain, repeat; once
  with pure exploitation and once with an exploration share of random inspections, on identical
  traffic. ``docs/outcomes_loop.md`` reports what it shows.

Example
-------
>>> from riskengine.store import Store
>>> store = Store("sqlite:///riskengine.db")                               # doctest: +SKIP
>>> hit_rate_summary(store.hit_rates())["lift"]                              # doctest: +SKIP
{'lift': 9.1, 'ci_low': 5.2, 'ci_high': 15.8}
>>> retrain_from_store(store, "models/manifest-2026-05").summary["labelled"]  # doctest: +SKIP
4210
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskengine import metrics
from riskengine.model import MIN_LABELLED, MIN_POSITIVES, RiskModel
from riskengine.queue import QueueConfig, assign_lanes
from riskengine.store import Store, wilson_interval

log = logging.getLogger(__name__)

__all__ = [
    "RetrainResult",
    "SIMULATION_MODEL_PARAMS",
    "SIMULATION_COLUMNS",
    "hit_rate_summary",
    "lift_interval",
    "open_store",
    "plot_feedback_loop",
    "retrain_from_store",
    "simulate_feedback_loop",
    "combine_runs",
    "simulation_record",
    "summarize_simulation",
]

RETRAIN_FILE = "retrain.json"
SIMULATION_START = "2026-01-05"  # a Monday, so simulated weeks run Monday to Sunday
_Z95 = 1.959963984540054

# Small, fast LightGBM settings for the weekly retrains of the simulation (a few seconds each on
# a 2-core machine); the production defaults of RiskModel train far longer.
SIMULATION_MODEL_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "learning_rate": 0.1,
    "num_leaves": 15,
    "min_child_samples": 20,
    "early_stopping_rounds": 20,
}

#: Columns of :func:`simulate_feedback_loop`'s result, in order.
SIMULATION_COLUMNS: tuple[str, ...] = (
    "seed", "policy", "exploration_share", "week", "week_start", "rows", "illicit", "inspections",
    "targeted", "random", "seizures", "targeted_seizures", "random_seizures", "precision",
    "random_hit_rate", "hit_rate", "recall", "auc", "precision_at_capacity", "labels",
    "labels_positive", "fit_seconds",
)

FROZEN_POLICY = "frozen week-0 model"

# Columns only a simulation knows (the truth about uninspected containers): never shown to a model.
_GROUND_TRUTH_ONLY = ("modus_operandi", "concealment_location", "amount_kg")


# --------------------------------------------------------------------------------------------
# Hit rates
# --------------------------------------------------------------------------------------------

def _rate(seizures: int, inspections: int) -> dict[str, Any]:
    lo, hi = wilson_interval(np.array([seizures]), np.array([inspections]))
    return {
        "inspections": int(inspections),
        "seizures": int(seizures),
        "hit_rate": float(seizures / inspections) if inspections else None,
        "ci_low": float(lo[0]) if inspections else None,
        "ci_high": float(hi[0]) if inspections else None,
    }


def lift_interval(targeted_hits: int, targeted_n: int, random_hits: int, random_n: int,
                  z: float = _Z95) -> tuple[float | None, float | None, float | None]:
    """Lift (targeted hit rate / random hit rate) with a Katz log interval (95% by default).

    Returns ``(lift, low, high)``; ``None`` where undefined (no random seizure, or an empty sample).
    The interval also needs at least one targeted seizure.

    >>> tuple(round(x, 3) for x in lift_interval(30, 100, 2, 100))
    (15.0, 3.683, 61.088)
    """
    if targeted_n <= 0 or random_n <= 0 or random_hits <= 0:
        return None, None, None
    ratio = (targeted_hits / targeted_n) / (random_hits / random_n)
    if targeted_hits <= 0:
        return float(ratio), None, None
    se = np.sqrt(1 / targeted_hits - 1 / targeted_n + 1 / random_hits - 1 / random_n)
    return float(ratio), float(ratio * np.exp(-z * se)), float(ratio * np.exp(z * se))


def hit_rate_summary(hit_rates: pd.DataFrame) -> dict[str, Any]:
    """Random vs targeted hit rates, the prevalence estimate and the lift from :meth:`Store.hit_rates`.

    ``random`` inspections are the exploration picks: their hit rate is an unbiased estimate of
    the share of containers carrying something among the containers they were drawn from.
    Stage-1 random picks (lane ``red``) are drawn from all of a shift's traffic, so their hit rate
    estimates the **prevalence**; stage-2 random picks (lane ``inspect``) are drawn from the
    scanned containers only. ``prevalence`` uses the stage-1 random picks when there are any and
    says so in ``prevalence_basis``; otherwise it falls back to every random pick and says that.
    ``lift`` = targeted hit rate / random hit rate (all random picks), with a Katz interval.

    Returns a JSON-ready dict: ``outcomes``, ``random``, ``targeted``, ``other``, ``prevalence``,
    ``prevalence_basis``, ``lift`` (``{"lift", "ci_low", "ci_high"}``).
    """
    need = ["lane", "selection_kind", "inspections", "seizures"]
    missing = [c for c in need if c not in hit_rates.columns]
    if missing:
        raise ValueError(f"hit_rate_summary needs the frame of Store.hit_rates() with columns {need}; "
                         f"missing {missing}")
    tot = hit_rates[hit_rates["lane"] == "all"].set_index("selection_kind")

    def kind(name: str) -> dict[str, Any]:
        if name in tot.index:
            return _rate(int(tot.at[name, "seizures"]), int(tot.at[name, "inspections"]))
        return _rate(0, 0)

    random, targeted, other = kind("random"), kind("targeted"), kind("other")
    red = hit_rates[(hit_rates["lane"] == "red") & (hit_rates["selection_kind"] == "random")]
    if len(red) and int(red["inspections"].sum()) > 0:
        prevalence = _rate(int(red["seizures"].sum()), int(red["inspections"].sum()))
        basis = "stage-1 random picks (red lane): drawn uniformly from all traffic of their shift"
    elif random["inspections"]:
        prevalence = dict(random)
        basis = ("all random picks; none was a stage-1 (red lane) pick, so post-scan picks, drawn from "
                 "scanned containers only, are included and the estimate may run high")
    else:
        prevalence = _rate(0, 0)
        basis = "no random picks recorded: the prevalence cannot be estimated without selection bias"
    lift, lo, hi = lift_interval(targeted["seizures"], targeted["inspections"],
                                 random["seizures"], random["inspections"])
    return {
        "outcomes": int(random["inspections"] + targeted["inspections"] + other["inspections"]),
        "random": random,
        "targeted": targeted,
        "other": other,
        "prevalence": prevalence,
        "prevalence_basis": basis,
        "lift": {"lift": lift, "ci_low": lo, "ci_high": hi,
                 "not_estimable": None if lift is not None else _lift_missing(random, targeted)},
    }


def _lift_missing(random: dict[str, Any], targeted: dict[str, Any]) -> str:
    """What the lift still needs, in words (the ratio needs both rates and a random seizure)."""
    needs = []
    if not targeted["inspections"]:
        needs.append("targeted inspections (mandatory or by risk)")
    if not random["inspections"]:
        needs.append("random inspections")
    elif not random["seizures"]:
        needs.append(f"a seizure among the random picks ({random['inspections']:,} inspected, none found)")
    return "needs " + " and ".join(needs)


# --------------------------------------------------------------------------------------------
# Retraining from the store
# --------------------------------------------------------------------------------------------

def open_store(url: str) -> Store:
    """Open an existing store; a missing SQLite file or a database without tables is an error.

    (``Store(url)`` itself creates what is missing, which is right for the service but would
    hide a mistyped path behind an empty result here.)
    """
    import sqlalchemy as sa

    try:
        u = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        u = None  # Store() below explains what a valid URL looks like
    if u is not None and u.get_backend_name() == "sqlite":
        database = u.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise ValueError(f"{url!r} is an in-memory database, which holds no outcomes; "
                             "pass the store's file, e.g. sqlite:///riskengine.db")
        if not Path(database).expanduser().is_file():
            raise FileNotFoundError(
                f"no database file at {database} (from {url!r}); pass the URL the service uses, "
                "e.g. --db sqlite:///riskengine.db")
    store = Store(url, create=False)
    shown = store.url.render_as_string(hide_password=True)
    try:
        present = set(sa.inspect(store.engine).get_table_names())
    except sa.exc.OperationalError as exc:
        store.close()
        raise ValueError(f"cannot open the database {shown}: {exc.orig}") from exc
    if not {"manifests", "decisions", "outcomes"} <= present:
        store.close()
        raise ValueError(
            f"{shown} is not a risk engine store: tables manifests, decisions and outcomes "
            f"expected, found {sorted(present) or 'none'}")
    return store


@dataclass
class RetrainResult:
    """What :func:`retrain_from_store` trained and wrote."""

    model: RiskModel
    path: Path
    summary: dict[str, Any] = field(default_factory=dict)


def _check_trainable(frame: pd.DataFrame, url: str) -> None:
    lab = frame["inspected"].to_numpy() > 0
    n_lab = int(lab.sum())
    n_pos = int(frame.loc[lab, "is_illicit"].sum())
    if n_lab < MIN_LABELLED or n_pos < MIN_POSITIVES or n_pos == n_lab:
        raise ValueError(
            f"too few outcomes to retrain: the store {url} holds {n_lab} inspected container(s) with "
            f"{n_pos} seizure(s) and {n_lab - n_pos} 'nothing_found'; retraining needs at least "
            f"{MIN_LABELLED} outcomes with at least {MIN_POSITIVES} seizures and at least one "
            "'nothing_found'. Record more outcomes (POST /api/outcomes or Store.record_outcome) "
            "and retrain later."
        )


def _new_model(base: RiskModel | None, seed: int | None, n_jobs: int | None) -> RiskModel:
    if base is None:
        return RiskModel(seed=7 if seed is None else seed, **({} if n_jobs is None else {"n_jobs": n_jobs}))
    mapping = base.features_.mapping_
    if mapping.kind != "native":
        raise ValueError(
            f"the base model was trained on the '{mapping.name}' schema ({mapping.kind}); the store "
            "holds native manifests. Pass a base model trained on native manifests or none.")
    params = {k: v for k, v in base.get_params().items() if k not in ("mapping", "indicator_packs")}
    if seed is not None:
        params["seed"] = seed
    if n_jobs is not None:
        params["n_jobs"] = n_jobs
    return RiskModel(mapping=mapping, indicator_packs=base.features_.indicator_packs, **params)


def _compare(base: RiskModel, new: RiskModel, frame: pd.DataFrame) -> dict[str, Any]:
    """Both models on the newest labelled rows (the new model's calibration slice)."""
    cal = new.training_["slices"]["calibration"]
    if not cal.get("start"):
        return {"skipped": "the new model has no calibration slice"}
    day = pd.to_datetime(frame["filed_at"]).dt.normalize()
    rows = frame[(frame["inspected"] > 0) & (day >= pd.Timestamp(cal["start"]))
                 & (day <= pd.Timestamp(cal["end"]))]
    pos = int(rows["is_illicit"].sum())
    if pos == 0 or pos == len(rows):
        return {"skipped": f"the newest {len(rows)} outcomes hold {pos} seizure(s): both classes are needed"}
    out: dict[str, Any] = {"rows": int(len(rows)), "positives": pos, "from": cal["start"], "to": cal["end"],
                           "note": "outcomes the new trees never saw (the new model's calibration slice)"}
    for name, model in (("base", base), ("new", new)):
        ev = model.evaluate(rows)
        keep = ("roc_auc", "pr_auc", "precision_at_5", "precision_at_10", "brier")
        out[name] = {k: ev["metrics"][k] for k in keep if k in ev["metrics"]}
        if name == "base":
            out["base_rows_inside_its_training_window"] = ev["inside_training_window"]
    return out


def retrain_from_store(
    store: Store,
    out: str | Path,
    *,
    base_model: str | Path | None = None,
    seed: int | None = None,
    include_uninspected: bool = True,
    n_jobs: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> RetrainResult:
    """Train a manifest risk model from the store's recorded outcomes and write it to ``out``.

    Only inspected containers are labelled (``is_illicit`` = 1 for a seizure); with
    ``include_uninspected`` (the default) every other stored manifest comes too, unlabelled, so
    that entity profiles count all traffic as they do when the model scores. ``base_model``
    (a model directory) gives the parameters, the schema mapping and the indicator packs, and is
    compared with the new model on the newest outcomes. ``seed`` defaults to the base model's
    (else 7).

    Writes the model directory (see :meth:`RiskModel.save`) plus ``retrain.json``: outcome
    counts, random vs targeted hit rates with Wilson intervals, the prevalence estimate, the
    lift, the holdout metrics and the comparison. Raises ``ValueError`` when the store holds too
    few outcomes to train on (fewer than 50, fewer than 5 seizures, or no 'nothing_found').
    """
    say = progress or (lambda msg: log.info("%s", msg))
    t0 = time.perf_counter()
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a directory; give a folder for the model.")
    url = store.url.render_as_string(hide_password=True)
    say("reading outcomes")
    rates = store.hit_rates()
    summary_rates = hit_rate_summary(rates)
    frame = store.training_frame(include_uninspected=include_uninspected)
    _check_trainable(frame, url)
    base = RiskModel.load(base_model) if base_model is not None else None
    model = _new_model(base, seed, n_jobs)
    # The store's bookkeeping columns are not manifest content; the model must not see them.
    train = frame.drop(columns=["content_hash", "revision", "ingested_at", "updated_at", "port", "shift"],
                       errors="ignore")
    model.fit(train, progress=say)
    comparison = _compare(base, model, train) if base is not None else None
    hold = model.metrics_.get("holdout", {})
    t = model.training_
    summary: dict[str, Any] = {
        "model": str(out_dir),
        "store": url,
        "base_model": str(base_model) if base_model is not None else None,
        "manifests": int(len(frame)),
        "labelled": int(t["labelled"]),
        "positives": int(t["positives"]),
        "random_labels": int(((frame["inspected"] > 0) & (frame["selection"] == "random")).sum()),
        "start": t["start"],
        "end": t["end"],
        "hit_rates": summary_rates,
        "calibration": {k: v for k, v in model.calibrator_.to_dict().items()
                        if k not in ("x", "y") and v is not None},
        "holdout": {k: hold[k] for k in ("rows", "positives", "precision_at_1", "precision_at_5", "roc_auc",
                                         "pr_auc", "brier") if k in hold},
        "comparison": comparison,
        "seconds": None,
    }
    say("writing the model directory")
    model.save(out_dir, card=model.model_card() + _card_section(summary))
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out_dir / RETRAIN_FILE).write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    log.info("retrained from %s: %d labelled, %d positive -> %s", url, t["labelled"], t["positives"], out_dir)
    return RetrainResult(model=model, path=out_dir, summary=summary)


def _fmt_rate(r: Mapping[str, Any]) -> str:
    if not r.get("inspections"):
        return "none recorded"
    return (f"{r['hit_rate']:.2%} ({r['seizures']:,} of {r['inspections']:,}; "
            f"95% CI {r['ci_low']:.2%} to {r['ci_high']:.2%})")


def _card_section(summary: Mapping[str, Any]) -> str:
    h = summary["hit_rates"]
    lift = h["lift"]
    lift_text = (f"not estimable ({lift.get('not_estimable') or 'no random seizure yet'})" if lift["lift"] is None else
                 f"{lift['lift']:.1f}" + (f" (95% CI {lift['ci_low']:.1f} to {lift['ci_high']:.1f})"
                                          if lift["ci_low"] is not None else ""))
    lines = [
        "",
        "## Retrained from recorded outcomes",
        "",
        f"- Store: `{summary['store']}`; {summary['manifests']:,} manifests, {summary['labelled']:,} with an "
        f"outcome ({summary['positives']:,} seizures, {summary['random_labels']:,} random picks).",
        f"- Random picks (unbiased): {_fmt_rate(h['random'])}.",
        f"- Targeted inspections: {_fmt_rate(h['targeted'])}.",
        f"- Prevalence estimate: {_fmt_rate(h['prevalence'])} — {h['prevalence_basis']}.",
        f"- Lift of targeting over random: {lift_text}.",
    ]
    cmp_ = summary.get("comparison")
    if cmp_ and "skipped" not in cmp_:
        lines.append(f"- Base model `{summary['base_model']}` vs this model on the newest {cmp_['rows']:,} "
                     f"outcomes: ROC-AUC {cmp_['base'].get('roc_auc', float('nan')):.3f} vs "
                     f"{cmp_['new'].get('roc_auc', float('nan')):.3f}.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The feedback-loop simulation
# --------------------------------------------------------------------------------------------

def _check_simulation_args(weeks: int, rows_per_week: int, exploration_share: float, drift: float,
                           capacity: float, history_weeks: int, window_weeks: int | None) -> None:
    def whole(name: str, v: Any, lo: int) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be a whole number >= {lo}, got {v!r}")

    whole("weeks", weeks, 1)
    whole("rows_per_week", rows_per_week, 500)
    whole("history_weeks", history_weeks, 2)
    if window_weeks is not None:
        whole("window_weeks", window_weeks, 2)
    if not 0.0 < exploration_share < 1.0:
        raise ValueError(f"exploration_share must be in (0, 1) (share 0, pure exploitation, is the "
                         f"baseline run beside it), got {exploration_share!r}")
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be between 0 and 1, got {drift!r}")
    if not 0.0 < capacity <= 0.5:
        raise ValueError(f"capacity is the share of a day's containers that can be inspected, in (0, 0.5]; "
                         f"got {capacity!r}")
    per_day = capacity * rows_per_week / 7
    if per_day < 1:
        raise ValueError(f"capacity {capacity} of {rows_per_week} rows a week allows {per_day:.2f} inspections a "
                         "day; raise rows_per_week or capacity so that at least one inspection a day fits")


def _policy_name(share: float) -> str:
    return "exploitation" if share == 0 else f"exploration {share:.0%}"


def simulate_feedback_loop(
    weeks: int = 12,
    rows_per_week: int = 6_000,
    exploration_share: float = 0.10,
    drift: float = 1.0,
    seed: int = 0,
    *,
    capacity: float = 0.03,
    history_weeks: int = 6,
    illicit_rate: float = 0.01,
    port: str = "NLRTM",
    window_weeks: int | None = 6,
    baseline: bool = True,
    frozen: bool = True,
    model_params: Mapping[str, Any] | None = None,
    n_jobs: int = 2,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Run the inspect → learn → retrain loop on generated traffic, with and without exploration.

    One generation of ``history_weeks + weeks`` weeks (``rows_per_week`` containers a week,
    smugglers drifting by ``drift`` over the whole period) is cut into weeks, so every policy sees
    identical traffic. The history is week 0: its labels are the generator's historical
    inspections (2% random, 4% targeted by a static rule) and the first model is trained on it.
    Then, for each simulated week 1..``weeks`` and each policy:

    1. the current model scores the week's arrivals (profiles as of each row's day);
    2. :func:`riskengine.queue.assign_lanes` picks, per arrival day, ``capacity`` × the day's
       traffic for physical inspection: the exploration share at random, the rest by risk;
    3. only the inspected containers' outcomes are revealed and join the training labels;
    4. the model is retrained on the rows of the last ``window_weeks`` weeks (``None``: all rows
       so far), history included while it is inside the window.

    Policies: ``exploration_share``; with ``baseline`` (default) also 0 (pure exploitation); with
    ``frozen`` (default) also the week-0 model kept unchanged, inspecting by risk only (a reference
    that shows what the drift does to a model that never learns again).
    ``model_params`` override :data:`SIMULATION_MODEL_PARAMS` (small, fast LightGBM settings).

    Returns one row per (policy, week) with :data:`SIMULATION_COLUMNS`: ``precision`` is the hit
    rate of the targeted (risk-ranked) inspections, ``random_hit_rate`` that of the random ones,
    ``hit_rate`` that of all inspections, ``recall`` the share of the week's illicit containers
    found, ``auc`` the ROC-AUC of the model on *all* the week's traffic (the simulation knows the
    truth), ``precision_at_capacity`` the share of illicit containers among the week's
    ``capacity`` highest scores (the model's quality whatever share is spent on exploration),
    ``labels``/``labels_positive`` the labelled rows (and seizures) known after the week.
    ``result.attrs["settings"]`` holds the arguments. Same arguments, same result.
    """
    from riskengine.synth import generate_manifests

    _check_simulation_args(weeks, rows_per_week, exploration_share, drift, capacity, history_weeks,
                           window_weeks)
    say = progress or (lambda msg: log.info("%s", msg))
    params = {**SIMULATION_MODEL_PARAMS, **dict(model_params or {})}
    bad = sorted(set(params) - set(RiskModel().get_params()))
    if bad:
        raise ValueError(f"unknown model parameter(s) {bad}; valid: {sorted(RiskModel().get_params())}")
    params.setdefault("seed", seed)
    params["n_jobs"] = n_jobs

    total_weeks = history_weeks + weeks
    say(f"generating {rows_per_week * total_weeks:,} manifests over {total_weeks} weeks (drift {drift})")
    traffic = generate_manifests(rows_per_week * total_weeks, seed=seed, start=SIMULATION_START,
                                 days=7 * total_weeks, port=port, illicit_rate=illicit_rate, drift=drift)
    traffic = traffic.reset_index(drop=True)
    day = (traffic["arrival_date"] - pd.Timestamp(SIMULATION_START)).dt.days.to_numpy()
    week = day // 7 - history_weeks + 1            # history: <= 0, simulated weeks: 1..weeks
    truth = traffic["is_illicit"].to_numpy(dtype=np.int8)
    base = traffic.drop(columns=[c for c in _GROUND_TRUTH_ONLY if c in traffic.columns])
    hist = week <= 0
    hist_inspected = np.where(hist, traffic["inspected"].to_numpy(dtype=np.int8), 0).astype(np.int8)
    hist_selection = np.where(hist_inspected > 0, traffic["selection"].astype(str).to_numpy(), "none")
    hist_outcome = traffic["outcome_at"].where(hist_inspected > 0)
    queue_frame = pd.DataFrame({
        "manifest_id": traffic["manifest_id"].astype(str),
        "port": traffic["port_of_discharge"].astype(str),
        "terminal": "",
        "shift": traffic["arrival_date"].dt.strftime("%Y-%m-%d"),
    })
    per_day = max(1, int(round(capacity * rows_per_week / 7)))

    def training_rows(mask: np.ndarray, inspected: np.ndarray, selection: np.ndarray,
                      outcome_at: pd.Series) -> pd.DataFrame:
        return base.loc[mask].assign(
            inspected=inspected[mask],
            is_illicit=(truth[mask] * inspected[mask]).astype(np.int8),
            selection=selection[mask],
            outcome_at=outcome_at[mask],
        )

    def train_mask(upto: int) -> np.ndarray:
        m = week <= upto
        if window_weeks is not None:
            m &= week > upto - window_weeks
        return m

    say(f"week 0: training on {int(hist.sum()):,} history rows ({int(hist_inspected.sum()):,} labelled)")
    t = time.perf_counter()
    first = RiskModel(**params).fit(training_rows(hist, hist_inspected, hist_selection, hist_outcome))
    first_seconds = time.perf_counter() - t

    # (policy name, exploration share, retrain weekly)
    policies = ([(FROZEN_POLICY, 0.0, False)] if frozen else []) + \
        ([(_policy_name(0.0), 0.0, True)] if baseline else []) + \
        [(_policy_name(exploration_share), float(exploration_share), True)]
    records: list[dict[str, Any]] = []
    for name, share, learns in policies:
        config = QueueConfig(scan_capacity=0, inspection_capacity=per_day, exploration_share=share,
                             red_share=1.0, hold_threshold=1.0, red_threshold=0.0, seed=seed)
        inspected = hist_inspected.copy()
        selection = hist_selection.copy()
        outcome_at = hist_outcome.copy()
        model = copy.deepcopy(first)
        fit_seconds = first_seconds
        for w in range(1, weeks + 1):
            now = week == w
            rows_w = base.loc[now]
            prepared, rejects = model.prepare(rows_w)
            if len(rejects):
                raise ValueError(f"{len(rejects)} generated row(s) of week {w} failed validation, e.g. "
                                 f"{rejects['reject_reason'].iloc[0]!r}")
            # The week's declarations join the profile history (no outcomes yet), so each row is
            # scored as of its own day, as the service scores arrivals day by day.
            model.features_.update(prepared)
            p = model.predict_features(model.transform(prepared))
            score = pd.Series(p, index=prepared["manifest_id"].astype(str).to_numpy())
            q = queue_frame.loc[now].assign(risk_score=score.reindex(queue_frame.loc[now, "manifest_id"]).to_numpy())
            lanes = assign_lanes(q, config)
            chosen = (lanes["lane"] == "red").to_numpy()
            rand = chosen & (lanes["selection"] == "random").to_numpy()
            idx = np.flatnonzero(now)
            y = truth[idx]
            inspected[idx[chosen]] = 1
            selection[idx[chosen]] = np.where(rand[chosen], "random", "targeted")
            outcome_at.iloc[idx[chosen]] = (traffic["arrival_date"].iloc[idx[chosen]] + pd.Timedelta(days=2)).to_numpy()
            targ = chosen & ~rand
            s_all = lanes["risk_score"].to_numpy(dtype=float)
            n_t, n_r = int(targ.sum()), int(rand.sum())
            hits_t, hits_r = int(y[targ].sum()), int(y[rand].sum())
            rec: dict[str, Any] = {
                "seed": seed, "policy": name, "exploration_share": share, "week": w,
                "week_start": (pd.Timestamp(SIMULATION_START) + pd.Timedelta(days=7 * (history_weeks + w - 1))).date().isoformat(),
                "rows": int(len(idx)), "illicit": int(y.sum()), "inspections": int(chosen.sum()),
                "targeted": n_t, "random": n_r, "seizures": hits_t + hits_r,
                "targeted_seizures": hits_t, "random_seizures": hits_r,
                "precision": hits_t / n_t if n_t else np.nan,
                "random_hit_rate": hits_r / n_r if n_r else np.nan,
                "hit_rate": (hits_t + hits_r) / chosen.sum() if chosen.any() else np.nan,
                "recall": (hits_t + hits_r) / y.sum() if y.sum() else np.nan,
                "auc": metrics.roc_auc(y, s_all) if 0 < y.sum() < len(y) else np.nan,
                "precision_at_capacity": metrics.precision_at_k(y, s_all, 100 * capacity),
                "labels": int(inspected[week <= w].sum()),
                "labels_positive": int((inspected * truth)[week <= w].sum()),
                "fit_seconds": round(fit_seconds, 2) if (learns or w == 1) else 0.0,
            }
            records.append(rec)
            say(f"{name}: week {w}/{weeks}: precision {rec['precision']:.3f}, AUC {rec['auc']:.3f}, "
                f"{rec['seizures']} seizures of {rec['illicit']}")
            if w < weeks and learns:
                t = time.perf_counter()
                m = train_mask(w)
                model = RiskModel(**params).fit(training_rows(m, inspected, selection, outcome_at))
                fit_seconds = time.perf_counter() - t
    result = pd.DataFrame.from_records(records, columns=list(SIMULATION_COLUMNS))
    result.attrs["settings"] = {
        "weeks": weeks, "rows_per_week": rows_per_week, "exploration_share": exploration_share,
        "drift": drift, "seed": seed, "capacity": capacity, "inspections_per_day": per_day,
        "history_weeks": history_weeks, "illicit_rate": illicit_rate, "port": port,
        "window_weeks": window_weeks, "baseline": baseline, "frozen": frozen, "model_params": params,
        "start": SIMULATION_START,
    }
    return result


def summarize_simulation(result: pd.DataFrame, *, last_weeks: int = 4) -> pd.DataFrame:
    """Per policy (pooled over seeds): totals and rates over all weeks and over the last ``last_weeks``.

    Precision, hit rate and recall over a period are pooled (seizures / inspections), not averaged
    over weeks; ``auc`` and ``precision_at_capacity`` are means of the weekly values. ``seeds`` is
    the number of simulations pooled.
    """
    _check_result(result)
    if last_weeks < 1:
        raise ValueError(f"last_weeks must be >= 1, got {last_weeks}")
    last = result["week"] > result["week"].max() - last_weeks
    keys = ["policy", "exploration_share"]

    def pooled(df: pd.DataFrame, suffix: str) -> pd.DataFrame:
        g = df.groupby(keys, sort=False)
        s = g[["inspections", "targeted", "seizures", "targeted_seizures", "illicit"]].sum()
        return pd.DataFrame({
            f"seizures{suffix}": s["seizures"],
            f"precision{suffix}": s["targeted_seizures"] / s["targeted"],
            f"hit_rate{suffix}": s["seizures"] / s["inspections"],
            f"recall{suffix}": s["seizures"] / s["illicit"],
            f"auc{suffix}": g["auc"].mean(),
            f"precision_at_capacity{suffix}": g["precision_at_capacity"].mean(),
        })

    g = result.groupby(keys, sort=False)
    out = pd.DataFrame({"seeds": g["seed"].nunique(), "weeks": g["week"].nunique(),
                        "inspections": g["inspections"].sum(), "random": g["random"].sum(),
                        "random_seizures": g["random_seizures"].sum()})
    out = out.join(pooled(result, "")).join(pooled(result[last], f"_last{last_weeks}"))
    return out.reset_index()


def _check_result(result: pd.DataFrame) -> None:
    missing = [c for c in SIMULATION_COLUMNS if c not in result.columns]
    if missing:
        raise ValueError(f"expected the frame of simulate_feedback_loop; missing columns {missing}")
    if result.empty:
        raise ValueError("the simulation result has no rows")


def plot_feedback_loop(result: pd.DataFrame, path: str | Path, *, title: str | None = None) -> Path:
    """Plot, per policy and week, the targeted hit rate, the precision at capacity and the AUC.

    With several seeds (the frames of several runs concatenated) each weekly point is the mean
    over seeds and the cumulative precision is pooled over seeds.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    _check_result(result)
    out = Path(path)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"plot path must end in .png, .svg or .pdf, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    n_seeds = int(result["seed"].nunique())
    per_week = result.groupby(["policy", "week"], sort=False).agg(
        precision=("precision", "mean"), precision_at_capacity=("precision_at_capacity", "mean"),
        auc=("auc", "mean"), targeted=("targeted", "sum"), targeted_seizures=("targeted_seizures", "sum"),
        inspections=("inspections", "sum"), seizures=("seizures", "sum"), random=("random", "sum"),
    ).reset_index()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), constrained_layout=True)
    mean = ", mean of seeds" if n_seeds > 1 else ""
    for i, (name, g) in enumerate(per_week.groupby("policy", sort=False)):
        c = "0.45" if name == FROZEN_POLICY else f"C{i}"
        ls = "--" if name == FROZEN_POLICY else "-"
        g = g.sort_values("week")
        axes[0].plot(g["week"], g["precision"], "o", color=c, ms=4, alpha=0.55)
        cum = g["targeted_seizures"].cumsum() / g["targeted"].cumsum()
        axes[0].plot(g["week"], cum, ls, color=c, lw=2.2, label=f"{name}: targeted")
        if g["random"].sum() > 0:
            every = g["seizures"].cumsum() / g["inspections"].cumsum()
            axes[0].plot(g["week"], every, ":", color=c, lw=1.8, label=f"{name}: all, random included")
        axes[1].plot(g["week"], g["precision_at_capacity"], "o" + ls, color=c, lw=1.5, ms=4, label=name)
        axes[2].plot(g["week"], g["auc"], "o" + ls, color=c, lw=1.5, ms=4, label=name)
    axes[0].set_title("Hit rate of the inspections\n(dots: targeted, weekly" + mean + "; lines: cumulative)")
    axes[0].set_ylabel("seizures / inspections")
    cap = result.attrs.get("settings", {}).get("capacity")
    top = f"top {cap:.0%}" if cap else "top-scored containers"
    axes[1].set_title(f"Model precision at capacity\n({top} of all traffic{mean})")
    axes[1].set_ylabel("illicit share of the top-scored containers")
    axes[2].set_title("Model ROC-AUC\n(all of the week's traffic" + mean + ")")
    axes[2].set_ylabel("ROC-AUC")
    for ax in axes:
        ax.set_xlabel("simulated week")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    s = result.attrs.get("settings")
    if title is None and s:
        seeds = sorted(result["seed"].unique().tolist())
        title = (f"Inspection feedback loop, drift {s['drift']}: {s['rows_per_week']:,} containers/week, "
                 f"{s['illicit_rate']:.0%} illicit, capacity {s['capacity']:.0%} ({s['inspections_per_day']}/day), "
                 f"{s['history_weeks']} history weeks, retrain window {s['window_weeks']} weeks, "
                 f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def combine_runs(runs: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate the results of several seeds; the settings (seeds listed) travel in ``attrs``."""
    if not runs:
        raise ValueError("no simulation results to combine")
    for r in runs:
        _check_result(r)
    out = pd.concat(runs, ignore_index=True)
    settings = dict(runs[0].attrs.get("settings", {}))
    settings.pop("seed", None)
    settings["seeds"] = [int(r["seed"].iloc[0]) for r in runs]
    params = dict(settings.get("model_params", {}))
    model_seeds = {r.attrs.get("settings", {}).get("model_params", {}).get("seed") for r in runs}
    if len(model_seeds) > 1:
        # Each run trains with its own seed (by default the simulation seed).
        params["seed"] = sorted(model_seeds, key=str)
    settings["model_params"] = params
    out.attrs["settings"] = settings | {"seed": settings["seeds"][0] if len(runs) == 1 else None}
    return out


def simulation_record(result: pd.DataFrame) -> dict[str, Any]:
    """A JSON-ready record of a simulation: settings, per-policy summary, per-seed summary, weekly rows."""
    _check_result(result)
    last = min(4, int(result["week"].max()))

    def clean(df: pd.DataFrame) -> list[dict[str, Any]]:
        return json.loads(df.to_json(orient="records", double_precision=6))

    per_seed = pd.concat([summarize_simulation(g, last_weeks=last).assign(seed=sd)
                          for sd, g in result.groupby("seed", sort=True)], ignore_index=True)
    return {"settings": result.attrs.get("settings", {}), "summary": clean(summarize_simulation(result, last_weeks=last)),
            "per_seed": clean(per_seed), "weeks": clean(result)}
