"""GET /api/health: whether the database answers and the models are there (public, no data)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from riskengine.service.deps import ScorerDep, StoreDep, TriagerDep
from riskengine.service.schemas import Health, ModelAvailability

router = APIRouter(prefix="/api/health", tags=["health"])


def _status(model: object) -> ModelAvailability:
    loaded = bool(getattr(model, "loaded", False))
    return ModelAvailability(loaded=loaded, available=bool(getattr(model, "available", loaded)))


@router.get("", response_model=Health, summary="Service health (public)",
            responses={503: {"description": "The database does not answer"}})
async def get_health(response: Response, store: StoreDep, scorer: ScorerDep, triager: TriagerDep) -> Health:
    """`ok` when the database answers; models load on first use (`loaded`), `available` says
    whether their files are there. Public, so it says nothing about the data, the database
    address or the model versions (`GET /api/models` does, for analysts)."""
    db_ok = await run_in_threadpool(store.ping)
    if not db_ok:
        response.status_code = 503
    return Health(status="ok" if db_ok else "degraded", db=db_ok,
                  models={"manifest": _status(scorer), "scan": _status(triager)})
