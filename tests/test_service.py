"""The queue feed service: API contract with a temporary SQLite file and test doubles.

The manifest scorer and the scan triager are replaced through ``app.dependency_overrides`` so
these tests do not depend on the trained models. Every app gets one API token per role in its
store; clients send the analyst's unless a test says otherwise (tests/test_service_auth.py
covers authentication itself).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from test_store import make_manifests

from riskengine.cli import main as cli_main
from riskengine.fusion import ImageCalibration
from riskengine.service import QueueSettings, Settings, create_app
from riskengine.service.deps import get_scorer, get_triager
from riskengine.service.events import Broadcaster
from riskengine.service.scoring import check_scores

# --------------------------------------------------------------------------------------------
# Test doubles
# --------------------------------------------------------------------------------------------


class FakeScorer:
    """Deterministic risk from the manifest id; ``overrides`` pins chosen ids."""

    version = "fake-manifest-1"
    loaded = True
    available = True

    def __init__(self, overrides: dict[str, float] | None = None, mandatory: set[str] | None = None) -> None:
        self.overrides = overrides or {}
        self.mandatory = mandatory or set()
        self.calls: list[int] = []

    def __call__(self, manifests: pd.DataFrame) -> pd.DataFrame:
        self.calls.append(len(manifests))
        ids = manifests["manifest_id"].astype(str)
        h = pd.util.hash_pandas_object(ids, index=False).to_numpy()
        score = pd.Series((h % 800) / 1000.0, index=ids.index)  # below the hold threshold
        score = ids.map(self.overrides).fillna(score).astype(float)
        return pd.DataFrame({
            "manifest_id": ids, "risk_score": score,
            "reasons": "consignee first seen 12 days ago | origin EC",
            "mandatory": ids.isin(self.mandatory),
        })


class FakeTriager:
    """A scan triage that finds what it is told to, with a heatmap hot in the middle."""

    version = "fake-cnn-1"
    loaded = True
    available = True
    calibration = ImageCalibration(a=1.0, b=0.0, prior=0.5)

    def __init__(self, score: float = 0.9) -> None:
        self.score = score

    def __call__(self, scan) -> dict:
        heat = np.zeros((4, 12), dtype=np.float32)
        heat[1:3, 5:8] = 0.95
        return {"concealment_score": self.score, "empty_probability": 0.01, "cargo_class": "fruit",
                "cargo_class_probability": 0.9, "class_probabilities": {"fruit": 0.9, "general": 0.1},
                "estimated_mass_kg": None, "heatmap": heat}


CARGO_FAMILIES = ("fruit", "frozen_meat", "sacks", "tyres", "machinery", "bottles_drums", "textiles",
                  "general", "empty")
QUEUE = QueueSettings(scan_capacity=8, inspection_capacity=4, exploration_share=0.25, red_threshold=0.3)


ROLES = ("officer", "analyst", "admin")


def with_tokens(app):
    """Give ``app`` one API token per role (named ``officer-1``, ``analyst-1``, ``admin-1``) in
    its store; the texts are in ``app.state.test_tokens``."""
    store = app.state.store
    app.state.test_tokens = {role: store.create_token(f"{role}-1", role, actor="test setup")[1] for role in ROLES}
    return app


def bearer(app, role: str = "analyst") -> dict[str, str]:
    return {"Authorization": f"Bearer {app.state.test_tokens[role]}"}


def client_for(app, role: str = "analyst") -> TestClient:
    """A TestClient that sends the ``role`` token of ``app`` with every request."""
    return TestClient(app, headers=bearer(app, role))


def make_app(tmp_path: Path, scorer=None, triager=None, **settings):
    s = Settings(db_url=f"sqlite:///{tmp_path / 'service.db'}", data_dir=tmp_path / "data",
                 queue=QUEUE, keepalive_s=0.5, **settings)
    app = create_app(s)
    app.dependency_overrides[get_scorer] = lambda: scorer or FakeScorer()
    app.dependency_overrides[get_triager] = lambda: triager or FakeTriager()
    return with_tokens(app)


def rows(df: pd.DataFrame) -> list[dict]:
    return json.loads(df.to_json(orient="records", date_format="iso"))


def scan_png(tmp_path: Path, name: str = "scan.png", width: int = 240, height: int = 80) -> Path:
    """A small raw 16-bit scan: air with a dense block of cargo."""
    from scanvision.io import write_transmission

    t = np.full((height, width), 0.95, dtype=np.float32)
    t[15:70, 30:210] = 0.2
    return write_transmission(tmp_path / name, t)


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path)


@pytest.fixture
def client(app):
    with client_for(app) as c:
        yield c


# --------------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------------

def test_ingest_validates_scores_and_plans(client, app):
    batch = make_manifests(40, terminals=("NLRTM-ECT",))
    payload = rows(batch)
    payload[3]["container_id"] = "CSQU3054384"  # wrong check digit
    payload[7]["freight_payment"] = "barter"
    r = client.post("/api/manifests", json={"manifests": payload})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["received"], body["valid"], body["rejected"]) == (40, 38, 2)
    assert (body["inserted"], body["scored"]) == (38, 38)
    rejects = {x["source_row"]: x for x in body["rejects"]}
    assert set(rejects) == {4, 8}
    assert rejects[4]["manifest_id"] == "M0000003" and rejects[4]["column"] == "container_id"
    assert "check digit" in rejects[4]["reason"]
    assert "freight_payment 'barter'" in rejects[8]["reason"]
    assert body["decisions"] == 38
    lanes = {c["lane"]: c["containers"] for c in body["lane_counts"]}
    assert sum(lanes.values()) == 38 and lanes["scan"] == QUEUE.scan_capacity

    q = client.get("/api/queue", params={"port": "NLRTM", "terminal": "NLRTM-ECT"}).json()
    assert len(q["items"]) == 38 and q["lane_counts"] == lanes
    order = ["hold", "red", "inspect", "scan", "cleared", "green"]
    idx = [order.index(i["lane"]) for i in q["items"]]
    assert idx == sorted(idx)
    scan = [i for i in q["items"] if i["lane"] == "scan"]
    assert [i["rank"] for i in scan] == list(range(1, len(scan) + 1))
    assert sum(i["random"] for i in scan) == round(QUEUE.exploration_share * QUEUE.scan_capacity)
    first = q["items"][0]
    assert "consignee first seen 12 days ago" in first["reasons"]
    assert first["decision_reasons"]
    groups = client.get("/api/queue/groups").json()
    assert groups == [{"port": "NLRTM", "terminal": "NLRTM-ECT", "shift": "2026-03-12/S1", "containers": 38}]


def test_reingest_makes_no_duplicates(client, app):
    payload = rows(make_manifests(30))
    first = client.post("/api/manifests", json=payload).json()  # a bare list is accepted too
    store = app.state.store
    counts = store.counts()
    again = client.post("/api/manifests", json=payload).json()
    assert (again["inserted"], again["updated"], again["unchanged"]) == (0, 0, 30)
    assert again["scored"] == 0 and again["decisions"] == 0
    assert store.counts() == counts
    assert first["inserted"] == 30 and counts["manifests"] == 30 and counts["decisions"] == 30

    payload[5]["gross_weight_kg"] = 999.0
    changed = client.post("/api/manifests", json=payload).json()
    assert (changed["inserted"], changed["updated"], changed["unchanged"]) == (0, 1, 29)
    assert changed["scored"] == 1 and "M0000005" in changed["changed_manifest_ids"]
    actions = store.audit(None, entity_id="M0000005")["action"].tolist()
    assert actions[0] == "manifest.update" and actions[-1] == "manifest.insert"
    assert actions.count("manifest.update") == 1
    assert store.counts()["manifests"] == 30


def test_csv_upload_and_csv_body(client):
    csv = make_manifests(12).to_csv(index=False).encode()
    r = client.post("/api/manifests", files={"file": ("arrivals.csv", csv, "text/csv")})
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 12
    more = make_manifests(3, start=12).to_csv(index=False, sep=";").encode()
    r = client.post("/api/manifests", content=more, headers={"content-type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json()["inserted"] == 3


def test_unusable_requests_get_clear_errors(client):
    r = client.post("/api/manifests", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = client.post("/api/manifests", json={"manifests": []})
    assert r.status_code == 422
    r = client.post("/api/manifests", json=rows(make_manifests(2).drop(columns=["vgm_kg", "hs_code"])))
    assert r.status_code == 422
    assert "missing required column(s) ['hs_code', 'vgm_kg']" in r.json()["detail"]
    r = client.post("/api/manifests", content=b"<xml/>", headers={"content-type": "application/xml"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = client.post("/api/manifests", files={"file": ("a.xlsx", b"PK..", "application/octet-stream")})
    assert r.status_code == 422 and ".xlsx" in r.json()["detail"]
    assert client.get("/api/queue").status_code == 422  # port is required
    r = client.get("/api/manifests/NOPE-1")
    assert r.status_code == 404 and "unknown manifest_id 'NOPE-1'" in r.json()["detail"]


def test_batch_limits(tmp_path):
    app = make_app(tmp_path, max_batch_rows=5)
    with client_for(app) as c:
        r = c.post("/api/manifests", json=rows(make_manifests(6)))
    assert r.status_code == 413 and "limit is 5" in r.json()["detail"]


def test_missing_model_answers_503_with_the_fix(tmp_path):
    s = Settings(db_url=f"sqlite:///{tmp_path / 'x.db'}", model_dir=tmp_path / "no-model",
                 scan_model_dir=tmp_path / "no-cnn")
    with client_for(with_tokens(create_app(s))) as c:
        health = c.get("/api/health").json()
        assert health["status"] == "ok" and health["db"] is True
        assert health["models"]["manifest"] == {"loaded": False, "available": False}
        r = c.post("/api/manifests", json=rows(make_manifests(2)))
    assert r.status_code == 503
    assert "no manifest risk model in" in r.json()["detail"] and "riskengine train" in r.json()["detail"]


def test_manifest_detail(client):
    client.post("/api/manifests", json=rows(make_manifests(5)))
    r = client.get("/api/manifests/M0000002")
    assert r.status_code == 200
    body = r.json()
    assert body["manifest"]["container_id"] == make_manifests(5).loc[2, "container_id"]
    assert body["state"]["lane"] in {"hold", "red", "scan", "green"}


# --------------------------------------------------------------------------------------------
# Scans
# --------------------------------------------------------------------------------------------

def test_scan_upload_fuses_and_decides_inspections(client, tmp_path):
    client.post("/api/manifests", json=rows(make_manifests(20, terminals=("NLRTM-ECT",))))
    q = client.get("/api/queue", params={"port": "NLRTM"}).json()["items"]
    target = next(i for i in q if i["lane"] == "scan")
    png = scan_png(tmp_path).read_bytes()
    r = client.post("/api/scans", data={"manifest_id": target["manifest_id"]},
                    files={"file": ("scan.png", png, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["concealment_score"] == pytest.approx(0.9)
    assert body["fused_score"] > body["risk_score"]  # a hot scan raises the risk
    assert "scan concealment score 90.0%" in body["reasons"]
    assert body["lane"] == "inspect"
    assert body["overlay_url"] == f"/api/scans/{target['manifest_id']}/overlay.png"
    img = client.get(body["overlay_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content[:8] == b"\x89PNG\r\n\x1a\n"
    import cv2

    overlay = cv2.imdecode(np.frombuffer(img.content, np.uint8), cv2.IMREAD_COLOR)
    assert overlay.shape == (80, 240, 3)
    hot, cold = overlay[40, 120].astype(int), overlay[5, 5].astype(int)
    assert abs(hot[2] - hot[0]) > 60 and abs(cold[2] - cold[0]) < 10  # colour where the heatmap is hot
    item = next(i for i in client.get("/api/queue", params={"port": "NLRTM"}).json()["items"]
                if i["manifest_id"] == target["manifest_id"])
    assert item["lane"] == "inspect" and item["scanned"] and item["overlay_url"]


def test_scanned_containers_keep_their_place_within_capacity(tmp_path):
    # New, riskier manifests arrive after some containers were scanned: the scanned ones keep
    # their scanner slot, the rest is re-planned within what is left.
    scorer = FakeScorer(overrides={f"M{i:07d}": 0.8 for i in range(20, 30)})
    app = make_app(tmp_path, scorer=scorer)
    with client_for(app) as c:
        c.post("/api/manifests", json=rows(make_manifests(20, terminals=("NLRTM-ECT",))))
        items = c.get("/api/queue", params={"port": "NLRTM"}).json()["items"]
        png = scan_png(tmp_path).read_bytes()
        scanned = [i["manifest_id"] for i in items if i["lane"] == "scan"][:3]
        for mid in scanned:
            r = c.post("/api/scans", data={"manifest_id": mid}, files={"file": ("s.png", png, "image/png")})
            assert r.status_code == 200, r.text
        # a container still green after those re-plans is scanned anyway (officer's choice)
        items = c.get("/api/queue", params={"port": "NLRTM"}).json()["items"]
        off_plan = next(i["manifest_id"] for i in items if i["lane"] == "green")
        r = c.post("/api/scans", data={"manifest_id": off_plan}, files={"file": ("s.png", png, "image/png")})
        assert r.status_code == 200, r.text
        c.post("/api/manifests", json=rows(make_manifests(10, start=20, terminals=("NLRTM-ECT",))))
        items = c.get("/api/queue", params={"port": "NLRTM"}).json()["items"]
    lane = {i["manifest_id"]: i for i in items}
    assert len(items) == 30
    assert all(lane[m]["lane"] in ("inspect", "cleared") for m in [*scanned, off_plan])
    stage1 = app.state.store.audit(None, entity_id=off_plan)
    stage1 = stage1[stage1["action"] == "decision.stage1"]["details"].tolist()
    # newest first: green in the plan when it was scanned, then moved into the scan lane by its scan, flagged as not a
    # plan selection (so it stays out of the random/targeted hit rates)
    assert stage1[1]["lane"] == "green"
    assert (stage1[0]["lane"], stage1[0]["selection"]) == ("scan", "none")
    counts = pd.Series([i["lane"] for i in items]).value_counts()
    assert counts.get("scan", 0) + counts.get("inspect", 0) + counts.get("cleared", 0) <= QUEUE.scan_capacity + 1
    assert counts.get("red", 0) + counts.get("hold", 0) + counts.get("inspect", 0) <= QUEUE.inspection_capacity
    new_red = [m for m in lane if m >= "M0000020" and lane[m]["lane"] == "red"]
    assert len(new_red) == counts.get("red", 0)  # the riskier newcomers took the red lane


def test_scan_errors(client, tmp_path, app):
    client.post("/api/manifests", json=rows(make_manifests(3)))
    png = scan_png(tmp_path).read_bytes()
    r = client.post("/api/scans", data={"manifest_id": "GHOST"}, files={"file": ("s.png", png, "image/png")})
    assert r.status_code == 404 and "unknown manifest_id 'GHOST'" in r.json()["detail"]
    assert not list((tmp_path / "data" / "scans").glob("*"))  # the upload was not kept
    r = client.post("/api/scans", data={"manifest_id": "M0000001"},
                    files={"file": ("s.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")})
    assert r.status_code == 422
    r = client.post("/api/scans", files={"file": ("s.png", png, "image/png")})
    assert r.status_code == 422 and "manifest_id" in r.json()["detail"]
    r = client.post("/api/scans", json={"manifest_id": "M0000001", "path": str(tmp_path / "scan.png")})
    assert r.status_code == 403 and "disabled" in r.json()["detail"]
    assert client.get("/api/scans/M0000001/overlay.png").status_code == 404
    assert "has no scan yet" in client.get("/api/scans/M0000001/overlay.png").json()["detail"]
    assert app.state.store.counts()["scans"] == 0


def test_scan_by_server_path(tmp_path):
    root = tmp_path / "scanner"
    root.mkdir()
    path = scan_png(root)
    app = make_app(tmp_path, scan_roots=[root])
    with client_for(app) as c:
        c.post("/api/manifests", json=rows(make_manifests(3)))
        r = c.post("/api/scans", json={"manifest_id": "M0000001", "path": str(path), "scan_id": "SCAN-1"})
        assert r.status_code == 200, r.text
        assert r.json()["scan_id"] == "SCAN-1"
        outside = scan_png(tmp_path, "elsewhere.png")
        r = c.post("/api/scans", json={"manifest_id": "M0000001", "path": str(outside)})
        assert r.status_code == 403 and "outside the allowed scan roots" in r.json()["detail"]
        r = c.post("/api/scans", json={"manifest_id": "M0000001", "path": str(root / "../scanner/nope.png")})
        assert r.status_code == 422 and "not found" in r.json()["detail"]
    assert app.state.store.latest_scan("M0000001")["path"] == str(path)


# --------------------------------------------------------------------------------------------
# Outcomes
# --------------------------------------------------------------------------------------------

def test_outcomes_and_hit_rates(client):
    client.post("/api/manifests", json=rows(make_manifests(20)))
    q = client.get("/api/queue", params={"port": "NLRTM"}).json()["items"]
    scan = [i for i in q if i["lane"] == "scan"][:3]
    r = client.post("/api/outcomes", json={"manifest_id": scan[0]["manifest_id"], "result": "seizure",
                                           "amount_kg": 48.5, "notes": "bags behind the doors"})
    assert r.status_code == 201, r.text
    assert r.json()["lane"] == "scan" and r.json()["amount_kg"] == 48.5
    for i in scan[1:]:
        assert client.post("/api/outcomes", json={"manifest_id": i["manifest_id"],
                                                  "result": "nothing_found"}).status_code == 201
    out = client.get("/api/outcomes").json()
    assert len(out) == 3 and {o["result"] for o in out} == {"seizure", "nothing_found"}
    rates = {(h["lane"], h["selection_kind"]): h for h in client.get("/api/outcomes/hit-rates").json()}
    total = sum(h["inspections"] for (lane, _), h in rates.items() if lane == "all")
    seized = sum(h["seizures"] for (lane, _), h in rates.items() if lane == "all")
    assert (total, seized) == (3, 1)
    assert all(0 <= h["ci_low"] <= h["hit_rate"] <= h["ci_high"] <= 1 for h in rates.values())

    r = client.post("/api/outcomes", json={"manifest_id": "GHOST", "result": "seizure"})
    assert r.status_code == 404 and "'GHOST'" in r.json()["detail"]
    assert "POST /api/manifests" in r.json()["detail"] and "Store." not in r.json()["detail"]
    r = client.post("/api/outcomes", json={"manifest_id": scan[0]["manifest_id"], "result": "lost"})
    assert r.status_code == 422
    r = client.post("/api/outcomes", json={"manifest_id": scan[1]["manifest_id"], "result": "nothing_found",
                                           "amount_kg": 3})
    assert r.status_code == 422 and "needs result 'seizure'" in r.json()["detail"]


# --------------------------------------------------------------------------------------------
# Feed
# --------------------------------------------------------------------------------------------

def test_broadcaster_delivers_across_threads_and_survives_slow_readers():
    async def scenario():
        b = Broadcaster(queue_size=4)
        fast, slow = b.subscribe(), b.subscribe()
        publisher = threading.Thread(target=b.publish, args=("manifests", {"manifest_ids": ["M1"]}))
        publisher.start()
        ev = await fast.get(timeout=5)
        publisher.join()  # its delivery to the slow reader is scheduled before the burst below
        assert ev.event == "manifests" and ev.data["manifest_ids"] == ["M1"]
        assert ev.to_sse().startswith(f"id: {ev.id}\nevent: manifests\ndata: {{")
        for k in range(10):
            b.publish("scan", {"k": k})
        await asyncio.sleep(0.05)
        got = []
        # drain what is queued (a timed get can expire on a loaded machine with items waiting)
        while not slow.queue.empty():
            got.append(slow.queue.get_nowait())
        assert len(got) <= 4 and got[-1].data["k"] == 9
        assert any(e.event == "resync" for e in got)
        b.unsubscribe(fast)
        b.unsubscribe(slow)
        assert b.subscribers == 0
        assert b.publish("manifests", {}) == 0
    asyncio.run(scenario())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yields the base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_feed_delivers_an_event_after_an_ingest(tmp_path):
    app = make_app(tmp_path)
    events: list[tuple[str, dict]] = []
    lines: list[str] = []
    connected = threading.Event()

    def listen(url: str) -> None:
        # the token as a query parameter, as EventSource sends it
        token = app.state.test_tokens["officer"]
        with httpx.Client(timeout=httpx.Timeout(10.0)) as h, \
                h.stream("GET", f"{url}/api/feed?limit=1&access_token={token}") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in r.iter_lines():
                lines.append(line)
                if line.startswith(": connected"):
                    connected.set()
                elif line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name:
                    events.append((name, json.loads(line[6:])))

    with running_server(app) as url:
        listener = threading.Thread(target=listen, args=(url,), daemon=True)
        listener.start()
        assert connected.wait(10), f"no connection comment: {lines}"
        time.sleep(0.6)  # long enough for a keep-alive comment (keepalive_s=0.5)
        r = httpx.post(f"{url}/api/manifests", json=rows(make_manifests(6)), headers=bearer(app), timeout=30)
        assert r.status_code == 200
        listener.join(10)
        assert not listener.is_alive(), "the feed did not close after limit=1 events"
    assert ": keep-alive" in lines
    assert len(events) == 1
    name, data = events[0]
    assert name == "manifests" and data["inserted"] == 6
    assert sorted(data["manifest_ids"]) == [f"M{i:07d}" for i in range(6)]
    assert {g["port"] for g in data["groups"]} == {"NLRTM"}
    assert sum(c["containers"] for c in data["lane_counts"]) == 6


# --------------------------------------------------------------------------------------------
# Health, docs, page, CLI
# --------------------------------------------------------------------------------------------

def test_health_docs_and_page(app):
    # public routes: no token
    with TestClient(app) as anonymous:
        h = anonymous.get("/api/health")
        assert h.status_code == 200
        body = h.json()
        # nothing about the data, the database address or versions
        assert body == {"status": "ok", "db": True, "models": {"manifest": {"loaded": True, "available": True},
                                                               "scan": {"loaded": True, "available": True}}}
        assert anonymous.get("/docs").status_code == 200
        spec = anonymous.get("/openapi.json").json()
        page = anonymous.get("/")
    for path in ("/api/manifests", "/api/scans", "/api/queue", "/api/outcomes", "/api/feed", "/api/health",
                 "/api/scans/{manifest_id}/overlay.png", "/api/indicators", "/api/rescore", "/api/tokens"):
        assert path in spec["paths"], path
    assert "text/csv" in spec["paths"]["/api/manifests"]["post"]["requestBody"]["content"]
    assert {"token", "access_token"} <= set(spec["components"]["securitySchemes"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'new EventSource("/api/feed?access_token="' in page.text and "/api/outcomes" in page.text
    assert "sessionStorage.setItem" in page.text and "localStorage." not in page.text


def test_scorer_output_is_checked():
    ids = pd.Series(["A", "B"])
    with pytest.raises(ValueError, match="no score for 1 manifest"):
        check_scores(pd.DataFrame({"manifest_id": ["A"], "risk_score": [0.2]}), ids)
    with pytest.raises(ValueError, match=r"missing \['risk_score'\]"):
        check_scores(pd.DataFrame({"manifest_id": ["A", "B"]}), ids)
    ok = check_scores(pd.DataFrame({"manifest_id": ["B", "A"], "risk_score": [0.2, 0.1]}), ids)
    assert ok["manifest_id"].tolist() == ["A", "B"] and ok["mandatory"].tolist() == [False, False]


def test_real_manifest_model_behind_the_api(tmp_path):
    """The real scorer (a small RiskModel trained here) serves POST /api/manifests end to end."""
    from riskengine.model import RiskModel
    from riskengine.synth import generate_manifests

    history = generate_manifests(2000, seed=3, days=30, illicit_rate=0.06)
    RiskModel(n_estimators=15, learning_rate=0.2, seed=1).fit(history).save(tmp_path / "model")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'real.db'}", model_dir=tmp_path / "model",
                        data_dir=tmp_path / "data", queue=QUEUE)
    app = with_tokens(create_app(settings))
    app.dependency_overrides[get_triager] = FakeTriager
    arrivals = generate_manifests(30, seed=4, start="2026-02-20", days=1)
    arrivals.loc[0, "seal_number_gate"] = "XX0000000"  # a critical indicator: seal mismatch at the gate
    payload = rows(arrivals.drop(columns=["is_illicit", "modus_operandi", "concealment_location", "amount_kg",
                                          "inspected", "selection", "outcome_at"], errors="ignore"))
    with client_for(app) as c:
        r = c.post("/api/manifests", json=payload)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["scored"] == body["valid"] == body["inserted"] and body["rejected"] == 0
        health = c.get("/api/health").json()["models"]["manifest"]
        model = c.get("/api/models").json()[0]
        items = c.get("/api/queue", params={"port": "NLRTM"}).json()["items"]
    assert health == {"loaded": True, "available": True}
    assert model["kind"] == "manifest" and model["version"].startswith("model@") and model["loaded"]
    assert len(items) == 30 and all(0 <= i["risk_score"] <= 1 for i in items)
    first = next(i for i in items if i["manifest_id"] == arrivals.loc[0, "manifest_id"])
    assert first["mandatory"] and first["reasons"].startswith("mandatory: Seal number at the gate")
    assert first["selection"] == "mandatory"
    assert sum(i["mandatory"] for i in items) == 1
    top = max((i for i in items if not i["mandatory"]), key=lambda i: i["risk_score"])
    assert top["reasons"]  # the model says why (reasons are the features that raise the risk)


def _handmade_scan_model(out: Path) -> Path:
    """A scan model directory whose ONNX graph is written by hand (no torch): the heatmap is
    the mean attenuation per 16x16 cell, the score its sigmoid maximum; enough to run the real
    ONNX Runtime triage behind the API."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from scanvision.preprocess import PreprocessConfig

    k = len(CARGO_FAMILIES)
    w = np.linspace(-1, 1, k, dtype=np.float32).reshape(1, k)
    nodes = [
        helper.make_node("AveragePool", ["image"], ["cells"], kernel_shape=[16, 16], strides=[16, 16]),
        helper.make_node("Mul", ["cells", "gain"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "offset"], ["heatmap_logits"]),
        helper.make_node("ReduceMax", ["heatmap_logits"], ["peak"], keepdims=0, axes=[1, 2, 3]),
        helper.make_node("Sigmoid", ["peak"], ["score"]),
        helper.make_node("ReduceMean", ["image"], ["density"], keepdims=0, axes=[1, 2, 3]),
        helper.make_node("Neg", ["density"], ["neg_density"]),
        helper.make_node("Sigmoid", ["neg_density"], ["empty_prob"]),
        helper.make_node("Unsqueeze", ["density", "one"], ["density_col"]),
        helper.make_node("MatMul", ["density_col", "class_w"], ["class_logits"]),
    ]
    graph = helper.make_graph(
        nodes, "handmade_triage",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 64, "width"]),
         helper.make_tensor_value_info("width", TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("heatmap_logits", TensorProto.FLOAT, ["batch", 1, 4, "cols"]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("empty_prob", TensorProto.FLOAT, ["batch"]),
         helper.make_tensor_value_info("class_logits", TensorProto.FLOAT, ["batch", k])],
        initializer=[helper.make_tensor("gain", TensorProto.FLOAT, [], [8.0]),
                     helper.make_tensor("offset", TensorProto.FLOAT, [], [4.0]),
                     helper.make_tensor("one", TensorProto.INT64, [1], [1]),
                     helper.make_tensor("class_w", TensorProto.FLOAT, [1, k], w.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    out.mkdir(parents=True)
    onnx.save(model, out / "model.onnx")
    (out / "config.json").write_text(json.dumps({
        "format_version": 1, "model_name": "handmade", "onnx_file": "model.onnx",
        "preprocess": PreprocessConfig(height=64).to_dict(), "class_names": list(CARGO_FAMILIES),
        "heatmap_stride": 16, "outputs": ["heatmap_logits", "score", "empty_prob", "class_logits"],
        "training": {"threat_rate": 0.2},
    }))
    return out


def test_real_scan_triage_behind_the_api(tmp_path):
    model_dir = _handmade_scan_model(tmp_path / "cnn")
    settings = Settings(db_url=f"sqlite:///{tmp_path / 'scan.db'}", scan_model_dir=model_dir,
                        data_dir=tmp_path / "data", queue=QUEUE)
    app = with_tokens(create_app(settings))
    app.dependency_overrides[get_scorer] = FakeScorer
    with client_for(app) as c:
        assert c.get("/api/health").json()["models"]["scan"] == {"loaded": False, "available": True}
        scan_model = c.get("/api/models").json()[1]
        assert (scan_model["kind"], scan_model["version"], scan_model["name"]) == ("scan", "handmade", "handmade")
        c.post("/api/manifests", json=rows(make_manifests(5)))
        r = c.post("/api/scans", data={"manifest_id": "M0000002"},
                   files={"file": ("scan.png", scan_png(tmp_path).read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert c.get("/api/health").json()["models"]["scan"]["loaded"] is True
        overlay = c.get(body["overlay_url"])
    # the dense block (T = 0.2: attenuation 1.6/6 per pixel) lights the heatmap: score ~ sigmoid(8*0.27-4)
    assert 0.05 < body["concealment_score"] < 0.5
    assert body["cargo_class"] in CARGO_FAMILIES
    assert body["estimated_mass_kg"] is None  # the sidecar has no mass calibration
    # the triage score is calibrated at a 20% prevalence: its likelihood ratio is relative to that
    expected_llr = np.log(body["concealment_score"] / (1 - body["concealment_score"])) - np.log(0.2 / 0.8)
    assert body["image_llr"] == pytest.approx(expected_llr, abs=1e-4)
    assert overlay.status_code == 200 and overlay.content[:8] == b"\x89PNG\r\n\x1a\n"


def test_serve_cli(monkeypatch, tmp_path):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    runner = CliRunner()
    assert "--model-dir" in runner.invoke(cli_main, ["serve", "--help"]).output
    db = tmp_path / "q.db"
    r = runner.invoke(cli_main, ["serve", "--db", f"sqlite:///{db}", "--port", "8123",
                                 "--scan-capacity", "12", "--model-dir", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert seen["port"] == 8123 and seen["host"] == "127.0.0.1"
    assert seen["app"].state.settings.queue.scan_capacity == 12
    assert db.exists()
    assert "riskengine tokens create" in r.output  # no token in the new database yet: how to make one
    r = runner.invoke(cli_main, ["serve", "--db", "mysql://u:p@h/db"])
    assert r.exit_code == 1 and "unsupported database 'mysql'" in r.output
    r = runner.invoke(cli_main, ["serve", "--db", "postgresql+psycopg://u:p@127.0.0.1:1/x?connect_timeout=2"])
    assert r.exit_code == 1 and "ConnectionError: cannot open the database" in r.output
    assert runner.invoke(cli_main, ["serve", "--port", "0"]).exit_code == 2


def test_serve_cli_auth_switch(monkeypatch, tmp_path):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'q.db'}"
    r = runner.invoke(cli_main, ["serve", "--db", db, "--no-auth", "--host", "0.0.0.0"])
    assert r.exit_code == 1 and "loopback address only" in r.output and not seen
    r = runner.invoke(cli_main, ["serve", "--db", db, "--no-auth", "--host", "127.0.0.1",
                                 "--max-json-bytes", "1000"])
    assert r.exit_code == 0, r.output
    assert "authentication is OFF" in r.output
    assert seen["app"].state.settings.auth is False and seen["app"].state.settings.max_json_bytes == 1000
    seen.clear()
    r = runner.invoke(cli_main, ["serve", "--db", db])
    assert r.exit_code == 0 and seen["app"].state.settings.auth is True



def test_unreadable_upload_names_the_upload_not_a_server_path(client):
    """A file the reader cannot use gives 422 naming the upload; no server temp path leaks."""
    import tempfile

    garbage = bytes(range(256)) * 64
    r = client.post("/api/manifests", files={"file": ("arrivals.parquet", garbage, "application/octet-stream")})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("cannot read the uploaded manifests")
    assert tempfile.gettempdir() not in detail and "upload.parquet" not in detail
    assert "arrivals.parquet" in detail


# --------------------------------------------------------------------------------------------
# Paging and timestamps
# --------------------------------------------------------------------------------------------


def test_queue_pages_through_every_container_exactly_once(client, app):
    assert client.post("/api/manifests", json=rows(make_manifests(2_500))).status_code == 200
    whole = client.get("/api/queue", params={"port": "NLRTM", "limit": 5_000}).json()
    assert whole["total"] == len(whole["items"]) == 2_500 and whole["next_cursor"] is None

    two = client.get("/api/queue", params={"port": "NLRTM", "limit": 2})
    assert len(two.json()["items"]) == 2 and two.json()["total"] == 2_500
    assert two.headers["X-Next-Cursor"] == two.json()["next_cursor"]
    assert 'rel="next"' in two.headers["Link"]

    seen, cursor, pages = [], None, 0
    while True:
        params = {"port": "NLRTM", "limit": 300} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/queue", params=params).json()
        assert len(page["items"]) <= 300 and page["lane_counts"] == whole["lane_counts"]
        seen += [i["manifest_id"] for i in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 9
    assert seen == [i["manifest_id"] for i in whole["items"]]  # same order, each exactly once
    assert len(set(seen)) == 2_500

    r = client.get("/api/queue", params={"port": "NLRTM", "cursor": "not-a-cursor"})
    assert r.status_code == 422 and "next_cursor" in r.json()["detail"]
    assert client.get("/api/queue", params={"port": "NLRTM", "limit": 0}).status_code == 422


def test_other_list_routes_page_too(client, app):
    payload = rows(make_manifests(30))
    assert client.post("/api/manifests", json=payload).status_code == 200
    for i in payload[:7]:
        assert client.post("/api/outcomes", json={"manifest_id": i["manifest_id"],
                                                  "result": "nothing_found"}).status_code == 201

    def every(path: str, key: str, limit: int, headers=None) -> list:
        got, cursor = [], None
        while True:
            r = client.get(path, params={"limit": limit} | ({"cursor": cursor} if cursor else {}),
                           headers=headers)
            assert r.status_code == 200, r.text
            assert len(r.json()) <= limit
            got += [x[key] for x in r.json()]
            cursor = r.headers.get("X-Next-Cursor")
            if cursor is None:
                return got

    outcomes = every("/api/outcomes", "manifest_id", 3)
    assert outcomes == sorted(i["manifest_id"] for i in payload[:7])
    groups = every("/api/queue/groups", "terminal", 1)
    assert sorted(groups) == ["NLRTM-APMT", "NLRTM-ECT"]
    admin = bearer(app, "admin")
    audit = every("/api/audit", "id", 16, headers=admin)
    assert len(audit) == len(set(audit)) == len(app.state.store.audit(None))
    assert audit == sorted(audit, reverse=True)
    tokens = every("/api/tokens", "token_id", 2, headers=admin)
    assert len(tokens) == len(set(tokens)) == 3


def test_reply_timestamps_are_utc_aware(client, app):
    payload = rows(make_manifests(10))
    client.post("/api/manifests", json=payload)
    client.post("/api/outcomes", json={"manifest_id": payload[0]["manifest_id"], "result": "nothing_found"})
    item = client.get("/api/queue", params={"port": "NLRTM"}).json()["items"][0]
    recorded = client.get("/api/outcomes").json()[0]["recorded_at"]
    admin = bearer(app, "admin")
    token = client.get("/api/tokens", headers=admin).json()[0]["created_at"]
    at = client.get("/api/audit", headers=admin).json()[0]["at"]
    for text in (item["decided_at"], recorded, token, at):
        assert text.endswith(("Z", "+00:00")), text
