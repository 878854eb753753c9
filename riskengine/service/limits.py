"""Request body limits (pure ASGI) and clear answers to bodies that are not valid JSON.

:class:`BodyLimitMiddleware` answers 413 before the application runs when ``Content-Length``
exceeds the limit, and counts the bytes of a body without a length (chunked, streamed) as they
arrive: the chunk that crosses the limit is never handed on, so no route buffers more than the
limit. JSON bodies (``application/json``, ``*+json``) have their own, smaller limit.

JSON bodies (and bodies without a content type, which FastAPI reads as JSON) also have a
nesting limit: the middleware follows the depth of ``[`` and ``{`` outside strings as the chunks
arrive (:class:`JsonDepth`, vectorised) and answers 422 at the chunk that goes deeper than
``max_json_depth``, so no parser ever recurses on ``[[[[...`` (Python's JSON parser would raise
``RecursionError``: a 500 and a reset connection).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


#: Deepest nesting of arrays and objects a JSON body may have (a manifest batch needs 3).
MAX_JSON_DEPTH = 32

# Byte classes for JsonDepth: 1 quote, 2 opening bracket, 3 closing bracket, 0 anything else.
_JSON_CLASS = np.zeros(256, dtype=np.uint8)
_JSON_CLASS[ord('"')] = 1
_JSON_CLASS[[ord("["), ord("{")]] = 2
_JSON_CLASS[[ord("]"), ord("}")]] = 3


class BodyTooLargeError(HTTPException):
    """413: the body is over the limit (an HTTPException, so any layer that meets it answers 413)."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


class JsonTooDeepError(HTTPException):
    """422: a JSON body nested deeper than the limit."""

    def __init__(self, detail: str) -> None:
        super().__init__(422, detail)


class JsonDepth:
    r"""The nesting depth of a JSON text fed in chunks: brackets inside strings do not count.

    Each chunk is scanned with NumPy (no loop over bytes). Escapes are resolved first: every
    escaped backslash, then every escaped quote, is blanked (a backslash left at the end of a
    chunk carries over to the next), so the quotes left open and close strings. For text that
    is not valid JSON the depth is an estimate; the parser refuses such text anyway.

    >>> d = JsonDepth()
    >>> d.feed(b'{"a": [[1, "]]] [[ \\" [["]], ')
    3
    >>> d.feed(b'"b": "[[[["}')  # the deepest so far
    3
    """

    def __init__(self) -> None:
        self.depth = 0
        self.max_depth = 0
        self._in_string = False
        self._backslash = False  # the previous chunk ended inside an escape

    def feed(self, chunk: bytes) -> int:
        """Account for the next chunk; returns the deepest nesting seen so far."""
        if not chunk:
            return self.max_depth
        if self._backslash:
            chunk = b"\\" + chunk
        chunk = chunk.replace(b"\\\\", b"__").replace(b'\\"', b"__")
        self._backslash = chunk.endswith(b"\\")
        kind = _JSON_CLASS[np.frombuffer(chunk, dtype=np.uint8)]
        pos = np.flatnonzero(kind)
        if not len(pos):
            return self.max_depth
        k = kind[pos]
        quotes = np.cumsum(k == 1, dtype=np.int64)
        inside = ((quotes + self._in_string) & 1).astype(bool)
        step = np.where(inside, 0, (k == 2).astype(np.int64) - (k == 3).astype(np.int64))
        depth = self.depth + np.cumsum(step)
        self.max_depth = max(self.max_depth, int(depth.max()))
        self.depth = int(depth[-1])
        self._in_string = bool((int(quotes[-1]) + self._in_string) & 1)
        return self.max_depth


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_json_bytes`` (JSON) or ``max_upload_bytes`` (anything else).

    Args:
        app: the ASGI application.
        max_json_bytes: limit of ``application/json`` and ``*+json`` bodies.
        max_upload_bytes: limit of every other body (CSV, multipart uploads, images).
    """

    def __init__(self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int,
                 max_json_depth: int = MAX_JSON_DEPTH) -> None:
        if max_json_bytes <= 0 or max_upload_bytes <= 0 or max_json_depth <= 0:
            raise ValueError(f"body limits must be positive, got max_json_bytes={max_json_bytes}, "
                             f"max_upload_bytes={max_upload_bytes}, max_json_depth={max_json_depth}")
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_json_depth = max_json_depth

    def _message(self, json_body: bool, limit: int, size: str) -> str:
        if json_body:
            fix = ("split it into smaller requests (manifest batches can also go as CSV or Parquet "
                   f"uploads, limit {self.max_upload_bytes:,} bytes) or start the service with a larger "
                   "--max-json-bytes")
        else:
            fix = "split it into smaller uploads or start the service with a larger --max-upload-bytes"
        kind = "JSON bodies" if json_body else "uploads"
        return f"the request body is {size}; the limit for {kind} is {limit:,} bytes: {fix}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        content_type = headers.get("content-type", "")
        json_body = _is_json(content_type)
        limit = self.max_json_bytes if json_body else self.max_upload_bytes
        # FastAPI parses a body without a content type as JSON: its depth is followed too.
        depth = JsonDepth() if json_body or not content_type.strip() else None
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(send, 400, f"Content-Length {declared!r} is not a number of bytes")
                return
            if int(declared) > limit:
                log.warning("413 %s %s: Content-Length %s over %d", scope["method"], scope["path"], declared, limit)
                await _answer(send, 413, self._message(json_body, limit, f"{int(declared):,} bytes"))
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    log.warning("413 %s %s: streamed body over %d", scope["method"], scope["path"], limit)
                    raise BodyTooLargeError(self._message(json_body, limit, f"more than {limit:,} bytes"))
                if depth is not None and depth.feed(message.get("body", b"")) > self.max_json_depth:
                    log.warning("422 %s %s: JSON nested deeper than %d", scope["method"], scope["path"],
                                self.max_json_depth)
                    raise JsonTooDeepError(
                        f"the JSON body nests arrays or objects deeper than {self.max_json_depth} "
                        "levels, the limit; the requests of this API need at most 3 (a manifest "
                        "batch: an object, its list, each record)")
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except (BodyTooLargeError, JsonTooDeepError) as exc:
            if started:
                raise
            await _answer(send, exc.status_code, exc.detail)


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


async def validation_error_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 for a body FastAPI could not use; a body that is not JSON gets one plain sentence."""
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        pos = bad_json.get("loc", ("body", "?"))[-1]
        reason = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
        detail: Any = (f"the body is not valid JSON: {reason} at character {pos}; send a JSON object "
                       "(the schema of each route is at /docs)")
    else:
        detail = jsonable_encoder(errors)
    return JSONResponse({"detail": detail}, status_code=422)
