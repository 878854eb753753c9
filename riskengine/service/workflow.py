"""The service's work, without HTTP: ingest manifests, ingest scans, re-plan the queues.

* :func:`ingest_manifests`: validate → upsert (one transaction) → score what is new or changed →
  re-plan the affected (port, terminal, shift) groups → report.
* :func:`ingest_scan`: triage → overlay → save the scan → fuse with the manifest risk → re-plan.
* :func:`rescore_stored`: score stored manifests again with the current model, fuse the scanned
  ones again from their stored scans, re-plan (after a model or indicator pack change).
* :func:`replan`: stage 1 lanes for every container of the groups that is not locked (already
  scanned or inspected: its lane stays, and uses its capacity), then stage 2 inspections by
  fused score for the scanned containers of the scan lane. Only changed decisions are written,
  so re-sending a batch writes nothing.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from riskengine.fusion import fuse, join_reasons
from riskengine.queue import (
    GROUP_KEYS,
    QueueConfig,
    assign_lanes,
    distinct_reasons,
    select_inspections,
)
from riskengine.schema import ROW_COLUMN, validate
from riskengine.service.scoring import ScanTriager, Scorer, check_scores
from riskengine.store import Store

log = logging.getLogger(__name__)

# Plans of one process are made one at a time; two nodes on one PostgreSQL converge because only
# changed decisions are written and every ingest re-plans its groups from the stored state.
_PLAN_LOCK = threading.Lock()
_MAX_EVENT_IDS = 500

_SELECTION_TEXT = {
    "mandatory": "mandatory rule",
    "random": "random exploration pick (unbiased control sample)",
    "risk": "selected by risk within capacity",
    "none": "",
}


@dataclass
class PlanResult:
    """What a re-plan changed."""

    decisions: int = 0
    changed_ids: list[str] = field(default_factory=list)
    lane_counts: list[dict[str, Any]] = field(default_factory=list)
    unscored: int = 0


@dataclass
class IngestReport:
    """Outcome of one manifest batch."""

    received: int
    valid: int
    rejected: int
    inserted: int
    updated: int
    unchanged: int
    scored: int
    plan: PlanResult
    groups: list[tuple[str, str, str]]
    rejects: pd.DataFrame
    warnings: pd.DataFrame
    changed_ids: list[str] = field(default_factory=list)

    def event(self) -> dict[str, Any]:
        """Feed payload (ids capped at 500, the rest counted)."""
        ids = self.changed_ids
        return {
            "inserted": self.inserted, "updated": self.updated, "decisions": self.plan.decisions,
            "manifest_ids": ids[:_MAX_EVENT_IDS], "more_ids": max(0, len(ids) - _MAX_EVENT_IDS),
            "groups": [dict(zip(GROUP_KEYS, g, strict=True)) for g in self.groups],
            "lane_counts": self.plan.lane_counts,
        }


@dataclass
class ScanReport:
    """Outcome of one scan."""

    scan_id: str
    manifest_id: str
    triage: dict[str, Any]
    fused: dict[str, Any]
    overlay_path: str | None
    plan: PlanResult
    group: tuple[str, str, str]
    lane: str | None
    selection: str | None


def _decision_reasons(df: pd.DataFrame, lane_col: str, selection_col: str, reasons_col: str,
                      config: QueueConfig) -> np.ndarray:
    sel = df[selection_col].map(_SELECTION_TEXT).fillna("")
    hold = np.where(df[lane_col] == "hold",
                    f"risk at or above the hold threshold {config.hold_threshold:.2f}: do not release", "")
    sel = sel.where(df[lane_col] != "hold", "")
    reasons = df[reasons_col].fillna("").astype(str)
    # A mandatory selection is said by naming its rules ("mandatory: <title>", from the manifest
    # score's reasons), not with "mandatory rule" followed by the rule later on.
    rules = (df["reasons"] if "reasons" in df.columns else reasons).fillna("").astype(str) \
        .str.findall(r"mandatory: [^|]*[^| ]").str.join(" | ")
    mandatory = (df[selection_col] == "mandatory") & (rules != "")
    sel = sel.where(~mandatory, rules)
    return distinct_reasons(join_reasons([pd.Series(hold, index=df.index), sel, reasons]))


def _scores(scorer: Scorer, manifests: pd.DataFrame) -> pd.DataFrame:
    """The scorer's output, checked, with each row's reasons said once."""
    scores = check_scores(scorer(manifests), manifests["manifest_id"])
    if "reasons" in scores.columns:
        scores = scores.assign(reasons=distinct_reasons(scores["reasons"]))
    return scores


def replan(store: Store, groups: list[tuple[str, str, str]], config: QueueConfig, *,
           actor: str) -> PlanResult:
    """Re-plan the queues of ``groups`` from the stored state; write changed decisions only."""
    if not groups:
        return PlanResult()
    keys = list(GROUP_KEYS)
    with _PLAN_LOCK:
        frame = store.planning_frame(groups)
        unscored = int(frame["risk_score"].isna().sum())
        if unscored:
            log.warning("%d manifest(s) in the re-planned groups have no score and stay unplanned", unscored)
        frame = frame[frame["risk_score"].notna()].reset_index(drop=True)
        if frame.empty:
            return PlanResult(unscored=unscored)
        locked = (frame["stage1_lane"].notna() & (frame["scanned"] | frame["outcome"].notna())).to_numpy()
        # A container scanned outside the scan lane (the plan moved it after the officer saw it)
        # used the scanner: it joins the scan lane, flagged as not selected by the plan.
        off_plan = locked & frame["scanned"].to_numpy() & ~frame["stage1_lane"].isin(["hold", "red", "scan"]).to_numpy()
        frame.loc[off_plan, ["stage1_lane", "stage1_selection"]] = ["scan", "none"]
        forced = frame[off_plan].assign(
            lane="scan", selection="none", queue_rank=0,
            decision_reasons=join_reasons([pd.Series("scanned outside the plan (uses scanner capacity)",
                                                     index=frame.index[off_plan]),
                                           frame.loc[off_plan, "reasons"].fillna("")]))
        n = store.save_decisions(forced, actor) if len(forced) else 0
        used = (frame[locked].assign(
            scan=lambda d: d["stage1_lane"] == "scan",
            insp=lambda d: d["stage1_lane"].isin(["hold", "red"]))
            .groupby(keys)[["scan", "insp"]].sum())
        planned = []
        # One assign_lanes per group (a handful per batch), each with what locked boxes leave.
        for key, g in frame[~locked].groupby(keys, sort=True):
            u = used.loc[key] if key in used.index else None
            cfg = config if u is None else replace(
                config, scan_capacity=max(0, config.scan_capacity - int(u["scan"])),
                inspection_capacity=max(0, config.inspection_capacity - int(u["insp"])))
            planned.append(assign_lanes(g.sort_values("manifest_id"), cfg))
        stage1 = pd.concat(planned, ignore_index=True) if planned else frame.iloc[:0].assign(
            lane=pd.Series(dtype=object), selection=pd.Series(dtype=object), queue_rank=pd.Series(dtype=int))
        stage1["decision_reasons"] = _decision_reasons(stage1, "lane", "selection", "reasons", config)
        n += store.save_decisions(stage1, actor)
        changed = forced["manifest_id"].tolist() + stage1.loc[(stage1["lane"] != stage1["stage1_lane"]) |
                             (stage1["selection"] != stage1["stage1_selection"]), "manifest_id"].tolist()

        lanes1 = pd.concat([stage1[["manifest_id", *keys, "lane"]],
                            frame.loc[locked, ["manifest_id", *keys, "stage1_lane"]].rename(
                                columns={"stage1_lane": "lane"})], ignore_index=True)
        cand = frame.merge(lanes1[["manifest_id", "lane"]].rename(columns={"lane": "plan_lane"}), on="manifest_id")
        scanned = cand[(cand["plan_lane"] == "scan") & cand["fused_score"].notna()].sort_values("manifest_id")
        if len(scanned):
            stage2 = select_inspections(scanned, config, already_used=lanes1)
            stage2 = stage2[stage2["outcome"].isna()]  # an inspected container keeps its decision
            stage2 = stage2.assign(lane2=np.where(stage2["inspect"], "inspect", "cleared"),
                                   sel2=np.where(stage2["inspect"], stage2["inspect_selection"], "none"))
            stage2["decision_reasons"] = join_reasons([
                stage2["lane2"].map({"inspect": "physical inspection after the scan",
                                     "cleared": "scan cleared within capacity"}),
                pd.Series(_decision_reasons(stage2, "lane2", "sel2", "scan_reasons", config), index=stage2.index),
            ])
            n += store.save_decisions(stage2, actor)
            changed += stage2.loc[(stage2["lane2"] != stage2["stage2_lane"]) |
                                  (stage2["sel2"] != stage2["stage2_selection"]), "manifest_id"].tolist()
        after = store.planning_frame(groups)
    counts = (after[after["lane"].notna()].groupby([*keys, "lane"]).size().rename("containers").reset_index())
    return PlanResult(decisions=n, changed_ids=sorted(set(changed)),
                      lane_counts=counts.to_dict("records"), unscored=unscored)


def fuse_and_save(store: Store, manifest: pd.DataFrame, risk: np.ndarray, triage: pd.DataFrame,
                  calibration: Any, *, model_versions: np.ndarray, scan_model_versions: np.ndarray,
                  actor: str) -> pd.DataFrame:
    """Fuse manifest risk with scan triage (one vectorised pass) and store the fused scores.

    ``manifest``: stored manifests (``Store.manifests``), row-aligned with ``risk``, ``triage``
    (``manifest_id``, ``concealment_score``, ``empty_probability``, ``cargo_class``,
    ``cargo_class_probability``, ``estimated_mass_kg``) and the two version arrays. Returns the
    fused frame (:func:`riskengine.fusion.fuse`).
    """
    from riskengine.commodities import cargo_family

    m = manifest.reset_index(drop=True).assign(
        risk_score=np.asarray(risk, dtype=float),
        declared_family=cargo_family(manifest["hs_code"], manifest["goods_description"]).to_numpy(),
        declared_empty=manifest["goods_description"].astype("string").str.upper()
        .str.startswith("EMPTY").fillna(False).to_numpy(dtype=bool),
    )
    tri = triage.reset_index(drop=True).assign(
        cargo_class_probability=lambda d: pd.to_numeric(d["cargo_class_probability"], errors="coerce"),
        estimated_mass_kg=lambda d: pd.to_numeric(d["estimated_mass_kg"], errors="coerce"),
    )
    fused = fuse(m, tri, calibration=calibration)
    keys = pd.DataFrame({"model": pd.Series(model_versions, dtype=object).fillna("\x00"),
                         "scan": pd.Series(scan_model_versions, dtype=object).fillna("\x00")})
    # One save per (manifest model, scan model) pair: a handful at most.
    for (model, scan), idx in keys.groupby(["model", "scan"], sort=False).groups.items():
        store.save_scores(fused.loc[idx], "fused", None if model == "\x00" else model,
                          scan_model_version=None if scan == "\x00" else scan, actor=actor)
    return fused


def ingest_manifests(store: Store, scorer: Scorer, raw: pd.DataFrame, config: QueueConfig, *,
                     actor: str) -> IngestReport:
    """Validate, store, score and plan one batch of manifests.

    Rejected rows come back in the report with their reasons; the valid rows go on. A missing
    required column raises :class:`riskengine.schema.SchemaError` (the batch is unusable).
    An optional ``shift`` column gives the terminal's shift per row.
    """
    received = len(raw)
    res = validate(raw)
    valid = res.valid
    if "shift" in raw.columns and len(valid):
        rows = raw[ROW_COLUMN] if ROW_COLUMN in raw.columns else pd.Series(np.arange(1, received + 1))
        shift_by_row = pd.Series(raw["shift"].to_numpy(), index=rows.to_numpy())
        valid = valid.assign(shift=valid[ROW_COLUMN].map(shift_by_row).to_numpy())
    ids = valid["manifest_id"].astype(str).tolist()
    before = store.groups_of(ids) if ids else []
    counts = store.upsert_manifests(valid, actor) if ids else {"inserted": 0, "updated": 0, "unchanged": 0}
    stale = store.stale_scores(ids) if ids else []
    if stale:
        todo = valid[valid["manifest_id"].isin(stale)].reset_index(drop=True)
        scores = _scores(scorer, todo)
        store.save_scores(scores, "manifest", scorer.version, actor=actor)
    groups: list[tuple[str, str, str]] = []
    if ids:
        # Re-plan the groups holding a new, changed or not yet planned manifest (a re-sent batch
        # after a crash between scoring and planning gets planned), plus the groups changed rows
        # came from.
        state = store.planning_frame(store.groups_of(ids))
        todo = state["manifest_id"].isin(ids) & (state["manifest_id"].isin(stale) | state["stage1_lane"].isna())
        wanted = set(map(tuple, state.loc[todo, list(GROUP_KEYS)].astype(str).to_numpy().tolist()))
        if stale:
            wanted |= set(before)
        groups = sorted(wanted)
    plan = replan(store, groups, config, actor=actor)
    log.info("ingest: %d received, %d valid, %d rejected, %s, %d scored, %d decisions",
             received, len(valid), res.n_rejected, counts, len(stale), plan.decisions)
    return IngestReport(received=received, valid=len(valid), rejected=res.n_rejected,
                        inserted=counts["inserted"], updated=counts["updated"],
                        unchanged=counts["unchanged"], scored=len(stale), plan=plan, groups=groups,
                        rejects=res.rejects, warnings=res.warnings,
                        changed_ids=sorted(set(stale) | set(plan.changed_ids)))


def ingest_scan(store: Store, triager: ScanTriager, scan: Any, manifest_id: str, config: QueueConfig, *,
                actor: str, image_path: str | None = None, overlay_dir: Path | None = None,
                scan_id: str | None = None) -> ScanReport:
    """Triage one scan of a stored, scored manifest, fuse the evidence and re-plan its group.

    Raises :class:`riskengine.store.UnknownManifestError` for an unknown manifest and
    ``ValueError`` when the manifest has no risk score yet.
    """
    return ingest_scans(store, triager, [scan], [manifest_id], config, actor=actor,
                        image_paths=[image_path], overlay_dir=overlay_dir,
                        scan_ids=[scan_id] if scan_id else None)[0]


def _triage_all(triager: ScanTriager, scans: list[Any]) -> list[dict[str, Any]]:
    batch = getattr(triager, "batch", None)
    results = list(batch(scans)) if callable(batch) else [triager(s) for s in scans]
    need = ["concealment_score", "empty_probability", "cargo_class"]
    for tri in results:
        missing = [k for k in need if k not in tri]
        if missing:
            raise ValueError(f"the scan triage returned {sorted(tri)}; missing {missing}")
    return [dict(t) for t in results]


def ingest_scans(store: Store, triager: ScanTriager, scans: list[Any], manifest_ids: list[str],
                 config: QueueConfig, *, actor: str, image_paths: list[str | None] | None = None,
                 overlay_dir: Path | None = None, scan_ids: list[str] | None = None) -> list[ScanReport]:
    """Triage a batch of scans (one per stored, scored manifest), fuse, and re-plan once per group.

    The scans are triaged together (batched inference when the triager offers ``batch``), saved
    in one call, fused in one vectorised pass, and each affected (port, terminal, shift) group is
    re-planned once. Raises :class:`riskengine.store.UnknownManifestError` for an unknown
    manifest and ``ValueError`` when a manifest has no risk score yet.
    """
    if len(scans) != len(manifest_ids):
        raise ValueError(f"{len(scans)} scans for {len(manifest_ids)} manifest ids; give one id per scan")
    if len(set(manifest_ids)) != len(manifest_ids):
        raise ValueError("one scan per manifest in a batch; the ids repeat")
    if not scans:
        return []
    image_paths = image_paths or [None] * len(scans)
    scan_ids = scan_ids or [uuid.uuid4().hex for _ in scans]
    manifest = store.manifests(manifest_ids)
    manifest = manifest.set_index("manifest_id").loc[manifest_ids].reset_index()
    keys = list(GROUP_KEYS)
    groups = sorted(set(map(tuple, manifest[keys].astype(str).to_numpy().tolist())))
    state = store.planning_frame(groups).set_index("manifest_id")
    risk = state["risk_score"].reindex(manifest_ids)
    if risk.isna().any():
        missing = risk.index[risk.isna()].tolist()
        raise ValueError(f"manifest(s) {missing[:5]} have no risk score yet; ingest them through "
                         "POST /api/manifests so they are scored before their scans")
    results = _triage_all(triager, scans)
    overlays: list[str | None] = [None] * len(scans)
    if overlay_dir is not None:
        from scanvision.infer import save_heatmap_overlay

        for i, (scan, tri) in enumerate(zip(scans, results, strict=True)):
            if tri.get("heatmap") is not None:
                overlays[i] = str(save_heatmap_overlay(scan, np.asarray(tri["heatmap"]),
                                                       Path(overlay_dir) / f"{scan_ids[i]}.png"))
    for tri in results:
        tri.pop("heatmap", None)
    tri_df = pd.DataFrame(results)
    for col in ("cargo_class_probability", "class_probabilities", "estimated_mass_kg"):
        if col not in tri_df.columns:
            tri_df[col] = None
    store.save_scans(tri_df.assign(
        scan_id=scan_ids, manifest_id=manifest_ids, path=image_paths,
        kind=[getattr(s, "kind", None) for s in scans], heatmap_path=overlays,
        model_version=triager.version, actor=actor,
    ))
    triage_df = tri_df[["concealment_score", "empty_probability", "cargo_class",
                        "cargo_class_probability", "estimated_mass_kg"]].assign(manifest_id=manifest_ids)
    fused = fuse_and_save(store, manifest, risk.to_numpy(dtype=float), triage_df, triager.calibration,
                          model_versions=state["model_version"].reindex(manifest_ids).to_numpy(),
                          scan_model_versions=np.full(len(manifest_ids), triager.version, dtype=object),
                          actor=actor)
    plan = replan(store, groups, config, actor=actor)
    now = store.planning_frame(groups).set_index("manifest_id")
    reports = []
    for i, mid in enumerate(manifest_ids):
        f = fused.iloc[i]
        cur = now.loc[mid]
        group = tuple(str(x) for x in manifest.loc[i, keys])
        tri = results[i]
        reports.append(ScanReport(
            scan_id=scan_ids[i], manifest_id=mid, triage=tri,
            fused={"risk_score": float(f["risk_score"]), "fused_score": float(f["fused_score"]),
                   "image_llr": float(f["image_llr"]), "reasons": str(f["fusion_reasons"])},
            overlay_path=overlays[i], plan=plan, group=group,
            lane=None if pd.isna(cur["lane"]) else str(cur["lane"]),
            selection=None if pd.isna(cur["selection"]) else str(cur["selection"]),
        ))
    return reports


class NoMatchingManifestsError(LookupError):
    """A rescore selection (port, terminal, shift) that matches no stored manifest."""


@dataclass
class RescoreReport:
    """Outcome of rescoring stored manifests with the current scorer."""

    groups: list[tuple[str, str, str]]
    manifests: int
    scored: int
    changed: int
    fused: int
    decisions: int
    changed_ids: list[str] = field(default_factory=list)
    unscored: int = 0

    def event(self) -> dict[str, Any]:
        """Feed payload (ids capped at 500, the rest counted)."""
        ids = self.changed_ids
        return {"rescored": self.scored, "decisions": self.decisions,
                "manifest_ids": ids[:_MAX_EVENT_IDS], "more_ids": max(0, len(ids) - _MAX_EVENT_IDS),
                "groups": [dict(zip(GROUP_KEYS, g, strict=True)) for g in self.groups]}


def rescore_stored(store: Store, scorer: Scorer, triager: ScanTriager, config: QueueConfig, *, actor: str,
                   port: str | None = None, terminal: str | None = None, shift: str | None = None,
                   chunk_rows: int = 50_000) -> RescoreReport:
    """Score the stored manifests of the selected groups again with ``scorer`` and re-plan them.

    Selects every (port, terminal, shift) group matching the given filters (all groups when none
    is given). Groups are processed in chunks of about ``chunk_rows`` manifests. A new manifest
    score is written only where the score, reasons, mandatory flag or model version changed, so
    rescoring twice with the same model writes nothing; scanned containers whose manifest score
    changed get their fused score again from their latest stored scan (no new triage). Raises
    :class:`NoMatchingManifestsError` when no stored manifest matches.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    groups = store.groups()
    sel = pd.Series(True, index=groups.index)
    for col, value in (("port", port), ("terminal", terminal), ("shift", shift)):
        if value is not None:
            sel &= groups[col] == value
    chosen = groups[sel]
    if chosen.empty:
        asked = ", ".join(f"{k}={v!r}" for k, v in (("port", port), ("terminal", terminal), ("shift", shift))
                          if v is not None) or "all groups"
        ports = sorted(groups["port"].unique().tolist())
        raise NoMatchingManifestsError(f"no stored manifests match {asked}; ports with manifests: "
                                       f"{ports[:20] or 'none (ingest manifests first)'}")
    # Chunks of whole groups: a group is planned together.
    chunk_no = (chosen["containers"].cumsum().to_numpy() - 1) // chunk_rows
    report = RescoreReport(groups=[], manifests=0, scored=0, changed=0, fused=0, decisions=0)
    changed_ids: set[str] = set()
    for _, part in chosen.groupby(chunk_no, sort=True):
        chunk_groups = [tuple(g) for g in part[list(GROUP_KEYS)].astype(str).to_numpy().tolist()]
        res = _rescore_chunk(store, scorer, triager, config, chunk_groups, actor=actor)
        report.groups += chunk_groups
        for name in ("manifests", "scored", "changed", "fused", "decisions", "unscored"):
            setattr(report, name, getattr(report, name) + getattr(res, name))
        changed_ids.update(res.changed_ids)
    report.changed_ids = sorted(changed_ids)
    log.info("rescore by %s: %d groups, %d manifests, %d new scores (%d changed), %d fused again, %d decisions",
             actor, len(report.groups), report.manifests, report.scored, report.changed, report.fused,
             report.decisions)
    return report


