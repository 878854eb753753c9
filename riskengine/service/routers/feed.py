"""GET /api/feed: server-sent events of queue changes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from riskengine.service.deps import BroadcasterDep, SettingsDep
from riskengine.service.events import Broadcaster

router = APIRouter(prefix="/api/feed", tags=["feed"])


async def _stream(request: Request, broadcaster: Broadcaster, keepalive_s: float,
                  limit: int | None) -> AsyncIterator[str]:
    sub = broadcaster.subscribe()
    sent = 0
    try:
        # The comment tells a client it is subscribed: events from now on reach it.
        yield ": connected\nretry: 3000\n\n"
        while limit is None or sent < limit:
            ev = await sub.get(timeout=keepalive_s)
            if await request.is_disconnected():
                break
            if ev is None:
                yield ": keep-alive\n\n"
                continue
            yield ev.to_sse()
            sent += 1
    finally:
        broadcaster.unsubscribe(sub)


@router.get("", summary="Live queue changes (text/event-stream)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Events `manifests`, `scan`, `outcome` (and `resync` after "
                                            "a slow reader lost events); data is JSON with "
                                            "`manifest_ids`, `groups` and `lane_counts`."}})
async def get_feed(
    request: Request, broadcaster: BroadcasterDep, settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, description="Close the stream after this many events.")] = None,
    keepalive: Annotated[float | None, Query(gt=0, le=300, description="Seconds between keep-alive comments.")] = None,
) -> StreamingResponse:
    """Subscribe with `new EventSource('/api/feed')`; a comment line arrives every few seconds
    to keep proxies from closing the connection."""
    return StreamingResponse(
        _stream(request, broadcaster, keepalive or settings.keepalive_s, limit),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
