"""`riskengine retrain` and `riskengine outcomes report|simulate`: inspection outcomes as labels.

    riskengine outcomes report --db sqlite:///riskengine.db
    riskengine retrain --db sqlite:///riskengine.db --out models/manifest-next --base-model models/manifest
    riskengine outcomes simulate --weeks 12 --exploration 0.1 --plot docs/figures/exploration_drift.png
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import pandas as pd
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from riskengine.cli import main
from riskengine.cli._common import ExitOnError, console, err_console, print_json

_DB_HELP = ("Store URL: sqlite:///riskengine.db or postgresql+psycopg://user:pass@host/db "
            "(env RISKENGINE_DB_URL).")


def _pct(x: Any) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.2%}"


def _rate_text(r: Mapping[str, Any]) -> str:
    if not r.get("inspections"):
        return "none recorded"
    return (f"{r['hit_rate']:.2%}  ({r['seizures']:,} of {r['inspections']:,}; "
            f"95% CI {r['ci_low']:.2%} – {r['ci_high']:.2%})")


def _lift_text(lift: Mapping[str, Any]) -> str:
    if lift.get("lift") is None:
        return f"not estimable ({lift.get('not_estimable') or 'needs a random seizure'})"
    text = f"{lift['lift']:.1f}×"
    if lift.get("ci_low") is not None:
        text += f"  (95% CI {lift['ci_low']:.1f} – {lift['ci_high']:.1f})"
    return text


def _summary_table(summary: Mapping[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("random picks (unbiased)", _rate_text(summary["random"]))
    table.add_row("targeted inspections", _rate_text(summary["targeted"]))
    if summary["other"]["inspections"]:
        table.add_row("outside the plan", _rate_text(summary["other"]))
    table.add_row("prevalence estimate", _rate_text(summary["prevalence"]))
    table.add_row("", summary["prevalence_basis"])
    table.add_row("lift (targeted / random)", _lift_text(summary["lift"]))
    return table


class _OncePerMessage(logging.Filter):
    """Lets the first record of each message template through and counts the repeats."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, str]] = set()
        self.held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        if key in self.seen:
            self.held += 1
            return False
        self.seen.add(key)
        return True


@contextmanager
def _each_warning_once() -> Iterator[_OncePerMessage]:
    """A simulation retrains dozens of times on similar data, so the same warnings (invalid IMO
    check digits kept, too few random positives to shift the calibration) recur every week: show
    each once, then say how many repeats were held back."""
    once = _OncePerMessage()
    handlers = list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(once)
    try:
        yield once
    finally:
        for h in handlers:
            h.removeFilter(once)
        if once.held:
            err_console.print(f"({once.held} repeated log message(s) held back)", highlight=False)


def _policy_table(rows: list[dict[str, Any]], title: str, *, with_seed: bool = False) -> Table:
    last = next((k.split("_last")[1] for k in rows[0] if "_last" in k), "")
    table = Table(title=title)
    cols = (["seed"] if with_seed else []) + [
        "policy", "seizures", "precision", "recall", "mean AUC", f"seizures (last {last})",
        f"precision (last {last})", f"mean AUC (last {last})"]
    for col in cols:
        table.add_column(col, justify="left" if col == "policy" else "right")
    for r in rows:
        table.add_row(*([str(r["seed"])] if with_seed else []), r["policy"], f"{r['seizures']:,}",
                      _pct(r["precision"]), _pct(r["recall"]), f"{r['auc']:.3f}", f"{r[f'seizures_last{last}']:,}",
                      _pct(r[f"precision_last{last}"]), f"{r[f'auc_last{last}']:.3f}")
    return table


# --------------------------------------------------------------------------------------------
# retrain
# --------------------------------------------------------------------------------------------

@main.command("retrain")
@click.option("--db", "db_url", required=True, envvar="RISKENGINE_DB_URL", metavar="URL", help=_DB_HELP)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model directory to write.")
@click.option("--base-model", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Current model directory: its parameters, mapping and indicator packs are reused, and it "
                   "is compared with the new model on the newest outcomes.")
@click.option("--seed", type=int, default=None, help="Random seed (default: the base model's, else 7).")
@click.option("--inspected-only", is_flag=True,
              help="Train on the inspected manifests only (default: all stored manifests feed the entity "
                   "profiles; only inspected ones are labelled either way).")
