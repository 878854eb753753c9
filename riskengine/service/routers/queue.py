"""GET /api/queue: the ordered queue of a port (terminal, shift) with scores, lanes and reasons."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from riskengine.service.auth import OfficerDep
from riskengine.service.deps import StoreDep
from riskengine.service.routers._util import Cursor, Limit, bad_cursor, link_next, records
from riskengine.service.schemas import QueueGroup, QueueItem, QueueResponse
from riskengine.store import page_after

router = APIRouter(prefix="/api/queue", tags=["queue"])


@router.get("", response_model=QueueResponse, summary="The current queue")
def get_queue(
    store: StoreDep, _: OfficerDep,
    port: Annotated[str, Query(min_length=1, description="UN/LOCODE of the port, e.g. NLRTM.")],
    terminal: Annotated[str | None, Query(description="Terminal, e.g. NLRTM-ECT (all when absent).")] = None,
    shift: Annotated[str | None, Query(description="Shift, e.g. 2026-03-12/S1 (all when absent).")] = None,
    limit: Limit = 500,
    cursor: Cursor = None,
    *, request: Request, response: Response,
) -> QueueResponse:
    """Lanes in working order (hold, red, inspect, scan, cleared, green), then rank.

    At most `limit` items per reply; pass the reply's `next_cursor` as `cursor` for the next
    page (null on the last page). `total` and `lane_counts` count the whole queue."""
    try:
        page = store.queue_page(port, terminal=terminal or None, shift=shift or None, limit=limit, cursor=cursor)
    except ValueError as exc:
        raise bad_cursor(exc) from exc
    q = page.rows
    items = []
    if len(q):
        q = q.assign(overlay_url=q["manifest_id"].map(lambda i: f"/api/scans/{i}/overlay.png")
                     .where(q["has_overlay"], None))
        items = [QueueItem.model_validate(r) for r in records(q)]
    link_next(request, response, page.next_cursor)
    return QueueResponse(port=port, terminal=terminal, shift=shift, lane_counts=page.lane_counts or {},
                         total=page.total, next_cursor=page.next_cursor, items=items)


@router.get("/groups", response_model=list[QueueGroup], summary="Ports, terminals and shifts")
def get_groups(store: StoreDep, _: OfficerDep, request: Request, response: Response,
               limit: Limit = 5_000, cursor: Cursor = None) -> list[QueueGroup]:
    """Every (port, terminal, shift) that holds manifests, with the number of containers,
    `limit` per reply (the next page's cursor is in the X-Next-Cursor and Link headers)."""
    try:
        page = page_after(store.groups(), ["port", "terminal", "shift"], limit, cursor)
    except ValueError as exc:
        raise bad_cursor(exc) from exc
    link_next(request, response, page.next_cursor)
    return [QueueGroup.model_validate(r) for r in records(page.rows)]
