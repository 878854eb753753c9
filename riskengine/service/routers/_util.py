"""Small helpers shared by the routers (HTTP side only)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from fastapi import Request


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as dicts with NaN/NaT/NA as None (for response models)."""
    if df.empty:
        return []
    return df.astype(object).where(df.notna(), None).to_dict("records")


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()
