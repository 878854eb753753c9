"""Service security: API tokens and roles on every route, the audit actor, TLP filtering of
indicator packs, request size limits, and the tokens CLI.

Uses the test doubles of tests/test_service.py (no trained model needed); the store tests run on
SQLite and, when a server answers, PostgreSQL (the ``store_url`` fixture of tests/test_store.py).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi import Depends
from fastapi.testclient import TestClient
from test_service import (
    QUEUE,
    FakeScorer,
    bearer,
    client_for,
    make_app,
    rows,
    running_server,
    scan_png,
)
from test_store import make_manifests, pg_schema_url, store_url  # noqa: F401 (fixtures)

from riskengine.cli import main as cli_main
from riskengine.indicators import default_packs, parse_pack
from riskengine.service import Settings, create_app
from riskengine.service.auth import (
    PUBLIC,
    QUERY_TOKEN_ROUTES,
    QUERY_TOKEN_SCOPE_KEY,
    ROUTE_ROLES,
    QueryTokenMiddleware,
    check_route_table,
    iter_routes,
    require_role,
)
from riskengine.service.deps import get_scorer
from riskengine.service.scoring import mandatory_rules
from riskengine.store import ApiToken, Store, utcnow

BUILTIN_PACK = default_packs()[0].id
RANK = {"officer": 0, "analyst": 1, "admin": 2}

# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def pack_yaml(pack_id: str, tlp: str, title: str, severity: str = "medium") -> str:
    """A small valid pack: one indicator that fires on bananas from Ecuador."""
    return f"""metadata:
  id: {pack_id}
  version: 1.2.0
  issuer: {{agency: Partner customs service, country: BE}}
  created: 2025-06-01
  tlp: {tlp}
  description: Test pack marked {tlp}.
indicators:
  - id: {pack_id.replace('-', '_')}_banana_ec
    title: "{title}"
    rationale: Seen on this route by the partner.
    condition: {{all: [{{field: origin_country, eq: EC}}, {{field: hs_code, prefix: "0803"}}]}}
    severity: {severity}
