"""GET/POST /api/tokens, DELETE /api/tokens/{token_id}: API tokens (administrators)."""

from __future__ import annotations

import pandas as pd
from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from riskengine.indicators.tlp import ROLE_DEFAULT_CLEARANCE, normalize_tlp
from riskengine.service.auth import AdminDep
from riskengine.service.deps import StoreDep
from riskengine.service.routers._util import Cursor, Limit, bad_cursor, link_next
from riskengine.service.schemas import TokenCreated, TokenIn, TokenOut
from riskengine.store import page_after

router = APIRouter(prefix="/api/tokens", tags=["tokens"])


@router.get("", response_model=list[TokenOut], summary="Every API token (never the secrets)")
def list_tokens(store: StoreDep, _: AdminDep, request: Request, response: Response,
                limit: Limit = 500, cursor: Cursor = None) -> list[TokenOut]:
    """Active, revoked and expired tokens with their role, clearance and last use, oldest
    first, `limit` per reply (the next page's cursor is in the X-Next-Cursor and Link headers)."""
    tokens = store.list_tokens()
    keys = pd.DataFrame({"created": [t.created_at.isoformat() for t in tokens],
                         "token_id": [t.token_id for t in tokens], "i": range(len(tokens))}, dtype=object)
    try:
        page = page_after(keys, ["created", "token_id"], limit, cursor)
    except ValueError as exc:
        raise bad_cursor(exc) from exc
    link_next(request, response, page.next_cursor)
    return [TokenOut(**tokens[i].to_dict()) for i in page.rows["i"]]


@router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED,
             summary="Create an API token (the text is shown once)",
             responses={403: {"description": "Clearance above your own"}, 422: {"description": "Invalid body"}})
async def create_token(body: TokenIn, store: StoreDep, caller: AdminDep, response: Response) -> TokenCreated:
    """The token text is in this response only (the store keeps its SHA-256). A token can be
    given at most the clearance of the token that creates it; RED tokens are created on the
    server with `riskengine tokens create --clearance RED`."""
    try:
        clearance = normalize_tlp(body.clearance) if body.clearance is not None else ROLE_DEFAULT_CLEARANCE[body.role]
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    if not caller.may_read(clearance):
        raise HTTPException(403, f"token {caller.name!r} has clearance {caller.clearance} and cannot grant "
                                 f"{clearance}; create it on the server with `riskengine tokens create "
                                 f"--clearance {clearance}`")
    try:
        info, text = await run_in_threadpool(
            lambda: store.create_token(body.name, body.role, clearance=clearance, expires_at=body.expires_at,
                                       actor=caller.name))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    response.headers["Cache-Control"] = "no-store"
    return TokenCreated(**info.to_dict(), token=text)


@router.delete("/{token_id}", response_model=TokenOut, summary="Revoke an API token",
               responses={404: {"description": "Unknown token id"}})
def revoke_token(token_id: str, store: StoreDep, caller: AdminDep) -> TokenOut:
    """Requests with the token get 401 from now on (and its open feed ends at the next
    keep-alive). Revoking twice changes nothing."""
    try:
        info = store.revoke_token(token_id, caller.name)
    except KeyError as exc:
        raise HTTPException(404, exc.args[0]) from exc
    return TokenOut(**info.to_dict())
