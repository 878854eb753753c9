"""The officers' page in a real headless Chromium against a live server with test doubles.

1. Debian's ``chromium --headless --dump-dom``: without a token the page asks for one and
   shows no data.
2. The DevTools protocol over a pipe (``--remote-debugging-pipe``, no extra package): an officer
   enters a token in the page; the JavaScript renders the queue rows with their lane labels and
   a scan overlay (fetched with the token); a new batch is ingested and the rows appear through
   the /api/feed EventSource without a reload; an outcome button records an outcome under the
   token's name; a revoked token ends the session with a clear message.

Skipped with a reason when /usr/bin/chromium is absent (``apt-get install chromium``).
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_service import bearer, make_app, rows, running_server, scan_png
from test_store import make_manifests

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="headless browser test needs /usr/bin/chromium (apt-get install chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,900"]


def _chromium(args: list[str], profile: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, timeout=timeout, check=False)


@pytest.fixture
def server(tmp_path):
    """A live server with 20 planned containers at one terminal and one scanned container."""
    app = make_app(tmp_path)
    with running_server(app) as url:
        auth = bearer(app, "analyst")
        r = httpx.post(f"{url}/api/manifests", json=rows(make_manifests(20, terminals=("NLRTM-ECT",))),
                       headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        queue = httpx.get(f"{url}/api/queue", params={"port": "NLRTM"}, headers=auth).json()["items"]
        scanned = next(i for i in queue if i["lane"] == "scan")["manifest_id"]
        r = httpx.post(f"{url}/api/scans", data={"manifest_id": scanned},
                       files={"file": ("scan.png", scan_png(tmp_path).read_bytes(), "image/png")},
                       headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        yield url, app, scanned


def test_page_without_token_asks_for_one(server, tmp_path):
    url, app, _ = server
    dom = _chromium(["--virtual-time-budget=5000", "--dump-dom", f"{url}/?port=NLRTM&live=0"], tmp_path / "profile1")
    html = dom.stdout.decode()
    assert dom.returncode == 0, dom.stderr.decode()[-2000:]
    assert '<div id="signin">' in html  # shown (no "hidden" attribute)
    assert "Enter your access token" in html
    assert "<tr class=\"lane-" not in html and "FRESH BANANAS" not in html  # no data without a token


class DevTools:
    """Minimal Chrome DevTools protocol client over ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()

        def wire() -> None:
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
            preexec_fn=wire, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._buf = b""
        self._next = 0
        self.session: str | None = None

    def call(self, method: str, params: dict | None = None, timeout: float = 20) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no DevTools reply to {method} within {timeout}s")
            ready, _, _ = select.select([self._from_chrome], [], [], left)
            if ready:
                chunk = os.read(self._from_chrome, 1 << 16)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self._buf += chunk

    def open(self, url: str) -> None:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.call("Page.enable")
        self.call("Page.navigate", {"url": url})

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def sign_in(self, token: str) -> None:
        """Type the token into the page's token field and submit it, as an officer does."""
        self.wait_for("!!document.getElementById('token')")
        self.js(f"document.getElementById('token').value = {json.dumps(token)}; "
                "document.getElementById('token-use').click(); true")

    def wait_for(self, expression: str, timeout: float = 15) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise TimeoutError(f"{expression} stayed falsy for {timeout}s")

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)


def test_queue_rendered_with_a_token(server, tmp_path):
    url, app, scanned = server
    token = app.state.test_tokens["officer"]
    browser = DevTools(tmp_path / "profile2")
    try:
        # live=0: a snapshot without the event stream
        browser.open(f"{url}/?port=NLRTM&terminal=NLRTM-ECT&live=0")
        browser.wait_for("(document.getElementById('signin') || {hidden: true}).hidden === false")
        assert browser.js("document.querySelectorAll('tr[data-manifest-id]').length") == 0
        browser.sign_in(token)
        expected = app.state.store.queue("NLRTM", terminal="NLRTM-ECT")
        browser.wait_for(f"document.querySelectorAll('tr[data-manifest-id]').length == {len(expected)}")
        # the overlay arrives through fetch with the token and is shown as a blob URL
        browser.wait_for("[...document.images].some(i => i.src.startsWith('blob:') && i.naturalWidth > 0)")
        html = browser.js("document.documentElement.outerHTML")
        for mid in expected["manifest_id"]:
            assert f'data-manifest-id="{mid}"' in html, f"row {mid} not rendered"
        assert '<span class="lane inspect">inspect</span>' in html  # the scanned container, after stage 2
        assert '<span class="lane scan">scan</span>' in html
        assert f'data-overlay-url="/api/scans/{scanned}/overlay.png"' in html
        assert "consignee first seen 12 days ago" in html
        assert "random pick" in html
        # the token stays in this tab's sessionStorage: not in the address bar, the page or localStorage
        assert token not in browser.js("location.href") and token not in html
        assert browser.js("localStorage.length") == 0
        assert browser.js("sessionStorage.getItem('riskengine.token')") == token

        shot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"})["data"])
        (tmp_path / "queue.png").write_bytes(shot)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        assert int.from_bytes(shot[16:20], "big") == 1400
        assert len(shot) > 20_000  # a rendered table, not a blank page
    finally:
        browser.close()


