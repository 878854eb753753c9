"""POST /api/rescore: score stored manifests again with the current model and re-plan their queues."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from riskengine.service.auth import AnalystDep
from riskengine.service.deps import BroadcasterDep, QueueConfigDep, ScorerDep, StoreDep, TriagerDep
from riskengine.service.schemas import GroupKey, RescoreIn, RescoreOut
from riskengine.service.workflow import NoMatchingManifestsError, rescore_stored

router = APIRouter(prefix="/api/rescore", tags=["rescore"])


@router.post("", response_model=RescoreOut, summary="Rescore stored manifests and re-plan",
             responses={404: {"description": "No stored manifest matches the selection"},
                        503: {"description": "The manifest model is not available"}})
async def post_rescore(body: RescoreIn, store: StoreDep, scorer: ScorerDep, triager: TriagerDep,
                       broadcaster: BroadcasterDep, config: QueueConfigDep, caller: AnalystDep) -> RescoreOut:
    """Score the stored manifests of the groups matching `port`, `terminal` and `shift` (`{}`
    selects every group) with the current model, fuse scanned containers again with their
    stored scan and re-plan the queues. Only changed scores and decisions are written, so a
    second call with the same model changes nothing. For archives outside the store, use
    `riskengine rescore`."""
    try:
        report = await run_in_threadpool(
            lambda: rescore_stored(store, scorer, triager, config, actor=caller.name,
                                   port=body.port, terminal=body.terminal, shift=body.shift))
    except NoMatchingManifestsError as exc:
        raise HTTPException(404, str(exc)) from exc
    if report.scored or report.decisions:
        broadcaster.publish("rescore", report.event())
    return RescoreOut(groups=[GroupKey(port=g[0], terminal=g[1], shift=g[2]) for g in report.groups],
                      manifests=report.manifests, scored=report.scored, changed=report.changed,
                      fused=report.fused, decisions=report.decisions, unscored=report.unscored,
                      model_version=scorer.version)
