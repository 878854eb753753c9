"""What the service scores with: a manifest :class:`Scorer` and a scan :class:`ScanTriager`.

Both are dependencies of the service, so tests and deployments can swap them
(``app.dependency_overrides``). The real implementations load the shipped models lazily, on
first use: the service starts (and answers ``/api/health``) even when a model is missing, and
says which one and how to get it when it is needed.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from riskengine.fusion import ImageCalibration, join_reasons

if TYPE_CHECKING:
    from riskengine.indicators import IndicatorPack

log = logging.getLogger(__name__)


class ModelUnavailableError(RuntimeError):
    """A model the request needs is not there (or does not load); the message says how to fix it."""


@runtime_checkable
class Scorer(Protocol):
    """Scores validated manifests.

    ``__call__(manifests)`` returns one row per manifest with ``manifest_id``, ``risk_score``
    (calibrated probability), ``reasons`` (text an officer reads) and ``mandatory`` (bool: a
    rule that makes the selection compulsory fired).
    """

    @property
    def version(self) -> str | None: ...

    @property
    def loaded(self) -> bool: ...

    def __call__(self, manifests: pd.DataFrame) -> pd.DataFrame: ...


@runtime_checkable
class ScanTriager(Protocol):
    """Triages one scan (:class:`scanvision.io.Scan`).

    ``__call__(scan)`` returns a dict with ``concealment_score``, ``empty_probability``,
    ``cargo_class``, optionally ``cargo_class_probability``, ``class_probabilities``,
    ``estimated_mass_kg`` (None when unknown) and ``heatmap`` (2-D array or None).
    ``calibration`` turns the scan score into a likelihood ratio for the fusion.
    """

    @property
    def version(self) -> str | None: ...

    @property
    def loaded(self) -> bool: ...

    @property
    def calibration(self) -> ImageCalibration: ...

    def __call__(self, scan: Any) -> dict[str, Any]: ...


def check_scores(scores: pd.DataFrame, ids: pd.Series) -> pd.DataFrame:
    """Check a scorer's output against the manifests it was given; returns it aligned to ``ids``."""
    need = ["manifest_id", "risk_score"]
    missing = [c for c in need if c not in scores.columns]
    if missing:
        raise ValueError(f"the scorer returned columns {list(scores.columns)}; missing {missing}")
    out = (scores.drop_duplicates("manifest_id").set_index("manifest_id")
           .reindex(pd.Index(ids.astype(str).to_numpy(), name="manifest_id")))
    lost = out["risk_score"].isna()
    if lost.any():
        raise ValueError(f"the scorer returned no score for {int(lost.sum())} manifest(s), "
                         f"e.g. {list(out.index[lost][:5])}")
    if "reasons" not in out.columns:
        out["reasons"] = ""
    out["reasons"] = out["reasons"].astype("string").fillna("")
    out["mandatory"] = (out["mandatory"].astype("boolean").fillna(False).astype(bool)
                        if "mandatory" in out.columns else False)
    return out.reset_index()[["manifest_id", "risk_score", "reasons", "mandatory"]]


