"""POST /api/manifests: validate, store, score and plan a batch; GET one manifest."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from fastapi import APIRouter, HTTPException, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from riskengine.schema import ROW_COLUMN, SchemaError, read_manifests
from riskengine.service.auth import AnalystDep, OfficerDep
from riskengine.service.deps import BroadcasterDep, QueueConfigDep, ScorerDep, SettingsDep, StoreDep
from riskengine.service.routers._util import media_type, records
from riskengine.service.schemas import IngestResponse, ManifestBatch
from riskengine.service.workflow import ingest_manifests

router = APIRouter(prefix="/api/manifests", tags=["manifests"])

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "A JSON batch (`{\"manifests\": [row, ...]}` or a bare list of rows), a CSV "
                       "body (`text/csv`) or a multipart upload with a CSV/Parquet `file`.",
        "content": {
            "application/json": {"schema": ManifestBatch.model_json_schema()},
            "text/csv": {"schema": {"type": "string"}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}}}},
        },
    }
}


async def _read_batch(request: Request, max_bytes: int, max_rows: int) -> pd.DataFrame:
    # The body limits (413) are enforced as the body arrives by riskengine.service.limits.
    kind = media_type(request)
    if kind == "application/json" or kind.endswith("+json"):
        body = await request.body()
        try:
            payload: Any = json.loads(body)
        except ValueError as exc:
            raise HTTPException(422, f"the body is not valid JSON ({exc}); send "
                                     '{"manifests": [{...}, ...]}') from exc
        if isinstance(payload, list):
            payload = {"manifests": payload}
        try:
            batch = ManifestBatch.model_validate(payload)
        except ValidationError as exc:
            raise HTTPException(422, [{"loc": e["loc"], "msg": e["msg"]} for e in exc.errors()]) from exc
        if len(batch.manifests) > max_rows:
            raise HTTPException(413, f"{len(batch.manifests):,} rows in one batch; the limit is {max_rows:,}")
        raw = pd.DataFrame(batch.manifests)
        raw[ROW_COLUMN] = range(1, len(raw) + 1)
        return raw
    if kind == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(422, "multipart upload needs a file field named 'file' (CSV or Parquet)")
        data = await upload.read()
        upload_name = Path(upload.filename or "upload.csv").name
        suffix = Path(upload_name).suffix.lower() or ".csv"
    elif kind in ("text/csv", "application/csv", "text/plain"):
        data = await request.body()
        upload_name, suffix = "the request body", ".csv"
    else:
        raise HTTPException(415, f"unsupported content type {kind or '(none)'!r}: send application/json, "
                                 "text/csv or multipart/form-data with a 'file'")
    if len(data) > max_bytes:
        raise HTTPException(413, f"upload is {len(data):,} bytes; the limit is {max_bytes:,} bytes")
    if suffix not in (".csv", ".parquet", ".pq", ".txt", ".tsv", ".gz"):
        raise HTTPException(422, f"unsupported file type {suffix!r}: upload a .csv or .parquet file")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            raw = await run_in_threadpool(read_manifests, path)
        except ValueError as exc:
            # The reader names the file it read: show the upload's name, not a server path.
            message = str(exc).replace(str(path), upload_name).replace(str(tmp), "")
            raise HTTPException(422, f"cannot read the uploaded manifests: {message}") from exc
    if raw.empty:
        raise HTTPException(422, "the upload holds no manifest rows")
    if len(raw) > max_rows:
        raise HTTPException(413, f"{len(raw):,} rows in one batch; the limit is {max_rows:,}")
    return raw


@router.post("", response_model=IngestResponse, openapi_extra=_BODY_DOC,
             summary="Ingest a batch of manifests",
             responses={413: {"description": "Batch too large"}, 415: {"description": "Unsupported body"},
                        422: {"description": "The request as a whole is unusable"},
                        503: {"description": "The manifest model is not available"}})
async def post_manifests(
    request: Request, store: StoreDep, scorer: ScorerDep, broadcaster: BroadcasterDep,
    settings: SettingsDep, config: QueueConfigDep, caller: AnalystDep,
) -> IngestResponse:
    """Validate, upsert (idempotent), score new/changed manifests, re-plan their queues.

    Rows that fail validation come back in `rejects` with their reasons (200); the rest go on.
    The audit names the caller's token as the actor.
    """
    raw = await _read_batch(request, settings.max_upload_bytes, settings.max_batch_rows)
    try:
        report = await run_in_threadpool(ingest_manifests, store, scorer, raw, config,
                                         actor=caller.name)
    except SchemaError as exc:
        raise HTTPException(422, str(exc)) from exc
    if report.inserted or report.updated or report.plan.decisions:
        broadcaster.publish("manifests", report.event())
    rej = report.rejects
    rejects = [] if rej.empty else records(pd.DataFrame({
        "source_row": rej[ROW_COLUMN].astype(int),
        "manifest_id": rej["manifest_id"].astype("string") if "manifest_id" in rej.columns else None,
        "column": rej["reject_column"], "reason": rej["reject_reason"], "reasons": rej["reject_reasons"],
    }))
    return IngestResponse(
        received=report.received, valid=report.valid, rejected=report.rejected,
        inserted=report.inserted, updated=report.updated, unchanged=report.unchanged,
        scored=report.scored, decisions=report.plan.decisions, changed_manifest_ids=report.changed_ids,
        lane_counts=report.plan.lane_counts, rejects=rejects, warnings=records(report.warnings),
    )


@router.get("/{manifest_id}", summary="One stored manifest with its current queue state")
def get_manifest(manifest_id: str, store: StoreDep, _: OfficerDep) -> dict[str, Any]:
    """The manifest as stored (normalised), its latest scores, lane, selection and outcome."""
    row = store.manifests([manifest_id])
    group = tuple(row.loc[0, ["port", "terminal", "shift"]].astype(str))
    state = store.planning_frame([group])
    st = state[state["manifest_id"] == manifest_id]
    manifest = records(row)[0]
    keep = ["risk_score", "mandatory", "reasons", "model_version", "fused_score", "scan_reasons",
            "scanned", "scan_id", "concealment_score", "lane", "selection", "random",
            "decision_reasons", "outcome"]
    return {"manifest": manifest, "state": records(st[keep])[0] if len(st) else None}
