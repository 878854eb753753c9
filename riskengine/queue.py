"""Capacity-aware inspection queues per port, terminal and shift.

Two stages, as a port runs them:

* **Stage 1, before arrival (manifest only)**: every container gets a lane: ``hold`` (extreme risk,
  do-not-release), ``red`` (straight to physical inspection), ``scan`` (X-ray first) or ``green``
  (release). The red lane uses at most ``red_share`` of the shift's physical-inspection capacity
  (the rest waits for scan results); the scan lane fills the scanner capacity.
* **Stage 2, after the scan**: the fused score (manifest + image) fills the physical inspections left.

Within each capacity the precedence is the one customs systems use: mandatory rule hits first,
then an exploration share of **random** selections (default 5%, exact: ``round(share × capacity)``),
then the highest risk. Random selections are flagged ``selection == "random"`` so that hit rates
can be estimated without selection bias. Everything is vectorised over groups; nothing here knows
about HTTP or databases.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

GROUP_KEYS = ("port", "terminal", "shift")
LANES = ("hold", "red", "scan", "green")


@dataclass(frozen=True)
class QueueConfig:
    """Capacities and thresholds for one shift (the same for every port/terminal group).

    scan_capacity: scans the scanner can do in one shift.
    inspection_capacity: physical inspections (devanning) the team can do in one shift.
    exploration_share: share of each capacity given to random selections (0–1).
    red_share: share of the inspection capacity that stage 1 may use for the red lane.
    hold_threshold: risk at or above which a container is held (do-not-release) — holds are
        inspected physically and count against the inspection capacity before anything else.
    red_threshold: minimum risk for the red lane by rank (mandatory hits ignore it).
    scan_threshold: minimum risk for the scan lane by rank (mandatory hits ignore it).
    inspect_threshold: minimum fused risk for a physical inspection after the scan.
    """

    scan_capacity: int = 300
    inspection_capacity: int = 40
    exploration_share: float = 0.05
    red_share: float = 0.5
    hold_threshold: float = 0.9
    red_threshold: float = 0.5
    scan_threshold: float = 0.0
    inspect_threshold: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("scan_capacity", "inspection_capacity"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("exploration_share", "red_share", "hold_threshold", "red_threshold",
                     "scan_threshold", "inspect_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {v}")

    def to_dict(self) -> dict:
        return asdict(self)


def _check_columns(df: pd.DataFrame, needed: list[str], what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {needed}; missing {missing}")


def _group_ids(df: pd.DataFrame) -> np.ndarray:
    return df.groupby(list(GROUP_KEYS), sort=False, dropna=False).ngroup().to_numpy()


def _take_within_capacity(
    group: np.ndarray,
    eligible: np.ndarray,
    priority: np.ndarray,
    capacity: np.ndarray,
) -> np.ndarray:
    """Select, per group, the ``capacity[group]`` eligible rows with the highest priority.

    Vectorised: one lexsort over (group, -priority), a cumulative count per group.
    """
    n = len(group)
    chosen = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(eligible)
    if len(idx) == 0:
        return chosen
    order = idx[np.lexsort((-priority[idx], group[idx]))]
    g = group[order]
    # position within group among eligible rows
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    pos = np.arange(len(g)) - run_start
    chosen[order[pos < capacity[g]]] = True
    return chosen


def _group_capacity(group: np.ndarray, n_groups: int, value: float | np.ndarray) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.int64), (n_groups,)).copy()


def _fill(
    group: np.ndarray,
    n_groups: int,
    candidates: np.ndarray,
    mandatory: np.ndarray,
    score: np.ndarray,
    threshold: float,
    capacity: np.ndarray,
    exploration_share: float,
    draws: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill one capacity per group: mandatory, then the random share, then by score.

    ``draws`` are the per-container uniform numbers of the random share (see :func:`random_draws`).

    Returns (selected, selection_kind) where kind is 0 none, 1 mandatory, 2 random, 3 risk.
    """
    kind = np.zeros(len(group), dtype=np.int8)
    # 1. mandatory rule hits (highest score first if they exceed the capacity)
    m = _take_within_capacity(group, candidates & mandatory, score, capacity)
    kind[m] = 1
    used = np.bincount(group[m], minlength=n_groups)
    left = capacity - used
    # 2. the exploration share, exact: round(share × capacity), drawn uniformly from the rest
    n_random = np.minimum(np.round(exploration_share * capacity).astype(np.int64), left)
    pool = candidates & ~m
    r = _take_within_capacity(group, pool, draws, n_random)
    kind[r] = 2
    left = left - np.bincount(group[r], minlength=n_groups)
    # 3. by score, above the lane's threshold
    s = _take_within_capacity(group, pool & ~r & (score >= threshold), score, left)
    kind[s] = 3
    return kind > 0, kind


