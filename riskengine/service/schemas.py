"""Request and response bodies of the service (Pydantic v2), separate from the tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class ManifestBatch(BaseModel):
    """A JSON batch: ``{"manifests": [{...row...}, ...]}`` (a bare list of rows is accepted too).

    Each row uses the native manifest schema (datasets/manifest_schema.md); an optional ``shift``
    field gives the terminal's shift (default: the first shift of the arrival day).
    """

    manifests: list[dict[str, Any]] = Field(..., min_length=1)


class Reject(_Out):
    source_row: int = Field(description="1-based row of the batch (or data line of the CSV).")
    manifest_id: str | None = None
    column: str | None = None
    reason: str
    reasons: str


class ValidationWarning(_Out):
    source_row: int
    column: str
    message: str


class LaneCount(_Out):
    port: str
    terminal: str
    shift: str
    lane: str
    containers: int


class IngestResponse(_Out):
    received: int
    valid: int
    rejected: int
    inserted: int
    updated: int
    unchanged: int
    scored: int
    decisions: int = Field(description="Queue decisions written (only changed ones).")
    changed_manifest_ids: list[str]
    lane_counts: list[LaneCount]
    rejects: list[Reject]
    warnings: list[ValidationWarning]


class ScanPathRequest(BaseModel):
    """A scan already on the server: ``path`` must lie under one of the configured scan roots."""

    manifest_id: str = Field(min_length=1)
    path: str = Field(min_length=1)
    scan_id: str | None = Field(None, max_length=64)


class ScanResponse(_Out):
    scan_id: str
    manifest_id: str
    concealment_score: float
    empty_probability: float
    cargo_class: str
    estimated_mass_kg: float | None
    risk_score: float
    fused_score: float
    image_llr: float
    reasons: str
    lane: str | None
    selection: str | None
    overlay_url: str | None
    decisions: int


class QueueItem(_Out):
    rank: int
    manifest_id: str
    container_id: str | None
    port: str
    terminal: str
    shift: str
    lane: str
    selection: str | None
    random: bool
    mandatory: bool
    risk_score: float | None
    fused_score: float | None
    concealment_score: float | None
    scanned: bool
    overlay_url: str | None
    goods_description: str | None
    origin_country: str | None
    reasons: str | None
    scan_reasons: str | None
    decision_reasons: str | None
    outcome: str | None
    decided_at: datetime | None


class QueueResponse(_Out):
    port: str
    terminal: str | None
    shift: str | None
    lane_counts: dict[str, int]
    items: list[QueueItem]


class QueueGroup(_Out):
    port: str
    terminal: str
    shift: str
    containers: int


class OutcomeIn(BaseModel):
    """The result of a physical inspection."""

    manifest_id: str = Field(min_length=1)
    result: Literal["seizure", "nothing_found"]
    amount_kg: float = Field(0.0, ge=0, description="Seized amount (0 when nothing was found).")
    notes: str | None = Field(None, max_length=4000)
    actor: str = Field("officer", min_length=1, max_length=128)


class OutcomeOut(_Out):
    outcome_id: int
    manifest_id: str
    result: str
    amount_kg: float
    lane: str | None
    selection: str | None


class OutcomeRow(_Out):
    manifest_id: str
    result: str
    amount_kg: float
    notes: str | None
    actor: str
    recorded_at: datetime
    port: str | None
    terminal: str | None
    shift: str | None
    lane: str
    selection: str
    random: bool


class HitRate(_Out):
    lane: str
    selection_kind: str
    inspections: int
    seizures: int
    hit_rate: float
    ci_low: float
    ci_high: float


class ModelStatus(_Out):
    loaded: bool
    available: bool
    version: str | None


class Health(_Out):
    status: Literal["ok", "degraded"]
    db: bool
    database: str
    version: str
    models: dict[str, ModelStatus]
    feed_subscribers: int


class ErrorBody(_Out):
    detail: Any
