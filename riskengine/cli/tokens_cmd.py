"""`riskengine tokens create|list|revoke`: API tokens of the queue feed service.

    riskengine tokens create --db sqlite:///riskengine.db --name "officer ECT 3" --role officer
    riskengine tokens create --name partner-desk --role analyst --clearance RED --expires 30d --json
    riskengine tokens list
    riskengine tokens revoke 3f9c2a4b1d7e8f60
"""

from __future__ import annotations

import getpass
import os
import re
from datetime import date, datetime, timedelta, timezone
from typing import Any

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from riskengine.cli import main
from riskengine.cli._common import ExitOnError, UserError, console, err_console, print_json

_DB_HELP = ("Store URL: sqlite:///riskengine.db (default) or postgresql+psycopg://user:pass@host/db "
            "(env RISKENGINE_DB_URL).")
_DURATION = re.compile(r"(\d+)\s*([hdw])", re.IGNORECASE)
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_expiry(text: str, now: datetime | None = None) -> datetime:
    """``--expires``: a duration (``12h``, ``30d``, ``8w``), a date (``2026-12-31``: the token
    expires at 00:00 UTC that day) or an ISO date-time (UTC when it has no zone). Returns naive UTC.

    >>> parse_expiry("2d", datetime(2026, 1, 1))
    datetime.datetime(2026, 1, 3, 0, 0)
    """
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    value = text.strip()
    m = _DURATION.fullmatch(value)
    if m:
        amount, unit = int(m.group(1)), m.group(2).lower()
        if amount < 1:
            raise ValueError(f"--expires {text!r}: a duration must be at least 1{unit}")
        return now + timedelta(**{_UNITS[unit]: amount})
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            return datetime.combine(date.fromisoformat(value), datetime.min.time())
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--expires {text!r} is neither a duration (12h, 30d, 8w), a date (2026-12-31) nor "
                         "an ISO date-time (2026-12-31T18:00:00Z)") from None
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    return when


def _open_store(db_url: str | None) -> Any:
    from riskengine.store import DEFAULT_URL, Store

    url = db_url or os.environ.get("RISKENGINE_DB_URL") or DEFAULT_URL
    try:
        return Store(url)
    except ConnectionError as exc:
        raise UserError(str(exc), "ConnectionError") from exc


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        user = f"uid {os.getuid()}" if hasattr(os, "getuid") else "unknown"
    return f"cli:{user}"


def _when(value: datetime | None) -> str:
    return "–" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def _short(value: datetime | None, none: str = "–") -> str:
    return none if value is None else f"{value:%Y-%m-%d %H:%M}"


def _record(info: Any) -> dict[str, Any]:
    out = info.to_dict()
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in out.items()}


@main.group("tokens", cls=ExitOnError)
def tokens() -> None:
    """API tokens of the service (`riskengine serve`): create, list, revoke.

    A token has a name (the actor in the audit trail), a role (officer < analyst < admin) and
    a TLP clearance for indicator packs. The store keeps only a hash of the secret: the token
    text is printed once, at creation.
    """


@tokens.command("create")
@click.option("--db", "db_url", default=None, metavar="URL", help=_DB_HELP)
@click.option("--name", required=True, help="Who uses the token (a person or a system); the actor in the audit.")
@click.option("--role", required=True, type=click.Choice(["officer", "analyst", "admin"]),
              help="officer: queue, feed, outcomes; analyst: + ingest, scans, indicator packs, rescoring; "
                   "admin: + tokens and audit.")
@click.option("--clearance", type=click.Choice(["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"],
                                               case_sensitive=False), default=None,
              help="Highest TLP marking of indicator packs the token may read (default: officer GREEN, "
                   "analyst and admin AMBER; RED only when given here).")
@click.option("--expires", default=None, metavar="WHEN",
              help="Expiry: a duration (12h, 30d, 8w), a date (2026-12-31, at 00:00 UTC) or an ISO "
                   "date-time (UTC when no zone). Default: no expiry.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON object (with the token) instead of text.")
def create(db_url: str | None, name: str, role: str, clearance: str | None, expires: str | None,
           json_out: bool) -> None:
    """Create a token and print it once (only its hash is stored)."""
    expires_at = parse_expiry(expires) if expires else None
    with _open_store(db_url) as store:
        info, text = store.create_token(name, role, clearance=clearance.upper() if clearance else None,
                                        expires_at=expires_at, actor=_actor())
    if json_out:
        print_json({**_record(info), "token": text})
        return
    console.print(f"Created token [bold]{info.token_id}[/] for {info.name!r}: role {info.role}, clearance "
                  f"{info.clearance}, expires {_when(info.expires_at)}.", highlight=False, soft_wrap=True)
    err_console.print("Store it now: it is shown only this once.", style="yellow")
    console.print(text, highlight=False, soft_wrap=True, markup=False)


@tokens.command("list")
@click.option("--db", "db_url", default=None, metavar="URL", help=_DB_HELP)
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object per token (never the secrets).")
def list_command(db_url: str | None, json_out: bool) -> None:
    """List every token: active, revoked and expired (never the secrets)."""
    with _open_store(db_url) as store:
        infos = store.list_tokens()
    if json_out:
        for info in infos:
            print_json(_record(info))
        return
    if not infos:
        console.print("No tokens yet: riskengine tokens create --name NAME --role officer")
        return
    # Six columns, the creation under the name and the last use under the expiry: readable at
    # 80 columns (times in UTC, said once in the title).
    table = Table(title=f"API tokens ({sum(i.active for i in infos)} active of {len(infos)}; times UTC)",
                  box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), pad_edge=False,
                  title_justify="left")
    table.add_column("id", no_wrap=True)
    table.add_column("name\ncreated by")
    table.add_column("role", no_wrap=True)
    table.add_column("TLP", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("expires\nlast used", no_wrap=True)
    for i in infos:
        state = i.state()
        table.add_row(i.token_id,
                      f"{escape(i.name)}\n[dim]{escape(i.created_by)} {i.created_at:%Y-%m-%d}[/]",
                      i.role, i.clearance, state if state == "active" else f"[red]{state}[/]",
                      f"{_short(i.expires_at, 'never')}\n[dim]{_short(i.last_used_at, 'not used')}[/]")
    console.print(table)


@tokens.command("revoke")
@click.argument("token_id")
@click.option("--db", "db_url", default=None, metavar="URL", help=_DB_HELP)
@click.option("--json", "json_out", is_flag=True, help="Print the revoked token as JSON.")
def revoke(token_id: str, db_url: str | None, json_out: bool) -> None:
    """Revoke the token TOKEN_ID (the id `tokens list` shows); requests with it get 401 from now on."""
    with _open_store(db_url) as store:
        info = store.revoke_token(token_id, _actor())
    if json_out:
        print_json(_record(info))
        return
    console.print(f"Revoked token {info.token_id} ({info.name!r}, {info.role}) at {_when(info.revoked_at)}.",
                  highlight=False, soft_wrap=True)
