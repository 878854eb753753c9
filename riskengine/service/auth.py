"""Who may call what: API tokens, roles and the one table of routes and the role each needs.

Every request to the service carries an API token (``Authorization: Bearer rk_<id>_<secret>``,
made with ``riskengine tokens create``). A token has a name (the actor written to the audit), a
role and a TLP clearance. Roles are ordered ``officer < analyst < admin``: a role may do what
the roles below it may do.

:data:`ROUTE_ROLES` lists every route of the service with the role it needs (or
:data:`PUBLIC`). Routers declare the same role with ``Depends(require_role(...))`` (or the
``OfficerDep``/``AnalystDep``/``AdminDep`` aliases), and :func:`check_route_table` (run by
``create_app``) refuses to build an app where a route is missing from the table or checks
another role than the table says, so a new route cannot skip authentication.

Only ``GET /api/feed`` also takes the token as ``?access_token=`` (a browser's ``EventSource``
cannot send headers); :class:`QueryTokenMiddleware` moves it out of the query string before
anything logs the URL.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from riskengine.indicators.tlp import ROLE_DEFAULT_CLEARANCE, tlp_allows
from riskengine.service.deps import SettingsDep, StoreDep
from riskengine.store import TOKEN_ROLES, TokenInfo

log = logging.getLogger(__name__)

#: Position of each role: a token may call a route when its rank is at least the route's.
ROLE_RANK = {role: rank for rank, role in enumerate(TOKEN_ROLES)}
#: A route anyone may call (no data behind it).
PUBLIC = "public"

#: Every route of the service and the lowest role that may call it. HEAD follows GET.
ROUTE_ROLES: dict[tuple[str, str], str] = {
    # officers: the queue, the live feed, manifests and scan overlays, inspection outcomes
    ("GET", "/api/queue"): "officer",
    ("GET", "/api/queue/groups"): "officer",
    ("GET", "/api/feed"): "officer",
    ("GET", "/api/manifests/{manifest_id}"): "officer",
    ("GET", "/api/scans/{manifest_id}/overlay.png"): "officer",
    ("GET", "/api/outcomes"): "officer",
    ("POST", "/api/outcomes"): "officer",
    ("GET", "/api/outcomes/hit-rates"): "officer",
    # analysts: ingest manifests and scans, indicator packs, rescoring, models
    ("POST", "/api/manifests"): "analyst",
    ("POST", "/api/scans"): "analyst",
    ("GET", "/api/indicators"): "analyst",
    ("GET", "/api/indicators/{pack_id}"): "analyst",
    ("POST", "/api/rescore"): "analyst",
    ("GET", "/api/models"): "analyst",
    # administrators: tokens and the audit trail
    ("GET", "/api/tokens"): "admin",
    ("POST", "/api/tokens"): "admin",
    ("DELETE", "/api/tokens/{token_id}"): "admin",
    ("GET", "/api/audit"): "admin",
    # public: no data
    ("GET", "/api/health"): PUBLIC,
    ("GET", "/"): PUBLIC,
    ("GET", "/favicon.ico"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
}
#: Routes that also accept ``?access_token=`` (EventSource cannot set headers).
QUERY_TOKEN_ROUTES = frozenset({("GET", "/api/feed")})
#: Where :class:`QueryTokenMiddleware` leaves a token taken out of the query string.
QUERY_TOKEN_SCOPE_KEY = "riskengine.access_token"

_CREATE_HINT = "create one with `riskengine tokens create --db URL --name NAME --role officer`"


@dataclass(frozen=True)
class Principal:
    """The caller of a request: the token's name (the audit actor), role and TLP clearance."""

    name: str
    role: str
    clearance: str
    token_id: str | None = None

    @classmethod
    def from_token(cls, info: TokenInfo) -> Principal:
        return cls(name=info.name, role=info.role, clearance=info.clearance, token_id=info.token_id)

    def has_role(self, role: str) -> bool:
        """Whether this principal may act as ``role`` (a higher role includes the lower ones)."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def may_read(self, marking: str) -> bool:
        """Whether the clearance admits something marked ``marking`` (TLP)."""
        return tlp_allows(self.clearance, marking)


_bearer = HTTPBearer(auto_error=False, scheme_name="token",
                     description="An API token: `Authorization: Bearer rk_<id>_<secret>` "
                                 "(`riskengine tokens create`).")
_query = APIKeyQuery(name="access_token", auto_error=False, scheme_name="access_token",
                     description="The API token as a query parameter; accepted on GET /api/feed only, "
                                 "for EventSource, which cannot send headers.")
_BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
_QueryDep = Annotated[str | None, Depends(_query)]


def _unauthorized(message: str, *, invalid: bool) -> HTTPException:
    challenge = 'Bearer realm="riskengine"' + (', error="invalid_token"' if invalid else "")
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": challenge})


def _token_text(request: Request, query_token: bool) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _unauthorized(f"the Authorization header must read 'Bearer <token>', got a "
                                f"{scheme or 'blank'!r} header; {_CREATE_HINT}", invalid=True)
        return value.strip()
    from_query = request.scope.get(QUERY_TOKEN_SCOPE_KEY)
    if from_query is not None and not query_token:
        raise _unauthorized("this route takes the token in the 'Authorization: Bearer <token>' header; "
                            "?access_token= is accepted on GET /api/feed only", invalid=False)
    return from_query


def authorize(request: Request, settings: Any, store: Any, role: str, *, query_token: bool = False) -> Principal:
    """Authenticate the request's token and check it holds ``role`` (401 / 403 otherwise)."""
    if not settings.auth:
        principal = Principal(name=settings.actor, role="admin", clearance=ROLE_DEFAULT_CLEARANCE["admin"])
        request.state.principal = principal
        return principal
    text = _token_text(request, query_token)
    info, state = store.check_token(text)
    where = f"{request.method} {request.url.path}"
    if state != "active":
        if state == "missing":
            how = "'Authorization: Bearer <token>'" + (" or ?access_token=<token>" if query_token else "")
            message = f"authentication required: send {how}; {_CREATE_HINT}"
        elif state == "malformed":
            message = ("the token is malformed: expected rk_<16 hex digits>_<43-character secret> as "
                       "printed once by `riskengine tokens create`; check that it was copied whole")
        elif state == "unknown":
            message = ("unknown token: no token has this id and secret; check that it was copied whole "
                       "or ask an administrator for a new one")
        else:
            when = info.revoked_at if state == "revoked" else info.expires_at
            message = (f"token {info.token_id} ({info.name}) {'was revoked' if state == 'revoked' else 'expired'} "
                       f"at {when:%Y-%m-%d %H:%M:%S} UTC; ask an administrator for a new one")
        log.warning("401 on %s from %s: %s token", where, request.client.host if request.client else "?", state)
        raise _unauthorized(message, invalid=state != "missing")
    principal = Principal.from_token(info)
    if not principal.has_role(role):
        log.warning("403 on %s: token %s (%s) has role %s, needs %s", where, info.token_id, info.name,
                    info.role, role)
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"{where} needs the {role} role; token {info.name!r} has the {info.role} role")
    request.state.principal = principal
    return principal


