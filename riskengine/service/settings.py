"""Settings of the queue feed service (plain data; read from the CLI or the environment)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from riskengine.queue import QueueConfig

_REPO_MODELS = Path(__file__).resolve().parents[2] / "models"


def package_version() -> str:
    """The installed riskengine version ("unknown" in a bare source tree)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("riskengine")
    except PackageNotFoundError:
        return "unknown"


class QueueSettings(BaseModel):
    """Capacities per port/terminal/shift and thresholds (see :class:`riskengine.queue.QueueConfig`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scan_capacity: int = Field(300, ge=0, description="Scans per shift.")
    inspection_capacity: int = Field(40, ge=0, description="Physical inspections per shift.")
    exploration_share: float = Field(0.05, ge=0, le=1, description="Share of each capacity drawn at random.")
    red_share: float = Field(0.5, ge=0, le=1)
    hold_threshold: float = Field(0.9, ge=0, le=1)
    red_threshold: float = Field(0.5, ge=0, le=1)
    scan_threshold: float = Field(0.0, ge=0, le=1)
    inspect_threshold: float = Field(0.0, ge=0, le=1)
    seed: int = 0

    def to_config(self) -> QueueConfig:
        return QueueConfig(**self.model_dump())


class Settings(BaseModel):
    """Everything the service needs to start.

    db_url: store URL (SQLite file or PostgreSQL).
    model_dir: manifest risk model directory (default ``models/manifest`` of the checkout).
    scan_model_dir: scan CNN directory (default ``$RISKENGINE_SCAN_MODEL`` or ``models/scanvision``).
    data_dir: where uploaded scans and heatmap overlays are written.
    scan_roots: folders from which ``POST /api/scans`` may read a server-side ``path``; empty
        means server-side paths are refused (uploads only).
    mandatory_severity: indicator severity (0–10) from which a hit makes the selection mandatory.
    packs_dir: folder of partner indicator packs (``*.yaml``) used next to the built-in ones.
    allow_unsigned_packs: accept packs in ``packs_dir`` without a valid signature.
    auth: every route except the health check, the page and the API docs needs an API token
        (``Authorization: Bearer rk_...``). Turning it off is for development on a loopback
        address only (``riskengine serve --no-auth``).
    max_json_bytes / max_upload_bytes: request body limits for JSON bodies and for everything
        else (CSV, multipart uploads, images); a larger body is answered 413.
    """

    model_config = ConfigDict(extra="forbid")

    db_url: str = "sqlite:///riskengine.db"
    model_dir: Path = _REPO_MODELS / "manifest"
    scan_model_dir: Path | None = None
    provider: str = "cpu"
    data_dir: Path = Path("riskengine-data")
    scan_roots: list[Path] = Field(default_factory=list)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    actor: str = Field("riskengine-service", min_length=1, max_length=128,
                       description="Audit actor of requests when auth is off (development only).")
    auth: bool = True
    reasons: int = Field(3, ge=0, le=10, description="Reasons per manifest score.")
    mandatory_severity: float | None = Field(10.0, ge=0, le=10)
    keepalive_s: float = Field(15.0, gt=0, description="Seconds between keep-alive comments on /api/feed.")
    max_upload_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Body limit of uploads (CSV, multipart).")
    max_json_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Body limit of JSON requests.")
    packs_dir: Path | None = None
    allow_unsigned_packs: bool = False
    max_batch_rows: int = Field(200_000, gt=0)

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """Settings from ``RISKENGINE_*`` environment variables, then ``overrides``."""
        env = {
            "db_url": os.environ.get("RISKENGINE_DB_URL"),
            "model_dir": os.environ.get("RISKENGINE_MODEL_DIR"),
            "scan_model_dir": os.environ.get("RISKENGINE_SCAN_MODEL"),
            "data_dir": os.environ.get("RISKENGINE_DATA_DIR"),
            "packs_dir": os.environ.get("RISKENGINE_PACKS_DIR"),
        }
        values = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