@click.option("--threads", type=click.IntRange(1), default=None, help="LightGBM threads (default: 2).")
@click.option("--json", "json_out", is_flag=True, help="Print the retrain summary as JSON.")
def retrain(db_url: str, out: Path, base_model: Path | None, seed: int | None, inspected_only: bool,
            threads: int | None, json_out: bool) -> None:
    """Retrain the manifest risk model from the inspection outcomes recorded in the store.

    Only inspected containers are labelled (a seizure is a positive). The random exploration picks
    give the unbiased hit rate (the prevalence) and the lift of targeting over random, each with a
    95% interval; both are printed and written to OUT/retrain.json and the model card.

    \b
    riskengine retrain --db sqlite:///riskengine.db --out models/manifest-next
    riskengine retrain --db sqlite:///riskengine.db --out next --base-model models/manifest --json
    """
    from riskengine.outcomes import open_store, retrain_from_store

    store = open_store(db_url)
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                      console=err_console, transient=True, disable=json_out) as bar:
            task = bar.add_task("opening the store", total=None)
            result = retrain_from_store(store, out, base_model=base_model, seed=seed,
                                        include_uninspected=not inspected_only, n_jobs=threads,
                                        progress=lambda msg: bar.update(task, description=msg))
    finally:
        store.close()
    s = result.summary
    if json_out:
        print_json(s)
        return
    table = Table(title=f"Retrained {result.path}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("store", s["store"])
    table.add_row("manifests", f"{s['manifests']:,}")
    table.add_row("outcomes (seizures)", f"{s['labelled']:,} ({s['positives']:,})")
    table.add_row("window", f"{s['start']} .. {s['end']}")
    for k in ("roc_auc", "pr_auc", "precision_at_5", "brier"):
        if k in s["holdout"]:
            table.add_row(f"holdout {k}", f"{s['holdout'][k]:.4f}")
    cmp_ = s.get("comparison")
    if cmp_:
        if "skipped" in cmp_:
            table.add_row("vs base model", f"not compared: {cmp_['skipped']}")
        else:
            table.add_row("vs base model", f"ROC-AUC {cmp_['base'].get('roc_auc', float('nan')):.4f} (base) → "
                          f"{cmp_['new'].get('roc_auc', float('nan')):.4f} (new) on the newest "
                          f"{cmp_['rows']:,} outcomes")
    table.add_row("time", f"{s['seconds']} s")
    console.print(table)
    console.print(_summary_table(s["hit_rates"], "Hit rates of the recorded outcomes"))


# --------------------------------------------------------------------------------------------
# outcomes report / simulate
# --------------------------------------------------------------------------------------------

@main.group("outcomes", cls=ExitOnError)
def outcomes() -> None:
    """Inspection outcomes: hit rates per lane, random vs targeted; the feedback-loop simulation."""


@outcomes.command("report")
@click.option("--db", "db_url", required=True, envvar="RISKENGINE_DB_URL", metavar="URL", help=_DB_HELP)
@click.option("--json", "json_out", is_flag=True, help="Print the hit rates and the summary as JSON.")
def report(db_url: str, json_out: bool) -> None:
    """Hit rates of the recorded inspections per lane, random vs targeted (Wilson 95% intervals).

    \b
    riskengine outcomes report --db sqlite:///riskengine.db
    riskengine outcomes report --db sqlite:///riskengine.db --json
    """
    from riskengine.outcomes import hit_rate_summary, open_store

    store = open_store(db_url)
    try:
        rates = store.hit_rates()
    finally:
        store.close()
    summary = hit_rate_summary(rates)
    if json_out:
        rows = json.loads(rates.to_json(orient="records", double_precision=6))
        print_json({"store": store.url.render_as_string(hide_password=True), "hit_rates": rows,
                    "summary": summary})
        return
    if rates.empty:
        console.print("No inspection outcomes recorded yet: record them with POST /api/outcomes "
                      "(or Store.record_outcome), then run this report again.")
        return
    table = Table(title="Hit rate per lane (seizures / inspections)")
    for col, justify in (("lane", "left"), ("selection", "left"), ("inspections", "right"),
                         ("seizures", "right"), ("hit rate", "right"), ("95% CI", "right")):
        table.add_column(col, justify=justify)
    for r in rates.itertuples(index=False):
        table.add_row(r.lane, r.selection_kind, f"{r.inspections:,}", f"{r.seizures:,}", _pct(r.hit_rate),
                      f"{_pct(r.ci_low)} – {_pct(r.ci_high)}", style="bold" if r.lane == "all" else None)
    console.print(table)
    console.print(_summary_table(summary, "Random vs targeted"))


@outcomes.command("simulate")
@click.option("--weeks", type=click.IntRange(1, 104), default=12, show_default=True,
              help="Simulated weeks after the history.")
@click.option("--rows-per-week", type=click.IntRange(500), default=6_000, show_default=True,
              help="Arriving containers per week.")
@click.option("--exploration", "exploration", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.10, show_default=True,
              help="Share of the inspection capacity picked at random (compared with 0, pure exploitation).")
@click.option("--capacity", type=click.FloatRange(0, 0.5, min_open=True), default=0.03, show_default=True,
              help="Share of each day's containers that can be physically inspected.")
@click.option("--drift", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="How far the smugglers' habits move over the generated period (0: stationary).")
@click.option("--history-weeks", type=click.IntRange(2), default=6, show_default=True,
              help="Weeks of history with the generator's historical inspections (week 0).")
@click.option("--window-weeks", type=click.IntRange(2), default=6, show_default=True,
              help="Each retrain uses the last N weeks of traffic and outcomes.")
@click.option("--illicit-rate", type=click.FloatRange(0, 0.2, min_open=True), default=0.01, show_default=True,
              help="Expected share of containers carrying drugs.")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0,), show_default=True,
              help="Random seed (traffic, model, random picks); repeat to pool several simulations.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True, help="LightGBM threads.")