"""


@pytest.fixture
def packs_dir(tmp_path):
    d = tmp_path / "packs"
    d.mkdir()
    (d / "amber.yaml").write_text(pack_yaml("partner-amber", "AMBER", "Amber route seen by the partner"))
    (d / "red.yaml").write_text(pack_yaml("partner-red", "RED", "Red source: informant on vessel X"))
    return d


def _expire(store: Store, token_id: str) -> None:
    t = ApiToken.__table__
    with store.engine.begin() as conn:
        conn.execute(sa.update(t).where(t.c.token_id == token_id).values(expires_at=utcnow() - timedelta(hours=1)))


@pytest.fixture
def app(tmp_path, packs_dir):
    app = make_app(tmp_path, packs_dir=packs_dir, allow_unsigned_packs=True)
    store = app.state.store
    _, revoked = store.create_token("gone", "admin", actor="test setup")
    store.revoke_token(revoked.split("_")[1], actor="test setup")
    _, expired = store.create_token("late", "admin", actor="test setup")
    _expire(store, expired.split("_")[1])
    app.state.test_tokens.update(revoked=revoked, expired=expired)
    return app


@pytest.fixture
def client(app):
    with TestClient(app) as c:  # no default token: each test says which one it sends
        yield c


def auth(app, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {app.state.test_tokens[role]}"}


# --------------------------------------------------------------------------------------------
# The role table covers every route
# --------------------------------------------------------------------------------------------

def test_every_route_is_in_the_role_table(app):
    served = set()
    for route in iter_routes(app):
        for method in set(route.methods) - {"HEAD"}:
            served.add((method, route.path))
            assert (method, route.path) in ROUTE_ROLES, f"{method} {route.path} is not in ROUTE_ROLES"
    assert served == set(ROUTE_ROLES)
    assert len(served) == 25


def test_a_route_outside_the_table_or_with_another_role_is_refused(tmp_path):
    app = make_app(tmp_path)

    @app.get("/api/secret")
    def secret() -> dict:
        return {"data": 1}

    with pytest.raises(RuntimeError, match=r"GET /api/secret is not in ROUTE_ROLES"):
        check_route_table(app)

    app2 = make_app(tmp_path / "b")

    @app2.get("/api/audit-copy", dependencies=[Depends(require_role("officer"))])
    def copy() -> dict:
        return {}

    ROUTE_ROLES[("GET", "/api/audit-copy")] = "admin"
    try:
        with pytest.raises(RuntimeError, match=r"GET /api/audit-copy checks \[\('officer', False\)\] but "
                                               r"ROUTE_ROLES says admin"):
            check_route_table(app2)
    finally:
        del ROUTE_ROLES[("GET", "/api/audit-copy")]


# --------------------------------------------------------------------------------------------
# Every protected route: 401 without a valid token, 403 for a lower role, neither for its role
# --------------------------------------------------------------------------------------------

PROTECTED = sorted((m, p, r) for (m, p), r in ROUTE_ROLES.items() if r != PUBLIC)


def _request(client: TestClient, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    url = (path.replace("{manifest_id}", "M0000001").replace("{pack_id}", BUILTIN_PACK)
           .replace("{token_id}", "0123456789abcdef"))
    params = {"port": "NLRTM"} if path == "/api/queue" else None
    body = {
        "/api/outcomes": {"manifest_id": "GHOST", "result": "nothing_found"},
        "/api/manifests": {"manifests": []},
        "/api/scans": {},
        "/api/rescore": {"port": "XXNONE"},
        "/api/tokens": {"name": "made-by-test", "role": "officer"},
    }.get(path) if method == "POST" else None
    return client.request(method, url, params=params, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "role"), PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_route_needs_a_valid_token_of_its_role(client, app, method, path, role):
    r = _request(client, method, path, {})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "authentication required" in r.json()["detail"]

    for bad, message in (("rk_garbage", "malformed"),
                         ("rk_0123456789abcdef_" + "A" * 43, "unknown token"),
                         (app.state.test_tokens["revoked"], "was revoked at"),
                         (app.state.test_tokens["expired"], "expired at")):
        r = _request(client, method, path, {"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, (bad, r.text)
        assert message in r.json()["detail"]
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
    r = _request(client, method, path, {"Authorization": "Basic dXNlcjpwdw=="})
    assert r.status_code == 401 and "must read 'Bearer <token>'" in r.json()["detail"]

    for lower in [x for x in RANK if RANK[x] < RANK[role]]:
        r = _request(client, method, path, auth(app, lower))
        assert r.status_code == 403, r.text
        assert r.json()["detail"] == (f"{method} {path.replace('{manifest_id}', 'M0000001').replace('{pack_id}', BUILTIN_PACK).replace('{token_id}', '0123456789abcdef')} "
                                      f"needs the {role} role; token '{lower}-1' has the {lower} role")

    if (method, path) in QUERY_TOKEN_ROUTES:
        return  # an open event stream: test_feed_takes_the_token_in_the_query_string
    for allowed in [x for x in RANK if RANK[x] >= RANK[role]]:
        r = _request(client, method, path, auth(app, allowed))
        assert r.status_code not in (401, 403), (allowed, r.text)


def test_public_routes_need_no_token(client):
    for path in ("/api/health", "/", "/favicon.ico", "/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code in (200, 204), path


def test_page_and_answers_carry_security_headers(client, app):
    import base64
    import re

    page = client.get("/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # the page's own inline script is allowed by its hash, nothing else
    (script,) = re.findall(r"<script>(.*?)</script>", page.text, flags=re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp
    for r in (page, client.get("/api/health"), client.get("/api/queue/groups"),  # 401
              client.get("/api/queue/groups", headers=auth(app, "officer")),
              client.post("/api/outcomes", content=b"[" * 100, headers={**auth(app, "officer"),
                                                                        "content-type": "application/json"})):
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"


def test_query_token_is_refused_outside_the_feed(client, app):
    token = app.state.test_tokens["admin"]
    r = client.get(f"/api/queue/groups?access_token={token}")
    assert r.status_code == 401 and "accepted on GET /api/feed only" in r.json()["detail"]


def test_query_token_leaves_the_query_string():
    """Access logs print the URL: the middleware moves the token out of the query string."""
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    import asyncio

    scope = {"type": "http", "query_string": b"limit=1&access_token=rk_abc_secret&keepalive=2"}
    asyncio.run(QueryTokenMiddleware(app)(scope, None, None))
    assert seen["query_string"] == b"limit=1&keepalive=2"
    assert seen[QUERY_TOKEN_SCOPE_KEY] == "rk_abc_secret"
    assert scope["query_string"] == b"limit=1&keepalive=2"  # the server's own scope dict


@pytest.mark.parametrize("name", ["access%5Ftoken", "access%5ftoken", "%61ccess_token", "access_tok%65n"])
def test_a_percent_encoded_query_token_name_leaves_the_query_string_too(name):
    """The query parser decodes the name; the middleware must compare it decoded as well."""
    import asyncio

    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    scope = {"type": "http", "query_string": f"keepalive=2&{name}=rk_abc_secret".encode()}
    asyncio.run(QueryTokenMiddleware(app)(scope, None, None))
    assert scope["query_string"] == b"keepalive=2" and b"secret" not in seen["query_string"]
    assert seen[QUERY_TOKEN_SCOPE_KEY] == "rk_abc_secret"


def test_access_log_never_shows_the_query_token(app):
    import io
    import logging

    officer = app.state.test_tokens["officer"]
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    access = logging.getLogger("uvicorn.access")
    with running_server(app) as url:
        level = access.level
        access.setLevel(logging.INFO)
        access.addHandler(handler)
        try:
            with httpx.stream("GET", f"{url}/api/feed?limit=1&keepalive=0.2&access_token={officer}") as r:
                assert r.status_code == 200 and next(r.iter_lines()).startswith(": connected")
            with httpx.stream("GET", f"{url}/api/feed?limit=1&keepalive=0.3&access%5Ftoken={officer}") as r:
                assert r.status_code == 200 and next(r.iter_lines()).startswith(": connected")
            assert httpx.get(f"{url}/api/queue/groups?access_token={officer}").status_code == 401
        finally:
            access.removeHandler(handler)
            access.setLevel(level)
    log = buf.getvalue()
    assert '"GET /api/feed?limit=1&keepalive=0.2 HTTP/1.1" 200' in log
    assert '"GET /api/feed?limit=1&keepalive=0.3 HTTP/1.1" 200' in log
    assert '"GET /api/queue/groups HTTP/1.1" 401' in log
    assert officer.split("_")[2] not in log


def test_feed_takes_the_token_in_the_query_string_and_ends_when_it_is_revoked(app):
    officer = app.state.test_tokens["officer"]
    lines: list[str] = []
    connected, ended = threading.Event(), threading.Event()

    def listen(url: str) -> None:
        with httpx.Client(timeout=httpx.Timeout(10.0)) as h, \
                h.stream("GET", f"{url}/api/feed?keepalive=0.2&access_token={officer}") as r:
            lines.append(str(r.status_code))
            for line in r.iter_lines():
                lines.append(line)
                if line.startswith(": connected"):
                    connected.set()
        ended.set()

    with running_server(app) as url:
        assert httpx.get(f"{url}/api/feed?access_token=rk_nope").status_code == 401
        with httpx.stream("GET", f"{url}/api/feed?limit=1", headers=auth(app, "analyst")) as r:
            assert r.status_code == 200 and next(r.iter_lines()).startswith(": connected")
        threading.Thread(target=listen, args=(url,), daemon=True).start()
        assert connected.wait(10), lines
        app.state.store.revoke_token(officer.split("_")[1], actor="admin-1")
        assert ended.wait(10), f"the stream did not end after the revocation: {lines}"
    assert lines[0] == "200"
    assert "event: unauthorized" in lines


# --------------------------------------------------------------------------------------------
# Tokens: stored hashed, created and revoked through the API, audited
# --------------------------------------------------------------------------------------------

def test_tokens_are_stored_hashed(tmp_path):
    db = tmp_path / "tokens.db"
    store = Store(f"sqlite:///{db}")
    info, text = store.create_token("port-officer", "officer", actor="admin")
    prefix, token_id, secret = text.split("_", 2)
    assert prefix == "rk" and token_id == info.token_id and len(secret) == 43  # 32 random bytes
    assert store.authenticate(text).name == "port-officer"
    store.close()
    files = [f for f in tmp_path.iterdir() if f.name.startswith("tokens.db")]
    raw = b"".join(f.read_bytes() for f in files)
    assert secret.encode() not in raw and text.encode() not in raw
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in raw
    assert token_id.encode() in raw


def test_store_tokens(store_url):  # noqa: F811
    store = Store(store_url)
    try:
        info, text = store.create_token("analyst A", "analyst", actor="admin-1")
        assert (info.role, info.clearance, info.expires_at) == ("analyst", "AMBER", None)
        assert store.create_token("officer B", "officer", actor="x")[0].clearance == "GREEN"
        red, red_text = store.create_token("partner desk", "analyst", clearance="tlp:red",
                                           expires_at=datetime.now(timezone.utc) + timedelta(days=1), actor="x")
        assert red.clearance == "RED" and red.expires_at > utcnow()
        assert store.authenticate(red_text).clearance == "RED"

        got = store.authenticate(text)
        assert got.token_id == info.token_id and got.last_used_at is not None
        assert store.check_token(text[:-1] + ("A" if text[-1] != "A" else "B")) == (None, "unknown")
        assert store.check_token("rk_x_y") == (None, "malformed")
        assert store.check_token(None) == (None, "missing")
        assert store.check_token("Bearer " + text) == (None, "malformed")

        revoked = store.revoke_token(info.token_id, actor="admin-1")
        assert revoked.state() == "revoked" and revoked.revoked_by == "admin-1"
        assert store.authenticate(text) is None
        assert store.check_token(text)[1] == "revoked"
        assert store.revoke_token(info.token_id, actor="admin-2").revoked_by == "admin-1"  # changes nothing
        with pytest.raises(KeyError, match="no API token with id 'ffffffffffffffff'"):
            store.revoke_token("ffffffffffffffff", actor="admin-1")

        listed = store.list_tokens()
        assert [t.name for t in listed] == ["analyst A", "officer B", "partner desk"]
        audit = store.audit(None, entity_id=info.token_id)
        assert audit["action"].tolist() == ["token.revoke", "token.create"]
        assert audit["actor"].tolist() == ["admin-1", "admin-1"]
        assert audit["details"].iloc[1] == {"name": "analyst A", "role": "analyst", "clearance": "AMBER",
                                            "expires_at": None}
        assert text.split("_", 2)[2] not in json.dumps(store.audit(None)["details"].tolist())

        with pytest.raises(ValueError, match=r"role must be one of \['officer', 'analyst', 'admin'\]"):
            store.create_token("x", "root", actor="a")
        with pytest.raises(ValueError, match="not a TLP marking"):
            store.create_token("x", "officer", clearance="PURPLE", actor="a")
        with pytest.raises(ValueError, match="is not in the future"):
            store.create_token("x", "officer", expires_at=datetime(2020, 1, 1), actor="a")
        with pytest.raises(ValueError, match="a name of 1-128 characters"):
            store.create_token("  ", "officer", actor="a")
    finally:
        store.close()


def test_tokens_api(client, app):
    admin = auth(app, "admin")
    r = client.post("/api/tokens", json={"name": "night shift ECT", "role": "officer"}, headers=admin)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    made = r.json()
    assert (made["role"], made["clearance"], made["state"], made["created_by"]) == ("officer", "GREEN", "active",
                                                                                    "admin-1")
    new = {"Authorization": f"Bearer {made['token']}"}
    assert client.get("/api/queue/groups", headers=new).status_code == 200

    listed = client.get("/api/tokens", headers=admin)
    assert made["token"] not in listed.text and "secret" not in listed.text
    names = {t["name"]: t for t in listed.json()}
    assert names["gone"]["state"] == "revoked" and names["late"]["state"] == "expired"
    assert names["night shift ECT"]["last_used_at"] is not None

    # an AMBER admin cannot hand out RED
    r = client.post("/api/tokens", json={"name": "x", "role": "analyst", "clearance": "RED"}, headers=admin)
    assert r.status_code == 403 and "cannot grant RED" in r.json()["detail"]
    r = client.post("/api/tokens", json={"name": "x", "role": "superuser"}, headers=admin)
    assert r.status_code == 422

    r = client.delete(f"/api/tokens/{made['token_id']}", headers=admin)
    assert r.status_code == 200 and r.json()["state"] == "revoked" and r.json()["revoked_by"] == "admin-1"
    r = client.get("/api/queue/groups", headers=new)
    assert r.status_code == 401 and "was revoked" in r.json()["detail"]
    r = client.delete("/api/tokens/ffffffffffffffff", headers=admin)
    assert r.status_code == 404 and "no API token with id" in r.json()["detail"]


# --------------------------------------------------------------------------------------------
# The audit names the token
# --------------------------------------------------------------------------------------------

def test_audit_actor_is_the_token_name(client, app, tmp_path):
    store = app.state.store
    r = client.post("/api/manifests", json=rows(make_manifests(12, terminals=("NLRTM-ECT",))),
                    headers={**auth(app, "analyst"), "X-Actor": "someone else"})
    assert r.status_code == 200, r.text
    q = client.get("/api/queue", params={"port": "NLRTM"}, headers=auth(app, "officer")).json()["items"]
    target = next(i["manifest_id"] for i in q if i["lane"] == "scan")
    r = client.post("/api/scans", data={"manifest_id": target}, headers=auth(app, "analyst"),
                    files={"file": ("s.png", scan_png(tmp_path).read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    r = client.post("/api/outcomes", json={"manifest_id": target, "result": "seizure", "amount_kg": 12.0,
                                           "actor": "officer J. Jansen"}, headers=auth(app, "officer"))
    assert r.status_code == 201, r.text

    trail = store.audit(None)
    by_action = trail.groupby("action")["actor"].agg(set).to_dict()
    assert by_action["manifest.insert"] == {"analyst-1"}
    assert by_action["decision.stage1"] == {"analyst-1"}
    assert by_action["decision.stage2"] == {"analyst-1"}
    assert by_action["score.manifest"] == {"analyst-1"} and by_action["score.fused"] == {"analyst-1"}
    assert by_action["scan.record"] == {"analyst-1"}
    assert by_action["outcome.record"] == {"officer-1"}
    outcome = trail[trail["action"] == "outcome.record"].iloc[0]
    assert outcome["details"]["reported_by"] == "officer J. Jansen"
    assert store.outcomes()["actor"].tolist() == ["officer-1"]
    assert "someone else" not in set(trail["actor"])

    r = client.get("/api/audit", params={"limit": 3}, headers=auth(app, "admin"))
    assert r.status_code == 200 and len(r.json()) == 3
    assert r.json()[0]["action"] == "outcome.record" and r.json()[0]["actor"] == "officer-1"
    only = client.get("/api/audit", params={"actor": "officer-1", "limit": 100}, headers=auth(app, "admin")).json()
    assert {x["action"] for x in only} == {"outcome.record"}
    assert client.get("/api/audit", params={"limit": 0}, headers=auth(app, "admin")).status_code == 422


def test_without_auth_every_request_acts_as_the_configured_actor(tmp_path):
    s = Settings(db_url=f"sqlite:///{tmp_path / 'open.db'}", data_dir=tmp_path / "data", queue=QUEUE,
                 auth=False, actor="dev-laptop")
    app = create_app(s)
    app.dependency_overrides[get_scorer] = FakeScorer
    with TestClient(app) as c:
        assert c.post("/api/manifests", json=rows(make_manifests(3))).status_code == 200
        assert c.get("/api/audit").status_code == 200
    assert set(app.state.store.audit(None)["actor"]) == {"dev-laptop"}


# --------------------------------------------------------------------------------------------
# Indicator packs and TLP
# --------------------------------------------------------------------------------------------

def test_indicator_packs_are_filtered_by_clearance(client, app):
    store = app.state.store
    r = client.get("/api/indicators", headers=auth(app, "analyst"))  # default clearance AMBER
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["clearance"] == "AMBER" and body["rejected"] == []
    listed = {p["id"]: p for p in body["packs"]}
    assert set(listed) == {BUILTIN_PACK, "partner-amber"}  # the RED pack is not listed at all
    assert "partner-red" not in r.text and "informant" not in r.text
    assert listed[BUILTIN_PACK]["origin"] == "built-in" and listed[BUILTIN_PACK]["signature"] == "built-in"
    amber = listed["partner-amber"]
    assert (amber["tlp"], amber["version"], amber["indicators"], amber["file"]) == ("AMBER", "1.2.0", 1, "amber.yaml")
    assert amber["signature"] in ("unsigned", "not checked")

    r = client.get("/api/indicators/partner-red", headers=auth(app, "analyst"))
    assert r.status_code == 403 and "TLP:RED, above the clearance AMBER" in r.json()["detail"]
    assert "informant" not in r.text
    r = client.get("/api/indicators/nope", headers=auth(app, "analyst"))
    assert r.status_code == 404 and "no indicator pack 'nope'" in r.json()["detail"]
    r = client.get("/api/indicators/partner-amber", headers=auth(app, "analyst"))
    assert r.status_code == 200
    assert r.json()["content"]["indicators"][0]["title"] == "Amber route seen by the partner"

    _, red = store.create_token("liaison", "analyst", clearance="RED", actor="cli:root")
    _, green = store.create_token("trainee", "analyst", clearance="GREEN", actor="cli:root")
    red_view = client.get("/api/indicators", headers={"Authorization": f"Bearer {red}"}).json()
    assert {p["id"] for p in red_view["packs"]} == {BUILTIN_PACK, "partner-amber", "partner-red"}
    detail = client.get("/api/indicators/partner-red", headers={"Authorization": f"Bearer {red}"}).json()
    assert detail["content"]["indicators"][0]["title"] == "Red source: informant on vessel X"
    green_view = client.get("/api/indicators", headers={"Authorization": f"Bearer {green}"}).json()
    assert {p["id"] for p in green_view["packs"]} == {BUILTIN_PACK}


def test_a_pack_that_does_not_load_is_reported(tmp_path, packs_dir):
    (packs_dir / "broken.yaml").write_text("metadata: {id: x}\nindicators: []\n")
    app = make_app(tmp_path, packs_dir=packs_dir, allow_unsigned_packs=True)
    with TestClient(app) as c:
        analyst = c.get("/api/indicators", headers=bearer(app, "analyst")).json()
        admin = c.get("/api/indicators", headers=bearer(app, "admin")).json()
    assert [r["file"] for r in analyst["rejected"]] == ["broken.yaml"]
    assert "administrator" in analyst["rejected"][0]["reason"]
    assert "metadata" in admin["rejected"][0]["reason"]  # the reason, for administrators
    assert {p["id"] for p in admin["packs"]} == {BUILTIN_PACK, "partner-amber"}


def test_unsigned_partner_packs_are_refused_by_default(tmp_path, packs_dir):
    app = make_app(tmp_path, packs_dir=packs_dir)  # allow_unsigned_packs off
    with TestClient(app) as c:
        body = c.get("/api/indicators", headers=bearer(app, "admin")).json()
    assert {p["id"] for p in body["packs"]} == {BUILTIN_PACK}
    assert sorted(r["file"] for r in body["rejected"]) == ["amber.yaml", "red.yaml"]


def test_mandatory_reasons_do_not_quote_packs_above_the_officers_clearance():
    manifests = make_manifests(3)
    manifests["origin_country"] = "EC"
    red = parse_pack(pack_yaml("partner-red", "RED", "Red source: informant on vessel X", severity="critical"))
    green = parse_pack(pack_yaml("partner-green", "GREEN", "Green rule the officers may read",
                                 severity="critical"))
    mask, text = mandatory_rules(manifests, 10.0, [red, green])
    assert mask.tolist() == [True, True, True]
    assert all("informant" not in t for t in text)
    assert all("indicator of pack partner-red (TLP:RED" in t and "Green rule the officers may read" in t
               for t in text)


RED_TITLE = "SECRET informant says vessel MSC ANNA carries it"


def versioned_pack_yaml(version: str, tlp: str, title: str) -> str:
    """One pack id (be-douane-red) in several versions: one critical indicator on EC bananas."""
    return f"""metadata:
  id: be-douane-red
  version: {version}
  issuer: {{agency: Douane Antwerpen, country: BE}}
  created: 2025-06-01
  tlp: {tlp}
  description: Version {version}, marked {tlp}.