def random_draws(manifest_id: pd.Series, seed: int, stage: int) -> np.ndarray:
    """A uniform number per container from a hash of (manifest id, seed, stage).

    Hashing instead of drawing by row position keeps a container's random pick stable when the
    queue of its shift is re-planned with more arrivals, while staying unpredictable without
    the seed.
    """
    keys = manifest_id.astype(str) + f"|{seed}|{stage}"
    h = pd.util.hash_pandas_object(keys, index=False).to_numpy(dtype=np.uint64)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


_KIND_NAMES = np.array(["none", "mandatory", "random", "risk"], dtype=object)


def assign_lanes(manifests: pd.DataFrame, config: QueueConfig) -> pd.DataFrame:
    """Stage 1: assign each container to hold / red / scan / green within the shift's capacities.

    ``manifests`` needs ``manifest_id``, ``port``, ``terminal``, ``shift``, ``risk_score`` (0–1)
    and optionally ``mandatory`` (bool: a mandatory rule hit). Returns a frame with ``lane``,
    ``selection`` (mandatory / random / risk / none), ``queue_rank`` (1 = first, within the lane
    of its group) and the input columns.
    """
    _check_columns(manifests, ["manifest_id", *GROUP_KEYS, "risk_score"], "assign_lanes")
    df = manifests.reset_index(drop=True).copy()
    n = len(df)
    draws = random_draws(df["manifest_id"], config.seed, 1)
    group = _group_ids(df)
    n_groups = int(group.max()) + 1 if n else 0
    score = df["risk_score"].to_numpy(dtype=float)
    if np.isnan(score).any():
        raise ValueError("risk_score has missing values; score every manifest before building queues")
    mandatory = df["mandatory"].to_numpy(dtype=bool) if "mandatory" in df.columns else np.zeros(n, dtype=bool)
    lane = np.full(n, "green", dtype=object)
    selection = np.zeros(n, dtype=np.int8)

    insp_cap = _group_capacity(group, n_groups, config.inspection_capacity)
    # Holds come first and use the inspection capacity (a held box is examined physically).
    hold = _take_within_capacity(group, score >= config.hold_threshold, score, insp_cap)
    lane[hold] = "hold"
    selection[hold] = 3
    insp_left = insp_cap - np.bincount(group[hold], minlength=n_groups)
    red_cap = np.minimum(np.floor(config.red_share * config.inspection_capacity).astype(np.int64), insp_left)
    red, kind = _fill(group, n_groups, ~hold, mandatory, score, config.red_threshold, red_cap,
                      config.exploration_share, draws)
    lane[red] = "red"
    selection[red] = kind[red]
    scan_cap = _group_capacity(group, n_groups, config.scan_capacity)
    scan, kind = _fill(group, n_groups, ~hold & ~red, mandatory, score, config.scan_threshold, scan_cap,
                       config.exploration_share, 1.0 - draws)
    lane[scan] = "scan"
    selection[scan] = kind[scan]
    overflow = hold.sum() < (score >= config.hold_threshold).sum()
    if overflow:
        log.warning("more containers above the hold threshold than inspection capacity; "
                    "the rest were sent to the scanner or red lane")
    df["lane"] = lane
    df["selection"] = _KIND_NAMES[selection]
    df["queue_rank"] = _rank_within(df, ["lane"], selection, score)
    return df


