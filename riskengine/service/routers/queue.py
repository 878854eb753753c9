"""GET /api/queue: the ordered queue of a port (terminal, shift) with scores, lanes and reasons."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from riskengine.service.auth import OfficerDep
from riskengine.service.deps import StoreDep
from riskengine.service.routers._util import records
from riskengine.service.schemas import QueueGroup, QueueItem, QueueResponse

router = APIRouter(prefix="/api/queue", tags=["queue"])


@router.get("", response_model=QueueResponse, summary="The current queue")
def get_queue(
    store: StoreDep, _: OfficerDep,
    port: Annotated[str, Query(min_length=1, description="UN/LOCODE of the port, e.g. NLRTM.")],
    terminal: Annotated[str | None, Query(description="Terminal, e.g. NLRTM-ECT (all when absent).")] = None,
    shift: Annotated[str | None, Query(description="Shift, e.g. 2026-03-12/S1 (all when absent).")] = None,
) -> QueueResponse:
    """Lanes in working order (hold, red, inspect, scan, cleared, green), then rank."""
    q = store.queue(port, terminal=terminal or None, shift=shift or None)
    items = []
    if len(q):
        q = q.assign(overlay_url=q["manifest_id"].map(lambda i: f"/api/scans/{i}/overlay.png")
                     .where(q["has_overlay"], None))
        items = [QueueItem.model_validate(r) for r in records(q)]
    counts = q["lane"].value_counts().to_dict() if len(q) else {}
    return QueueResponse(port=port, terminal=terminal, shift=shift,
                         lane_counts={k: int(v) for k, v in counts.items()}, items=items)


@router.get("/groups", response_model=list[QueueGroup], summary="Ports, terminals and shifts")
def get_groups(store: StoreDep, _: OfficerDep) -> list[QueueGroup]:
    """Every (port, terminal, shift) that holds manifests, with the number of containers."""
    return [QueueGroup.model_validate(r) for r in records(store.groups())]
