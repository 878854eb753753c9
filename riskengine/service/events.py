"""Broadcast of queue changes to live subscribers (the ``/api/feed`` server-sent events).

Publishers may run in worker threads (the store is synchronous) or on the event loop; every
subscriber has its own bounded asyncio queue on its own loop, fed thread-safely. A subscriber
that falls behind loses its oldest events, never blocks a publisher, and is told so with a
``resync`` event (reload the queue).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedEvent:
    """One event: ``event`` name (``manifests``, ``scan``, ``outcome``, ``resync``) and JSON data."""

    id: int
    event: str
    data: dict[str, Any]

    def to_sse(self) -> str:
        """The event in the text/event-stream wire format."""
        payload = json.dumps(self.data, default=str, separators=(",", ":"))
        return f"id: {self.id}\nevent: {self.event}\ndata: {payload}\n\n"


@dataclass(eq=False)
class Subscription:
    """A subscriber's end: ``await sub.get(timeout)`` returns the next event or None on timeout."""

    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    dropped: int = 0
    closed: bool = field(default=False)

    async def get(self, timeout: float | None = None) -> FeedEvent | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None


class Broadcaster:
    """Fan-out of :class:`FeedEvent` to every current subscriber.

    >>> b = Broadcaster()
    >>> b.publish("manifests", {"inserted": 3})   # no subscriber: nothing queued
    0
    """

    def __init__(self, *, queue_size: int = 256) -> None:
        if queue_size < 2:
            raise ValueError(f"queue_size must be >= 2, got {queue_size}")
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subs)

    def subscribe(self) -> Subscription:
        """Register a subscriber on the running event loop (call from async code)."""
        sub = Subscription(asyncio.Queue(self.queue_size), asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.closed = True
        with self._lock:
            self._subs.discard(sub)

    def publish(self, event: str, data: dict[str, Any]) -> int:
        """Send an event to every subscriber (thread-safe); returns how many were reached."""
        ev = FeedEvent(next(self._ids), event,
                       {**data, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        with self._lock:
            subs = list(self._subs)
        reached = 0
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(self._deliver, sub, ev)
                reached += 1
            except RuntimeError:  # the subscriber's loop is closed
                self.unsubscribe(sub)
        log.debug("published %s #%d to %d subscriber(s)", event, ev.id, reached)
        return reached

    def _deliver(self, sub: Subscription, ev: FeedEvent) -> None:
        if sub.closed:
            return
        if sub.queue.full():
            # Drop the oldest event and leave room for a resync notice plus the new event.
            while sub.queue.qsize() > self.queue_size - 2:
                sub.queue.get_nowait()
                sub.dropped += 1
            sub.queue.put_nowait(FeedEvent(ev.id, "resync", {"dropped": sub.dropped}))
        sub.queue.put_nowait(ev)
