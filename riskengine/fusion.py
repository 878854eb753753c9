"""Fusion of the manifest risk and the scan triage into one calibrated risk.

posterior log-odds = log-odds(p_manifest)
                   + image log-likelihood ratio   (scan score calibrated on held-out generated
                                                   scans, with its training prior removed)
                   + consistency terms            (declared empty vs loaded, declared weight vs the
                                                   scan's mass, declared goods vs the scan's cargo class)

A container without a scan gets no update (its term is 0 and the reason says "not scanned"):
a missing scan is never evidence of a clean container. Every term is kept as a column and as a
reason an officer can read.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

_EPS = 1e-6


def logit(p: np.ndarray | pd.Series | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


@dataclass(frozen=True)
class ImageCalibration:
    """Platt calibration of the scan score and the prevalence it was fitted at.

    p_cal = sigmoid(a · logit(score) + b) is the probability of a concealment at the
    prevalence ``prior`` of the calibration set; the likelihood ratio the scan carries is
    logit(p_cal) − logit(prior), independent of that prevalence.
    """

    a: float = 1.0
    b: float = 0.0
    prior: float = 0.5

    def llr(self, score: np.ndarray | pd.Series) -> np.ndarray:
        return self.a * logit(score) + self.b - logit(self.prior)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> ImageCalibration:
        if not d:
            return cls()
        return cls(a=float(d["a"]), b=float(d["b"]), prior=float(d["prior"]))


def fit_image_calibration(scores: np.ndarray, labels: np.ndarray) -> ImageCalibration:
    """Fit the Platt calibration on held-out scans (``labels`` 1 = concealment present)."""
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels, dtype=int)
    if y.min() == y.max():
        raise ValueError("image calibration needs scans with and without concealments")
    x = logit(scores).reshape(-1, 1)
    lr = LogisticRegression(C=1e4).fit(x, y)
    return ImageCalibration(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]), prior=float(y.mean()))


@dataclass(frozen=True)
class FusionConfig:
    """Weights (log-odds) of the consistency terms and their tolerances.

    The defaults are deliberately moderate: each term alone moves a 1% manifest risk to at most
    about 10–20%, so a consistency finding raises a container in the queue without overruling
    the image evidence.
    """

    declared_empty_but_loaded: float = 2.5
    declared_loaded_but_empty: float = 1.0
    empty_loaded_threshold: float = 0.2   # empty probability below this = loaded
    empty_empty_threshold: float = 0.8    # empty probability above this = empty
    mass_weight: float = 0.75
    mass_tolerance: float = 0.25          # relative difference tolerated before the term starts
    mass_term_max: float = 1.5
    class_mismatch: float = 1.0
    class_confidence: float = 0.6         # scan class probability needed to claim a mismatch

    def to_dict(self) -> dict:
        return asdict(self)


def fuse(
    manifests: pd.DataFrame,
    triage: pd.DataFrame | None,
    *,
    calibration: ImageCalibration | None = None,
    config: FusionConfig | None = None,
) -> pd.DataFrame:
    """Fuse manifest risk with scan triage, row by manifest.

    ``manifests``: ``manifest_id``, ``risk_score`` and, for consistency terms, ``declared_family``
    (cargo family of the declared goods), ``declared_empty`` (bool) and ``gross_weight_kg``.
    ``triage``: ``manifest_id``, ``concealment_score``, ``empty_probability``, ``cargo_class``,
    optionally ``cargo_class_probability`` and ``estimated_mass_kg`` (NaN when unknown).
    Returns ``manifests`` with the terms (``manifest_logodds``, ``image_llr``, ``empty_term``,
    ``mass_term``, ``class_term``), ``fused_logodds``, ``fused_score`` and ``fusion_reasons``.
    """
    cal = calibration or ImageCalibration()
    cfg = config or FusionConfig()
    for col in ("manifest_id", "risk_score"):
        if col not in manifests.columns:
            raise ValueError(f"fuse needs column {col!r} in manifests; got {list(manifests.columns)}")
    out = manifests.reset_index(drop=True).copy()
    n = len(out)
    if triage is not None and len(triage):
        need = ["manifest_id", "concealment_score", "empty_probability", "cargo_class"]
        missing = [c for c in need if c not in triage.columns]
        if missing:
            raise ValueError(f"fuse needs triage columns {need}; missing {missing}")
        if triage["manifest_id"].duplicated().any():
            raise ValueError("triage has several scans for one manifest_id; keep one scan per container")
        t = triage.set_index("manifest_id")
        tri = t.reindex(out["manifest_id"])
        scanned = tri["concealment_score"].notna().to_numpy()
    else:
        tri = pd.DataFrame(index=out["manifest_id"], columns=["concealment_score", "empty_probability", "cargo_class"])
        scanned = np.zeros(n, dtype=bool)

    m_lo = logit(out["risk_score"].to_numpy(dtype=float))
    score = tri["concealment_score"].to_numpy(dtype=float)
    image = np.where(scanned, cal.llr(np.nan_to_num(score, nan=0.5)), 0.0)

    empty_p = tri["empty_probability"].to_numpy(dtype=float)
    declared_empty = (out["declared_empty"].to_numpy(dtype=bool) if "declared_empty" in out.columns
                      else np.zeros(n, dtype=bool))
    looks_loaded = scanned & (np.nan_to_num(empty_p, nan=0.5) < cfg.empty_loaded_threshold)
    looks_empty = scanned & (np.nan_to_num(empty_p, nan=0.5) > cfg.empty_empty_threshold)
    empty_term = (np.where(declared_empty & looks_loaded, cfg.declared_empty_but_loaded, 0.0)
                  + np.where(~declared_empty & looks_empty, cfg.declared_loaded_but_empty, 0.0))

    mass_term = np.zeros(n)
    rel = np.full(n, np.nan)
    if "estimated_mass_kg" in tri.columns and "gross_weight_kg" in out.columns:
        est = pd.to_numeric(tri["estimated_mass_kg"], errors="coerce").to_numpy(dtype=float)
        decl = out["gross_weight_kg"].to_numpy(dtype=float)
        ok = scanned & np.isfinite(est) & np.isfinite(decl) & (decl > 0) & ~declared_empty
        rel[ok] = (est[ok] - decl[ok]) / decl[ok]
        excess = np.clip((np.abs(np.nan_to_num(rel)) - cfg.mass_tolerance) / cfg.mass_tolerance, 0, None)
        mass_term = np.where(ok, np.minimum(cfg.mass_weight * excess, cfg.mass_term_max), 0.0)

    class_term = np.zeros(n)
    if "declared_family" in out.columns:
        cls = tri["cargo_class"].astype("string").fillna("").to_numpy(dtype=object)
        conf = (pd.to_numeric(tri["cargo_class_probability"], errors="coerce").to_numpy(dtype=float)
                if "cargo_class_probability" in tri.columns else np.ones(n))
        fam = out["declared_family"].astype("string").fillna("").to_numpy(dtype=object)
        comparable = scanned & (cls != "") & (fam != "")
        comparable &= (fam != "general") & (cls != "general") & (fam != "empty") & (cls != "empty")
        mismatch = comparable & (cls != fam) & (np.nan_to_num(conf) >= cfg.class_confidence)
        class_term = np.where(mismatch, cfg.class_mismatch, 0.0)

    fused = m_lo + image + empty_term + mass_term + class_term
    out["scanned"] = scanned
    out["manifest_logodds"] = m_lo
    out["image_llr"] = image
    out["empty_term"] = empty_term
    out["mass_term"] = mass_term
    out["class_term"] = class_term
    out["fused_logodds"] = fused
    out["fused_score"] = sigmoid(fused)
    out["fusion_reasons"] = _reasons(out, tri, score, rel, declared_empty, looks_loaded, looks_empty)
    return out


def _reasons(out, tri, score, rel, declared_empty, looks_loaded, looks_empty) -> np.ndarray:
    n = len(out)
    parts = pd.DataFrame(index=range(n))
    parts["manifest"] = "manifest risk " + (out["risk_score"] * 100).round(1).astype(str) + "%"
    scanned = out["scanned"].to_numpy()
    llr = out["image_llr"].to_numpy()
    img = np.where(
        scanned,
        "scan concealment score " + pd.Series(np.round(np.nan_to_num(score) * 100, 1)).astype(str)
        + "% (log-odds " + pd.Series(np.round(llr, 2)).map("{:+.2f}".format) + ")",
        "not scanned (no image evidence)",
    )
    parts["image"] = img
    parts["empty"] = np.where(declared_empty & looks_loaded, "declared EMPTY but the scan shows cargo",
                              np.where(~declared_empty & looks_empty, "declared goods but the scan looks empty", ""))
    mass = out["mass_term"].to_numpy() > 0
    if mass.any():
        decl = out["gross_weight_kg"].to_numpy(dtype=float)
        est = decl * (1 + np.nan_to_num(rel))
        txt = ("scan mass " + pd.Series(np.round(est / 1000, 1)).astype(str) + " t vs declared "
               + pd.Series(np.round(decl / 1000, 1)).astype(str) + " t ("
               + pd.Series(np.round(np.nan_to_num(rel) * 100)).map("{:+.0f}".format) + "%)")
        parts["mass"] = np.where(mass, txt, "")
    cls = out["class_term"].to_numpy() > 0
    if cls.any():
        txt = ("declared " + out["declared_family"].astype(str) + " but the scan looks like "
               + tri["cargo_class"].astype(str).to_numpy())
        parts["class"] = np.where(cls, txt, "")
    return join_reasons([parts[c] for c in parts.columns])


def join_reasons(columns: list, sep: str = " | ") -> np.ndarray:
    """Join several columns of reason texts row-wise, skipping empty ones (vectorised)."""
    result: np.ndarray | None = None
    for col in columns:
        c = pd.Series(col).fillna("").astype(str).to_numpy(dtype=object)
        if result is None:
            result = c
            continue
        result = np.where(c != "", np.where(result != "", result + sep + c, c), result)
    return result if result is not None else np.array([], dtype=object)
