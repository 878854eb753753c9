"""GET /api/feed: server-sent events of queue changes.

Browsers' ``EventSource`` cannot send headers, so this route also takes the token as
``?access_token=`` (moved out of the query string before anything logs the URL). The token is
checked again at every keep-alive: a revoked or expired token's stream ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from riskengine.service.auth import OfficerQueryDep, Principal
from riskengine.service.deps import BroadcasterDep, SettingsDep, StoreDep
from riskengine.service.events import Broadcaster
from riskengine.store import Store

router = APIRouter(prefix="/api/feed", tags=["feed"])


async def _still_valid(store: Store, principal: Principal) -> bool:
    if principal.token_id is None:  # auth is off
        return True
    info = await run_in_threadpool(store.get_token, principal.token_id)
    return info is not None and info.active


async def _stream(request: Request, broadcaster: Broadcaster, store: Store, principal: Principal,
                  keepalive_s: float, limit: int | None) -> AsyncIterator[str]:
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
                if not await _still_valid(store, principal):
                    yield 'event: unauthorized\ndata: {"detail": "the token was revoked or expired"}\n\n'
                    break
                yield ": keep-alive\n\n"
                continue
            yield ev.to_sse()
            sent += 1
    finally:
        broadcaster.unsubscribe(sub)


@router.get("", summary="Live queue changes (text/event-stream)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "Events `manifests`, `scan`, `outcome`, `rescore` (and `resync` "
                                            "after a slow reader lost events; `unauthorized` before the "
                                            "stream ends when the token was revoked); data is JSON with "
                                            "`manifest_ids`, `groups` and `lane_counts`."}})
async def get_feed(
    request: Request, broadcaster: BroadcasterDep, settings: SettingsDep, store: StoreDep,
    caller: OfficerQueryDep,
    limit: Annotated[int | None, Query(ge=1, description="Close the stream after this many events.")] = None,
    keepalive: Annotated[float | None, Query(gt=0, le=300, description="Seconds between keep-alive comments.")] = None,
) -> StreamingResponse:
    """Subscribe with `new EventSource('/api/feed?access_token=' + token)` (or send the
    `Authorization` header); a comment line arrives every few seconds to keep proxies from
    closing the connection."""
    return StreamingResponse(
        _stream(request, broadcaster, store, caller, keepalive or settings.keepalive_s, limit),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
