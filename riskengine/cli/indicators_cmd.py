"""`riskengine indicators`: list, check, sign and verify indicator packs, manage the partner
keys trusted to sign them, count their hits on manifests."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import click
import numpy as np
import pandas as pd
from rich.table import Table

from riskengine.cli import main
from riskengine.cli._common import ExitOnError, UserError, console, err_console, print_json

_TRUST_HELP = ("Trust store: folder of partner public keys (default: $RISKENGINE_TRUST_DIR, else "
               "~/.config/riskengine/trust).")


def _trust_option(f: Callable) -> Callable:
    return click.option("--trust", "trust_dir", type=click.Path(file_okay=False), default=None,
                        help=_TRUST_HELP)(f)


def _allow_unsigned_option(f: Callable) -> Callable:
    return click.option(
        "--allow-unsigned", is_flag=True,
        help="Load packs that have no .sig file, with a warning. For local development only; a "
             "pack whose signature does not verify is refused even so.")(f)


def _load(paths: tuple[str, ...], trust_dir: str | None = None,
          allow_unsigned: bool = False) -> list:
    """The packs at ``paths``, each verified against the trust store (default: the shipped
    pack, trusted like the code)."""
    from riskengine.indicators import default_packs, load_verified_packs
    from riskengine.indicators.signing import unsigned_packs_allowed

    if not paths:
        return default_packs()
    if unsigned_packs_allowed(allow_unsigned):
        err_console.print("[bold yellow]warning[/]: unsigned indicator packs are accepted "
                          "(--allow-unsigned or RISKENGINE_ALLOW_UNSIGNED_PACKS=1): for local "
                          "development only", highlight=False)
    return load_verified_packs(list(paths), trust_dir, allow_unsigned=allow_unsigned)


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f} %"


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN -> null, NumPy scalars -> Python."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _print_merge_notes(merged) -> None:
    for s in merged.superseded:
        what = f"indicator {s.indicator_id!r}" if s.indicator_id else "the whole pack"
        err_console.print(f"[yellow]note[/]: {what} of pack {s.pack_id!r} version {s.version} is "
                          f"replaced by version {s.by_version} from {s.by_pack_id!r}", highlight=False)
    for c in merged.conflicts:
        err_console.print(f"[bold yellow]conflict[/]: {c.message}", highlight=False)
    for r in merged.refused:
        err_console.print(f"[bold red]refused[/]: {r.message}", highlight=False)


@main.group("indicators", cls=ExitOnError)
def indicators() -> None:
    """Shared risk-indicator packs: list them, check them, count their hits on manifests.

    \b
    riskengine indicators list
    riskengine indicators check partner_pack.yaml
    riskengine indicators fields
    riskengine indicators hits --data manifests.parquet --pack partner_pack.yaml

    Packs given by path must carry a valid signature (PACK.sig) by a key in the trust store:

    \b
    riskengine indicators keygen --out keys --name nl-douane-2025
    riskengine indicators sign our_pack.yaml --key keys/nl-douane-2025.key --signer "Douane NL"
    riskengine indicators trust add be-douane.pub --name "Douane BE" --country BE --packs be-
    riskengine indicators verify partner_pack.yaml
    """


@indicators.command("list")
@click.argument("packs", nargs=-1, type=click.Path(exists=True))
@_trust_option
@_allow_unsigned_option
@click.option("--json", "json_out", is_flag=True, help="Print the merged indicators as JSON.")
def list_command(packs: tuple[str, ...], trust_dir: str | None, allow_unsigned: bool,
                 json_out: bool) -> None:
    """List the indicators in force in PACKS (files or folders; default: the shipped pack).

    Several packs are merged: the higher version of an indicator wins within the pack that owns
    it (the first pack given that defines it); another pack's redefinition is refused and shown,
    as are conflicts. Each pack is verified against the trust store first.
    """
    from riskengine.indicators import merge_packs

    merged = merge_packs(_load(packs, trust_dir, allow_unsigned))
    if json_out:
        print_json(_clean(merged.to_dict()))
        return
    table = Table(title=f"{len(merged)} indicator(s) from {len(merged.packs)} pack(s)")
    table.add_column("id", no_wrap=True)
    table.add_column("title", ratio=1)
    table.add_column("severity", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("pack", no_wrap=True)
    for ind in merged.indicators:
        table.add_row(ind.id, ind.title, str(ind.severity), str(ind.version), ind.pack_id)
    console.print(table)
    _print_merge_notes(merged)


@indicators.command("check")
@click.argument("packs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--strict", is_flag=True,
              help="Treat conflicts between the packs (same indicator and version, different "
                   "content) as errors.")
@_trust_option
@_allow_unsigned_option
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary.")
def check_command(packs: tuple[str, ...], strict: bool, trust_dir: str | None,
                  allow_unsigned: bool, json_out: bool) -> None:
    """Validate indicator PACKS: exit 0 and print OK with counts, or exit 1 with every problem.

    Each pack is verified against the trust store first; check a pack you are writing (not yet
    signed) with --allow-unsigned.
    """
    from riskengine.indicators import merge_packs

    loaded = _load(packs, trust_dir, allow_unsigned)
    merged = merge_packs(loaded, strict=strict)
    summary = []
    for p in loaded:
        fields = set().union(*(i.fields() for i in p.indicators))
        summary.append({
            "pack": p.id, "version": str(p.version), "source": p.source, "sha256": p.sha256,
            "tlp": p.metadata.tlp, "issuer": p.metadata.issuer.to_dict(),
            "indicators": len(p), "fields": sorted(fields),
            "severities": dict(Counter(i.severity.label for i in p.indicators)),
        })
    if json_out:
        print_json(_clean({"ok": True, "packs": summary,
                           "conflicts": [c.to_dict() for c in merged.conflicts],
                           "refused": [r.to_dict() for r in merged.refused],
                           "in_force": len(merged)}))
        return
    for s in summary:
        sev = ", ".join(f"{k} {v}" for k, v in sorted(s["severities"].items()))
        console.print(f"[bold green]OK[/] {s['source']}: pack {s['pack']!r} version {s['version']} "
                      f"(TLP:{s['tlp']}, {s['issuer']['agency']}, {s['issuer']['country']}): "
                      f"{s['indicators']} indicators on {len(s['fields'])} fields; {sev}",
                      highlight=False)
    if len(loaded) > 1:
        console.print(f"{len(merged)} indicator(s) in force after merging {len(loaded)} packs.")
    _print_merge_notes(merged)


@indicators.command("fields")
@click.option("--json", "json_out", is_flag=True, help="Print the fields as JSON.")
def fields_command(json_out: bool) -> None:
    """List the fields a condition can test (schema columns and derived fields) and the
    operators each kind of field takes."""
    from riskengine.indicators import FIELDS, OPERATORS_BY_KIND

    if json_out:
        print_json({"fields": [f.to_dict() for f in FIELDS.values()],
                    "operators": {k: list(v) for k, v in OPERATORS_BY_KIND.items()}})
        return
    table = Table(title=f"{len(FIELDS)} fields for indicator conditions")
    table.add_column("field", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("description")
    for f in FIELDS.values():
        table.add_row(f.name, f.kind, "derived" if f.derived else "manifest", f.description)
    console.print(table)
    for kind, ops in OPERATORS_BY_KIND.items():
        console.print(f"{kind} fields take: {', '.join(ops)}", highlight=False)



#: Share of rows at or above which `indicators hits` flags an indicator as uninformative.
UNINFORMATIVE_HIT_RATE = 0.9

@indicators.command("hits")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False),
              help="Manifest file (CSV or Parquet) in the native schema.")
@click.option("--pack", "packs", multiple=True, type=click.Path(exists=True),
              help="Indicator pack file or folder, verified against the trust store; repeat for "
                   "several (default: the shipped pack).")
@click.option("--history", "history", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Earlier manifests (CSV or Parquet): a consignee's first filing there counts "
                   "for 'first seen'. Without it, only earlier rows of --data count, so every "
                   "consignee looks new at the start of the file.")
@click.option("--strict", is_flag=True, help="Refuse packs that conflict with each other.")
@_trust_option
@_allow_unsigned_option
@click.option("--inspected-only", is_flag=True,
              help="Compute the illicit/licit rates on inspected rows only (inspected == 1).")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object instead of tables.")
def hits_command(data: str, packs: tuple[str, ...], history: str | None, strict: bool,
                 trust_dir: str | None, allow_unsigned: bool, inspected_only: bool,
                 json_out: bool) -> None:
    """Count indicator hits on the valid rows of a manifest file.

    Per indicator: hits and hit rate; when the file has an `is_illicit` column, also the hit rate
    on illicit and licit rows and the precision (share of hits that are illicit), plus the
    coverage of "any indicator". Rows that fail validation are not evaluated (counted as
    quarantined; `riskengine validate` lists the reasons).
    """
    from riskengine.indicators import evaluate, merge_packs
    from riskengine.schema import read_manifests, validate

    merged = merge_packs(_load(packs, trust_dir, allow_unsigned), strict=strict)
    raw = read_manifests(data)
    result = validate(raw)
    valid = result.valid
    if len(raw) and not len(valid):
        raise UserError(f"none of the {len(raw):,} rows of {data} is valid; run "
                        f"`riskengine validate --data {data}` to see why", "ValueError")
    first_seen = None
    if history is not None:
        from riskengine.derived import first_seen_from_history

        first_seen = first_seen_from_history(read_manifests(history, columns=["consignee", "filed_at"]))
    hits = evaluate(merged, valid, first_seen=first_seen)
    truth = None
    if "is_illicit" in valid.columns:
        truth = pd.to_numeric(valid["is_illicit"], errors="coerce").astype("float64")
        if inspected_only:
            if "inspected" not in valid.columns:
                raise UserError("--inspected-only needs an 'inspected' column in the data",
                                "ValueError")
            truth = truth.where(valid["inspected"].astype("float64") == 1)
    elif inspected_only:
        raise UserError("--inspected-only needs an 'is_illicit' column in the data", "ValueError")
    summary = hits.summary(truth)
    coverage = hits.coverage(truth)
    # An indicator that fires on (nearly) every row tells no container from another.
    summary["uninformative"] = summary["hit_rate"].fillna(0) >= UNINFORMATIVE_HIT_RATE
    uninformative = summary.index[summary["uninformative"]].tolist()
    if json_out:
        rows = summary.reset_index().to_dict(orient="records")
        print_json(_clean({
            "data": data, "rows": len(raw), "valid": len(valid), "quarantined": result.n_rejected,
            "history_consignees": None if first_seen is None else len(first_seen),
            "packs": [{"id": m.id, "version": str(m.version), "tlp": m.tlp} for m in merged.packs],
            "conflicts": [c.to_dict() for c in merged.conflicts],
            "labels": None if truth is None else ("is_illicit (inspected rows)" if inspected_only
                                                  else "is_illicit"),
            "indicators": rows, "any": coverage, "uninformative": uninformative,
        }))
        return
    console.print(f"{data}: {len(raw):,} rows, {len(valid):,} evaluated, "
                  f"{result.n_rejected:,} quarantined (invalid, not evaluated)", highlight=False)
    if first_seen is not None:
        console.print(f"history {history}: {len(first_seen):,} consignees seen before",
                      highlight=False)
    table = Table(title=f"Indicator hits ({len(hits.indicators)} indicators)")
    table.add_column("id", no_wrap=True)
    table.add_column("sev.", justify="right")
    table.add_column("hits", justify="right")
    table.add_column("rate", justify="right")
    if truth is not None:
        table.add_column("illicit", justify="right")
        table.add_column("licit", justify="right")
        table.add_column("precision", justify="right")
    for ind_id, r in summary.iterrows():
        cells = [ind_id, f"{r['severity_score']:g}", f"{int(r['hits']):,}", _pct(r["hit_rate"])]
        if truth is not None:
            cells += [_pct(r["illicit_hit_rate"]), _pct(r["licit_hit_rate"]), _pct(r["precision"])]
        table.add_row(*cells)
    console.print(table)
    if truth is not None:
        console.print("rate: share of rows hit; illicit/licit: share of illicit/licit rows hit; "
                      "precision: share of hits that are illicit", highlight=False)
    line = f"any indicator: {coverage['hits']:,} rows ({_pct(coverage['hit_rate'])})"
    if truth is not None:
        line += (f"; illicit rows caught {_pct(coverage['illicit_hit_rate'])} of "
                 f"{coverage['illicit_rows']:,}; licit rows flagged "
                 f"{_pct(coverage['licit_hit_rate'])}; precision {_pct(coverage['precision'])}")
    console.print(line, highlight=False)
    for ind_id in uninformative:
        console.print(
            f"[bold yellow]uninformative[/]: {ind_id} fires on {_pct(summary.loc[ind_id, 'hit_rate'])} "
            "of the rows, so it tells no container from another"
            + ("" if history is not None else "; if it needs party history (first seen, earlier "
               "shipments), pass earlier manifests with --history"), highlight=False)
    _print_merge_notes(merged)


# --------------------------------------------------------------------------------------------
# Signing and trust
# --------------------------------------------------------------------------------------------

def _passphrase(confirm: bool) -> str:
    from riskengine.indicators.signing import PASSPHRASE_ENV

    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    return click.prompt("Passphrase for the private key", hide_input=True,
                        confirmation_prompt=confirm, err=True)


@indicators.command("keygen")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write NAME.key (private, mode 0600) and NAME.pub (public) to; "
                   "created if missing.")
@click.option("--name", required=True,
              help="File name of the key pair without extension, e.g. nl-douane-2025.")
@click.option("--encrypt", is_flag=True,
              help="Encrypt the private key with a passphrase, taken from "
                   "$RISKENGINE_KEY_PASSPHRASE or asked for.")
@click.option("--json", "json_out", is_flag=True, help="Print the file paths and key id as JSON.")
def keygen_command(out_dir: str, name: str, encrypt: bool, json_out: bool) -> None:
    """Create an Ed25519 key pair for signing the packs this service issues.

    Existing files are never overwritten. Keep NAME.key secret; give NAME.pub and its key id
    to partners out of band, so they can check the key id they add to their trust store.
    """
    from riskengine.indicators.signing import generate_keypair

    passphrase = _passphrase(confirm=True) if encrypt else None
    try:
        pair = generate_keypair(out_dir, name, passphrase=passphrase)
    except FileExistsError as exc:
        raise UserError(str(exc), "FileExistsError") from exc
    if json_out:
        print_json({"private_key": str(pair.private_key), "public_key": str(pair.public_key),
                    "key_id": pair.key_id, "encrypted": pair.encrypted})
        return
    enc = "passphrase-encrypted" if pair.encrypted else "not encrypted"
    console.print(f"private key {pair.private_key} (mode 0600, {enc}): keep it secret", highlight=False)
    console.print(f"public key  {pair.public_key}: give it to partners", highlight=False)
    console.print(f"key id      {pair.key_id}: tell partners over another channel so they can "
                  "check it", highlight=False)


@indicators.command("sign")
@click.argument("pack", type=click.Path(exists=True, dir_okay=False))
@click.option("--key", "key_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Private key (NAME.key from `riskengine indicators keygen`). An encrypted key "
                   "takes its passphrase from $RISKENGINE_KEY_PASSPHRASE or asks for it.")
@click.option("--signer", required=True,
              help="Name of the signing service, recorded in the signature, e.g. 'Douane NL'.")
@click.option("--force", is_flag=True, help="Replace an existing PACK.sig.")
@click.option("--json", "json_out", is_flag=True, help="Print the signature as JSON.")
def sign_command(pack: str, key_file: str, signer: str, force: bool, json_out: bool) -> None:
    """Sign PACK: check that it is a valid pack, then write the detached signature PACK.sig.

    The signature covers the exact bytes of the file: any later change, even one byte, makes
    verification fail. Send PACK and PACK.sig together.
    """
    from riskengine.indicators.signing import (
        private_key_is_encrypted,
        sign_pack_file,
        signature_path,
    )

    passphrase = _passphrase(confirm=False) if private_key_is_encrypted(key_file) else None
    try:
        sig = sign_pack_file(pack, key_file, signer=signer, passphrase=passphrase, overwrite=force)
    except FileExistsError as exc:
        raise UserError(str(exc), "FileExistsError") from exc
    if json_out:
        print_json({"pack": pack, "signature_file": str(signature_path(pack)), **sig.to_dict()})
        return
    console.print(f"[bold green]signed[/] {pack} (pack {sig.pack_id!r}) as {sig.signer!r}: "
                  f"{signature_path(pack)}", highlight=False)
    console.print(f"key id {sig.key_id}, sha256 {sig.sha256}", highlight=False)


@indicators.command("verify")
@click.argument("packs", nargs=-1, required=True, type=click.Path(exists=True))
@_trust_option
@click.option("--allow-downgrade", is_flag=True,
              help="Accept a pack older than the highest version of its id verified before, and "
                   "lower the trust store's version floor to it (written to the trust store's "
                   "audit.jsonl). For a deliberate rollback only.")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object instead of text.")
def verify_command(packs: tuple[str, ...], trust_dir: str | None, allow_downgrade: bool,
                   json_out: bool) -> None:
    """Verify the signature of each pack in PACKS (files or folders) against the trust store.

    Prints the signer, partner, key id and SHA-256 of each pack; exits 1 with
    `PackSignatureError: ...` for every pack that is unsigned, signed by an untrusted or expired
    key, outside the key's allowed packs, changed after signing, or older than a version of
    the same pack verified before (a rollback; see --allow-downgrade). A pack that verifies
    raises the version floor of its id in the trust store.
    """
    from riskengine.indicators import PackError, TrustStore, pack_files
    from riskengine.indicators.signing import is_builtin_pack, verify_pack_file

    store = TrustStore(trust_dir)
    results: list[dict] = []
    for f in pack_files(list(packs)):
        if is_builtin_pack(f):
            results.append({"path": str(f), "ok": True, "builtin": True})
            continue
        try:
            results.append({"ok": True, **verify_pack_file(f, store, allow_downgrade=allow_downgrade).to_dict()})
        except PackError as exc:
            results.append({"path": str(f), "ok": False, "error": type(exc).__name__,
                            "reason": getattr(exc, "reason", "invalid"), "message": str(exc)})
    failed = [r for r in results if not r["ok"]]
    if json_out:
        print_json({"ok": not failed, "trust_dir": str(store.path), "packs": results})
    else:
        for r in results:
            if not r["ok"]:
                err_console.print(f"[bold red]{r['error']}[/]: {r['message']}", highlight=False)
            elif r.get("builtin"):
                console.print(f"[bold green]OK[/] {r['path']}: shipped with riskengine, trusted "
                              "like its code (no signature needed)", highlight=False)
            else:
                console.print(
                    f"[bold green]OK[/] {r['path']}: pack {r['pack_id']!r} signed by "
                    f"{r['signer']!r} at {r['signed_at']}, partner {r['partner']}"
                    f"{' (' + r['country'] + ')' if r['country'] else ''}, key {r['key_id']}"
                    f"{', key expires ' + r['key_expires'] if r['key_expires'] else ''}; "
                    f"sha256 {r['sha256']}", highlight=False)
    if failed:
        raise click.exceptions.Exit(1)


@indicators.group("trust", cls=ExitOnError)
def trust_group() -> None:
    """The trust store: partner public keys trusted to sign indicator packs.

    \b
    riskengine indicators trust add be-douane.pub --name "Douane BE" --country BE --packs be-
    riskengine indicators trust list
    riskengine indicators trust remove 1a2b3c4d5e6f7a8b

    Get each partner's public key and its key id out of band and check that the key id printed
    by `trust add` matches before relying on it.
    """


@trust_group.command("add")
@click.argument("pubfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", "partner", required=True, help="The partner's name, e.g. 'Douane BE'.")
@click.option("--country", default=None, help="The partner's country (ISO 3166 alpha-2, e.g. BE).")
@click.option("--expires", default=None,
              help="Last day (UTC, inclusive) the key is trusted, e.g. 2026-12-31. Default: no expiry.")
@click.option("--packs", "prefixes", multiple=True,
              help="Allowed pack id prefix, e.g. be-douane-; repeat for several. Default: any pack.")
@_trust_option
@click.option("--json", "json_out", is_flag=True, help="Print the added key as JSON.")
def trust_add_command(pubfile: str, partner: str, country: str | None, expires: str | None,
                      prefixes: tuple[str, ...], trust_dir: str | None, json_out: bool) -> None:
    """Trust the Ed25519 public key PUBFILE of a partner (copied into the trust store)."""
    from riskengine.indicators import TrustStore

    store = TrustStore(trust_dir)
    key = store.add(pubfile, partner=partner, country=country, expires=expires, packs=prefixes)
    if json_out:
        print_json(key.to_dict())
        return
    console.print(f"[bold green]trusted[/] key {key.key_id} of {key.partner} "
                  f"({key.file}); check this key id with the partner", highlight=False)


@trust_group.command("list")
@_trust_option
@click.option("--json", "json_out", is_flag=True, help="Print the keys as JSON.")
def trust_list_command(trust_dir: str | None, json_out: bool) -> None:
    """List the trusted partner keys, with their expiry and allowed packs."""
    from riskengine.indicators import TrustStore

    store = TrustStore(trust_dir)
    keys = store.keys()
    if json_out:
        print_json({"trust_dir": str(store.path),
                    "keys": [{**k.to_dict(), "expired": k.is_expired()} for k in keys]})
        return
    table = Table(title=f"{len(keys)} trusted key(s) in {store.path}")
    for col in ("key id", "partner", "country", "expires", "packs", "file"):
        table.add_column(col, no_wrap=col in ("key id", "expires"))
    for k in keys:
        exp = "-" if k.expires is None else k.expires.isoformat()
        table.add_row(k.key_id, k.partner, k.country or "-",
                      f"[red]{exp} (expired)[/]" if k.is_expired() else exp,
                      ", ".join(k.packs) or "any", k.file.name)
    console.print(table)


@trust_group.command("remove")
@click.argument("key_id")
@_trust_option
def trust_remove_command(key_id: str, trust_dir: str | None) -> None:
    """Stop trusting the key KEY_ID: packs signed with it no longer load."""
    from riskengine.indicators import TrustStore

    gone = TrustStore(trust_dir).remove(key_id)
    console.print(f"removed key {gone.key_id} of {gone.partner}", highlight=False)
