"""GET /: the officers' web page (one HTML file, plain JavaScript, no build step)."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ui"])

_PAGE = Path(__file__).resolve().parent.parent / "static" / "index.html"


def content_security_policy(html: str) -> str:
    """The page's Content-Security-Policy: its own inline script and style (by SHA-256) and
    nothing else; requests, the feed and images (blob: overlays) only to this origin; never
    framed. An injected ``<script>`` or event handler attribute does not run."""

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join("'sha256-" + base64.b64encode(hashlib.sha256(b.encode("utf-8")).digest()).decode() + "'"
                        for b in bodies) or "'none'"

    return "; ".join([
        "default-src 'none'", f"script-src {hashes('script')}", f"style-src {hashes('style')}",
        "img-src 'self' blob: data:", "connect-src 'self'", "base-uri 'none'", "form-action 'none'",
        "frame-ancestors 'none'",
    ])


@lru_cache(maxsize=1)
def _page() -> tuple[str, str]:
    html = _PAGE.read_text(encoding="utf-8")
    return html, content_security_policy(html)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index() -> HTMLResponse:
    """The queue for a port/terminal/shift with lanes, scores, reasons, scan overlays and
    outcome buttons; live updates from /api/feed."""
    html, csp = _page()
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": csp})


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return Response(status_code=204)
