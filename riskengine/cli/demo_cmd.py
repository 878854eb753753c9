"""`riskengine demo`: the main job on embedded defaults (what `make demo` runs)."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import click
import pandas as pd
from rich.table import Table

from riskengine.cli import main
from riskengine.cli._common import console, print_json


@main.command("demo")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo_out", show_default=True,
              help="Output folder: SQLite store, scans, heatmap overlays, report.html, quarantine.csv.")
@click.option("--db", "db_url", default=None,
              help="Store URL (default: a fresh SQLite file in the output folder).")
@click.option("--model-dir", type=click.Path(file_okay=False), default=None,
              help="Manifest model directory (default: the shipped models/manifest).")
@click.option("--scan-model-dir", type=click.Path(file_okay=False), default=None,
              help="Scan model directory (default: the shipped models/scanvision).")
@click.option("--scan-capacity", default=12, show_default=True, help="Scans per terminal and shift.")
@click.option("--inspection-capacity", default=6, show_default=True,
              help="Physical inspections per terminal and shift.")
@click.option("--exploration-share", default=0.05, show_default=True,
              help="Share of each capacity given to random selections.")
@click.option("--provider", type=click.Choice(["cpu", "cuda", "tensorrt"]), default="cpu", show_default=True,
              help="ONNX Runtime provider for the scan model.")
@click.option("--max-scans", type=int, default=None, help="Render at most this many scans (default: the whole scan lane).")
@click.option("--top", default=15, show_default=True, help="Rows of the queue to print.")
@click.option("--serve", is_flag=True, help="Serve the officer web page on the demo's store afterwards.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Host for --serve.")
@click.option("--port", default=8000, show_default=True, help="Port for --serve.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary instead of tables.")
def demo_command(out_dir: str, db_url: str | None, model_dir: str | None, scan_model_dir: str | None,
                 scan_capacity: int, inspection_capacity: int, exploration_share: float, provider: str,
                 max_scans: int | None, top: int, serve: bool, host: str, port: int, json_out: bool) -> None:
    """Generate a day of arrivals at NLRTM, score, scan, fuse and build the inspection queues.

    Uses the shipped models and a SQLite store in the output folder; finishes in a few minutes
    on two cores and writes an HTML report. `--serve` then serves the officer web page.
    """
    from riskengine.demo import DemoConfig, run_demo

    cfg = DemoConfig(out_dir=Path(out_dir), db_url=db_url, scan_capacity=scan_capacity,
                     inspection_capacity=inspection_capacity, exploration_share=exploration_share,
                     provider=provider, max_scans=max_scans)
    if model_dir:
        cfg.model_dir = Path(model_dir)
    if scan_model_dir:
        cfg.scan_model_dir = Path(scan_model_dir)
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if not json_out:
            console.print(f"[dim]{time.perf_counter() - t0:6.1f}s[/] {msg}", highlight=False)

    res = run_demo(cfg, progress=say)
    if json_out:
        print_json({**res.summary(), "total_s": round(time.perf_counter() - t0, 1)})
    else:
        _print_tables(res, top)
        console.print(f"Report: [bold]{res.report}[/]   store: {res.db_url}   total {time.perf_counter() - t0:.0f} s")
    if serve:
        from datetime import datetime, timedelta, timezone

        import uvicorn

        from riskengine.service.main import create_app
        from riskengine.service.settings import QueueSettings, Settings
        from riskengine.store import Store

        settings = Settings(db_url=res.db_url, model_dir=cfg.model_dir, scan_model_dir=cfg.scan_model_dir,
                            data_dir=res.out_dir, scan_roots=[res.out_dir / "scans"], provider=provider,
                            queue=QueueSettings(scan_capacity=scan_capacity, inspection_capacity=inspection_capacity,
                                                exploration_share=exploration_share))
        # The page needs a token like any client: a short-lived officer token for this demo store.
        expires = datetime.now(timezone.utc) + timedelta(hours=12)
        with Store(res.db_url) as store:
            info, token = store.create_token("demo officer", "officer", expires_at=expires, actor="riskengine demo")
        console.print(f"Serving the officer page on http://{host}:{port}/?port={res.port} (Ctrl-C to stop)",
                      highlight=False, soft_wrap=True)
        console.print(f"Officer token (expires {info.expires_at:%Y-%m-%d %H:%M} UTC; paste it into the page's "
                      "token field):", highlight=False, soft_wrap=True)
        console.print(token, highlight=False, soft_wrap=True, markup=False)
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")


def _print_tables(res, top: int) -> None:
    lanes = res.lane_counts.pivot_table(index=["terminal", "shift"], columns="lane", values="containers",
                                        aggfunc="sum", fill_value=0)
    order = [c for c in ("hold", "red", "inspect", "scan", "cleared", "green") if c in lanes.columns]
    t = Table(title=f"Lanes per terminal and shift — {res.port} {res.day}")
    t.add_column("terminal")
    t.add_column("shift")
    for c in order:
        t.add_column(c, justify="right")
    for (term, shift), row in lanes[order].iterrows():
        t.add_row(term, shift, *[f"{int(row[c]):,}" for c in order])
    console.print(t)

    console.print(f"[bold]Top of the queue[/] ({len(res.queue):,} containers)")
    width = max(60, min(console.width, 100))
    for i, r in enumerate(res.queue.head(top).to_dict("records")):
        fused = r.get("fused_score")
        score = f"risk {float(r['risk_score']):.3f}" + (
            "" if fused is None or fused != fused else f" → fused {float(fused):.3f}")
        console.print(f"{i + 1:>3}. [bold]{_text(r.get('container_id')) or r['manifest_id']}[/]  "
                      f"[bold]{r['lane']}[/] ({r.get('selection') or ''})  {score}", highlight=False)
        goods = " · ".join(p for p in (f"{r['terminal']} {r['shift']}", _text(r.get("goods_description")),
                                        f"HS {_text(r.get('hs_code'))}" if _text(r.get("hs_code")) else "",
                                        f"from {_text(r.get('origin_country'))}" if _text(r.get("origin_country")) else "",
                                        f"manifest {r['manifest_id']}") if p)
        for line in (goods, str(r.get("why") or "")[:300]):
            console.print(textwrap.fill(line, width=width, initial_indent="     ", subsequent_indent="     ",
                                        break_on_hyphens=False), highlight=False, markup=False, soft_wrap=True)
    g = res.truth
    console.print(
        f"Ground truth (generated, hidden from the engine): {g['illicit']} illicit containers; "
        f"{g['physical_inspections']} physical inspections found {g['illicit_found']} "
        f"(hit rate {g['hit_rate']:.1%}; random inspections would find {g['random_inspection_expected_found']}, "
        f"lift {g['lift_over_random']}×); {res.rejected} manifests quarantined"
        + (f" → {res.quarantine}" if res.quarantine else ""), highlight=False)


def _text(v) -> str:
    return "" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)