indicators:
  - id: be_vessel_tip
    title: "{title}"
    rationale: Reported by the partner.
    condition: {{all: [{{field: origin_country, eq: EC}}, {{field: hs_code, prefix: "0803"}}]}}
    severity: critical
"""


@pytest.fixture
def two_versions_dir(tmp_path):
    """be-douane-red 2.0.0 (TLP:RED) and the older 1.0.0 (TLP:CLEAR); the older file is read last."""
    d = tmp_path / "packs-two-versions"
    d.mkdir()
    (d / "a-current.yaml").write_text(versioned_pack_yaml("2.0.0", "RED", RED_TITLE))
    (d / "b-old.yaml").write_text(versioned_pack_yaml("1.0.0", "CLEAR", "Bananas from Ecuador (public)"))
    return d


def test_mandatory_reasons_take_the_marking_of_the_indicator_that_fired(two_versions_dir):
    manifests = make_manifests(4)
    manifests["origin_country"] = "EC"
    packs = [parse_pack((two_versions_dir / f).read_text()) for f in ("a-current.yaml", "b-old.yaml")]
    mask, text = mandatory_rules(manifests, 10.0, packs)
    assert mask.all()
    assert all(RED_TITLE not in t and "SECRET" not in t for t in text), text
    assert set(text) == {"mandatory: indicator of pack be-douane-red (TLP:RED; ask an analyst)"}


def test_model_reasons_redact_indicators_above_the_officers_clearance(two_versions_dir):
    """A model trained with both versions names the indicator in force by its own marking."""
    import numpy as np
    import pandas as pd

    from riskengine.explain import reason_texts
    from riskengine.features import _indicator_info

    packs = [parse_pack((two_versions_dir / f).read_text()) for f in ("a-current.yaml", "b-old.yaml")]
    info = _indicator_info(packs)
    assert info["be_vessel_tip"]["tlp"] == "RED" and info["be_vessel_tip"]["title"] == RED_TITLE
    feature_info = {f"ind.{k}": {"kind": "indicator", "id": k, **v} for k, v in info.items()}
    texts = reason_texts(np.array([[0], [0]]), pd.DataFrame({"ind.be_vessel_tip": [1.0, 0.0]}), feature_info)
    assert texts[:, 0].tolist() == ["indicator of pack be-douane-red (TLP:RED; ask an analyst)",
                                    "indicator of pack be-douane-red (TLP:RED) not hit"]


class PackRulesScorer(FakeScorer):
    """The fake risk plus the service's mandatory rules over the packs the app uses (as ModelScorer)."""

    def __init__(self, app) -> None:
        super().__init__()
        self.app = app

    def __call__(self, manifests):
        from riskengine.fusion import join_reasons

        out = super().__call__(manifests)
        mask, text = mandatory_rules(manifests, 10.0, self.app.state.packs.load().indicator_packs())
        out["mandatory"] = mask
        out["reasons"] = join_reasons([text, out["reasons"].to_numpy()])
        return out