@functools.cache
def require_role(role: str, *, query_token: bool = False) -> Callable[..., Principal]:
    """A FastAPI dependency that returns the caller's :class:`Principal` when its token holds
    ``role`` (or a higher one); 401 for a missing, malformed, unknown, revoked or expired token,
    403 for a lower role. ``query_token`` also accepts ``?access_token=`` (EventSource only).

    >>> @router.get("/api/thing")                                         # doctest: +SKIP
    ... def thing(me: Annotated[Principal, Depends(require_role("analyst"))]): ...
    """
    if role not in ROLE_RANK:
        raise ValueError(f"role must be one of {list(ROLE_RANK)}, got {role!r}")

    if query_token:
        def dependency(request: Request, settings: SettingsDep, store: StoreDep,
                       _header: _BearerDep, _query_doc: _QueryDep) -> Principal:
            return authorize(request, settings, store, role, query_token=True)
    else:
        def dependency(request: Request, settings: SettingsDep, store: StoreDep,
                       _header: _BearerDep) -> Principal:
            return authorize(request, settings, store, role)

    dependency.__name__ = f"require_{role}" + ("_or_query_token" if query_token else "")
    dependency.required_role = role  # type: ignore[attr-defined]
    dependency.query_token = query_token  # type: ignore[attr-defined]
    return dependency


