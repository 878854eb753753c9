"""The main job end to end on a small day (shipped models, a handful of scans)."""

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from riskengine.cli import main
from riskengine.demo import MODELS_DIR, DemoConfig, arrival_shift, run_demo

needs_models = pytest.mark.skipif(
    not (MODELS_DIR / "manifest" / "model.txt").is_file() or not (MODELS_DIR / "scanvision" / "model.onnx").is_file(),
    reason="shipped models missing (run `make models`)",
)


def test_demo_help():
    res = CliRunner().invoke(main, ["demo", "--help"])
    assert res.exit_code == 0
    assert "--serve" in res.output and "--scan-capacity" in res.output


def test_missing_model_is_a_clear_error(tmp_path):
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "o"), "--model-dir", str(tmp_path / "none")])
    assert res.exit_code == 1
    assert "FileNotFoundError: the manifest model is missing" in res.output
    assert "make models" in res.output


def test_shifts_follow_the_vessel():
    day = pd.DataFrame({
        "vessel_imo": ["9074729", "9074729", "9321483"], "voyage": ["1N", "1N", "7S"],
        "arrival_date": pd.to_datetime(["2027-01-31"] * 3),
    })
    s = arrival_shift(day)
    assert s.iloc[0] == s.iloc[1]
    assert s.str.match(r"2027-01-3[01]/S[123]").all()


@pytest.mark.slow
@needs_models
def test_demo_runs_end_to_end_on_a_small_day(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out, as `riskengine demo` defaults to
    cfg = DemoConfig(out_dir=Path("demo"), scan_capacity=2, inspection_capacity=2, max_scans=6)
    res = run_demo(cfg)
    # nothing lost: every received manifest is either stored (valid) or quarantined
    assert res.valid + res.rejected == res.received > 4000
    assert res.rejected > 0 and res.quarantine is not None and res.quarantine.is_file()
    assert len(pd.read_csv(res.quarantine)) == res.rejected
    assert len(res.queue) == res.valid
    lanes = res.queue["lane"].value_counts()
    # capacities respected in every terminal/shift group
    per_group = res.queue.groupby(["terminal", "shift"])["lane"].value_counts().unstack(fill_value=0)
    physical = sum(per_group.get(k, 0) for k in ("hold", "red", "inspect"))
    assert (physical <= 2).all()
    assert res.scans == 6 and lanes.get("inspect", 0) + lanes.get("cleared", 0) == 6
    assert res.report.is_file() and "Top of the queue" in res.report.read_text()
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["received"] == res.received
    assert Path(summary["db_url"].removeprefix("sqlite:///")).is_file()
    # the scanned containers carry fused reasons an officer reads
    scanned = res.queue[res.queue["lane"].isin(["inspect", "cleared"])]
    assert scanned["scan_reasons"].str.contains("scan concealment score").all()
    assert scanned["why"].str.contains("scan concealment score").all()

    # 1. every heatmap in the report is there and decodes
    from html.parser import HTMLParser

    from PIL import Image

    class Images(HTMLParser):
        srcs: list = []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "img" and "heatmap" in (a.get("alt") or ""):
                self.srcs.append(a["src"])

    page = res.report.read_text()
    parser = Images()
    parser.feed(page)
    assert len(parser.srcs) == res.scans == 6
    assert "(no overlay)" not in page
    for src in parser.srcs:
        path = res.report.parent / src
        assert path.is_file(), src
        with Image.open(path) as im:
            im.load()
            assert im.width > 100 and im.height > 20

    # the store holds absolute scan and overlay paths: a server started elsewhere finds them
    stored = res.queue["heatmap_path"].dropna()
    assert len(stored) == 6 and stored.map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()

    # 3. reasons said once (mandatory rule, indicator title and model reason are one reason)
    def core(part):
        return re.sub(r"^(mandatory: |indicator [\w.-]+: )", "", part.strip(), flags=re.I).strip(" .").lower()

    for col in ("why", "decision_reasons", "reasons"):
        for text in res.queue[col].dropna():
            cores = [core(p) for p in text.split(" | ") if p.strip()]
            assert len(cores) == len(set(cores)), text
    # a mandatory selection names its rule once, not "mandatory rule" and the rule again
    why = res.queue["why"]
    assert not (why.str.contains("mandatory rule", regex=False) & why.str.contains("mandatory: ", regex=False)).any()

    # 4. indicators evaluated with the year of history: none fires on most containers
    hits = res.indicator_hits.set_index("indicator")
    assert hits["hit_rate"].max() <= 0.5, hits["hit_rate"].idxmax()
    assert hits.loc["new_consignee", "hit_rate"] < 0.1

    # 5. officers see the container number and the goods, in the report and the CLI
    top = res.queue.head(15)
    for r in top.head(5).itertuples():
        assert r.container_id in page and r.goods_description in page
    from rich.console import Console

    import riskengine.cli.demo_cmd as demo_cmd

    buf = io.StringIO()
    real = demo_cmd.console
    demo_cmd.console = Console(file=buf, width=80, color_system=None)
    try:
        demo_cmd._print_tables(res, 15)
    finally:
        demo_cmd.console = real
    text = buf.getvalue()
    flat = " ".join(text.split())  # the goods line may wrap
    for r in top.itertuples():
        assert r.container_id in text and " ".join(r.goods_description.split()) in flat
    assert max(len(line) for line in text.splitlines()) <= 80

    # 9. the timings are a table, not JSON
    assert "<h2>Timings</h2><table>" in page and "validate, store, score and plan" in page


def test_repeated_demo_warnings_are_held_back(caplog):
    import logging

    from riskengine.demo import _RepeatedWarnings

    schema, synth = logging.getLogger("riskengine.schema"), logging.getLogger("scanvision.synth")
    with caplog.at_level(logging.WARNING), _RepeatedWarnings() as noise:
        for n in (122, 1, 2, 8):
            schema.warning("%d row(s) with an invalid IMO check digit kept (warning only)", n)
        synth.warning("scan %s: %s cargo of %.0f kg needs density x%.2f for this fill; limited to x%.2f",
                      "S1", "general", 28074.0, 8.6, 8.0)
        schema.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    assert [a[0] for a in noise.density] == ["S1"]
    schema.warning("%d row(s) with an invalid IMO check digit kept (warning only)", 3)  # filter removed
    assert len(caplog.records) == 2
