"""`riskengine serve`: the queue feed service (REST, server-sent events, officers' page)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import click

from riskengine.cli import main
from riskengine.cli._common import UserError, err_console

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@main.command("serve")
@click.option("--db", "db_url", default=None, metavar="URL",
              help="Store URL: sqlite:///riskengine.db (default) or postgresql+psycopg://user:pass@host/db. "
                   "Env: RISKENGINE_DB_URL.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--model-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Manifest risk model directory (default: models/manifest). Env: RISKENGINE_MODEL_DIR.")
@click.option("--scan-model-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Scan CNN directory (default: $RISKENGINE_SCAN_MODEL or models/scanvision).")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="ONNX Runtime provider for the scan CNN.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for uploaded scans and heatmap overlays (default: riskengine-data).")
@click.option("--scan-root", "scan_roots", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder from which POST /api/scans may read server-side paths; repeatable.")
@click.option("--scan-capacity", type=click.IntRange(0), default=None,
              help="Scans per port/terminal/shift (default 300).")
@click.option("--inspection-capacity", type=click.IntRange(0), default=None,
              help="Physical inspections per port/terminal/shift (default 40).")
@click.option("--exploration-share", type=click.FloatRange(0, 1), default=None,
              help="Share of each capacity selected at random (default 0.05).")
@click.option("--packs-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of partner indicator packs (*.yaml, each with its .sig) used next to the built-in "
                   "ones. Env: RISKENGINE_PACKS_DIR.")
@click.option("--allow-unsigned-packs", is_flag=True,
              help="Use packs of --packs-dir that have no signature (development only).")
@click.option("--max-json-bytes", type=click.IntRange(1), default=None,
              help="Largest JSON request body in bytes (default 8 MiB); larger ones get 413.")
@click.option("--max-upload-bytes", type=click.IntRange(1), default=None,
              help="Largest upload (CSV, multipart, image) in bytes (default 64 MiB); larger ones get 413.")
@click.option("--no-auth", is_flag=True,
              help="Serve WITHOUT authentication: every request acts as an administrator. Refused unless "
                   "--host is a loopback address; for development only.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True, help="Server log level.")
def serve(db_url: str | None, host: str, port: int, model_dir: Path | None, scan_model_dir: Path | None,
          provider: str, data_dir: Path | None, scan_roots: tuple[Path, ...], scan_capacity: int | None,
          inspection_capacity: int | None, exploration_share: float | None, packs_dir: Path | None,
          allow_unsigned_packs: bool, max_json_bytes: int | None, max_upload_bytes: int | None,
          no_auth: bool, log_level: str) -> None:
    """Run the queue feed service: REST API, live feed and the officers' page.

    Every route except /api/health, the page and the API docs needs an API token
    (`riskengine tokens create`).

    \b
    riskengine tokens create --name "officer ECT 3" --role officer   # prints the token once
    riskengine serve                                    # SQLite file riskengine.db, port 8000
    riskengine serve --db postgresql+psycopg://re:pw@db/riskengine --host 0.0.0.0
    Open http://127.0.0.1:8000/ for the queue, /docs for the API.
    """
    import uvicorn

    from riskengine.service import QueueSettings, Settings, create_app

    if no_auth and not is_loopback(host):
        raise UserError(f"--no-auth would serve customs data to anyone who can reach {host}:{port}; it is "
                        "allowed on a loopback address only (--host 127.0.0.1). Create tokens with "
                        "`riskengine tokens create` instead.", "UsageError")
    queue = {k: v for k, v in {"scan_capacity": scan_capacity, "inspection_capacity": inspection_capacity,
                               "exploration_share": exploration_share}.items() if v is not None}
    try:
        settings = Settings.from_env(
            db_url=db_url, model_dir=model_dir, scan_model_dir=scan_model_dir, provider=provider,
            data_dir=data_dir, scan_roots=list(scan_roots) or None,
            queue=QueueSettings(**queue) if queue else None, packs_dir=packs_dir,
            allow_unsigned_packs=allow_unsigned_packs or None, max_json_bytes=max_json_bytes,
            max_upload_bytes=max_upload_bytes, auth=False if no_auth else None)
        app = create_app(settings)
    except ConnectionError as exc:
        raise UserError(str(exc), "ConnectionError") from exc
    store = app.state.store
    if no_auth:
        log.warning("authentication is OFF (--no-auth) on %s:%d", host, port)
        err_console.print(f"[bold red]WARNING: authentication is OFF[/] (--no-auth): every request to "
                          f"http://{host}:{port}/ acts as an administrator named {settings.actor!r}. "
                          "Development only; never with real data.", highlight=False, soft_wrap=True)
    elif not any(t.active for t in store.list_tokens()):
        err_console.print(
            "[yellow]No active API token in this database[/]: every request except /api/health will get 401. "
            f"Create one (printed once) with:\n  riskengine tokens create --db "
            f"{store.url.render_as_string(hide_password=True)} --name NAME --role officer",
            highlight=False, soft_wrap=True)
    models = app.state.scorer, app.state.triager
    for name, model in zip(("manifest model", "scan model"), models, strict=True):
        if not getattr(model, "available", True):
            err_console.print(f"[yellow]warning[/]: {name} not found; requests that need it answer 503 "
                              "until it is there", highlight=False, soft_wrap=True)
    err_console.print(f"serving {app.state.store!r} on http://{host}:{port}/  (API docs: /docs)", highlight=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
