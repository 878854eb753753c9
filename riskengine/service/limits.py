"""Request body limits (pure ASGI) and clear answers to bodies that are not valid JSON.

:class:`BodyLimitMiddleware` answers 413 before the application runs when ``Content-Length``
exceeds the limit, and counts the bytes of a body without a length (chunked, streamed) as they
arrive: the chunk that crosses the limit is never handed on, so no route buffers more than the
limit. JSON bodies (``application/json``, ``*+json``) have their own, smaller limit.
"""

from __future__ import annotations

import json
import logging
from typing import Any

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


class BodyTooLargeError(HTTPException):
    """413: the body is over the limit (an HTTPException, so any layer that meets it answers 413)."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


class BodyLimitMiddleware:
    """Refuses request bodies over ``max_json_bytes`` (JSON) or ``max_upload_bytes`` (anything else).

    Args:
        app: the ASGI application.
        max_json_bytes: limit of ``application/json`` and ``*+json`` bodies.
        max_upload_bytes: limit of every other body (CSV, multipart uploads, images).
    """

    def __init__(self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int) -> None:
        if max_json_bytes <= 0 or max_upload_bytes <= 0:
            raise ValueError(f"body limits must be positive, got max_json_bytes={max_json_bytes}, "
                             f"max_upload_bytes={max_upload_bytes}")
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes

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
        json_body = _is_json(headers.get("content-type", ""))
        limit = self.max_json_bytes if json_body else self.max_upload_bytes
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
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLargeError as exc:
            if started:
                raise
            await _answer(send, 413, exc.detail)


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