@click.option("--plot", "plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a figure (.png/.svg/.pdf) of precision, precision at capacity and AUC per week.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write settings, summary and weekly rows as JSON to this file.")
@click.option("--json", "json_out", is_flag=True, help="Print settings, summary and weekly rows as JSON.")
def simulate(weeks: int, rows_per_week: int, exploration: float, capacity: float, drift: float,
             history_weeks: int, window_weeks: int, illicit_rate: float, seeds: tuple[int, ...], threads: int,
             plot: Path | None, out: Path | None, json_out: bool) -> None:
    """Simulate the inspect → learn → retrain loop on drifting generated traffic.

    The same weeks of traffic are run three ways: the week-0 model frozen, weekly retraining with
    pure exploitation (all inspections by risk), and weekly retraining with an exploration share of
    random inspections. Outcomes are revealed only for inspected containers.

    \b
    riskengine outcomes simulate --weeks 12 --exploration 0.1 --plot exploration_drift.png
    riskengine outcomes simulate --weeks 4 --rows-per-week 2000 --json
    """
    from riskengine.outcomes import (
        combine_runs,
        plot_feedback_loop,
        simulate_feedback_loop,
        simulation_record,
    )

    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise click.BadParameter(f"must end in .png, .svg or .pdf, got {plot}", param_hint="--plot")
    with _each_warning_once(), Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                         console=err_console, transient=True, disable=json_out) as bar:
        task = bar.add_task("starting", total=None)
        runs = []
        for i, seed in enumerate(dict.fromkeys(seeds)):
            prefix = f"seed {seed} ({i + 1}/{len(set(seeds))}): " if len(set(seeds)) > 1 else ""
            runs.append(simulate_feedback_loop(
                weeks=weeks, rows_per_week=rows_per_week, exploration_share=exploration, drift=drift, seed=seed,
                capacity=capacity, history_weeks=history_weeks, window_weeks=window_weeks,
                illicit_rate=illicit_rate, n_jobs=threads,
                progress=lambda msg, p=prefix: bar.update(task, description=p + msg)))
    result = combine_runs(runs)
    record = simulation_record(result)
    if plot is not None:
        plot_feedback_loop(result, plot)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    if json_out:
        print_json(record)
        return
    if len(runs) == 1:
        table = Table(title="Feedback loop per week (precision = hit rate of the risk-targeted inspections)")
        for col in ("policy", "week", "illicit", "inspections", "random", "seizures", "precision",
                    "recall", "AUC", "P@capacity"):
            table.add_column(col, justify="left" if col == "policy" else "right")
        for r in result.itertuples(index=False):
            table.add_row(r.policy, str(r.week), str(r.illicit), str(r.inspections), str(r.random),
                          str(r.seizures), _pct(r.precision), _pct(r.recall), f"{r.auc:.3f}",
                          _pct(r.precision_at_capacity))
        console.print(table)
    else:
        console.print(_policy_table(record["per_seed"], "Per seed and policy", with_seed=True))
    console.print(_policy_table(record["summary"], "Per policy, all weeks (pooled) and the last weeks"
                                + (f", {len(runs)} seeds" if len(runs) > 1 else "")))
    for what, path in (("figure", plot), ("results", out)):
        if path is not None:
            console.print(f"{what}: {path}")