def test_no_route_shows_a_pack_above_the_readers_clearance_with_two_versions_present(tmp_path,
                                                                                      two_versions_dir):
    app = make_app(tmp_path, packs_dir=two_versions_dir, allow_unsigned_packs=True)
    app.dependency_overrides[get_scorer] = lambda: PackRulesScorer(app)
    _, red = app.state.store.create_token("liaison", "analyst", clearance="RED", actor="cli:root")
    manifests = make_manifests(12, terminals=("NLRTM-ECT",))
    manifests["origin_country"] = "EC"
    events: list[str] = []
    connected = threading.Event()

    def listen(url: str) -> None:
        with httpx.Client(timeout=httpx.Timeout(10.0)) as h, \
                h.stream("GET", f"{url}/api/feed?limit=1", headers=auth(app, "officer")) as r:
            for line in r.iter_lines():
                events.append(line)
                if line.startswith(": connected"):
                    connected.set()

    with running_server(app) as url:
        listener = threading.Thread(target=listen, args=(url,), daemon=True)
        listener.start()
        assert connected.wait(10), events
        r = httpx.post(f"{url}/api/manifests", json=rows(manifests), headers=auth(app, "analyst"), timeout=30)
        assert r.status_code == 200, r.text
        listener.join(10)
        seen = {"POST /api/manifests (analyst)": r.text, "GET /api/feed (officer)": "\n".join(events)}
        for role in ("officer", "analyst", "admin"):
            h = auth(app, role)
            paths = ["/", "/api/queue?port=NLRTM", "/api/queue/groups", "/api/outcomes",
                     *(f"/api/manifests/{m}" for m in manifests["manifest_id"])]
            if role != "officer":
                paths += ["/api/indicators", "/api/indicators/be-douane-red", "/api/models"]
            if role == "admin":
                paths += ["/api/audit?limit=1000"]
            for path in paths:
                got = httpx.get(f"{url}{path}", headers=h, timeout=30)
                assert got.status_code == 200, (role, path, got.text)
                seen[f"GET {path} ({role})"] = got.text
        detail = httpx.get(f"{url}/api/indicators/be-douane-red", headers={"Authorization": f"Bearer {red}"}).json()
    leaks = [where for where, text in seen.items() if "SECRET" in text or "informant" in text]
    assert leaks == [], f"TLP:RED text shown to a reader cleared below RED: {leaks}"
    queue = json.loads(seen["GET /api/queue?port=NLRTM (officer)"])["items"]
    assert len(queue) == 12
    assert all("indicator of pack be-douane-red (TLP:RED; ask an analyst)" in i["reasons"] for i in queue)
    # An analyst (AMBER) is served the CLEAR 1.0.0 only; a RED token gets the 2.0.0 in force.
    analyst_view = json.loads(seen["GET /api/indicators/be-douane-red (analyst)"])
    assert (analyst_view["version"], analyst_view["tlp"]) == ("1.0.0", "CLEAR")
    assert (detail["version"], detail["tlp"]) == ("2.0.0", "RED")
    assert detail["content"]["indicators"][0]["title"] == RED_TITLE


