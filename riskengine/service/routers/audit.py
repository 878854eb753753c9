"""GET /api/audit: the latest rows of the append-only audit trail (administrators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from riskengine.service.auth import AdminDep
from riskengine.service.deps import StoreDep
from riskengine.service.routers._util import records
from riskengine.service.schemas import AuditRow

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("", response_model=list[AuditRow], summary="Latest audit rows, newest first")
def get_audit(
    store: StoreDep, _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Rows to return.")] = 100,
    entity_id: Annotated[str | None, Query(description="Only rows of this manifest or token id.")] = None,
    actor: Annotated[str | None, Query(description="Only rows of this actor (a token name).")] = None,
) -> list[AuditRow]:
    """Who changed what and when: manifests, scores, decisions, scans, outcomes and tokens."""
    return [AuditRow.model_validate(r) for r in records(store.audit(limit, entity_id=entity_id, actor=actor))]
