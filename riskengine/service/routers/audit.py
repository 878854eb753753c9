"""GET /api/audit: the latest rows of the append-only audit trail (administrators)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from riskengine.service.auth import AdminDep
from riskengine.service.deps import StoreDep
from riskengine.service.routers._util import Cursor, bad_cursor, link_next, records
from riskengine.service.schemas import AuditRow

router = APIRouter(prefix="/api/audit", tags=["audit"])


@router.get("", response_model=list[AuditRow], summary="Latest audit rows, newest first")
def get_audit(
    store: StoreDep, _: AdminDep,
    request: Request, response: Response,
    limit: Annotated[int, Query(ge=1, le=10_000, description="Rows per page.")] = 100,
    cursor: Cursor = None,
    entity_id: Annotated[str | None, Query(description="Only rows of this manifest or token id.")] = None,
    actor: Annotated[str | None, Query(description="Only rows of this actor (a token name).")] = None,
) -> list[AuditRow]:
    """Who changed what and when: manifests, scores, decisions, scans, outcomes and tokens.

    Older rows: pass the X-Next-Cursor header of a reply as `cursor`."""
    try:
        page = store.audit_page(limit, cursor, entity_id=entity_id, actor=actor)
    except ValueError as exc:
        raise bad_cursor(exc) from exc
    link_next(request, response, page.next_cursor)
    return [AuditRow.model_validate(r) for r in records(page.rows)]
