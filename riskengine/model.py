"""The manifest risk model: LightGBM on as-of features, calibrated on a later slice of time.

:class:`RiskModel` follows the scikit-learn estimator contract. ``fit`` takes a raw declaration
table (native manifests or a foreign table with its :class:`~riskengine.mapping.Mapping`):

1. rows are validated (rejects are kept in ``rejects_``, never silently dropped);
2. a :class:`~riskengine.features.FeatureBuilder` computes every row's features as of its day;
3. labelled rows are split by time: trees are fitted on the oldest part, early stopping watches
   the next slice, and the newest slice calibrates the score (Platt or isotonic), so
   ``risk_score`` is a probability measured on data the trees never saw;
4. class imbalance is handled with ``scale_pos_weight`` during training; calibration then puts the
   probabilities back on the real scale.

The model directory holds ``model.txt`` (LightGBM text model), ``model.json`` (sidecar: features,
category levels, versions, training window, data hash, metrics, mapping), ``features/`` (the
fitted history, so a one-day batch gets real profiles) and ``MODEL_CARD.md``.

Example
-------
>>> model = RiskModel(mapping=Mapping.from_yaml("datasets/kcs/mapping.yaml")).fit(train)  # doctest: +SKIP
>>> model.save("kcs_model")                                                                 # doctest: +SKIP
>>> scored, rejects = RiskModel.load("kcs_model").score(new_rows, reasons=3)                # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskengine import metrics
from riskengine.explain import join_reasons, reason_texts, top_contributions, top_reasons
from riskengine.features import FeatureBuilder, NotFittedError
from riskengine.mapping import DAY, LABEL, Mapping, days_since_epoch, native_mapping

log = logging.getLogger(__name__)

# LightGBM's OpenMP threads busy-wait between parallel regions by default. On a shared or busy
# machine (more runnable threads than cores) that makes training and prediction 10-30x slower;
# passive waiting costs little when the cores are free. Read when LightGBM is first loaded, so
# it is set before any import of lightgbm; an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MODEL_FILE = "model.txt"
SIDECAR_FILE = "model.json"
CARD_FILE = "MODEL_CARD.md"
FEATURES_DIR = "features"
MODEL_FORMAT = "riskengine-manifest-model"
MODEL_FORMAT_VERSION = 1
MIN_LABELLED = 50
MIN_POSITIVES = 5

__all__ = ["Calibrator", "NotFittedError", "RiskModel", "ScoreResult", "time_split"]


# --------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------

@dataclass
class Calibrator:
    """Maps a raw LightGBM score (log-odds) to a probability.

    ``method="platt"``: ``p = 1 / (1 + exp(-(a·raw + b)))`` (keeps the ranking of raw scores);
    ``"isotonic"``: a monotone step function, linearly interpolated between its knots;
    ``"none"``: the sigmoid of the raw score.
    """

    method: str
    a: float = 1.0
    b: float = 0.0
    x: list[float] | None = None
    y: list[float] | None = None
    rows: int = 0
    positives: int = 0
    subset: str = "all labelled rows in the calibration slice"
    shift: float = 0.0
    base_rate: dict[str, Any] | None = None

    @classmethod
    def fit(cls, raw: np.ndarray, y: np.ndarray, method: str, *, subset: str = "") -> Calibrator:
        raw = np.asarray(raw, dtype="float64")
        y = np.asarray(y, dtype="float64")
        pos = int(y.sum())
        if method not in ("platt", "isotonic", "none"):
            raise ValueError(f"calibration must be 'platt', 'isotonic' or 'none', got {method!r}.")
        if method != "none" and (pos == 0 or pos == len(y)):
            log.warning("calibration slice has %d positive(s) of %d rows: cannot calibrate, using the "
                        "sigmoid of the raw score", pos, len(y))
            method = "none"
        kw = {"rows": len(y), "positives": pos, "subset": subset or cls.subset}
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e6, max_iter=1000)
            lr.fit(raw.reshape(-1, 1), y.astype(int))
            return cls("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]), **kw)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
            return cls("isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist(), **kw)
        return cls("none", **kw)

    def _logit(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype="float64")
        if self.method == "isotonic":
            p = np.clip(np.interp(raw, np.asarray(self.x), np.asarray(self.y)), 1e-9, 1 - 1e-9)
            return np.log(p / (1 - p))
        return self.a * raw + self.b if self.method == "platt" else raw

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "isotonic" and self.shift == 0.0:
            return np.interp(np.asarray(raw, dtype="float64"), np.asarray(self.x), np.asarray(self.y))
        return 1.0 / (1.0 + np.exp(-(self._logit(raw) + self.shift)))

    def set_base_rate(self, raw_window: np.ndarray, rate: float, *, subset: str, n_rows: int,
                      n_positives: int) -> None:
        """Shift the log-odds so the mean probability over ``raw_window`` equals ``rate``."""
        z = self._logit(raw_window)
        lo, hi = -30.0, 30.0
        for _ in range(80):  # bisection: the mean probability increases with the shift
            mid = (lo + hi) / 2
            if np.mean(1.0 / (1.0 + np.exp(-(z + mid)))) < rate:
                lo = mid
            else:
                hi = mid
        self.shift = float((lo + hi) / 2)
        self.base_rate = {"rate": float(rate), "rows": int(n_rows), "positives": int(n_positives),
                          "subset": subset, "window_rows": int(len(z))}

    def to_dict(self) -> dict[str, Any]:
        d = {"method": self.method, "rows": self.rows, "positives": self.positives, "subset": self.subset,
             "shift": self.shift, "base_rate": self.base_rate}
        if self.method == "platt":
            d.update(a=self.a, b=self.b)
        if self.method == "isotonic":
            d.update(x=self.x, y=self.y)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(method=d["method"], a=d.get("a", 1.0), b=d.get("b", 0.0), x=d.get("x"), y=d.get("y"),
                   rows=d.get("rows", 0), positives=d.get("positives", 0), subset=d.get("subset", ""),
                   shift=d.get("shift", 0.0), base_rate=d.get("base_rate"))


# --------------------------------------------------------------------------------------------
# Time split
# --------------------------------------------------------------------------------------------

def time_split(days: np.ndarray, fractions: tuple[float, ...]) -> np.ndarray:
    """Assign each row to a time slice; slices are cut on day boundaries.

    ``fractions`` are the shares of rows for the later slices (e.g. ``(0.15, 0.15)``); the first
    slice takes the rest. Returns slice numbers 0..len(fractions) per row; rows of one day always
    share a slice, so no day is split between fitting and validation.
    """
    days = np.asarray(days, dtype="float64")
    n = len(days)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(days, return_counts=True)
    before = (np.cumsum(counts) - counts) / n  # share of rows on earlier days
    starts = 1.0 - np.cumsum(np.asarray(fractions, dtype="float64")[::-1])[::-1]
    slice_of = np.zeros(n, dtype=np.int64)
    for i, start in enumerate(starts):
        j = int(np.searchsorted(before, start - 1e-12, side="left"))
        if j < len(uniq):
            slice_of[days >= uniq[j]] = i + 1
    return slice_of


# --------------------------------------------------------------------------------------------
# Scoring output
# --------------------------------------------------------------------------------------------

@dataclass
class ScoreResult:
    """Scores of the valid rows (``scores``) and the rows that failed validation (``rejects``)."""

    scores: pd.DataFrame
    rejects: pd.DataFrame

    def __iter__(self):  # allows ``scores, rejects = model.score(df)``
        return iter((self.scores, self.rejects))


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class RiskModel:
    """LightGBM manifest risk model with as-of entity profiles and a calibrated probability.

    All parameters are keyword-only and stored as given; they are checked in :meth:`fit`.

    mapping
        Table mapping (default: the native manifest schema).
    smoothing, profiles, max_levels, min_level_count, indicator_packs
        Passed to :class:`~riskengine.features.FeatureBuilder`.
    n_estimators, learning_rate, num_leaves, min_child_samples, feature_fraction,
    bagging_fraction, lambda_l2, early_stopping_rounds
        LightGBM settings; ``n_estimators`` is the upper bound for early stopping.
    valid_fraction, calibration_fraction
        Shares of the labelled rows (newest last) for early stopping and for calibration.
    calibration
        ``"platt"`` (default; keeps the ranking), ``"isotonic"`` or ``"none"``.
    class_weight
        ``"balanced"`` sets ``scale_pos_weight = negatives / positives``; ``None`` leaves it at 1.
    refit
        After early stopping, refit the trees on the fitting and early-stopping slices together
        with the chosen number of rounds.
    es_metric
        LightGBM metric watched by early stopping (``"average_precision"``, ``"auc"``,
        ``"binary_logloss"``).
    seed, n_jobs
        Random seed and LightGBM threads.
    """

    def __init__(
        self,
        *,
        mapping: Mapping | None = None,
        smoothing: float = 20.0,
        profiles: bool = True,
        max_levels: int = 100,
        min_level_count: int = 10,
        indicator_packs: Any = "default",
        n_estimators: int = 2000,
        learning_rate: float = 0.03,
        num_leaves: int = 31,
        min_child_samples: int = 40,
        feature_fraction: float = 0.8,
        bagging_fraction: float = 0.8,
        lambda_l2: float = 1.0,
        early_stopping_rounds: int = 100,
        valid_fraction: float = 0.15,
        calibration_fraction: float = 0.15,
        calibration: str = "platt",
        class_weight: str | None = "balanced",
        refit: bool = True,
        es_metric: str = "average_precision",
        seed: int = 7,
        n_jobs: int = 2,
    ) -> None:
        self.mapping = mapping
        self.smoothing = smoothing
        self.profiles = profiles
        self.max_levels = max_levels
        self.min_level_count = min_level_count
        self.indicator_packs = indicator_packs
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.lambda_l2 = lambda_l2
        self.early_stopping_rounds = early_stopping_rounds
        self.valid_fraction = valid_fraction
        self.calibration_fraction = calibration_fraction
        self.calibration = calibration
        self.class_weight = class_weight
        self.refit = refit
        self.es_metric = es_metric
        self.seed = seed
        self.n_jobs = n_jobs

    _PARAMS = (
        "smoothing", "profiles", "max_levels", "min_level_count", "n_estimators", "learning_rate",
        "num_leaves", "min_child_samples", "feature_fraction", "bagging_fraction", "lambda_l2",
        "early_stopping_rounds", "valid_fraction", "calibration_fraction", "calibration",
        "class_weight", "refit", "es_metric", "seed", "n_jobs",
    )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"mapping": self.mapping, "indicator_packs": self.indicator_packs,
                **{k: getattr(self, k) for k in self._PARAMS}}

    def set_params(self, **params: Any) -> RiskModel:
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"unknown parameter {k!r}; valid parameters: {sorted(valid)}")
            setattr(self, k, v)
        return self

    # -- helpers ------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "booster_"):
            raise NotFittedError("This RiskModel is not fitted yet; call fit(data) or RiskModel.load(path) first.")

    def _validate_params(self) -> None:
        if not 0 < self.valid_fraction < 1 or not 0 < self.calibration_fraction < 1 \
                or self.valid_fraction + self.calibration_fraction >= 0.9:
            raise ValueError(
                f"valid_fraction ({self.valid_fraction}) and calibration_fraction ({self.calibration_fraction}) "
                "must each be in (0, 1) and leave at least 10% of the rows for fitting."
            )
        if self.calibration not in ("platt", "isotonic", "none"):
            raise ValueError(f"calibration must be 'platt', 'isotonic' or 'none', got {self.calibration!r}.")
        if self.class_weight not in ("balanced", None):
            raise ValueError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}.")
        if self.n_estimators < 1 or self.early_stopping_rounds < 1:
            raise ValueError("n_estimators and early_stopping_rounds must be >= 1.")

    def _lgb_params(self, scale_pos_weight: float) -> dict[str, Any]:
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1 if self.bagging_fraction < 1 else 0,
            "lambda_l2": self.lambda_l2,
            "scale_pos_weight": scale_pos_weight,
            "cat_smooth": 10.0,
            "cat_l2": 10.0,
            "max_cat_to_onehot": 8,
            "metric": self.es_metric,
            "num_threads": self.n_jobs,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbose": -1,
        }

    # -- fit ----------------------------------------------------------------------------------
    def fit(self, data: pd.DataFrame, *, progress: Callable[[str], None] | None = None) -> RiskModel:
        """Validate ``data``, build as-of features and train, early-stop and calibrate in time order."""
        import lightgbm as lgb

        say = progress or (lambda msg: log.info("%s", msg))
        self._validate_params()
        mapping = self.mapping if self.mapping is not None else native_mapping()
        if not isinstance(data, pd.DataFrame):
            raise ValueError(f"fit expects a pandas DataFrame, got {type(data).__name__}.")
        say("validating rows")
        rows, rejects = mapping.prepare(data, training=True)
        self.rejects_ = rejects
        self.input_columns_ = mapping.input_columns()
        say("building as-of features")
        fb = FeatureBuilder(
            mapping=mapping, smoothing=self.smoothing, profiles=self.profiles, max_levels=self.max_levels,
            min_level_count=self.min_level_count,
            indicator_packs=self.indicator_packs if mapping.kind == "native" else None,
        )
        X = fb.fit_transform(rows)
        self.features_ = fb
        y_all = rows[LABEL].to_numpy(dtype="float64")
        lab = ~np.isnan(y_all)
        n_lab, n_pos = int(lab.sum()), int(np.nansum(y_all))
        if n_lab < MIN_LABELLED or n_pos < MIN_POSITIVES or n_pos == n_lab:
            raise ValueError(
                f"too few labelled rows to train: {n_lab} labelled, {n_pos} positive; need at least "
                f"{MIN_LABELLED} labelled rows with at least {MIN_POSITIVES} positives and some negatives."
            )
        Xl = X.loc[lab].to_numpy(dtype=np.float32)
        yl = y_all[lab]
        dl = rows[DAY].to_numpy(dtype="float64")[lab]
        part = time_split(dl, (self.valid_fraction, self.calibration_fraction))
        fit_m, es_m, cal_m = part == 0, part == 1, part == 2
        if not fit_m.any() or not cal_m.any():
            raise ValueError(
                f"the labelled rows span too few days ({len(np.unique(dl))}) to split in time into "
                "fitting, early-stopping and calibration slices; provide a longer history."
            )
        names = list(X.columns)
        cats = fb.categorical_features_

        def spw(y: np.ndarray) -> float:
            p = float(y.sum())
            return float((len(y) - p) / p) if self.class_weight == "balanced" and p > 0 else 1.0

        params = self._lgb_params(spw(yl[fit_m]))
        say(f"training LightGBM on {int(fit_m.sum())} rows, early stopping on {int(es_m.sum())}")
        dtrain = lgb.Dataset(Xl[fit_m], yl[fit_m], feature_name=names, categorical_feature=cats,
                             free_raw_data=False)
        es_ok = es_m.any() and 0 < yl[es_m].sum() < es_m.sum()
        if es_ok:
            dvalid = lgb.Dataset(Xl[es_m], yl[es_m], reference=dtrain)
            booster = lgb.train(params, dtrain, num_boost_round=self.n_estimators, valid_sets=[dvalid],
                                valid_names=["early_stopping"],
                                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
            best = int(booster.best_iteration or booster.current_iteration())
        else:
            log.warning("the early-stopping slice has no positives or no negatives; training %d rounds",
                        min(self.n_estimators, 300))
            best = min(self.n_estimators, 300)
            booster = lgb.train(params, dtrain, num_boost_round=best)
        self.best_iteration_ = best
        if self.refit and es_ok:
            say(f"refitting {best} rounds on fitting + early-stopping slices")
            both = fit_m | es_m
            params = self._lgb_params(spw(yl[both]))
            dfull = lgb.Dataset(Xl[both], yl[both], feature_name=names, categorical_feature=cats)
            booster = lgb.train(params, dfull, num_boost_round=best)
        else:
            booster = _trim(booster, best)
        self.booster_ = booster
        self.lgb_params_ = params

        say("calibrating on the newest slice")
        raw_cal = booster.predict(Xl[cal_m], raw_score=True, num_threads=self.n_jobs)
        self.calibrator_ = Calibrator.fit(raw_cal, yl[cal_m], self.calibration)
        cf = mapping.calibration_filter
        if cf is not None and cf.column in rows.columns:
            # Labelled rows come mostly from targeted inspections, which find far more than the
            # average container holds. Rows of an unbiased selection (e.g. random inspections)
            # measure the base rate of the whole traffic; the calibrated log-odds are shifted so
            # that the mean probability over every row of the calibration window matches it.
            chosen = (rows[cf.column].astype("string") == str(cf.equals)).fillna(False).to_numpy(dtype=bool) & lab
            n_sel, pos_sel = int(chosen.sum()), int(np.nansum(y_all[chosen]))
            if pos_sel >= cf.min_positives:
                base = pos_sel / n_sel
                window = rows[DAY].to_numpy(dtype="float64") >= float(dl[cal_m].min())
                raw_win = booster.predict(X.loc[window].to_numpy(dtype=np.float32), raw_score=True,
                                          num_threads=self.n_jobs)
                self.calibrator_.set_base_rate(raw_win, base, subset=f"{cf.column} = {cf.equals}",
                                               n_rows=n_sel, n_positives=pos_sel)
            else:
                log.warning("only %d positive(s) among labelled rows with %s = %s (need %d): probabilities "
                            "stay calibrated to the inspected rows, not to the whole traffic",
                            pos_sel, cf.column, cf.equals, cf.min_positives)
        p_cal = self.calibrator_(raw_cal)

        value = None
        if mapping.value and mapping.value in rows.columns:
            value = rows.loc[lab, mapping.value].to_numpy(dtype="float64")[cal_m]
        hold = metrics.summary(yl[cal_m], p_cal, value=value) if 0 < yl[cal_m].sum() < cal_m.sum() else {}
        day_all = rows[DAY].to_numpy(dtype="float64")

        def window(mask: np.ndarray) -> dict[str, Any]:
            d = dl[mask]
            return {"rows": int(mask.sum()), "positives": int(yl[mask].sum()),
                    "start": _day(d.min()) if len(d) else None, "end": _day(d.max()) if len(d) else None}

        self.training_ = {
            "rows_in": int(len(data)),
            "rows_valid": int(len(rows)),
            "rows_rejected": int(len(rejects)),
            "labelled": n_lab,
            "positives": n_pos,
            "start": _day(np.nanmin(day_all)),
            "end": _day(np.nanmax(day_all)),
            "slices": {"fit": window(fit_m), "early_stopping": window(es_m), "calibration": window(cal_m)},
            "best_iteration": best,
            "data_sha256": _frame_hash(data),
        }
        self.metrics_ = {"holdout": hold}
        self.created_at_ = datetime.now(timezone.utc).isoformat(timespec="seconds")
        say("done")
        return self

    # -- predict ------------------------------------------------------------------------------
    def check_input(self, columns: Any) -> None:
        """Raise a ValueError naming the required columns that ``columns`` lacks (extras are fine)."""
        self._check_fitted()
        from riskengine.schema import MALFORMED_COLUMN, ROW_COLUMN

        # The reader's own bookkeeping columns are not the user's: neither counted nor named.
        have = set(map(str, columns)) - {ROW_COLUMN, MALFORMED_COLUMN}
        missing = [c for c in self.input_columns_ if c not in have]
        if missing:
            raise ValueError(
                f"input has {len(have)} columns but lacks {len(missing)} the model needs: missing {missing}. "
                f"The model was trained on the '{self.features_.mapping_.name}' schema; add these columns "
                "(extra columns are ignored)."
            )

    def prepare(self, data: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Check the input schema, then validate and type rows: ``(rows, rejects)``."""
        self._check_fitted()
        if not isinstance(data, pd.DataFrame):
            raise ValueError(f"expected a pandas DataFrame, got {type(data).__name__}.")
        self.check_input(data.columns)
        return self.features_.mapping_.prepare(data)

    def transform(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Feature matrix of prepared rows (see :meth:`prepare`)."""
        self._check_fitted()
        return self.features_.transform(rows)

    def predict_raw(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Raw scores (log-odds before calibration) of a feature matrix."""
        self._check_fitted()
        arr = self._matrix(X)
        return self.booster_.predict(arr, raw_score=True, num_threads=self.n_jobs)

    def predict_features(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Calibrated probabilities for a feature matrix."""
        return self.calibrator_(self.predict_raw(X))

    def contributions(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Per-feature contributions to the raw score (last column: bias); rows sum to the raw score."""
        self._check_fitted()
        return self.booster_.predict(self._matrix(X), pred_contrib=True, num_threads=self.n_jobs)

    def _matrix(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        names = self.features_.feature_names_
        if isinstance(X, pd.DataFrame):
            missing = [c for c in names if c not in X.columns]
            if missing:
                raise ValueError(f"feature matrix lacks {len(missing)} feature(s): missing {missing[:10]}.")
            X = X[names].to_numpy(dtype=np.float32)
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(names):
            raise ValueError(f"X has {X.shape[-1] if X.ndim else 0} features, but the model expects {len(names)}.")
        return X

    def predict_proba(self, data: pd.DataFrame) -> np.ndarray:
        """``(n, 2)`` class probabilities for raw rows; every row must pass validation.

        Use :meth:`score` to quarantine bad rows instead of failing.
        """
        rows, rejects = self.prepare(data)
        if len(rejects):
            first = rejects.iloc[0]
            raise ValueError(
                f"{len(rejects)} row(s) failed validation (first: row {first.get('source_row')}: "
                f"{first.get('reject_reason')}); fix them or use RiskModel.score, which quarantines them."
            )
        p = self.predict_features(self.transform(rows))
        return np.column_stack([1.0 - p, p])

    def score(self, data: pd.DataFrame, *, reasons: int = 0, reasons_min_score: float | None = None) -> ScoreResult:
        """Score raw rows: ``ScoreResult(scores, rejects)``.

        ``scores`` has the id column, ``risk_score`` (calibrated probability) and, when
        ``reasons > 0``, ``reasons`` (the top reasons joined by " | "), in input order.
        Explanations cost far more than scores (TreeSHAP); ``reasons_min_score`` explains only
        rows with at least that risk (the others get an empty ``reasons``).
        """
        if reasons < 0:
            raise ValueError(f"reasons must be >= 0, got {reasons}.")
        rows, rejects = self.prepare(data)
        m = self.features_.mapping_
        X = self.transform(rows)
        arr = self._matrix(X)
        out = pd.DataFrame({m.id: rows[m.id].to_numpy()})
        p = self.calibrator_(self.booster_.predict(arr, raw_score=True, num_threads=self.n_jobs))
        out["risk_score"] = p
        if reasons:
            sel = np.ones(len(p), dtype=bool) if reasons_min_score is None else p >= reasons_min_score
            text = np.full(len(p), "", dtype=object)
            if sel.any():
                text[sel] = self.reasons(X[sel], k=reasons).to_numpy()
            out["reasons"] = text
        return ScoreResult(scores=out, rejects=rejects)

    def reasons(self, X: pd.DataFrame, *, k: int = 3) -> pd.Series:
        """The top-``k`` reasons of each row of a feature matrix, joined by " | "."""
        contrib = self.contributions(X)
        idx, _ = top_contributions(contrib, k)
        texts = reason_texts(idx, X, self.features_.feature_info_, levels=self.features_.levels_)
        return pd.Series(join_reasons(texts).to_numpy(), index=X.index)

    def explain(self, data: pd.DataFrame, *, k: int = 3) -> pd.DataFrame:
        """Top-``k`` reasons per valid row, long form: id, rank, feature, contribution, text."""
        rows, _ = self.prepare(data)
        X = self.transform(rows)
        contrib = self.contributions(X)
        long = top_reasons(contrib, X, self.features_.feature_info_, k=k, levels=self.features_.levels_)
        m = self.features_.mapping_
        long.insert(0, m.id, rows[m.id].to_numpy()[long["row"].to_numpy()])
        return long.drop(columns=["row"])

    def evaluate(
        self,
        data: pd.DataFrame,
        *,
        label: str | None = None,
        all_rows: bool = False,
        plot: str | Path | None = None,
        since: str | None = None,
        k_pcts: tuple[float, ...] = (1, 2, 5, 10),
    ) -> dict[str, Any]:
        """Metrics of the calibrated score on labelled rows (ideally dated after training).

        ``label`` overrides the label column (same rule); ``all_rows=True`` ignores the mapping's
        ``labelled`` column, e.g. to use a generator's ground truth on uninspected rows too.
        ``plot`` writes a reliability diagram; ``since`` (a date) keeps only rows dated on or
        after it. Returns counts, metrics and the reliability table.
        """
        self._check_fitted()
        m = self.features_.mapping_
        em = replace(m, labelled=None if all_rows else m.labelled,
                     label=replace(m.label, column=label) if label else m.label)
        self.check_input(data.columns)
        if em.label.column not in data.columns:
            raise ValueError(f"evaluation data has no label column '{em.label.column}'; "
                             "pass labelled rows or choose the column with label=...")
        rows, rejects = em.prepare(data)
        n_before = len(rows)
        if since is not None:
            try:
                since_day = float(days_since_epoch(pd.Series([pd.Timestamp(since)]))[0])
            except (ValueError, TypeError) as exc:
                raise ValueError(f"since must be a date such as 2027-01-02, got {since!r}") from exc
            rows = rows.loc[rows[DAY].to_numpy() >= since_day].reset_index(drop=True)
        p = self.predict_features(self.transform(rows))
        y = rows[LABEL].to_numpy(dtype="float64")
        lab = ~np.isnan(y)
        if lab.sum() == 0 or y[lab].sum() in (0, lab.sum()):
            raise ValueError(f"evaluation needs labelled rows of both classes; got {int(lab.sum())} labelled, "
                             f"{int(np.nansum(y))} positive.")
        value = rows[m.value].to_numpy(dtype="float64")[lab] if m.value and m.value in rows.columns else None
        res = metrics.summary(y[lab], p[lab], k_pcts=k_pcts, value=value)
        curve = metrics.reliability_curve(y[lab], p[lab], n_bins=10, strategy="quantile")
        if plot is not None:
            metrics.plot_reliability({"risk_score": curve}, plot,
                                     title=f"Reliability on {int(lab.sum()):,} rows")
        days = rows[DAY].to_numpy(dtype="float64")
        return {
            "rows": int(len(data)),
            "rejected": int(len(rejects)),
            "before_since": int(n_before - len(rows)),
            "labelled": int(lab.sum()),
            "label": em.label.column + ("" if em.labelled is None else f" (rows with {em.labelled} = 1)"),
            "start": _day(np.nanmin(days)) if len(days) else None,
            "end": _day(np.nanmax(days)) if len(days) else None,
            "inside_training_window": int((days <= (self.features_.history_end_day_ or -np.inf)).sum()),
            "metrics": res,
            "reliability": curve.to_dict(orient="records"),
        }

    # -- persistence --------------------------------------------------------------------------
    def sidecar(self) -> dict[str, Any]:
        """The JSON sidecar written next to ``model.txt``."""
        self._check_fitted()
        fb = self.features_
        return {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "created_at": self.created_at_,
            "package_versions": _versions(),
            "mapping": fb.mapping_.to_dict(),
            "input_columns": self.input_columns_,
            "features": fb.feature_names_,
            "categorical_features": fb.categorical_features_,
            "category_levels": fb.levels_,
            "params": {k: getattr(self, k) for k in self._PARAMS},
            "lightgbm_params": self.lgb_params_,
            "n_trees": int(self.booster_.num_trees()),
            "calibration": self.calibrator_.to_dict(),
            "training": self.training_,
            "history": fb.describe_history(),
            "metrics": self.metrics_,
        }

    def save(self, path: str | Path, *, card: str | None = None) -> Path:
        """Write the model directory (model.txt, model.json, features/, mapping.yaml, MODEL_CARD.md).

        ``card`` replaces the generated model card text.
        """
        self._check_fitted()
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise ValueError(f"model path {out} exists and is not a directory; choose a folder path.")
        out.mkdir(parents=True, exist_ok=True)
        self.booster_.save_model(str(out / MODEL_FILE))
        self.features_.save(out / FEATURES_DIR)
        self.features_.mapping_.to_yaml(out / "mapping.yaml")
        (out / SIDECAR_FILE).write_text(json.dumps(self.sidecar(), indent=1, ensure_ascii=False, default=str),
                                        encoding="utf-8")
        (out / CARD_FILE).write_text(card if card is not None else self.model_card(), encoding="utf-8")
        return out

    @classmethod
    def load(cls, path: str | Path) -> RiskModel:
        """Read a model directory written by :meth:`save`."""
        import lightgbm as lgb

        p = Path(path)
        side = p / SIDECAR_FILE
        if not p.is_dir():
            raise FileNotFoundError(f"model directory not found: {p} (train one with `riskengine train`).")
        if not side.exists() or not (p / MODEL_FILE).exists():
            raise FileNotFoundError(f"{p} is not a model directory: expected {MODEL_FILE} and {SIDECAR_FILE} in it.")
        meta = json.loads(side.read_text(encoding="utf-8"))
        if meta.get("format") != MODEL_FORMAT or meta.get("format_version") != MODEL_FORMAT_VERSION:
            raise ValueError(
                f"{side}: format {meta.get('format')!r} v{meta.get('format_version')} is not supported "
                f"(expected {MODEL_FORMAT} v{MODEL_FORMAT_VERSION}); retrain with this version."
            )
        fb = FeatureBuilder.load(p / FEATURES_DIR)
        params = dict(meta["params"])
        model = cls(mapping=fb.mapping_, indicator_packs=fb.indicator_packs, **params)
        model.booster_ = lgb.Booster(model_file=str(p / MODEL_FILE))
        model.features_ = fb
        model.calibrator_ = Calibrator.from_dict(meta["calibration"])
        model.input_columns_ = meta["input_columns"]
        model.lgb_params_ = meta["lightgbm_params"]
        model.training_ = meta["training"]
        model.metrics_ = meta["metrics"]
        model.created_at_ = meta["created_at"]
        model.best_iteration_ = meta["training"].get("best_iteration")
        if list(model.booster_.feature_name()) != list(fb.feature_names_):
            raise ValueError(f"{p}: model.txt and features/ disagree on the feature list; the folder is inconsistent.")
        return model

    def model_card(self) -> str:
        """A Markdown model card from the training record and the recorded evaluations."""
        self._check_fitted()
        t, fb = self.training_, self.features_
        m = fb.mapping_
        hold = self.metrics_.get("holdout", {})
        lines = [
            f"# Model card: manifest risk model ({m.name})",
            "",
            f"- Created: {self.created_at_}; LightGBM {_versions().get('lightgbm')}; "
            f"{self.booster_.num_trees()} trees (best iteration {t['best_iteration']}).",
            f"- Schema: `{m.name}` ({m.kind}); id `{m.id}`, date `{m.date}`, label `{m.label.column}`.",
            f"- Training data: {t['rows_in']:,} rows ({t['rows_rejected']:,} rejected by validation), "
            f"{t['start']} .. {t['end']}; {t['labelled']:,} labelled, {t['positives']:,} positive. "
            f"Data SHA-256 `{t['data_sha256'][:16]}…`.",
            *( [f"- Reproduce: `{t['command']}`"] if t.get("command") else []),
            f"- Features: {len(fb.feature_names_)} ({len(fb.entities_)} entity profiles as of each row's day, "
            f"{len(m.categorical)} categorical, {len(m.numeric)} numeric, {len(m.relative)} relative"
            + (f", {len(fb.indicator_ids_)} indicators" if fb.indicator_ids_ else "") + ").",
            f"- Calibration: {self.calibrator_.method} on {self.calibrator_.rows:,} rows "
            f"({self.calibrator_.positives:,} positive): {self.calibrator_.subset}."
            + (f" Then shifted by {self.calibrator_.shift:+.3f} log-odds to the base rate "
               f"{self.calibrator_.base_rate['rate']:.4f} measured on {self.calibrator_.base_rate['rows']:,} "
               f"labelled rows with {self.calibrator_.base_rate['subset']} "
               f"({self.calibrator_.base_rate['positives']:,} positive)."
               if self.calibrator_.base_rate else ""),
            "",
            "## Time slices (labelled rows)",
            "",
            "| slice | rows | positives | from | to |",
            "|---|---|---|---|---|",
        ]
        for name, w in t["slices"].items():
            lines.append(f"| {name} | {w['rows']:,} | {w['positives']:,} | {w['start']} | {w['end']} |")
        if hold:
            lines += ["", "## Holdout (calibration slice, newest labelled rows)", "", "| metric | value |", "|---|---|"]
            for k in ("precision_at_1", "precision_at_5", "recall_at_5", "roc_auc", "pr_auc", "brier"):
                if k in hold:
                    lines.append(f"| {k} | {hold[k]:.4f} |")
        if hold:
            lines += ["", "Holdout metrics are over labelled rows only (for manifests: inspected containers, "
                      "mostly targeted, so their hit rate is far above the traffic's)."]
        for ev in self.metrics_.get("evaluations", []):
            lines += _evaluation_section(ev)
        lines += [
            "",
            "## Intended use and limits",
            "",
            "Ranks declarations for inspection and explains each score; it does not decide. Labels come "
            "only from inspected rows, so the model learns from past selection: keep a share of random "
            "inspections to measure and correct that bias. Profiles are computed strictly as of each row's "
            "day; scoring rows dated inside the training window uses the history up to its end.",
            "",
        ]
        return "\n".join(lines)


    def record_evaluation(self, path: str | Path, result: dict[str, Any], *, title: str,
                          command: str | None = None, plot: str | None = None, note: str | None = None) -> None:
        """Store an :meth:`evaluate` result in the model directory (sidecar and model card).

        An earlier evaluation with the same ``title`` is replaced.
        """
        self._check_fitted()
        p = Path(path)
        side = p / SIDECAR_FILE
        if not side.exists():
            raise FileNotFoundError(f"{p} is not a model directory: {SIDECAR_FILE} is missing.")
        meta = json.loads(side.read_text(encoding="utf-8"))
        entry = {"title": title, "command": command, "plot": plot, "note": note,
                 **{k: v for k, v in result.items() if k != "reliability"}, "reliability": result.get("reliability")}
        evals = [e for e in meta.get("metrics", {}).get("evaluations", []) if e.get("title") != title] + [entry]
        meta.setdefault("metrics", {})["evaluations"] = evals
        self.metrics_ = meta["metrics"]
        side.write_text(json.dumps(meta, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
        (p / CARD_FILE).write_text(self.model_card(), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _evaluation_section(ev: dict[str, Any]) -> list[str]:
    m = ev.get("metrics", {})
    lines = ["", f"## Evaluation: {ev.get('title')}", ""]
    lines.append(f"{ev.get('labelled', 0):,} labelled rows ({m.get('positives', 0):,} positive, rate "
                 f"{m.get('positive_rate', float('nan')):.4f}), {ev.get('start')} .. {ev.get('end')}; "
                 f"label: {ev.get('label')}; {ev.get('rejected', 0):,} row(s) rejected by validation.")
    if ev.get("note"):
        lines += ["", str(ev["note"])]
    if ev.get("command"):
        lines += ["", f"Reproduce: `{ev['command']}`"]
    lines += ["", "| metric | value |", "|---|---|"]
    for k in ("precision_at_1", "precision_at_2", "precision_at_5", "precision_at_10", "recall_at_1", "recall_at_5",
              "roc_auc", "pr_auc", "brier"):
        if k in m:
            lines.append(f"| {k} | {m[k]:.4f} |")
    rel = ev.get("reliability") or []
    if rel:
        lines += ["", "Reliability (10 bins of equal size):", "",
                  "| mean predicted | observed rate | rows | positives |", "|---|---|---|---|"]
        for r in rel:
            lines.append(f"| {r['mean_predicted']:.4f} | {r['observed_rate']:.4f} | {r['count']:,} | {r['positives']:,} |")
    if ev.get("plot"):
        lines += ["", f"![reliability]({ev['plot']})"]
    return lines


def _trim(booster: Any, n: int) -> Any:
    """A booster keeping only the first ``n`` iterations (after early stopping without refit)."""
    import lightgbm as lgb

    if booster.current_iteration() <= n:
        return booster
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=n))


def _day(d: float) -> str | None:
    if d is None or not np.isfinite(d):
        return None
    return str(np.datetime64("1970-01-01") + np.timedelta64(int(d), "D"))


def _frame_hash(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    h.update(",".join(map(str, df.columns)).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import lightgbm
    import sklearn

    try:
        from importlib.metadata import version

        rv = version("riskengine")
    except Exception:  # not installed as a distribution (running from a checkout)
        rv = "unknown"
    return {"riskengine": rv, "lightgbm": lightgbm.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "scikit-learn": sklearn.__version__, "python": platform.python_version()}
