"""GET /: the officers' web page (one HTML file, plain JavaScript, no build step)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["ui"])

_PAGE = Path(__file__).resolve().parent.parent / "static" / "index.html"


@lru_cache(maxsize=1)
def _page() -> str:
    return _PAGE.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index() -> HTMLResponse:
    """The queue for a port/terminal/shift with lanes, scores, reasons, scan overlays and
    outcome buttons; live updates from /api/feed."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-cache"})


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return Response(status_code=204)
