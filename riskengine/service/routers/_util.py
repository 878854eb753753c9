"""Small helpers shared by the routers (HTTP side only)."""

from __future__ import annotations

from typing import Annotated, Any

import pandas as pd
from fastapi import HTTPException, Query, Request, Response

#: Query parameters shared by the list routes (keyset paging).
LIMIT_DOC = "Items per page (at most 5,000)."
CURSOR_DOC = "The next_cursor of the previous page (its X-Next-Cursor header); absent for the first page."
Limit = Annotated[int, Query(ge=1, le=5_000, description=LIMIT_DOC)]
Cursor = Annotated[str | None, Query(max_length=512, description=CURSOR_DOC)]


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as dicts with NaN/NaT/NA as None (for response models)."""
    if df.empty:
        return []
    return df.astype(object).where(df.notna(), None).to_dict("records")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def bad_cursor(exc: ValueError) -> HTTPException:
    return HTTPException(422, str(exc))


def link_next(request: Request, response: Response, cursor: str | None) -> None:
    """Tell a client of a list route where the next page is (``X-Next-Cursor`` and a
    ``Link: <...>; rel="next"`` header); nothing on the last page."""
    if cursor is None:
        return
    response.headers["X-Next-Cursor"] = cursor
    response.headers["Link"] = f'<{request.url.include_query_params(cursor=cursor)}>; rel="next"'