# --------------------------------------------------------------------------------------------
# Rescore and models
# --------------------------------------------------------------------------------------------

def test_rescore_stored_manifests(client, app, tmp_path):
    analyst = auth(app, "analyst")
    client.post("/api/manifests", json=rows(make_manifests(20, terminals=("NLRTM-ECT",))), headers=analyst)
    q = client.get("/api/queue", params={"port": "NLRTM"}, headers=analyst).json()["items"]
    target = next(i["manifest_id"] for i in q if i["lane"] == "scan")
    r = client.post("/api/scans", data={"manifest_id": target}, headers=analyst,
                    files={"file": ("s.png", scan_png(tmp_path).read_bytes(), "image/png")})
    fused_before = r.json()["fused_score"]

    same = client.post("/api/rescore", json={}, headers=analyst).json()
    assert (same["manifests"], same["scored"], same["changed"], same["fused"], same["decisions"]) == (20, 0, 0, 0, 0)

    # a new model: five containers become much riskier, the scanned one a little less risky
    risky = {f"M{i:07d}": 0.85 for i in range(5) if f"M{i:07d}" != target}
    app.dependency_overrides[get_scorer] = lambda: FakeScorer(overrides={**risky, target: 0.01})
    r = client.post("/api/rescore", json={"port": "NLRTM", "terminal": "NLRTM-ECT"}, headers=analyst)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["groups"] == [{"port": "NLRTM", "terminal": "NLRTM-ECT", "shift": "2026-03-12/S1"}]
    assert (out["manifests"], out["scored"], out["changed"], out["fused"]) == (20, len(risky) + 1, len(risky) + 1, 1)
    assert out["decisions"] > 0
    state = app.state.store.planning_frame([("NLRTM", "NLRTM-ECT", "2026-03-12/S1")]).set_index("manifest_id")
    assert state.loc[list(risky), "risk_score"].tolist() == [0.85] * len(risky)
    # the riskier containers now take the red lane (half the inspection capacity), the rest the scanner
    red = set(state.index[state["lane"] == "red"])
    assert len(red) == QUEUE.inspection_capacity * QUEUE.red_share and red <= set(risky)
    assert state.loc[list(risky), "lane"].isin(["red", "scan"]).all()
    assert state.loc[target, "fused_score"] < fused_before  # fused again with the lower manifest risk
    assert state.loc[target, "scanned"]
    again = client.post("/api/rescore", json={"port": "NLRTM"}, headers=analyst).json()
    assert (again["scored"], again["decisions"]) == (0, 0)

    r = client.post("/api/rescore", json={"port": "BEANR"}, headers=analyst)
    assert r.status_code == 404 and "no stored manifests match port='BEANR'" in r.json()["detail"]
    assert "NLRTM" in r.json()["detail"]
    r = client.post("/api/rescore", json={"harbour": "NLRTM"}, headers=analyst)
    assert r.status_code == 422


