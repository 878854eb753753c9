"""Assembles the service: settings, dependencies, routers, error handlers. Nothing else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from riskengine.schema import SchemaError
from riskengine.service.events import Broadcaster
from riskengine.service.routers import feed, health, manifests, outcomes, queue, scans, ui
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

* `POST /api/manifests`: validate, store, score and plan manifests (JSON or CSV).
* `POST /api/scans`: triage an X-ray scan and decide the physical inspections.
* `GET /api/queue`: the ordered queue of a port / terminal / shift, with reasons.
* `POST /api/outcomes`: record what an inspection found.
* `GET /api/feed`: live queue changes as server-sent events.
* `/`: the officers' page.
"""


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               scorer: Scorer | None = None, triager: ScanTriager | None = None) -> FastAPI:
    """Build the FastAPI app.

    ``store``, ``scorer`` and ``triager`` default to the ones ``settings`` describe (the models
    load lazily on first use). The store is opened here, so a bad database URL fails at once.
    """
    settings = settings or Settings.from_env()
    store = store or Store(settings.db_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log.info("serving %r", store)
        yield
        store.close()

    app = FastAPI(title="riskengine queue feed", version=package_version(), description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.scorer = scorer or ModelScorer(settings.model_dir, reasons=settings.reasons,
                                             mandatory_severity=settings.mandatory_severity)
    app.state.triager = triager or OnnxScanTriager(settings.scan_model_dir, provider=settings.provider)
    app.state.broadcaster = Broadcaster()

    for module in (manifests, scans, queue, outcomes, feed, health, ui):
        app.include_router(module.router)

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
