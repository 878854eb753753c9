"""Request and response bodies of the service (Pydantic v2), separate from the tables."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _as_utc(value: datetime) -> datetime:
    # The store keeps naive UTC; a reply says so (2027-01-31T06:12:00Z), as the CLI does.
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


#: A timestamp in a reply: always time-zone aware, in UTC.
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


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
    decided_at: UtcDatetime | None


class QueueResponse(_Out):
    port: str
    terminal: str | None
    shift: str | None
    lane_counts: dict[str, int] = Field(description="Containers per lane in the whole queue.")
    total: int = Field(description="Containers in the whole queue (all pages).")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
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
    actor: str | None = Field(None, min_length=1, max_length=128,
                              description="Optional: the officer this record speaks for, kept in the audit "
                                          "details. The audit actor is always the API token's name.")


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
    recorded_at: UtcDatetime
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


class ModelAvailability(_Out):
    loaded: bool
    available: bool


class Health(_Out):
    """Public: whether the service can work, nothing about the data or its versions."""

    status: Literal["ok", "degraded"]
    db: bool
    models: dict[str, ModelAvailability]


class ModelInfo(_Out):
    """A model the service uses: version and headline metrics from its sidecar JSON."""

    kind: Literal["manifest", "scan"]
    directory: str
    available: bool
    loaded: bool
    version: str | None
    name: str | None = None
    created_at: str | None = None
    training: dict[str, Any] = Field(default_factory=dict, description="Size and period of the training data.")
    metrics: dict[str, float] = Field(default_factory=dict, description="Headline metrics (held-out data).")
    metrics_on: str | None = Field(None, description="The data the metrics were measured on.")
    error: str | None = None


class PackSummary(_Out):
    id: str
    version: str
    tlp: str
    issuer: dict[str, Any]
    created: str
    description: str
    indicators: int
    origin: Literal["built-in", "packs_dir"]
    file: str
    sha256: str | None
    signature: str


class RejectedPackOut(_Out):
    file: str
    error_type: str
    reason: str


class PackList(_Out):
    clearance: str = Field(description="The caller's TLP clearance; packs above it are not listed.")
    packs: list[PackSummary]
    rejected: list[RejectedPackOut] = Field(description="Files of the packs folder that are not used, and why.")


class PackDetail(PackSummary):
    content: dict[str, Any] = Field(description="The pack as data (metadata and indicators).")


class RescoreIn(BaseModel):
    """Which stored manifests to score again: the groups matching the filters (all when none)."""

    model_config = ConfigDict(extra="forbid")

    port: str | None = Field(None, min_length=1, max_length=8)
    terminal: str | None = Field(None, max_length=64)
    shift: str | None = Field(None, max_length=32)


class GroupKey(_Out):
    port: str
    terminal: str
    shift: str


class RescoreOut(_Out):
    groups: list[GroupKey]
    manifests: int = Field(description="Stored manifests in the selected groups.")
    scored: int = Field(description="New manifest scores written (score, reasons or model version changed).")
    changed: int = Field(description="Manifests whose risk score, reasons or mandatory flag changed.")
    fused: int = Field(description="Scanned containers fused again with their stored scan.")
    decisions: int = Field(description="Queue decisions that changed.")
    unscored: int
    model_version: str | None


class TokenIn(BaseModel):
    """A new API token."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="Who uses it; the actor in the audit.")
    role: Literal["officer", "analyst", "admin"]
    clearance: str | None = Field(None, description="TLP clearance (default: the role's); at most your own.")
    expires_at: datetime | None = Field(None, description="UTC when no time zone is given.")


class TokenOut(_Out):
    token_id: str
    name: str
    role: str
    clearance: str
    state: Literal["active", "revoked", "expired"]
    created_at: UtcDatetime
    created_by: str
    expires_at: UtcDatetime | None
    revoked_at: UtcDatetime | None
    revoked_by: str | None
    last_used_at: UtcDatetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The token text, shown only in this response: store it now.")


class AuditRow(_Out):
    id: int
    at: UtcDatetime
    actor: str
    action: str
    entity: str
    entity_id: str | None
    details: dict[str, Any]


class ErrorBody(_Out):
    detail: Any