def test_models_report_versions_and_metrics(tmp_path):
    model_dir = tmp_path / "manifest-model"
    model_dir.mkdir()
    (model_dir / "model.json").write_text(json.dumps({
        "created_at": "2026-01-02T03:04:05+00:00",
        "training": {"rows_in": 1000, "labelled": 200, "positives": 20, "start": "2025-01-01", "end": "2025-12-31"},
        "metrics": {"holdout": {"rows": 150, "positives": 9, "roc_auc": 0.91, "pr_auc": 0.62,
                                "precision_at_1": 0.98}},
    }))
    app = make_app(tmp_path, model_dir=model_dir, scan_model_dir=tmp_path / "no-cnn")
    with client_for(app, "analyst") as c:
        manifest, scan = c.get("/api/models").json()
    assert manifest["kind"] == "manifest" and manifest["version"] == "fake-manifest-1"
    assert manifest["metrics"] == {"roc_auc": 0.91, "pr_auc": 0.62, "precision_at_1": 0.98}
    assert manifest["training"]["labelled"] == 200 and manifest["created_at"].startswith("2026-01-02")
    assert "150 labelled rows" in manifest["metrics_on"]
    assert scan["kind"] == "scan" and scan["metrics"] == {} and "not found" in scan["error"]


def test_shipped_models_metrics():
    """The sidecars in models/ give the headline numbers of their cards."""
    from riskengine.service.routers.models import manifest_model_info, scan_model_info

    repo = Path(__file__).resolve().parents[1] / "models"
    if not (repo / "manifest" / "model.json").is_file() or not (repo / "scanvision" / "config.json").is_file():
        pytest.skip("shipped models missing (run `make models`)")
    manifest = manifest_model_info(repo / "manifest", object())
    scan = scan_model_info(repo / "scanvision", object())
    assert 0.5 < manifest.metrics["roc_auc"] <= 1 and manifest.training["labelled"] > 0
    assert 0.5 < scan.metrics["raw_auc"] <= 1 and scan.metrics_on.startswith("test:")