class ModelScorer:
    """The manifest risk model (``riskengine.model.RiskModel``) plus mandatory indicator rules.

    Args:
        model_dir: model directory written by ``riskengine train``.
        reasons: reasons per manifest.
        mandatory_severity: an indicator of at least this severity (0–10; 10 = critical) makes
            the selection mandatory; ``None`` disables mandatory rules.
        packs: returns the indicator packs of the mandatory rules (default: the built-in ones).
    """

    def __init__(self, model_dir: str | Path, *, reasons: int = 3,
                 mandatory_severity: float | None = 10.0,
                 packs: Callable[[], Sequence[IndicatorPack]] | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.reasons = reasons
        self.mandatory_severity = mandatory_severity
        self.packs = packs
        self._model: Any = None
        self._version: str | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def available(self) -> bool:
        """True when the model files are there (it loads on first use)."""
        return (self.model_dir / "model.txt").is_file()

    @property
    def version(self) -> str | None:
        if self._version is None and (self.model_dir / "model.json").is_file():
            self._version = _manifest_model_version(self.model_dir)
        return self._version

    def load(self) -> Any:
        """Load the model now (done automatically on first use)."""
        with self._lock:
            if self._model is None:
                if not (self.model_dir / "model.txt").is_file():
                    raise ModelUnavailableError(
                        f"no manifest risk model in {self.model_dir}: train one with "
                        f"`riskengine train --data manifests.parquet --out {self.model_dir}` "
                        "or start the service with --model-dir DIR")
                from riskengine.model import RiskModel

                try:
                    self._model = RiskModel.load(self.model_dir)
                except (ValueError, FileNotFoundError) as exc:
                    raise ModelUnavailableError(f"cannot load the manifest model {self.model_dir}: {exc}") from exc
                self._version = _manifest_model_version(self.model_dir)
                log.info("loaded manifest model %s (%s)", self.model_dir, self._version)
        return self._model

    def __call__(self, manifests: pd.DataFrame) -> pd.DataFrame:
        model = self.load()
        scores, rejects = model.score(manifests, reasons=self.reasons)
        if len(rejects):
            first = rejects.iloc[0]
            raise ValueError(f"{len(rejects)} manifest(s) failed the model's validation, e.g. row "
                             f"{first.get('source_row')}: {first.get('reject_reason')}")
        scores = scores.rename(columns={model.features_.mapping_.id: "manifest_id"})
        packs = self.packs() if self.packs is not None else None
        mandatory, rule_text = mandatory_rules(manifests, self.mandatory_severity, packs)
        rules = pd.DataFrame({"manifest_id": manifests["manifest_id"].astype(str).to_numpy(),
                              "mandatory": mandatory, "rule": rule_text})
        out = scores.merge(rules, on="manifest_id", how="left")
        reasons = out["reasons"] if "reasons" in out.columns else pd.Series("", index=out.index)
        out["reasons"] = join_reasons([out["rule"].fillna(""), reasons])
        return out.drop(columns=["rule"])


def mandatory_rules(manifests: pd.DataFrame, min_severity: float | None,
                    packs: Sequence[IndicatorPack] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mandatory selections: rows hit by an indicator of at least ``min_severity``.

    ``packs`` default to the built-in ones. Returns (mask, text) where text names the indicators
    ("mandatory: <title>") or is "". The queue shows these reasons to every officer, so an
    indicator from a pack marked above the officers' clearance (TLP) is named only by its pack
    and marking, never by its title. The marking is the one of the pack version the indicator
    that fired came from (``Indicator.pack_tlp``): with a RED 2.0.0 and a CLEAR 1.0.0 of one
    pack, the 2.0.0 indicators in force stay redacted.
    """
    n = len(manifests)
    if min_severity is None or n == 0:
        return np.zeros(n, dtype=bool), np.full(n, "", dtype=object)
    from riskengine.indicators import default_packs, evaluate
    from riskengine.indicators.tlp import ROLE_DEFAULT_CLEARANCE, tlp_allows

    packs = list(default_packs() if packs is None else packs)
    hits = evaluate(packs, manifests.reset_index(drop=True))
    severe = [i for i in hits.indicators if i.severity.score >= min_severity]
    if not severe:
        return np.zeros(n, dtype=bool), np.full(n, "", dtype=object)
    officers = ROLE_DEFAULT_CLEARANCE["officer"]

    def label(ind: Any) -> str:
        tlp = getattr(ind, "pack_tlp", "RED")
        if tlp_allows(officers, tlp):
            return "mandatory: " + str(ind.title)
        return f"mandatory: indicator of pack {ind.pack_id} (TLP:{tlp}; ask an analyst)"

    m = hits.matrix[[i.id for i in severe]].to_numpy(dtype=bool)
    texts = [np.where(m[:, k], label(ind), "") for k, ind in enumerate(severe)]
    return m.any(axis=1), join_reasons(texts)


def _manifest_model_version(model_dir: Path) -> str:
    try:
        meta = json.loads((model_dir / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return model_dir.name
    data_hash = (meta.get("training") or {}).get("data_hash", "")
    return f"{model_dir.name}@{meta.get('created_at', '?')}" + (f"#{str(data_hash)[:12]}" if data_hash else "")


class OnnxScanTriager:
    """The scan CNN (``scanvision.infer.ScanTriage``, ONNX Runtime), loaded on first use."""

    def __init__(self, model_dir: str | Path | None = None, *, provider: str = "cpu") -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.provider = provider
        self._triage: Any = None
        self._lock = threading.Lock()

    def _dir(self) -> Path:
        if self.model_dir is not None:
            return self.model_dir
        from scanvision.infer import default_model_dir

        return default_model_dir()

    @property
    def directory(self) -> Path:
        """The model directory (``$RISKENGINE_SCAN_MODEL`` or the shipped one when not given)."""
        return self._dir()

    @property
    def loaded(self) -> bool:
        return self._triage is not None

    @property
    def available(self) -> bool:
        """True when the model directory holds a config.json (it loads on first use)."""
        return (self._dir() / "config.json").is_file()

    @property
    def version(self) -> str | None:
        cfg = self._config()
        if cfg is None:
            return None
        created = (cfg.get("training") or {}).get("created_at") or cfg.get("created_at") or ""
        return f"{cfg.get('model_name', self._dir().name)}" + (f"@{created}" if created else "")

    def _config(self) -> dict[str, Any] | None:
        if self._triage is not None:
            return self._triage.config
        path = self._dir() / "config.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @property
    def calibration(self) -> ImageCalibration:
        cfg = self._config() or {}
        if cfg.get("fusion_calibration"):
            return ImageCalibration.from_dict(cfg["fusion_calibration"])
        # The score is calibrated in the graph at the training prevalence of concealments.
        training = cfg.get("training") or {}
        prior = training.get("threat_rate") or training.get("positive_rate") or 0.5
        return ImageCalibration(a=1.0, b=0.0, prior=float(prior))

    def load(self) -> Any:
        with self._lock:
            if self._triage is None:
                from scanvision.infer import ScanTriage

                try:
                    self._triage = ScanTriage(self._dir(), provider=self.provider)
                except (ValueError, FileNotFoundError) as exc:
                    raise ModelUnavailableError(
                        f"no usable scan model in {self._dir()}: {exc}. Train one with "
                        "`riskengine train scans --data DIR --out DIR` or pass --scan-model-dir") from exc
                log.info("loaded scan model %s", self._dir())
        return self._triage

    def __call__(self, scan: Any) -> dict[str, Any]:
        return self.batch([scan])[0]

    def batch(self, scans: list[Any]) -> list[dict[str, Any]]:
        """Triage several scans in batched ONNX Runtime calls."""
        return [self._record(res) for res in self.load().triage(list(scans))]

    @staticmethod
    def _record(res: Any) -> dict[str, Any]:
        probs = res.class_probabilities or {}
        return {
            "concealment_score": res.concealment_score,
            "empty_probability": res.empty_probability,
            "cargo_class": res.cargo_class,
            "cargo_class_probability": float(probs.get(res.cargo_class, np.nan)),
            "class_probabilities": probs,
            "estimated_mass_kg": res.estimated_mass_kg,
            "heatmap": res.heatmap,
        }
