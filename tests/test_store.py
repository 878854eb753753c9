"""The store on SQLite (always) and PostgreSQL (when a server answers).

PostgreSQL: RISKENGINE_TEST_PG_URL, else postgresql+psycopg://riskengine:riskengine@127.0.0.1:5432/riskengine
(what .ci/services creates). Each test runs in its own PostgreSQL schema, dropped afterwards.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from riskengine.queue import QueueConfig, assign_lanes, select_inspections
from riskengine.schema import iso6346_check_digit, validate
from riskengine.store import (
    LANE_ORDER,
    Store,
    UnknownManifestError,
    hash_hex,
    wilson_interval,
)

PG_DEFAULT_URL = "postgresql+psycopg://riskengine:riskengine@127.0.0.1:5432/riskengine"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------------

def make_manifests(n: int, *, seed: int = 0, start: int = 0, terminals=("NLRTM-ECT", "NLRTM-APMT"),
                   arrival: str = "2026-03-12") -> pd.DataFrame:
    """``n`` valid manifests in the native schema (raw strings/numbers, as a client sends them)."""
    rng = np.random.default_rng(seed)
    ids = np.arange(start, start + n)
    prefixes = [f"MSKU{i % 1_000_000:06d}" for i in ids]
    return pd.DataFrame({
        "manifest_id": [f"M{i:07d}" for i in ids],
        "container_id": [p + str(iso6346_check_digit(p)) for p in prefixes],
        "container_type": rng.choice(["22G1", "45R1", "42G1"], n),
        "bl_number": [f"MAEU{i:09d}" for i in ids],
        "vessel_imo": "9074729", "voyage": "612N", "carrier": "MAERSK",
        "shipper": rng.choice(["FRUTAS DEL PACIFICO SA", "ANDES TRADING LTDA"], n),
        "consignee": rng.choice(["ROTTERDAM FRESH BV", "HOLLAND IMPORT BV"], n),
        "notify_party": "", "origin_country": rng.choice(["EC", "CO", "CN"], n),
        "port_of_loading": "ECGYE", "transshipment_ports": "", "port_of_discharge": "NLRTM",
        "terminal": rng.choice(list(terminals), n), "hs_code": "080390",
        "goods_description": "FRESH BANANAS CAVENDISH", "packages": rng.integers(1, 2000, n),
        "gross_weight_kg": rng.uniform(1000, 25000, n).round(1), "vgm_kg": 28000.0,
        "declared_value": 16500.0, "currency": "USD", "freight_charges": 4200.0,
        "freight_payment": "prepaid", "seal_number": "ML1234567", "seal_number_gate": "ML1234567",
        "filed_at": "2026-03-01T10:00:00Z", "gate_in_at": None, "cut_off_at": None,
        "last_amended_at": None, "arrival_date": arrival,
    })


def valid(n: int, **kw) -> pd.DataFrame:
    res = validate(make_manifests(n, **kw))
    assert res.n_rejected == 0
    return res.valid


def fake_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Deterministic scores in (0, 1) from the manifest id."""
    h = pd.util.hash_pandas_object(df["manifest_id"].astype(str), index=False).to_numpy()
    return pd.DataFrame({"manifest_id": df["manifest_id"].astype(str).to_numpy(),
                         "risk_score": (h % 997) / 1000.0, "reasons": "test reason",
                         "mandatory": (h % 101) == 0})


# --------------------------------------------------------------------------------------------
# Fixtures: one store per backend
# --------------------------------------------------------------------------------------------

def pg_url() -> str:
    return os.environ.get("RISKENGINE_TEST_PG_URL", PG_DEFAULT_URL)