# --------------------------------------------------------------------------------------------
# Request limits and invalid JSON
# --------------------------------------------------------------------------------------------

def test_bodies_over_the_limit_get_413(tmp_path):
    app = make_app(tmp_path, max_json_bytes=2_000, max_upload_bytes=5_000)
    analyst = bearer(app, "analyst")
    with TestClient(app) as c:
        big = rows(make_manifests(10))  # ~10 kB of JSON
        r = c.post("/api/manifests", json=big, headers=analyst)
        assert r.status_code == 413
        assert "the limit for JSON bodies is 2,000 bytes" in r.json()["detail"]
        assert "--max-json-bytes" in r.json()["detail"]
        # no token needed to be refused for size: nothing of the body is read
        assert c.post("/api/manifests", json=big).status_code == 413

        # a streamed body (no Content-Length) is counted as it arrives
        def chunks():
            for _ in range(10):
                yield b" " * 1_000

        r = c.post("/api/manifests", content=chunks(), headers={**analyst, "content-type": "application/json"})
        assert r.status_code == 413 and "more than 2,000 bytes" in r.json()["detail"]

        csv = make_manifests(40).to_csv(index=False).encode()
        assert len(csv) > 5_000
        r = c.post("/api/manifests", files={"file": ("a.csv", csv, "text/csv")}, headers=analyst)
        assert r.status_code == 413 and "the limit for uploads is 5,000 bytes" in r.json()["detail"]
        small = make_manifests(2).to_csv(index=False).encode()
        assert c.post("/api/manifests", files={"file": ("a.csv", small, "text/csv")},
                      headers=analyst).status_code == 200
        r = c.post("/api/outcomes", content=b"{}", headers={**analyst, "content-type": "application/json",
                                                            "content-length": "ten"})
        assert r.status_code == 400 and "is not a number of bytes" in r.json()["detail"]
    assert app.state.store.counts()["manifests"] == 2


def test_streamed_body_over_the_limit_on_a_real_server(tmp_path):
    """Chunked transfer encoding through uvicorn: the stream is cut at the limit."""
    app = make_app(tmp_path, max_json_bytes=50_000)
    sent = []

    def chunks():
        for _ in range(200):  # 1.6 MB if it were all read
            sent.append(1)
            yield b" " * 8_192

    with running_server(app) as url:
        r = httpx.post(f"{url}/api/manifests", content=chunks(), timeout=30,
                       headers={**bearer(app), "content-type": "application/json"})
        ok = httpx.post(f"{url}/api/manifests", json=rows(make_manifests(5)), headers=bearer(app), timeout=30)
    assert r.status_code == 413 and "the limit for JSON bodies is 50,000 bytes" in r.json()["detail"]
    assert ok.status_code == 200