def _rescore_chunk(store: Store, scorer: Scorer, triager: ScanTriager, config: QueueConfig,
                   groups: list[tuple[str, str, str]], *, actor: str) -> RescoreReport:
    state = store.planning_frame(groups).reset_index(drop=True)
    ids = state["manifest_id"].astype(str).tolist()
    manifests = store.manifests(ids)
    new = _scores(scorer, manifests)
    old = state.set_index("manifest_id").reindex(new["manifest_id"])
    old_risk = old["risk_score"].to_numpy(dtype=float)
    differs = (
        np.isnan(old_risk) | ~np.isclose(new["risk_score"].to_numpy(dtype=float), old_risk, rtol=0, atol=1e-12)
        | (new["reasons"].astype(str).to_numpy() != old["reasons"].fillna("").astype(str).to_numpy())
        | (new["mandatory"].to_numpy(dtype=bool) != old["mandatory"].fillna(False).to_numpy(dtype=bool))
    )
    score_changed = differs.copy()
    differs |= old["model_version"].astype(object).to_numpy() != scorer.version
    write = new[differs].reset_index(drop=True)
    if len(write):
        store.save_scores(write, "manifest", scorer.version, actor=actor)
    # Scanned containers with a new manifest score: fuse again with their latest stored scan.
    scanned = old["scanned"].fillna(False).to_numpy(dtype=bool) & differs
    refuse_ids = new.loc[scanned, "manifest_id"].astype(str).tolist()
    n_fused = 0
    if refuse_ids:
        scans = store.latest_scans(refuse_ids).set_index("manifest_id").reindex(refuse_ids)
        m = manifests.set_index("manifest_id").loc[refuse_ids].reset_index()
        risk = new.set_index("manifest_id").loc[refuse_ids, "risk_score"].to_numpy(dtype=float)
        triage = scans[["concealment_score", "empty_probability", "cargo_class", "cargo_class_probability",
                        "estimated_mass_kg"]].reset_index()
        fuse_and_save(store, m, risk, triage, triager.calibration,
                      model_versions=np.full(len(refuse_ids), scorer.version, dtype=object),
                      scan_model_versions=scans["model_version"].to_numpy(dtype=object), actor=actor)
        n_fused = len(refuse_ids)
    plan = replan(store, groups, config, actor=actor)
    changed = set(new.loc[score_changed, "manifest_id"].astype(str)) | set(plan.changed_ids)
    return RescoreReport(groups=groups, manifests=len(ids), scored=len(write), changed=int(score_changed.sum()),
                         fused=n_fused, decisions=plan.decisions, changed_ids=sorted(changed),
                         unscored=plan.unscored)
