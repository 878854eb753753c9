"""`riskengine indicators`: list and check indicator packs, count their hits on manifests."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import click
import numpy as np
import pandas as pd
from rich.table import Table

from riskengine.cli import main
from riskengine.cli._common import ExitOnError, UserError, console, err_console, print_json


def _load(paths: tuple[str, ...]) -> list:
    from riskengine.indicators import default_packs, load_packs

    return load_packs(list(paths)) if paths else default_packs()


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


@main.group("indicators", cls=ExitOnError)
def indicators() -> None:
    """Shared risk-indicator packs: list them, check them, count their hits on manifests.

    \b
    riskengine indicators list
    riskengine indicators check partner_pack.yaml
    riskengine indicators fields
    riskengine indicators hits --data manifests.parquet --pack partner_pack.yaml
    """


@indicators.command("list")
@click.argument("packs", nargs=-1, type=click.Path(exists=True))
@click.option("--json", "json_out", is_flag=True, help="Print the merged indicators as JSON.")
def list_command(packs: tuple[str, ...], json_out: bool) -> None:
    """List the indicators in force in PACKS (files or folders; default: the shipped pack).

    Several packs are merged: the higher version of an indicator wins, and conflicts are shown.
    """
    from riskengine.indicators import merge_packs

    merged = merge_packs(_load(packs))
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
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary.")
def check_command(packs: tuple[str, ...], strict: bool, json_out: bool) -> None:
    """Validate indicator PACKS: exit 0 and print OK with counts, or exit 1 with every problem."""
    from riskengine.indicators import merge_packs

    loaded = _load(packs)
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


@indicators.command("hits")
@click.option("--data", "data", required=True, type=click.Path(dir_okay=False),
              help="Manifest file (CSV or Parquet) in the native schema.")
@click.option("--pack", "packs", multiple=True, type=click.Path(exists=True),
              help="Indicator pack file or folder; repeat for several (default: the shipped pack).")
@click.option("--history", "history", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Earlier manifests (CSV or Parquet): a consignee's first filing there counts "
                   "for 'first seen'. Without it, only earlier rows of --data count, so every "
                   "consignee looks new at the start of the file.")
@click.option("--strict", is_flag=True, help="Refuse packs that conflict with each other.")
@click.option("--inspected-only", is_flag=True,
              help="Compute the illicit/licit rates on inspected rows only (inspected == 1).")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object instead of tables.")
def hits_command(data: str, packs: tuple[str, ...], history: str | None, strict: bool,
                 inspected_only: bool, json_out: bool) -> None:
    """Count indicator hits on the valid rows of a manifest file.

    Per indicator: hits and hit rate; when the file has an `is_illicit` column, also the hit rate
    on illicit and licit rows and the precision (share of hits that are illicit), plus the
    coverage of "any indicator". Rows that fail validation are not evaluated (counted as
    quarantined; `riskengine validate` lists the reasons).
    """
    from riskengine.indicators import evaluate, merge_packs
    from riskengine.schema import read_manifests, validate

    merged = merge_packs(_load(packs), strict=strict)
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
    if json_out:
        rows = summary.reset_index().to_dict(orient="records")
        print_json(_clean({
            "data": data, "rows": len(raw), "valid": len(valid), "quarantined": result.n_rejected,
            "history_consignees": None if first_seen is None else len(first_seen),
            "packs": [{"id": m.id, "version": str(m.version), "tlp": m.tlp} for m in merged.packs],
            "conflicts": [c.to_dict() for c in merged.conflicts],
            "labels": None if truth is None else ("is_illicit (inspected rows)" if inspected_only
                                                  else "is_illicit"),
            "indicators": rows, "any": coverage,
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
    _print_merge_notes(merged)