def test_invalid_json_gets_422_naming_the_problem(client, app):
    for path, role in (("/api/outcomes", "officer"), ("/api/tokens", "admin"), ("/api/rescore", "analyst")):
        r = client.post(path, content=b'{"manifest_id": "M1", "result": ', headers={
            **auth(app, role), "content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["detail"].startswith("the body is not valid JSON: Expecting value at character 32")
    r = client.post("/api/manifests", content=b"[{oops", headers={**auth(app, "analyst"),
                                                                 "content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = client.post("/api/scans", content=b"{", headers={**auth(app, "analyst"), "content-type": "application/json"})
    assert r.status_code == 422 and "invalid JSON" in r.json()["detail"]
    # a valid JSON body with wrong fields keeps the field-by-field errors
    r = client.post("/api/outcomes", json={"manifest_id": "M1"}, headers=auth(app, "officer"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "result"]


def test_deeply_nested_json_gets_422_and_the_server_keeps_serving(app):
    deep = b"[" * 200_000
    routes = (("/api/manifests", "analyst"), ("/api/scans", "analyst"), ("/api/outcomes", "officer"),
              ("/api/rescore", "analyst"))
    with running_server(app) as url, httpx.Client(base_url=url, timeout=30) as h:
        for path, role in routes:
            types = [{"content-type": "application/json"}]
            if path in ("/api/outcomes", "/api/rescore"):
                types.append({})  # FastAPI reads a body without a content type as JSON
            for headers in types:
                r = h.post(path, content=deep, headers={**auth(app, role), **headers})
                assert r.status_code == 422, (path, headers, r.status_code, r.text[:200])
                assert "nests arrays or objects deeper than 32 levels" in r.json()["detail"]
            # the same client goes on: the next request is answered
            assert h.get("/api/queue/groups", headers=auth(app, "officer")).status_code == 200
        # streamed (chunked) bodies are followed chunk by chunk
        r = h.post("/api/manifests", content=iter([b'{"manifests": ', b"[" * 20, b"[" * 20]),
                   headers={**auth(app, "analyst"), "content-type": "application/json"})
        assert r.status_code == 422 and "deeper than 32" in r.json()["detail"]
        # brackets inside strings (and escaped quotes) are text, not nesting
        m = make_manifests(1)
        m["goods_description"] = 'BANANAS ' + '[' * 100 + ' \\"[[[" ' + '{' * 50
        r = h.post("/api/manifests", json=rows(m), headers=auth(app, "analyst"))
        assert r.status_code == 200, r.text


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def test_tokens_cli(tmp_path):
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    for args in (["tokens", "--help"], ["tokens", "create", "--help"], ["tokens", "list", "--help"],
                 ["tokens", "revoke", "--help"]):
        res = runner.invoke(cli_main, args)
        assert res.exit_code == 0, res.output
    assert "--clearance" in runner.invoke(cli_main, ["tokens", "create", "--help"]).output

    res = runner.invoke(cli_main, ["tokens", "create", "--db", db, "--name", "officer ECT 3", "--role", "officer"])
    assert res.exit_code == 0, res.output
    text = next(line for line in res.output.splitlines() if line.startswith("rk_"))
    assert "shown only this once" in res.output
    res = runner.invoke(cli_main, ["tokens", "create", "--db", db, "--name", "liaison", "--role", "analyst",
                                   "--clearance", "red", "--expires", "30d", "--json"])
    assert res.exit_code == 0, res.output
    made = json.loads(res.output)
    assert (made["clearance"], made["state"]) == ("RED", "active") and made["token"].startswith("rk_")
    expires = datetime.fromisoformat(made["expires_at"])
    assert timedelta(days=29, hours=23) < expires - utcnow() <= timedelta(days=30)
    assert made["created_by"].startswith("cli:")

    store = Store(db)
    assert store.authenticate(text).name == "officer ECT 3"
    store.close()

    res = runner.invoke(cli_main, ["tokens", "list", "--db", db])
    assert res.exit_code == 0 and text.split("_")[1] in res.output and "2 active of 2" in res.output
    assert text not in res.output
    listed = [json.loads(x) for x in runner.invoke(cli_main, ["tokens", "list", "--db", db, "--json"]).output.splitlines()]
    assert [x["name"] for x in listed] == ["officer ECT 3", "liaison"]
    assert all("token" not in x and "secret_sha256" not in x for x in listed)

    res = runner.invoke(cli_main, ["tokens", "revoke", "--db", db, made["token_id"]])
    assert res.exit_code == 0 and f"Revoked token {made['token_id']}" in res.output
    store = Store(db)
    assert store.authenticate(made["token"]) is None
    store.close()

    res = runner.invoke(cli_main, ["tokens", "revoke", "--db", db, "ffffffffffffffff"])
    assert res.exit_code == 1 and "KeyError: no API token with id 'ffffffffffffffff'" in res.output
    res = runner.invoke(cli_main, ["tokens", "create", "--db", db, "--name", "x", "--role", "officer",
                                   "--expires", "next week"])
    assert res.exit_code == 1 and "ValueError: --expires 'next week' is neither a duration" in res.output
    res = runner.invoke(cli_main, ["tokens", "create", "--db", db, "--name", "x", "--role", "officer",
                                   "--expires", "2020-01-01"])
    assert res.exit_code == 1 and "is not in the future" in res.output
    res = runner.invoke(cli_main, ["tokens", "create", "--db", db, "--name", "x", "--role", "root"])
    assert res.exit_code == 2


def test_a_token_from_the_cli_opens_the_service(tmp_path):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    res = CliRunner().invoke(cli_main, ["tokens", "create", "--db", db, "--name", "desk", "--role", "analyst",
                                        "--json"])
    token = json.loads(res.output)["token"]
    app = create_app(Settings(db_url=db, data_dir=tmp_path / "data", queue=QUEUE))
    app.dependency_overrides[get_scorer] = FakeScorer
    with TestClient(app, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.post("/api/manifests", json=rows(make_manifests(2))).status_code == 200
    assert set(app.state.store.audit(None, actor="desk")["action"]) >= {"manifest.insert", "decision.stage1"}


def test_expiry_parsing():
    from riskengine.cli.tokens_cmd import parse_expiry

    now = datetime(2026, 3, 1, 12, 0)
    assert parse_expiry("12h", now) == datetime(2026, 3, 2, 0, 0)
    assert parse_expiry("2w", now) == datetime(2026, 3, 15, 12, 0)
    assert parse_expiry("2026-12-31", now) == datetime(2026, 12, 31)
    assert parse_expiry("2026-12-31T18:00:00+02:00", now) == datetime(2026, 12, 31, 16, 0)
    assert parse_expiry("2026-12-31T18:00:00Z", now) == datetime(2026, 12, 31, 18, 0)
    with pytest.raises(ValueError, match="at least 1d"):
        parse_expiry("0d", now)


def test_token_last_use_is_recorded_at_most_once_a_minute(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'u.db'}")
    _, text = store.create_token("x", "officer", actor="a")
    first = store.authenticate(text).last_used_at
    time.sleep(0.01)
    assert store.authenticate(text).last_used_at == first
    t = ApiToken.__table__
    with store.engine.begin() as conn:
        conn.execute(sa.update(t).values(last_used_at=first - timedelta(minutes=2)))
    assert store.authenticate(text).last_used_at > first - timedelta(minutes=2)
    store.close()


def test_demo_serve_prints_a_short_lived_officer_token(monkeypatch, tmp_path):
    """`riskengine demo --serve` (the demo itself replaced by a stub): an officer token for the
    demo store is printed with the page URL, and the served app checks tokens."""
    import types

    import uvicorn

    import riskengine.demo

    db = f"sqlite:///{tmp_path / 'demo.db'}"

    def fake_run_demo(cfg, progress=None):
        return types.SimpleNamespace(db_url=db, out_dir=tmp_path, port="NLRTM",
                                     summary=lambda: {"db_url": db})

    seen = {}
    monkeypatch.setattr(riskengine.demo, "run_demo", fake_run_demo)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    res = CliRunner().invoke(cli_main, ["demo", "--out", str(tmp_path), "--serve", "--json", "--port", "8765"])
    assert res.exit_code == 0, res.output
    assert "http://127.0.0.1:8765/?port=NLRTM" in res.output
    token = next(line for line in res.output.splitlines() if line.startswith("rk_"))
    store = Store(db)
    info = store.authenticate(token)
    store.close()
    assert (info.role, info.name) == ("officer", "demo officer")
    assert timedelta(hours=11, minutes=59) < info.expires_at - utcnow() <= timedelta(hours=12)
    assert seen["app"].state.settings.auth is True and seen["port"] == 8765
