"""Outcomes as labels: hit rates, retraining from the store, the feedback-loop simulation, CLI."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from riskengine.cli import main
from riskengine.model import RiskModel
from riskengine.outcomes import (
    FROZEN_POLICY,
    RETRAIN_FILE,
    SIMULATION_COLUMNS,
    hit_rate_summary,
    lift_interval,
    retrain_from_store,
    simulate_feedback_loop,
    simulation_record,
    summarize_simulation,
)
from riskengine.schema import validate
from riskengine.store import Store
from riskengine.synth import generate_manifests


def _stored(url: str, rows: int, *, seed: int, days: int, illicit_rate: float = 0.01) -> tuple[Store, pd.DataFrame]:
    generated = generate_manifests(rows, seed=seed, days=days, illicit_rate=illicit_rate)
    store = Store(url)
    store.upsert_manifests(validate(generated).valid, actor="test")
    return store, generated


@pytest.fixture
def handmade(tmp_path):
    """25 outcomes: 10 random red-lane picks (1 seizure), 10 risk-ranked red-lane picks (4 seizures),
    5 random picks after the scan (2 seizures)."""
    url = f"sqlite:///{tmp_path / 'hand.db'}"
    store, _ = _stored(url, 30, seed=1, days=3)
    m = store.manifests().sort_values("manifest_id").reset_index(drop=True)
    keys = ["manifest_id", "port", "terminal", "shift"]
    red = m.loc[:19, keys].assign(lane="red", selection=["random"] * 10 + ["risk"] * 10)
    scan = m.loc[20:24, keys].assign(lane="scan", selection="risk")
    store.save_decisions(pd.concat([red, scan]), actor="test")
    store.save_decisions(m.loc[20:24, keys].assign(inspect=True, inspect_selection="random", inspect_rank=1),
                         actor="test")
    seized = set(m.loc[[0, 10, 11, 12, 13, 20, 21], "manifest_id"])
    for mid in m.loc[:24, "manifest_id"]:
        store.record_outcome(mid, "seizure" if mid in seized else "nothing_found",
                             amount_kg=25.0 if mid in seized else 0.0)
    yield store, url
    store.close()


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    """500 generated manifests over 40 days; 35% inspected (30% of them random picks), outcomes = truth."""
    folder = tmp_path_factory.mktemp("filled")
    url = f"sqlite:///{folder / 'store.db'}"
    store, generated = _stored(url, 500, seed=6, days=40, illicit_rate=0.1)
    m = store.manifests()
    rng = np.random.default_rng(0)
    inspect = rng.random(len(m)) < 0.35
    selection = np.where(rng.random(len(m)) < 0.3, "random", "risk")
    decisions = m.loc[inspect, ["manifest_id", "port", "terminal", "shift"]].assign(
        lane="red", selection=selection[inspect])
    store.save_decisions(decisions, actor="test")
    truth = generated.set_index("manifest_id")["is_illicit"]
    for mid in decisions["manifest_id"]:
        store.record_outcome(mid, "seizure" if truth[mid] else "nothing_found",
                             amount_kg=20.0 if truth[mid] else 0.0)
    yield store, url, folder, generated
    store.close()


# --------------------------------------------------------------------------------------------
# hit rates
# --------------------------------------------------------------------------------------------

def test_hit_rates_random_vs_targeted_exact_numbers(handmade):
    store, _ = handmade
    s = hit_rate_summary(store.hit_rates())
    assert s["outcomes"] == 25
    assert (s["random"]["inspections"], s["random"]["seizures"]) == (15, 3)
    assert s["random"]["hit_rate"] == pytest.approx(0.2)
    assert (s["random"]["ci_low"], s["random"]["ci_high"]) == pytest.approx((0.070474, 0.451859), abs=1e-6)
    assert (s["targeted"]["inspections"], s["targeted"]["seizures"]) == (10, 4)
    assert (s["targeted"]["ci_low"], s["targeted"]["ci_high"]) == pytest.approx((0.168178, 0.68733), abs=1e-6)
    # The prevalence comes from the stage-1 random picks only (drawn from all traffic).
    assert s["prevalence"]["hit_rate"] == pytest.approx(0.1)
    assert (s["prevalence"]["ci_low"], s["prevalence"]["ci_high"]) == pytest.approx((0.017876, 0.404156), abs=1e-6)
    assert s["prevalence_basis"].startswith("stage-1 random picks")
    assert s["lift"]["lift"] == pytest.approx(2.0)
    assert (s["lift"]["ci_low"], s["lift"]["ci_high"]) == pytest.approx((0.564393, 7.087258), abs=1e-5)
    assert s["other"]["inspections"] == 0


def test_lift_is_undefined_without_random_seizures():
    assert lift_interval(5, 50, 0, 40) == (None, None, None)
    assert lift_interval(0, 50, 2, 40) == (0.0, None, None)
    lift, lo, hi = lift_interval(30, 100, 2, 100)
    assert (round(lift, 3), round(lo, 3), round(hi, 3)) == (15.0, 3.683, 61.088)


def test_hit_rate_summary_without_random_picks_says_so():
    rates = pd.DataFrame({"lane": ["red", "all"], "selection_kind": ["targeted", "targeted"],
                          "inspections": [8, 8], "seizures": [2, 2]})
    s = hit_rate_summary(rates)
    assert s["prevalence"]["hit_rate"] is None
    assert "cannot be estimated" in s["prevalence_basis"]
    assert s["lift"] == {"lift": None, "ci_low": None, "ci_high": None, "not_estimable": "needs random inspections"}
    with pytest.raises(ValueError, match=r"missing \['seizures'\]"):
        hit_rate_summary(rates.drop(columns=["seizures"]))


def test_lift_message_names_what_is_missing():
    # A random seizure but no targeted inspection: the lift needs the targeted ones.
    rates = pd.DataFrame({"lane": ["red", "all"], "selection_kind": ["random", "random"],
                          "inspections": [5, 5], "seizures": [1, 1]})
    s = hit_rate_summary(rates)
    assert s["lift"]["lift"] is None
    assert s["lift"]["not_estimable"] == "needs targeted inspections (mandatory or by risk)"
    from riskengine.cli.outcomes_cmd import _lift_text

    assert "random seizure" not in _lift_text(s["lift"]) and "targeted" in _lift_text(s["lift"])
    none_found = pd.DataFrame({"lane": ["red", "red", "all", "all"],
                               "selection_kind": ["random", "targeted", "random", "targeted"],
                               "inspections": [4, 6, 4, 6], "seizures": [0, 2, 0, 2]})
    assert "a seizure among the random picks (4 inspected" in hit_rate_summary(none_found)["lift"]["not_estimable"]


def test_report_cli_json_and_table(handmade):
    _, url = handmade
    runner = CliRunner()
    res = runner.invoke(main, ["outcomes", "report", "--db", url, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    rows = {(r["lane"], r["selection_kind"]): r for r in out["hit_rates"]}
    assert rows[("red", "random")]["seizures"] == 1 and rows[("red", "random")]["inspections"] == 10
    assert rows[("inspect", "random")]["hit_rate"] == pytest.approx(0.4)
    assert rows[("all", "targeted")]["hit_rate"] == pytest.approx(0.4)
    assert out["summary"]["lift"]["lift"] == pytest.approx(2.0)
    res = runner.invoke(main, ["outcomes", "report", "--db", url])
    assert res.exit_code == 0, res.output
    assert "20.00%" in res.output and "2.0×" in res.output and "prevalence" in res.output


def test_report_cli_empty_store_and_bad_databases(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty.db"
    Store(f"sqlite:///{empty}").close()
    res = runner.invoke(main, ["outcomes", "report", "--db", f"sqlite:///{empty}"])
    assert res.exit_code == 0, res.output
    assert "No inspection outcomes recorded yet" in res.output

    res = runner.invoke(main, ["outcomes", "report", "--db", f"sqlite:///{tmp_path / 'nope.db'}"])
    assert res.exit_code == 1
    assert "FileNotFoundError: no database file at" in res.output
    assert not (tmp_path / "nope.db").exists()

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x INTEGER)").connection.close()
    res = runner.invoke(main, ["outcomes", "report", "--db", f"sqlite:///{other}"])
    assert res.exit_code == 1
    assert "is not a risk engine store" in res.output and "found ['t']" in res.output

    res = runner.invoke(main, ["outcomes", "report"], env={"RISKENGINE_DB_URL": ""})
    assert res.exit_code == 2 and "--db" in res.output


# --------------------------------------------------------------------------------------------
# retrain
# --------------------------------------------------------------------------------------------

def test_retrain_with_too_few_outcomes_says_what_is_needed(handmade, tmp_path):
    store, url = handmade
    with pytest.raises(ValueError) as err:
        retrain_from_store(store, tmp_path / "model")
    msg = str(err.value)
    assert "too few outcomes to retrain" in msg
    assert "25 inspected container(s) with 7 seizure(s) and 18 'nothing_found'" in msg
    assert "at least 50 outcomes with at least 5 seizures" in msg
    assert not (tmp_path / "model").exists()
    res = CliRunner().invoke(main, ["retrain", "--db", url, "--out", str(tmp_path / "m2")])
    assert res.exit_code == 1
    assert "ValueError: too few outcomes to retrain" in res.output


def test_retrain_writes_a_model_that_loads_and_scores(filled, tmp_path):
    store, _, _, generated = filled
    result = retrain_from_store(store, tmp_path / "model", seed=3)
    s = result.summary
    outcomes = store.outcomes()
    assert s["labelled"] == len(outcomes)
    assert s["positives"] == int((outcomes["result"] == "seizure").sum())
    assert s["manifests"] == 500
    assert s["random_labels"] == int(outcomes["random"].sum())
    assert s["hit_rates"] == hit_rate_summary(store.hit_rates())
    written = json.loads((tmp_path / "model" / RETRAIN_FILE).read_text())
    assert written["labelled"] == s["labelled"] and written["hit_rates"]["random"] == s["hit_rates"]["random"]
    assert "Retrained from recorded outcomes" in (tmp_path / "model" / "MODEL_CARD.md").read_text()

    model = RiskModel.load(tmp_path / "model")
    scores, rejects = model.score(generated)
    assert len(rejects) == 0 and len(scores) == 500
    assert scores["risk_score"].between(0, 1).all()
    assert scores["manifest_id"].tolist() == generated["manifest_id"].tolist()


@pytest.mark.slow
def test_retrain_cli_with_base_model_compares_both(filled, tmp_path):
    _, url, _, _ = filled
    runner = CliRunner()
    res = runner.invoke(main, ["retrain", "--db", url, "--out", str(tmp_path / "base"), "--seed", "1"])
    assert res.exit_code == 0, res.output
    assert "Hit rates of the recorded outcomes" in res.output
    res = runner.invoke(main, ["retrain", "--db", url, "--out", str(tmp_path / "next"),
                               "--base-model", str(tmp_path / "base"), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    assert s["base_model"] == str(tmp_path / "base")
    cmp_ = s["comparison"]
    # Both models on the newest outcomes (the new model's calibration slice: both classes present).
    assert {"base", "new", "rows", "positives"} <= set(cmp_)
    assert 0 < cmp_["positives"] < cmp_["rows"]
    assert 0 <= cmp_["base"]["roc_auc"] <= 1 and 0 <= cmp_["new"]["roc_auc"] <= 1
    assert cmp_["base_rows_inside_its_training_window"] == cmp_["rows"]  # same store, same window
    assert (tmp_path / "next" / "model.txt").exists()


# --------------------------------------------------------------------------------------------
# simulation
# --------------------------------------------------------------------------------------------

TINY = dict(weeks=2, rows_per_week=1_000, exploration_share=0.25, drift=1.0, history_weeks=3,
            window_weeks=3, illicit_rate=0.03, n_jobs=1)


@pytest.mark.slow
def test_simulation_is_deterministic_and_keeps_its_books():
    a = simulate_feedback_loop(seed=5, **TINY)
    b = simulate_feedback_loop(seed=5, **TINY)
    assert list(a.columns) == list(SIMULATION_COLUMNS)
    pd.testing.assert_frame_equal(a.drop(columns="fit_seconds"), b.drop(columns="fit_seconds"))
    assert a["policy"].unique().tolist() == [FROZEN_POLICY, "exploitation", "exploration 25%"]
    assert a.groupby("policy")["week"].apply(list).map(tuple).unique().tolist() == [(1, 2)]
    per_day = a.attrs["settings"]["inspections_per_day"]
    assert per_day == round(0.03 * 1_000 / 7) == 4
    assert (a["inspections"] == 7 * per_day).all()
    assert (a["targeted"] + a["random"] == a["inspections"]).all()
    assert (a.loc[a["exploration_share"] == 0, "random"] == 0).all()
    # round(0.25 * 4) = 1 random pick a day
    assert (a.loc[a["exploration_share"] == 0.25, "random"] == 7).all()
    # Labels grow by exactly the week's inspections; nothing else is revealed.
    for _, g in a.groupby("policy"):
        assert g["labels"].diff().iloc[1:].tolist() == g["inspections"].iloc[1:].tolist()
    # Week 1 is scored by the same week-0 model for every policy.
    w1 = a[a["week"] == 1]
    assert w1["auc"].nunique() == 1 and w1["precision_at_capacity"].nunique() == 1
    exploit = a[a["policy"] == "exploitation"]
    assert (exploit["seizures"] == exploit["targeted_seizures"]).all()
    assert exploit["precision"].tolist() == pytest.approx((exploit["seizures"] / exploit["inspections"]).tolist())
    assert a["auc"].between(0, 1).all() and a["recall"].between(0, 1).all()

    pooled = summarize_simulation(pd.concat([a, a.assign(seed=6)]), last_weeks=1)
    single = summarize_simulation(a, last_weeks=1)
    assert pooled["seeds"].tolist() == [2, 2, 2]
    assert pooled["seizures"].tolist() == (2 * single["seizures"]).tolist()
    assert pooled["precision"].tolist() == pytest.approx(single["precision"].tolist())
    record = simulation_record(a)
    assert record["settings"]["seed"] == 5 and len(record["weeks"]) == 6


def test_simulation_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"exploration_share must be in \(0, 1\)"):
        simulate_feedback_loop(exploration_share=0.0)
    with pytest.raises(ValueError, match="allows 0.43 inspections a day"):
        simulate_feedback_loop(rows_per_week=1_000, capacity=0.003)
    with pytest.raises(ValueError, match="weeks must be a whole number >= 1, got 0"):
        simulate_feedback_loop(weeks=0)
    with pytest.raises(ValueError, match=r"unknown model parameter\(s\) \['trees'\]"):
        simulate_feedback_loop(model_params={"trees": 5})


def test_simulate_cli_one_week_json_plot_and_out(tmp_path):
    plot, out = tmp_path / "loop.png", tmp_path / "loop.json"
    res = CliRunner().invoke(main, [
        "outcomes", "simulate", "--weeks", "1", "--rows-per-week", "1000", "--history-weeks", "3",
        "--window-weeks", "3", "--illicit-rate", "0.03", "--exploration", "0.25", "--threads", "1",
        "--seed", "2", "--json", "--plot", str(plot), "--out", str(out)])
    assert res.exit_code == 0, res.output
    printed = json.loads(res.stdout)
    assert printed == json.loads(out.read_text())
    assert plot.stat().st_size > 10_000
    assert printed["settings"]["seeds"] == [2] and printed["settings"]["capacity"] == 0.03
    assert [r["policy"] for r in printed["summary"]] == [FROZEN_POLICY, "exploitation", "exploration 25%"]
    assert {r["week"] for r in printed["weeks"]} == {1}


# --------------------------------------------------------------------------------------------
# CLI plumbing
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["retrain"], ["outcomes"], ["outcomes", "report"], ["outcomes", "simulate"]])
def test_cli_help(args):
    res = CliRunner().invoke(main, [*args, "--help"])
    assert res.exit_code == 0
    assert "Usage:" in res.output and "--help" in res.output


def test_cli_usage_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["outcomes", "simulate", "--plot", str(tmp_path / "x.txt")])
    assert res.exit_code == 2 and "must end in .png, .svg or .pdf" in res.output
    res = runner.invoke(main, ["outcomes", "simulate", "--exploration", "0"])
    assert res.exit_code == 2
    res = runner.invoke(main, ["retrain", "--db", "sqlite:///x.db"], env={"RISKENGINE_DB_URL": ""})
    assert res.exit_code == 2 and "--out" in res.output
    res = runner.invoke(main, ["retrain", "--db", "mysql://u@h/db", "--out", str(tmp_path / "m")])
    assert res.exit_code == 1 and "ValueError: unsupported database 'mysql'" in res.output