def test_live_updates_and_outcome_buttons(server, tmp_path):
    url, app, _ = server
    browser = DevTools(tmp_path / "profile3")
    try:
        browser.open(f"{url}/?port=NLRTM&terminal=NLRTM-ECT")
        browser.sign_in(app.state.test_tokens["officer"])
        assert browser.wait_for("document.querySelectorAll('tr[data-manifest-id]').length") == 20
        browser.wait_for("document.getElementById('live').classList.contains('on')")
        assert app.state.broadcaster.subscribers == 1

        # New manifests arrive: the page learns it from /api/feed and re-renders, no reload.
        marker = browser.js("window.__same_page = 42")
        assert marker == 42
        more = rows(make_manifests(5, start=20, terminals=("NLRTM-ECT",)))
        assert httpx.post(f"{url}/api/manifests", json=more, headers=bearer(app), timeout=30).status_code == 200
        assert browser.wait_for("document.querySelectorAll('tr[data-manifest-id]').length == 25 && "
                                "!!document.querySelector('tr[data-manifest-id=\"M0000024\"]')")
        assert browser.js("window.__same_page") == 42

        # An officer records "nothing found" on the first scan-lane container.
        target = browser.js("document.querySelector('tr[data-lane=\"scan\"]').dataset.manifestId")
        browser.js(f"[...document.querySelector('tr[data-manifest-id=\"{target}\"]').querySelectorAll('button')]"
                   ".find(b => b.textContent === 'Nothing found').click()")
        browser.wait_for(f"(document.querySelector('tr[data-manifest-id=\"{target}\"] .done') || {{}}).textContent"
                         " === 'nothing found'")
        out = app.state.store.outcomes()
        assert out["manifest_id"].tolist() == [target] and out["result"].tolist() == ["nothing_found"]
        assert out["actor"].tolist() == ["officer-1"]  # the token's name, not a name the page sends

        shot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"})["data"])
        (tmp_path / "live.png").write_bytes(shot)
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000

        # The token is revoked: the feed ends at its next keep-alive and the page says why.
        token_id = app.state.test_tokens["officer"].split("_")[1]
        app.state.store.revoke_token(token_id, actor="admin-1")
        message = browser.wait_for("document.getElementById('message').textContent.includes('401') && "
                                   "document.getElementById('message').textContent")
        assert "was revoked" in message
        assert browser.js("document.querySelectorAll('tr[data-manifest-id]').length") == 0
        assert not browser.js("document.getElementById('signin').hidden")
        assert browser.js("sessionStorage.getItem('riskengine.token')") is None
    finally:
        browser.close()


def test_queue_comes_in_pages_with_show_more(tmp_path):
    app = make_app(tmp_path)
    with running_server(app) as url:
        auth = bearer(app, "analyst")
        r = httpx.post(f"{url}/api/manifests", json=rows(make_manifests(450)), headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        browser = DevTools(tmp_path / "profile-pages")
        try:
            browser.open(f"{url}/?port=NLRTM&live=0")
            browser.sign_in(app.state.test_tokens["officer"])
            count = "document.querySelectorAll('tr[data-manifest-id]').length"
            browser.wait_for(f"{count} == 200")
            assert browser.js("document.getElementById('summary').innerText").startswith("200 of 450 containers")
            assert browser.js("document.getElementById('more').textContent") == "Show 200 more"
            browser.js("document.getElementById('more').click(); true")
            browser.wait_for(f"{count} == 400")
            assert browser.js("document.getElementById('more').textContent") == "Show 50 more"
            browser.js("document.getElementById('more').click(); true")
            browser.wait_for(f"{count} == 450")
            assert browser.js("document.getElementById('more').hidden") is True
            assert browser.js("document.getElementById('summary').innerText").startswith("450 containers")
            ids = browser.js("[...document.querySelectorAll('tr[data-manifest-id]')].map(r => r.dataset.manifestId)")
            expected = app.state.store.queue("NLRTM")["manifest_id"].tolist()
            assert ids == expected  # every container once, in queue order
        finally:
            browser.close()
