"""GET /api/indicators: the indicator packs the service uses, filtered by the caller's TLP clearance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from riskengine.indicators.tlp import tlp_rank
from riskengine.service.auth import AnalystDep
from riskengine.service.deps import PacksDep
from riskengine.service.packs import ServicePack
from riskengine.service.schemas import PackDetail, PackList, PackSummary, RejectedPackOut

router = APIRouter(prefix="/api/indicators", tags=["indicators"])


def _summary(sp: ServicePack) -> dict[str, Any]:
    meta = sp.pack.metadata
    return {"id": meta.id, "version": str(meta.version),
            "tlp": meta.tlp, "issuer": meta.issuer.to_dict(), "created": meta.created.isoformat(),
            "description": meta.description, "indicators": len(sp.pack), "origin": sp.origin, "file": sp.file,
            "sha256": sp.pack.sha256, "signature": sp.signature}


@router.get("", response_model=PackList, summary="Indicator packs in use (within your TLP clearance)")
async def list_packs(packs: PacksDep, caller: AnalystDep) -> PackList:
    """The built-in packs and the partner packs of the packs folder that the caller's clearance
    admits; a pack marked above it is not listed at all. `rejected` names the files of the packs
    folder that are not used (the reason only for administrators: it may quote the pack)."""
    loaded = await run_in_threadpool(packs.load)
    visible = [PackSummary(**_summary(p)) for p in loaded.packs if caller.may_read(p.pack.metadata.tlp)]
    admin = caller.has_role("admin")
    rejected = [RejectedPackOut(file=r.file, error_type=r.error_type,
                                reason=r.reason if admin else "not used; an administrator sees the reason "
                                                              "here and in the server log")
                for r in loaded.rejected]
    return PackList(clearance=caller.clearance, packs=visible, rejected=rejected)


@router.get("/{pack_id}", response_model=PackDetail, summary="One indicator pack with its indicators",
            responses={403: {"description": "The pack is marked above your TLP clearance"},
                       404: {"description": "No pack with this id is in use"}})
async def get_pack(pack_id: str, packs: PacksDep, caller: AnalystDep) -> PackDetail:
    """The pack's metadata and indicators (conditions, severities, rationale); the highest
    version in use when several files carry the same pack id."""
    loaded = await run_in_threadpool(packs.load)
    matches = [p for p in loaded.packs if p.pack.id == pack_id]
    if not matches:
        raise HTTPException(404, f"no indicator pack {pack_id!r} is in use; GET /api/indicators lists "
                                 "the packs your clearance admits")
    visible = [p for p in matches if caller.may_read(p.pack.metadata.tlp)]
    if not visible:
        marking = min((p.pack.metadata.tlp for p in matches), key=tlp_rank)
        raise HTTPException(403, f"pack {pack_id!r} is marked TLP:{marking}, above the clearance "
                                 f"{caller.clearance} of token {caller.name!r}; an administrator can grant "
                                 "a higher clearance")
    best = max(visible, key=lambda p: p.pack.version)
    return PackDetail(**_summary(best), content=best.pack.to_dict())
