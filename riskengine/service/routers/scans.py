"""POST /api/scans: triage a scan, fuse it with the manifest risk, re-plan; GET its overlay."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from riskengine.service.auth import AnalystDep, OfficerDep
from riskengine.service.deps import (
    BroadcasterDep,
    QueueConfigDep,
    SettingsDep,
    StoreDep,
    TriagerDep,
)
from riskengine.service.routers._util import media_type
from riskengine.service.schemas import ScanPathRequest, ScanResponse
from riskengine.service.settings import Settings
from riskengine.service.workflow import ingest_scan

router = APIRouter(prefix="/api/scans", tags=["scans"])

_SCAN_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "Either a multipart upload (`file` = the scan image, `manifest_id`, optional "
                       "`scan_id`) or JSON naming a scan already on the server (under a configured "
                       "scan root).",
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file", "manifest_id"],
                "properties": {"file": {"type": "string", "format": "binary"},
                               "manifest_id": {"type": "string"}, "scan_id": {"type": "string"}}}},
            "application/json": {"schema": ScanPathRequest.model_json_schema()},
        },
    }
}


def _allowed_path(path: str, settings: Settings) -> Path:
    if not settings.scan_roots:
        raise HTTPException(403, "server-side scan paths are disabled; upload the image as multipart "
                                 "'file' or start the service with --scan-root DIR")
    p = Path(path).expanduser().resolve()
    roots = [Path(r).expanduser().resolve() for r in settings.scan_roots]
    if not any(p.is_relative_to(r) for r in roots):
        raise HTTPException(403, f"path {path!r} is outside the allowed scan roots {[str(r) for r in roots]}")
    if not p.is_file():
        raise HTTPException(422, f"scan file not found on the server: {path!r}")
    return p


def _check_scan_id(scan_id: str | None) -> str:
    if scan_id is None or scan_id == "":
        return uuid.uuid4().hex
    if not _SCAN_ID.fullmatch(scan_id):
        raise HTTPException(422, f"scan_id {scan_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return scan_id


@router.post("", response_model=ScanResponse, openapi_extra=_BODY_DOC, summary="Triage one scan",
             responses={403: {"description": "Server-side path not allowed"},
                        404: {"description": "Unknown manifest id"},
                        409: {"description": "The manifest has no risk score yet"},
                        422: {"description": "Unreadable image or invalid body"},
                        503: {"description": "The scan model is not available"}})
async def post_scan(
    request: Request, store: StoreDep, triager: TriagerDep, broadcaster: BroadcasterDep,
    settings: SettingsDep, config: QueueConfigDep, caller: AnalystDep,
) -> ScanResponse:
    """Triage the scan (concealment score, heatmap, empty/loaded, cargo class, mass), fuse the
    evidence with the manifest risk and decide the physical inspections of the shift. The audit
    names the caller's token as the actor."""
    from scanvision.io import read_scan, read_scan_bytes

    kind = media_type(request)
    upload: bytes | None = None
    if kind == "multipart/form-data":
        form = await request.form()
        file = form.get("file")
        manifest_id = form.get("manifest_id")
        if file is None or isinstance(file, str):
            raise HTTPException(422, "multipart upload needs the scan image as field 'file'")
        if not isinstance(manifest_id, str) or not manifest_id.strip():
            raise HTTPException(422, "multipart upload needs the field 'manifest_id'")
        manifest_id = manifest_id.strip()
        scan_id = _check_scan_id(form.get("scan_id") if isinstance(form.get("scan_id"), str) else None)
        upload = await file.read()
        name = file.filename or "upload.png"
        suffix = Path(name).suffix.lower()
        if suffix not in _IMAGE_SUFFIXES:
            suffix = ".img"
        try:
            scan = await run_in_threadpool(read_scan_bytes, upload, name)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
        image_path: Path | None = Path(settings.data_dir) / "scans" / f"{scan_id}{suffix}"
    elif kind == "application/json":
        try:
            body = ScanPathRequest.model_validate(json.loads(await request.body()))
        except (ValueError, ValidationError) as exc:
            detail: Any = exc.errors() if isinstance(exc, ValidationError) else f"invalid JSON: {exc}"
            raise HTTPException(422, detail) from exc
        manifest_id = body.manifest_id
        scan_id = _check_scan_id(body.scan_id)
        image_path = _allowed_path(body.path, settings)
        try:
            scan = await run_in_threadpool(read_scan, image_path)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from exc
    else:
        raise HTTPException(415, f"unsupported content type {kind or '(none)'!r}: send multipart/form-data "
                                 "with 'file' and 'manifest_id', or JSON {manifest_id, path}")

    store_copy = upload is not None
    if store_copy:
        image_path.parent.mkdir(parents=True, exist_ok=True)
        image_path.write_bytes(upload)
    try:
        report = await run_in_threadpool(
            ingest_scan, store, triager, scan, manifest_id, config, actor=caller.name,
            image_path=str(image_path), overlay_dir=Path(settings.data_dir) / "overlays", scan_id=scan_id)
    except Exception as exc:
        if store_copy:
            image_path.unlink(missing_ok=True)
        if type(exc) is ValueError:
            raise HTTPException(409, str(exc)) from exc
        raise
    broadcaster.publish("scan", {
        "manifest_ids": sorted({manifest_id, *report.plan.changed_ids})[:500],
        "groups": [dict(zip(("port", "terminal", "shift"), report.group, strict=True))],
        "lane_counts": report.plan.lane_counts, "decisions": report.plan.decisions,
    })
    tri = report.triage
    return ScanResponse(
        scan_id=report.scan_id, manifest_id=manifest_id,
        concealment_score=float(tri["concealment_score"]), empty_probability=float(tri["empty_probability"]),
        cargo_class=str(tri["cargo_class"]),
        estimated_mass_kg=None if tri.get("estimated_mass_kg") is None else float(tri["estimated_mass_kg"]),
        risk_score=report.fused["risk_score"], fused_score=report.fused["fused_score"],
        image_llr=report.fused["image_llr"], reasons=report.fused["reasons"],
        lane=report.lane, selection=report.selection,
        overlay_url=f"/api/scans/{manifest_id}/overlay.png" if report.overlay_path else None,
        decisions=report.plan.decisions,
    )


@router.get("/{manifest_id}/overlay.png", response_class=FileResponse, summary="Heatmap overlay",
            responses={200: {"content": {"image/png": {}}}, 404: {"description": "No scan or overlay"}})
def get_overlay(manifest_id: str, store: StoreDep, _: OfficerDep) -> FileResponse:
    """The latest scan of the container in grey with the concealment heatmap on top."""
    scan = store.latest_scan(manifest_id)
    if scan is None:
        raise HTTPException(404, f"manifest {manifest_id!r} has no scan yet")
    path = scan.get("heatmap_path")
    if not path or not Path(path).is_file():
        raise HTTPException(404, f"scan {scan['scan_id']!r} of manifest {manifest_id!r} has no heatmap overlay")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "no-cache"})
