"""POST/GET /api/outcomes: inspection results; GET /api/outcomes/hit-rates."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from riskengine.service.auth import OfficerDep
from riskengine.service.deps import BroadcasterDep, StoreDep
from riskengine.service.routers._util import Cursor, Limit, bad_cursor, link_next, records
from riskengine.service.schemas import HitRate, OutcomeIn, OutcomeOut, OutcomeRow

router = APIRouter(prefix="/api/outcomes", tags=["outcomes"])


@router.post("", response_model=OutcomeOut, status_code=status.HTTP_201_CREATED,
             summary="Record an inspection result",
             responses={404: {"description": "Unknown manifest id"}, 422: {"description": "Invalid body"}})
async def post_outcome(body: OutcomeIn, store: StoreDep, broadcaster: BroadcasterDep,
                       caller: OfficerDep) -> OutcomeOut:
    """Seizure (with the amount) or nothing found; a later record corrects an earlier one.

    The audit actor is the caller's token; an `actor` named in the body is kept in the audit
    details as the officer the record speaks for."""
    try:
        outcome_id = await run_in_threadpool(
            lambda: store.record_outcome(body.manifest_id, body.result, body.amount_kg, body.notes,
                                         caller.name, reported_by=body.actor))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    state = await run_in_threadpool(store.outcomes)
    row = state[state["manifest_id"] == body.manifest_id].iloc[0]
    out = OutcomeOut(outcome_id=outcome_id, manifest_id=body.manifest_id, result=body.result,
                     amount_kg=body.amount_kg, lane=row["lane"], selection=row["selection"])
    broadcaster.publish("outcome", {"manifest_ids": [body.manifest_id], "result": body.result,
                                    "groups": [{"port": row["port"], "terminal": row["terminal"],
                                                "shift": row["shift"]}]})
    return out


@router.get("", response_model=list[OutcomeRow], summary="Latest outcome per inspected container")
def get_outcomes(store: StoreDep, _: OfficerDep, request: Request, response: Response,
                 limit: Limit = 500, cursor: Cursor = None) -> list[OutcomeRow]:
    """By manifest id, `limit` per reply; the next page's cursor is in the X-Next-Cursor and
    Link headers."""
    from riskengine.store import page_after

    try:
        page = page_after(store.outcomes(), ["manifest_id"], limit, cursor)
    except ValueError as exc:
        raise bad_cursor(exc) from exc
    link_next(request, response, page.next_cursor)
    return [OutcomeRow.model_validate(r) for r in records(page.rows)]


@router.get("/hit-rates", response_model=list[HitRate], summary="Hit rates per lane, random vs targeted")
def get_hit_rates(store: StoreDep, _: OfficerDep) -> list[HitRate]:
    """Share of inspections with a seizure, with Wilson 95% intervals; the random picks are the
    unbiased estimate of what a lane would find."""
    return [HitRate.model_validate(r) for r in records(store.hit_rates())]