OfficerDep = Annotated[Principal, Depends(require_role("officer"))]
AnalystDep = Annotated[Principal, Depends(require_role("analyst"))]
AdminDep = Annotated[Principal, Depends(require_role("admin"))]
#: Officer, token also accepted as ``?access_token=`` (GET /api/feed).
OfficerQueryDep = Annotated[Principal, Depends(require_role("officer", query_token=True))]


# --------------------------------------------------------------------------------------------
# The table is the truth: every route in it, every route checks what it says
# --------------------------------------------------------------------------------------------

def _declared(dependant: Any) -> set[tuple[str, bool]]:
    found: set[tuple[str, bool]] = set()
    for sub in getattr(dependant, "dependencies", ()):
        role = getattr(sub.call, "required_role", None)
        if role is not None:
            found.add((role, bool(getattr(sub.call, "query_token", False))))
        found |= _declared(sub)
    return found


def iter_routes(app: FastAPI) -> Iterator[Any]:
    """Every route ``app`` serves (routers that FastAPI includes lazily are flattened)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI without lazily included routers: app.routes is flat
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def route_problems(app: FastAPI) -> list[str]:
    """What disagrees between ``app.routes`` and :data:`ROUTE_ROLES` (empty when all is well)."""
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for route in iter_routes(app):
        path = getattr(route, "path", repr(route))
        methods = getattr(route, "methods", None)
        if not methods:
            problems.append(f"{path}: not an HTTP route with methods; every entry point must be in "
                            "ROUTE_ROLES of riskengine.service.auth")
            continue
        declared = _declared(getattr(route, "dependant", None))
        for method in sorted(set(methods) - {"HEAD"} or methods):
            key = (method, path)
            seen.add(key)
            if key not in ROUTE_ROLES:
                problems.append(f"{method} {path} is not in ROUTE_ROLES of riskengine.service.auth: add it "
                                "with the role it needs")
                continue
            role = ROUTE_ROLES[key]
            want = set() if role == PUBLIC else {(role, key in QUERY_TOKEN_ROUTES)}
            if declared != want:
                problems.append(f"{method} {path} checks {sorted(declared) or 'no role'} but ROUTE_ROLES says "
                                f"{role}{' (query token allowed)' if key in QUERY_TOKEN_ROUTES else ''}")
    for key in sorted(set(ROUTE_ROLES) - seen):
        if ROUTE_ROLES[key] != PUBLIC:
            problems.append(f"ROUTE_ROLES names {key[0]} {key[1]}, which the app does not serve")
    return problems


def check_route_table(app: FastAPI) -> None:
    """Raise ``RuntimeError`` when a route is not in :data:`ROUTE_ROLES` or checks another role."""
    problems = route_problems(app)
    if problems:
        raise RuntimeError("the routes and the role table disagree:\n  " + "\n  ".join(problems))


class QueryTokenMiddleware:
    """Moves ``access_token`` out of the query string into the request scope (pure ASGI).

    Access logs print the URL with its query string; the token must not be in it. The
    dependencies read it back from ``scope[QUERY_TOKEN_SCOPE_KEY]`` on the routes that accept it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The names are compared decoded, as the routes read them: ``access%5Ftoken=`` is
        # ``access_token=`` to the query parser, so a check of the raw bytes would let it through.
        if scope["type"] in ("http", "websocket") and scope.get("query_string"):
            pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            tokens = [v for k, v in pairs if k == "access_token"]
            if tokens:
                # Mutated in place: the server logs the very scope dict it passed in.
                scope["query_string"] = urlencode([(k, v) for k, v in pairs if k != "access_token"]).encode("latin-1")
                scope[QUERY_TOKEN_SCOPE_KEY] = tokens[-1]
        await self.app(scope, receive, send)
