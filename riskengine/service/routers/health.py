"""GET /api/health: database, models and feed status."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from riskengine.service.deps import BroadcasterDep, ScorerDep, StoreDep, TriagerDep
from riskengine.service.schemas import Health, ModelStatus
from riskengine.service.settings import package_version

router = APIRouter(prefix="/api/health", tags=["health"])


def _status(model: object) -> ModelStatus:
    loaded = bool(getattr(model, "loaded", False))
    try:
        version = getattr(model, "version", None)
    except Exception:  # a broken sidecar must not break the health check
        version = None
    return ModelStatus(loaded=loaded, available=bool(getattr(model, "available", loaded)), version=version)


@router.get("", response_model=Health, summary="Service health",
            responses={503: {"description": "The database does not answer"}})
async def get_health(response: Response, store: StoreDep, scorer: ScorerDep, triager: TriagerDep,
                     broadcaster: BroadcasterDep) -> Health:
    """`ok` when the database answers; models load on first use (`loaded`), `available` says
    whether their files are there."""
    db_ok = await run_in_threadpool(store.ping)
    if not db_ok:
        response.status_code = 503
    return Health(
        status="ok" if db_ok else "degraded", db=db_ok,
        database=store.url.render_as_string(hide_password=True), version=package_version(),
        models={"manifest": _status(scorer), "scan": _status(triager)},
        feed_subscribers=broadcaster.subscribers,
    )