def _pg_reason() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    engine = sa.create_engine(pg_url(), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        return (f"no PostgreSQL server answers at {sa.engine.make_url(pg_url()).render_as_string(hide_password=True)} "
                f"({type(exc.orig).__name__}); run .ci/services or set RISKENGINE_TEST_PG_URL")
    finally:
        engine.dispose()
    return None


_PG_SKIP: list[str | None] = []


def pg_skip_reason() -> str | None:
    if not _PG_SKIP:
        _PG_SKIP.append(_pg_reason())
    return _PG_SKIP[0]


@pytest.fixture
def pg_schema_url():
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards)."""
    reason = pg_skip_reason()
    if reason:
        pytest.skip(reason)
    schema = f"rtest_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_url())
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.engine.make_url(pg_url()).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        yield request.getfixturevalue("pg_schema_url")


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()


# --------------------------------------------------------------------------------------------
# Upsert
# --------------------------------------------------------------------------------------------

def test_reingest_changes_nothing(store):
    batch = valid(300)
    assert store.upsert_manifests(batch, "ingest") == {"inserted": 300, "updated": 0, "unchanged": 0}
    before = store.counts()
    hashes = store.manifests()["content_hash"].tolist()
    assert store.upsert_manifests(batch, "ingest") == {"inserted": 0, "updated": 0, "unchanged": 300}
    assert store.counts() == before  # no new rows anywhere, audit included
    assert store.manifests()["content_hash"].tolist() == hashes
    assert before["manifests"] == 300 and before["audit"] == 300


def test_changed_manifest_is_updated_and_audited(store):
    batch = valid(50)
    store.upsert_manifests(batch, "ingest")
    changed = batch.copy()
    changed.loc[changed["manifest_id"] == "M0000007", "gross_weight_kg"] = 1234.5
    extra = valid(5, start=50)
    res = store.upsert_manifests(pd.concat([changed, extra], ignore_index=True), "amend")
    assert res == {"inserted": 5, "updated": 1, "unchanged": 49}
    row = store.manifests(["M0000007"]).iloc[0]
    assert row["gross_weight_kg"] == 1234.5 and row["revision"] == 2
    audit = store.audit(10, entity_id="M0000007")
    assert audit["action"].tolist() == ["manifest.update", "manifest.insert"]
    details = audit["details"].iloc[0]
    assert details["changed"] == ["gross_weight_kg"]
    assert details["previous_hash"] != details["content_hash"]
    assert store.counts()["audit"] == 50 + 5 + 1


def test_shift_is_part_of_the_content(store):
    batch = valid(4)
    store.upsert_manifests(batch, "ingest")
    assert set(store.manifests()["shift"]) == {"2026-03-12/S1"}  # first shift of the arrival day
    res = store.upsert_manifests(batch.assign(shift="2026-03-12/S2"), "planner")
    assert res["updated"] == 4
    assert store.groups()["shift"].unique().tolist() == ["2026-03-12/S2"]


def test_stored_rows_come_back_typed(store):
    batch = valid(3)
    store.upsert_manifests(batch, "ingest")
    back = store.manifests(["M0000002", "M0000000"]).sort_values("manifest_id").reset_index(drop=True)
    assert pd.api.types.is_datetime64_any_dtype(back["arrival_date"])
    assert back["hs_code"].tolist() == ["080390", "080390"]  # leading zero kept
    expected = batch.set_index("manifest_id").loc[["M0000000", "M0000002"]]
    assert back["gross_weight_kg"].tolist() == expected["gross_weight_kg"].tolist()
    assert back["packages"].tolist() == expected["packages"].tolist()


def test_bad_batches_are_refused_with_reasons(store):
    batch = valid(3)
    with pytest.raises(ValueError, match=r"missing \['vgm_kg'\]"):
        store.upsert_manifests(batch.drop(columns=["vgm_kg"]), "ingest")
    with pytest.raises(ValueError, match="duplicate manifest_id.*M0000001"):
        store.upsert_manifests(pd.concat([batch, batch.iloc[[1]]]), "ingest")
    with pytest.raises(ValueError, match="actor is required"):
        store.upsert_manifests(batch, " ")
    assert store.counts()["manifests"] == 0
    with pytest.raises(UnknownManifestError, match="unknown manifest_id 'NOPE'"):
        store.manifests(["NOPE"])


def test_audit_is_append_only(store):
    store.upsert_manifests(valid(2), "ingest")
    for sql in ("UPDATE audit SET actor = 'someone else'", "DELETE FROM audit"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(sa.text(sql))
    assert set(store.audit(None)["actor"]) == {"ingest"}
    assert store.counts()["audit"] == 2


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")  # the folder is created
    with s.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    with pytest.raises(sa.exc.IntegrityError):
        with s.engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO outcomes (manifest_id, result, amount_kg, actor, recorded_at) "
                                 "VALUES ('GHOST', 'seizure', 1, 'x', '2026-01-01')"))
    s.close()


def test_urls_are_checked():
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        Store("mysql://u:p@localhost/db")
    with pytest.raises(ValueError, match="cannot parse database URL"):
        Store("not a url")
    from riskengine.store import _normalise_url

    assert _normalise_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg"
    assert _normalise_url("postgres://u:p@h/db").drivername == "postgresql+psycopg"


def test_unreachable_postgres_says_so():
    with pytest.raises(ConnectionError, match="cannot open the database .*127.0.0.1:1"):
        Store("postgresql+psycopg://u:secret@127.0.0.1:1/db?connect_timeout=2")


# --------------------------------------------------------------------------------------------
# Scores, decisions, queue
# --------------------------------------------------------------------------------------------

def _planned(store, n=120, config=None):
    batch = valid(n)
    store.upsert_manifests(batch, "ingest")
    scores = fake_scores(batch)
    store.save_scores(scores, "manifest", "fake-1")
    frame = store.planning_frame(store.groups()[["port", "terminal", "shift"]].itertuples(index=False))
    cfg = config or QueueConfig(scan_capacity=10, inspection_capacity=4, exploration_share=0.2,
                                red_threshold=0.3)
    q = assign_lanes(frame.sort_values("manifest_id"), cfg)
    return batch, q, cfg


def test_decisions_are_written_only_when_they_change(store):
    _, q, _ = _planned(store)
    assert store.save_decisions(q, "planner") == len(q)
    assert store.save_decisions(q, "planner") == 0
    moved = q.copy()
    first_green = moved.index[moved["lane"] == "green"][0]
    moved.loc[first_green, ["lane", "selection"]] = ["scan", "risk"]
    assert store.save_decisions(moved, "planner") == 1
    audit = store.audit(1)
    assert audit["action"].iloc[0] == "decision.stage1"
    assert audit["details"].iloc[0]["lane"] == "scan"


def test_queue_is_ordered_by_lane_then_rank(store):
    _, q, cfg = _planned(store)
    store.save_decisions(q, "planner")
    queue = store.queue("NLRTM", terminal="NLRTM-ECT")
    assert len(queue) == (q["terminal"] == "NLRTM-ECT").sum()
    order = queue["lane"].map({lane: i for i, lane in enumerate(LANE_ORDER)})
    assert order.is_monotonic_increasing
    for _lane, g in queue.groupby("lane"):
        assert g["rank"].tolist() == list(range(1, len(g) + 1))
        kinds = g["selection"].map({"mandatory": 0, "random": 1, "risk": 2, "none": 3})
        assert kinds.is_monotonic_increasing
        risk = g[g["selection"].isin(["risk", "none"])]["risk_score"]
        assert risk.is_monotonic_decreasing
    scan = queue[queue["lane"] == "scan"]
    assert len(scan) == cfg.scan_capacity
    assert (scan["selection"] == "random").sum() == round(cfg.exploration_share * cfg.scan_capacity)
    assert scan["random"].sum() == 2
    assert (queue["reasons"] == "test reason").all()
    assert store.queue("XXXXX").empty


def test_stage_two_overrides_the_scan_lane(store):
    _, q, cfg = _planned(store)
    store.save_decisions(q, "planner")
    scan = q[q["lane"] == "scan"].copy()
    scanned = scan.assign(fused_score=np.linspace(0.99, 0.01, len(scan)))
    store.save_scans(scanned[["manifest_id"]].assign(concealment_score=0.5, empty_probability=0.0,
                                                     cargo_class="fruit", model_version="cnn-1"))
    store.save_scores(scanned.assign(fusion_reasons="scan says so"), "fused", "fake-1", scan_model_version="cnn-1")
    s2 = select_inspections(scanned, cfg, already_used=q)
    store.save_decisions(s2, "planner")
    queue = store.queue("NLRTM")
    got = queue.set_index("manifest_id").loc[scanned["manifest_id"]]
    assert set(got["lane"]) <= {"inspect", "cleared"}
    assert (got["lane"] == "inspect").sum() == s2["inspect"].sum()
    assert got["scanned"].all()
    assert (got["scan_reasons"] == "scan says so").all()


def test_scores_are_checked_and_stale_scores_found(store):
    batch = valid(10)
    store.upsert_manifests(batch, "ingest")
    with pytest.raises(ValueError, match=r"risk_score must be a probability.*1 row"):
        store.save_scores(fake_scores(batch).assign(risk_score=[1.5] + [0.1] * 9), "manifest", "v")
    with pytest.raises(UnknownManifestError, match="'GHOST'"):
        store.save_scores(pd.DataFrame({"manifest_id": ["GHOST"], "risk_score": [0.1]}), "manifest", "v")
    with pytest.raises(ValueError, match="stage must be one of"):
        store.save_scores(fake_scores(batch), "final", "v")
    assert store.stale_scores(batch["manifest_id"]) == sorted(batch["manifest_id"])
    store.save_scores(fake_scores(batch), "manifest", "v")
    assert store.stale_scores(batch["manifest_id"]) == []
    amended = batch.copy()
    amended.loc[3, "consignee"] = "NEW NAME BV"
    store.upsert_manifests(amended, "amend")
    assert store.stale_scores(batch["manifest_id"]) == [batch.loc[3, "manifest_id"]]


# --------------------------------------------------------------------------------------------
# Outcomes, hit rates, training frame
# --------------------------------------------------------------------------------------------

def test_outcomes_hit_rates_and_training_frame(store):
    _, q, _ = _planned(store)
    store.save_decisions(q, "planner")
    random_ids = q.loc[q["selection"] == "random", "manifest_id"].tolist()[:4]
    risk_ids = q.loc[(q["lane"] == "scan") & (q["selection"] == "risk"), "manifest_id"].tolist()[:5]
    for i, mid in enumerate(random_ids):
        store.record_outcome(mid, "seizure" if i == 0 else "nothing_found", 12.0 if i == 0 else 0.0, None, "officer")
    for i, mid in enumerate(risk_ids):
        store.record_outcome(mid, "seizure" if i < 2 else "nothing_found", 5.0 if i < 2 else 0, "", "officer")
    # a correction: the latest record wins
    store.record_outcome(risk_ids[4], "seizure", 3.0, "found in the floor", "supervisor")

    out = store.outcomes()
    assert len(out) == len(random_ids) + len(risk_ids)
    assert out.set_index("manifest_id").loc[risk_ids[4], "result"] == "seizure"
    assert out.set_index("manifest_id").loc[random_ids, "random"].all()

    rates = store.hit_rates().set_index(["lane", "selection_kind"])
    targeted = rates.loc[("scan", "targeted")]
    assert (targeted["inspections"], targeted["seizures"]) == (5, 3)
    lo, hi = wilson_interval(np.array([3]), np.array([5]))
    assert targeted["ci_low"] == pytest.approx(lo[0]) and targeted["ci_high"] == pytest.approx(hi[0])
    assert targeted["ci_low"] == pytest.approx(0.2307, abs=1e-4)
    total_random = rates.loc[("all", "random")]
    assert (total_random["inspections"], total_random["seizures"]) == (4, 1)
    assert total_random["hit_rate"] == pytest.approx(0.25)

    train = store.training_frame()
    assert len(train) == 9
    labels = train.set_index("manifest_id")
    assert labels.loc[random_ids[0], "is_illicit"] == 1 and labels.loc[random_ids[1], "is_illicit"] == 0
    assert labels.loc[random_ids, "selection"].eq("random").all()
    assert labels.loc[risk_ids, "selection"].eq("targeted").all()
    assert labels["inspected"].eq(1).all()
    assert pd.api.types.is_datetime64_any_dtype(train["outcome_at"])
    everything = store.training_frame(include_uninspected=True)
    assert len(everything) == 120 and everything["inspected"].sum() == 9
    assert everything.loc[everything["inspected"] == 0, "selection"].eq("none").all()


def test_outcome_input_is_checked(store):
    store.upsert_manifests(valid(1), "ingest")
    with pytest.raises(UnknownManifestError, match="unknown manifest_id 'M9'"):
        store.record_outcome("M9", "seizure", 1.0, None, "officer")
    with pytest.raises(ValueError, match="result must be one of"):
        store.record_outcome("M0000000", "maybe", 0, None, "officer")
    with pytest.raises(ValueError, match="needs result 'seizure'"):
        store.record_outcome("M0000000", "nothing_found", 4.0, None, "officer")
    with pytest.raises(ValueError, match="amount_kg must be a finite number >= 0"):
        store.record_outcome("M0000000", "seizure", -1, None, "officer")
    assert store.counts()["outcomes"] == 0
    assert store.hit_rates().empty


def test_scans_need_known_manifests(store):
    store.upsert_manifests(valid(2), "ingest")
    with pytest.raises(UnknownManifestError, match="'GHOST'"):
        store.save_scans(pd.DataFrame({"manifest_id": ["M0000000", "GHOST"], "concealment_score": [0.1, 0.2]}))
    assert store.counts()["scans"] == 0
    ids = store.save_scans(pd.DataFrame({"manifest_id": ["M0000000"], "concealment_score": [0.7],
                                         "class_probabilities": [{"fruit": 0.9, "general": 0.1}],
                                         "heatmap_path": ["/x/h.png"]}))
    latest = store.latest_scan("M0000000")
    assert latest["scan_id"] == ids[0] and latest["concealment_score"] == pytest.approx(0.7)
    assert store.latest_scan("M0000001") is None


def test_helpers():
    assert hash_hex(np.array([0, 255, -1])).tolist() == ["0000000000000000", "00000000000000ff", "ffffffffffffffff"]
    lo, hi = wilson_interval(np.array([0, 10, 0]), np.array([10, 10, 0]))
    assert lo[0] == 0 and hi[0] == pytest.approx(0.2775, abs=1e-4)
    assert hi[1] == 1 and lo[1] == pytest.approx(0.7225, abs=1e-4)
    assert np.isnan(lo[2]) and np.isnan(hi[2])


# --------------------------------------------------------------------------------------------
# A killed ingest leaves the store consistent
# --------------------------------------------------------------------------------------------

_KILLED_INGEST = textwrap.dedent("""
    import pathlib, pickle, sys, time
    from sqlalchemy import event
    import riskengine.store
    from riskengine.store import Store

    riskengine.store._CHUNK_ROWS = 500  # small chunks: several statements in one transaction
    url, batch_path, marker = sys.argv[1:4]
    store = Store(url)
    batch = pickle.loads(pathlib.Path(batch_path).read_bytes())
    chunks = []

    @event.listens_for(store.engine, "after_cursor_execute")
    def after(conn, cursor, statement, params, context, executemany):
        if executemany and "INTO manifests" in statement:
            chunks.append(len(params))
            if len(chunks) == 2:  # two chunks written, more to come: the batch is half done
                pathlib.Path(marker).write_text(str(sum(chunks)))
                time.sleep(120)

    store.upsert_manifests(batch, "killed-ingest")
""")


def test_killed_ingest_leaves_none_of_the_batch(store_url, tmp_path):
    store = Store(store_url)
    first = valid(100)
    store.upsert_manifests(first, "ingest")
    batch = valid(2_000, start=100, seed=1)
    batch_path = tmp_path / "batch.pkl"
    batch_path.write_bytes(pickle.dumps(batch))
    script = tmp_path / "ingest.py"
    script.write_text(_KILLED_INGEST)
    marker = tmp_path / "half-done"
    proc = subprocess.Popen([sys.executable, str(script), store_url, str(batch_path), str(marker)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"ingest ended before the kill: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the ingest never reached its second chunk")
            time.sleep(0.05)
        assert int(marker.read_text()) == 1_000  # rows sent inside the open transaction
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    after = Store(store_url)
    counts = after.counts()
    assert counts["manifests"] == 100 and counts["audit"] == 100  # none of the killed batch
    assert after.upsert_manifests(batch, "retry") == {"inserted": 2_000, "updated": 0, "unchanged": 0}
    assert after.counts()["manifests"] == 2_100
    assert after.upsert_manifests(batch, "retry") == {"inserted": 0, "updated": 0, "unchanged": 2_000}
    after.close()
    store.close()
