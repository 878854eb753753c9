"""GET /api/models: versions and headline metrics of the manifest and scan models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from riskengine.service.auth import AnalystDep
from riskengine.service.deps import ScorerDep, SettingsDep, TriagerDep
from riskengine.service.schemas import ModelInfo

router = APIRouter(prefix="/api/models", tags=["models"])

_TRAINING_KEYS = ("rows_in", "rows_valid", "labelled", "positives", "start", "end", "n_train", "n_val",
                  "source", "seed", "threat_rate", "best_iteration", "best_epoch")


def _numbers(d: Any) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _read(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, f"{path} not found"
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, ValueError) as exc:
        return None, f"cannot read {path}: {exc}"


def _version(model: Any) -> str | None:
    try:
        return getattr(model, "version", None)
    except Exception:  # a broken sidecar must not break the listing
        return None


def manifest_model_info(model_dir: Path, model: Any) -> ModelInfo:
    """The manifest model's sidecar (``model.json``): training data and held-out metrics."""
    meta, error = _read(model_dir / "model.json")
    info: dict[str, Any] = {"kind": "manifest", "directory": str(model_dir), "version": _version(model),
                            "loaded": bool(getattr(model, "loaded", False)),
                            "available": bool(getattr(model, "available", meta is not None)), "error": error}
    if meta is not None:
        training = meta.get("training") or {}
        holdout = (meta.get("metrics") or {}).get("holdout") or {}
        info.update(name=model_dir.name, created_at=meta.get("created_at"),
                    training={k: training[k] for k in _TRAINING_KEYS if k in training},
                    metrics={k: v for k, v in _numbers(holdout).items() if k not in ("rows", "positives")},
                    metrics_on=(f"held-out slice: {holdout['rows']:,} labelled rows, {holdout.get('positives', '?')} "
                                "positives" if "rows" in holdout else None))
    return ModelInfo(**info)


def scan_model_info(model_dir: Path | None, model: Any) -> ModelInfo:
    """The scan model's sidecar (``config.json``): training data and test (or validation) metrics."""
    if model_dir is None:
        return ModelInfo(kind="scan", directory="", version=_version(model), loaded=bool(getattr(model, "loaded", False)),
                         available=bool(getattr(model, "available", False)),
                         error="no scan model directory configured (--scan-model-dir)")
    cfg, error = _read(model_dir / "config.json")
    info: dict[str, Any] = {"kind": "scan", "directory": str(model_dir), "version": _version(model),
                            "loaded": bool(getattr(model, "loaded", False)),
                            "available": bool(getattr(model, "available", cfg is not None)), "error": error}
    if cfg is not None:
        training = cfg.get("training") or {}
        metrics = cfg.get("metrics") or {}
        test = metrics.get("test") or {}
        if test:
            values = {k: v for k, v in _numbers(test).items() if k not in ("seed", "count", "seconds", "threat_rate")}
            for view in ("raw", "display"):
                if isinstance(test.get(view), dict) and "auc" in test[view]:
                    values[f"{view}_auc"] = float(test[view]["auc"])
            on = f"test: {test.get('count', '?')} scans (seed {test.get('seed', '?')})"
        else:
            values, on = _numbers(metrics.get("validation")), "validation"
        info.update(name=cfg.get("model_name"), created_at=training.get("created_at") or cfg.get("created_at"),
                    training={k: training[k] for k in _TRAINING_KEYS if k in training},
                    metrics=values, metrics_on=on if values else None)
    return ModelInfo(**info)


@router.get("", response_model=list[ModelInfo], summary="Model versions and headline metrics")
def get_models(scorer: ScorerDep, triager: TriagerDep, settings: SettingsDep, _: AnalystDep) -> list[ModelInfo]:
    """What the service scores with: version, training data and the metrics recorded in each
    model's sidecar when it was trained (the model cards in `models/` explain them)."""
    manifest_dir = Path(getattr(scorer, "model_dir", settings.model_dir))
    scan_dir = getattr(triager, "directory", None) or settings.scan_model_dir
    return [manifest_model_info(manifest_dir, scorer), scan_model_info(Path(scan_dir) if scan_dir else None, triager)]
