"""Small helpers shared by the routers (HTTP side only)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from fastapi import HTTPException, Request


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as dicts with NaN/NaT/NA as None (for response models)."""
    if df.empty:
        return []
    return df.astype(object).where(df.notna(), None).to_dict("records")


def check_length(request: Request, limit: int) -> None:
    """Refuse a body larger than ``limit`` bytes up front (413) when its length is declared."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body is {int(declared):,} bytes; the limit is {limit:,} bytes "
                                 "(split the batch or raise --max-upload-bytes)")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()