def _rank_within(df: pd.DataFrame, extra_keys: list[str], selection: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Rank 1..n inside (group, lane): mandatory first, then random, then by score."""
    order_key = pd.DataFrame({
        "k": np.where(selection == 1, 0, np.where(selection == 2, 1, 2)),
        "s": -score,
    })
    keys = [df[c] for c in (*GROUP_KEYS, *extra_keys)]
    tmp = pd.concat([*keys, order_key], axis=1)
    tmp.columns = [*GROUP_KEYS, *extra_keys, "k", "s"]
    tmp = tmp.sort_values([*GROUP_KEYS, *extra_keys, "k", "s"], kind="stable")
    ranks = tmp.groupby([*GROUP_KEYS, *extra_keys], sort=False, dropna=False).cumcount() + 1
    return ranks.reindex(df.index).to_numpy()


def select_inspections(scanned: pd.DataFrame, config: QueueConfig, *, already_used: pd.DataFrame | None = None) -> pd.DataFrame:
    """Stage 2: after the scan, choose physical inspections by the fused score.

    ``scanned`` holds the containers of the scan lane with ``fused_score`` (and ``mandatory``);
    ``already_used`` is the stage-1 frame (its hold and red lanes consume inspection capacity
    first). Returns ``scanned`` with ``inspect`` (bool), ``inspect_selection`` and ``inspect_rank``.
    """
    _check_columns(scanned, ["manifest_id", *GROUP_KEYS, "fused_score"], "select_inspections")
    df = scanned.reset_index(drop=True).copy()
    n = len(df)
    draws = random_draws(df["manifest_id"], config.seed, 2)
    keys = df[list(GROUP_KEYS)].astype(str).agg("|".join, axis=1) if n else pd.Series([], dtype=str)
    uniq, group = np.unique(keys.to_numpy(dtype=str), return_inverse=True) if n else (np.array([]), np.array([], dtype=np.int64))
    n_groups = len(uniq)
    cap = np.full(n_groups, config.inspection_capacity, dtype=np.int64)
    if already_used is not None and n_groups:
        used = already_used[already_used["lane"].isin(["hold", "red"])]
        used_keys = used[list(GROUP_KEYS)].astype(str).agg("|".join, axis=1)
        counts = used_keys.value_counts()
        cap = cap - counts.reindex(uniq).fillna(0).to_numpy(dtype=np.int64)
        cap = np.maximum(cap, 0)
    score = df["fused_score"].to_numpy(dtype=float)
    mandatory = df["mandatory"].to_numpy(dtype=bool) if "mandatory" in df.columns else np.zeros(n, dtype=bool)
    chosen, kind = _fill(group, n_groups, np.ones(n, dtype=bool), mandatory, score, config.inspect_threshold,
                         cap, config.exploration_share, draws)
    df["inspect"] = chosen
    df["inspect_selection"] = _KIND_NAMES[kind]
    rank_df = df.assign(_chosen=chosen)
    df["inspect_rank"] = np.where(chosen, _rank_within(rank_df, ["_chosen"], kind, score), 0)
    return df


def lane_counts(queue: pd.DataFrame) -> pd.DataFrame:
    """Counts per group and lane, with the random selections, for summaries and reports."""
    _check_columns(queue, [*GROUP_KEYS, "lane", "selection"], "lane_counts")
    counts = queue.groupby([*GROUP_KEYS, "lane"], dropna=False).agg(
        containers=("lane", "size"),
        random=("selection", lambda s: int((s == "random").sum())),
        mandatory=("selection", lambda s: int((s == "mandatory").sum())),
    )
    return counts.reset_index()


def shift_of(ts: pd.Series, *, shifts: int = 3, first_hour: int = 6) -> pd.Series:
    """Name the shift of each timestamp: 'YYYY-MM-DD/S1'..'S{shifts}' starting at ``first_hour``."""
    t = pd.to_datetime(ts) - pd.Timedelta(hours=first_hour)
    k = (t.dt.hour // (24 // shifts)) + 1
    return t.dt.strftime("%Y-%m-%d") + "/S" + k.astype(str)


REASON_SEP = " | "
# What a reason says without the label of where it came from: "mandatory: Seal ...", "indicator
# seal_mismatch_at_gate: Seal ..." and the model's "seal number at the gate ..." say one thing.
_REASON_LABEL = re.compile(r"^(?:mandatory: |indicator [\w.-]+: )", re.IGNORECASE)


def _reason_core(part: str) -> str:
    return _REASON_LABEL.sub("", part.strip()).strip(" .;").lower()


def _distinct_one(text: str, sep: str) -> str:
    kept: list[str] = []
    cores: list[str] = []
    for part in text.split(sep):
        core = _reason_core(part)
        if core and not any(core == c or core in c for c in cores):
            kept.append(part.strip())
            cores.append(core)
    return sep.join(kept)


def distinct_reasons(texts: pd.Series | np.ndarray | list, sep: str = REASON_SEP) -> np.ndarray:
    """Each row's reasons said once, in their order (the most important first).

    A reason is dropped when an earlier one of the row already says it, under another label
    or in other case: ``"mandatory: Seal number at the gate differs from the manifest | seal
    number at the gate differs from the manifest | indicator seal_mismatch_at_gate: Seal number
    at the gate differs from the manifest"`` becomes its first part. Rows share few distinct
    texts, so each distinct text is worked out once and spread back to the rows.

    >>> distinct_reasons(["mandatory: Seal broken | seal broken | origin EC", None]).tolist()
    ['mandatory: Seal broken | origin EC', '']
    """
    values = pd.Series(texts, dtype=object).fillna("").astype(str)
    codes, uniq = pd.factorize(values)
    done = np.array([_distinct_one(t, sep) for t in uniq], dtype=object)
    return done[codes] if len(codes) else np.array([], dtype=object)
