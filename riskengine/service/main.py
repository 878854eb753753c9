"""Assembles the service: settings, dependencies, routers, middleware, error handlers. Nothing else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from riskengine.schema import SchemaError
from riskengine.service.auth import QueryTokenMiddleware, check_route_table
from riskengine.service.events import Broadcaster
from riskengine.service.headers import SecurityHeadersMiddleware
from riskengine.service.limits import BodyLimitMiddleware, validation_error_handler
from riskengine.service.packs import PackSource
from riskengine.service.routers import (
    audit,
    feed,
    health,
    indicators,
    manifests,
    models,
    outcomes,
    queue,
    rescore,
    scans,
    tokens,
    ui,
)
from riskengine.service.scoring import (
    ModelScorer,
    ModelUnavailableError,
    OnnxScanTriager,
    ScanTriager,
    Scorer,
)
from riskengine.service.settings import Settings, package_version
from riskengine.store import Store, UnknownManifestError

log = logging.getLogger(__name__)

DESCRIPTION = """
Queue feed of the customs risk engine for a container port.

Every route except `/api/health`, the page and these docs needs an API token:
`Authorization: Bearer rk_<id>_<secret>` (`riskengine tokens create`). Roles: **officer**
(queue, feed, manifests, overlays, outcomes) < **analyst** (+ ingest manifests and scans,
indicator packs, rescoring, models) < **admin** (+ tokens, audit). `GET /api/feed` also takes
`?access_token=` for EventSource.

* `POST /api/manifests`: validate, store, score and plan manifests (JSON or CSV).
* `POST /api/scans`: triage an X-ray scan and decide the physical inspections.
* `GET /api/queue`: the ordered queue of a port / terminal / shift, with reasons.
* `POST /api/outcomes`: record what an inspection found.
* `GET /api/feed`: live queue changes as server-sent events.
* `GET /api/indicators`: indicator packs within your TLP clearance.
* `POST /api/rescore`: score stored manifests again with the current model.
* `/`: the officers' page.
"""


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               scorer: Scorer | None = None, triager: ScanTriager | None = None) -> FastAPI:
    """Build the FastAPI app.

    ``store``, ``scorer`` and ``triager`` default to the ones ``settings`` describe (the models
    load lazily on first use). The store is opened here, so a bad database URL fails at once.
    Raises ``RuntimeError`` when a route is missing from the role table of
    :mod:`riskengine.service.auth`.
    """
    settings = settings or Settings.from_env()
    store = store or Store(settings.db_url)
    if not settings.auth:
        log.warning("AUTHENTICATION IS OFF: every request acts as %r with the admin role. "
                    "For development on a loopback address only.", settings.actor)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("serving %r", store)
        yield
        store.close()

    app = FastAPI(title="riskengine queue feed", version=package_version(), description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.packs = PackSource(settings.packs_dir, allow_unsigned=settings.allow_unsigned_packs)
    app.state.scorer = scorer or ModelScorer(settings.model_dir, reasons=settings.reasons,
                                             mandatory_severity=settings.mandatory_severity,
                                             packs=lambda: app.state.packs.load().indicator_packs())
    app.state.triager = triager or OnnxScanTriager(settings.scan_model_dir, provider=settings.provider)
    app.state.broadcaster = Broadcaster()

    for module in (manifests, scans, queue, outcomes, feed, indicators, rescore, models, tokens, audit,
                   health, ui):
        app.include_router(module.router)
    check_route_table(app)

    # The middleware added last runs first: the token leaves the query string before the body
    # limits, the routes or any log see the request.
    app.add_middleware(BodyLimitMiddleware, max_json_bytes=settings.max_json_bytes,
                       max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(SecurityHeadersMiddleware)  # also on the 413 / 422 the limits answer
    app.add_middleware(QueryTokenMiddleware)

    app.add_exception_handler(RequestValidationError, validation_error_handler)

    @app.exception_handler(UnknownManifestError)
    async def _unknown(_: Request, exc: UnknownManifestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ModelUnavailableError)
    async def _no_model(_: Request, exc: ModelUnavailableError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(SchemaError)
    async def _schema(_: Request, exc: SchemaError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    return app
