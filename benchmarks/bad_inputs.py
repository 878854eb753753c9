"""Benchmark: what every bad input of ``tests/test_bad_inputs.py`` gives, and at what memory cost.

The cases (broken manifest files, broken scan images) are the test module's own
(``MANIFEST_CASES``, ``IMAGE_CASES``), so the table can never drift from what the tests assert.
Each case is run

* through the readers the commands use: manifest files through
  ``riskengine.schema.validate_file`` (``riskengine validate``; ``riskengine ingest`` and
  ``riskengine rescore`` read the same way), images through ``scanvision.io.read_scan``
  (``riskengine triage``); peak memory = Python allocations (tracemalloc) + the Arrow memory
  pool, plus the growth of the resident memory (RSS, sampled every 5 ms);
* through the service, when it can be built here: ``POST /api/manifests`` (multipart upload)
  and ``POST /api/scans`` (multipart, for a stored manifest), with authentication off (the
  development setting; no token involved) and the shipped models.

    python benchmarks/bad_inputs.py
    python benchmarks/bad_inputs.py --no-api --out /tmp/bad.json --doc /tmp/bad.md

Writes ``benchmarks/results/bad_inputs.json`` and ``docs/bad_inputs.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load_cases() -> Any:
    """The test module ``tests/test_bad_inputs.py`` (its cases and runners)."""
    path = ROOT / "tests" / "test_bad_inputs.py"
    spec = importlib.util.spec_from_file_location("bad_input_cases", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def with_rss(fn) -> tuple[dict[str, Any], float]:
    from riskengine.rescore import PeakRss

    with PeakRss(interval_s=0.005) as mem:
        out = fn()
    return out, round(max(0.0, mem.peak_mb - mem.start_mb), 1)


def _no_tmp(text: str) -> str:
    """Messages name the file; the temporary folders of this run mean nothing to a reader."""
    return re.sub(re.escape(tempfile.gettempdir()) + r"/[^/\s]+/(?:[^/\s]+/)*", "", text)


def summarise(case: Any, kind: str, out: dict[str, Any], rss_mb: float) -> dict[str, Any]:
    rec: dict[str, Any] = {"case": case.name, "kind": kind, "input": case.description,
                           "input_bytes": out["input_bytes"], "peak_mb": out["peak_mb"],
                           "rss_growth_mb": rss_mb, "seconds": out["seconds"]}
    if "error" in out:
        rec.update(outcome="error", error_type=out["error"], message=_no_tmp(out["message"])[:400])
    elif kind == "manifests":
        rec.update(outcome="rows", rows=out["rows"], valid=out["valid"], rejected=out["rejected"],
                   top_reason=out["top_reason"], example_reason=(out["reasons"] or [None])[0])
    else:
        rec.update(outcome="read", scan=f"{out['kind']} {out['width']} x {out['height']}")
    return rec


# --------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------

def api_cases(cases: Any, work: Path) -> dict[str, Any]:
    """The same files through POST /api/manifests and POST /api/scans (auth off)."""
    try:
        from fastapi.testclient import TestClient

        from riskengine.service import Settings, create_app
    except ImportError as exc:
        return {"skipped": f"the service extra is not installed ({exc.name})"}
    try:
        app = create_app(Settings(db_url=f"sqlite:///{work / 'api.db'}", data_dir=work / "data", auth=False))
    except Exception as exc:  # noqa: BLE001 - record why the service could not be built
        return {"skipped": f"{type(exc).__name__}: {exc}"}
    results: dict[str, Any] = {"manifests": [], "scans": []}
    with TestClient(app) as client:
        good = cases._write(work, "api_good.csv", cases.base())
        r = client.post("/api/manifests", files={"file": (good.name, good.read_bytes(), "text/csv")})
        if r.status_code != 200:
            return {"skipped": f"POST /api/manifests of a good file answered {r.status_code}: {r.text[:300]}"}
        manifest_id = str(cases.base()["manifest_id"].iloc[0])
        for case in cases.MANIFEST_CASES:
            folder = work / f"api-{case.name}"
            folder.mkdir()
            path = case.build(folder)
            r = client.post("/api/manifests", files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            rec: dict[str, Any] = {"case": case.name, "status": r.status_code}
            if r.status_code == 200:
                rej = body.get("rejects") or []
                rec.update(received=body.get("received"), valid=body.get("valid"), rejected=body.get("rejected"),
                           example_reason=rej[0]["reason"] if rej else None)
            else:
                rec["detail"] = _no_tmp(str(body.get("detail", r.text)))[:400]
            results["manifests"].append(rec)
        for case in cases.IMAGE_CASES:
            folder = work / f"api-{case.name}"
            folder.mkdir()
            path = case.build(folder)
            r = client.post("/api/scans", data={"manifest_id": manifest_id},
                            files={"file": (path.name, path.read_bytes(), "application/octet-stream")})
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            results["scans"].append({"case": case.name, "status": r.status_code,
                                     "detail": _no_tmp(str(body.get("detail", r.text)))[:400]})
        results["requests"] = request_cases(client, app)
    return results


def request_cases(client: Any, app: Any) -> list[dict[str, Any]]:
    """Malformed requests: invalid JSON, bodies over the limits (declared and streamed), wrong types."""
    settings = app.state.settings
    big_json = settings.max_json_bytes + 1024
    big_upload = settings.max_upload_bytes + 1024

    def streamed(n: int, chunk: int = 1 << 20):
        sent = 0
        while sent < n:
            step = min(chunk, n - sent)
            sent += step
            yield b"x" * step

    reqs: list[tuple[str, str, dict[str, Any]]] = [
        ("invalid_json", "a JSON body cut in the middle",
         {"content": b'{"manifests": [{"manifest_id": "M1", ', "headers": {"content-type": "application/json"}}),
        ("json_not_an_object", "a JSON list instead of an object",
         {"content": b"[1, 2, 3]", "headers": {"content-type": "application/json"}}),
        ("json_over_limit", f"a JSON body of {big_json:,} bytes (limit {settings.max_json_bytes:,})",
         {"content": b'{"manifests": "' + b"x" * big_json + b'"}', "headers": {"content-type": "application/json"}}),
        ("csv_streamed_over_limit", f"a CSV body streamed without Content-Length, {big_upload:,} bytes "
                                    f"(limit {settings.max_upload_bytes:,})",
         {"content": streamed(big_upload), "headers": {"content-type": "text/csv"}}),
        ("wrong_content_type", "an XML body",
         {"content": b"<manifests/>", "headers": {"content-type": "application/xml"}}),
        ("json_nested_200k", "200 000 '[' (JSON nested 200 000 deep)",
         {"content": b"[" * 200_000, "headers": {"content-type": "application/json"}}),
    ]
    out = []
    for name, what, kwargs in reqs:
        r = client.post("/api/manifests", **kwargs)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        out.append({"case": name, "input": what, "status": r.status_code,
                    "detail": _no_tmp(str(body.get("detail", r.text)))[:400]})
    r = client.post("/api/scans", content=b"[" * 200_000, headers={"content-type": "application/json"})
    out.append({"case": "scan_json_nested_200k", "input": "POST /api/scans with 200 000 '['",
                "status": r.status_code, "detail": _no_tmp(str(r.json().get("detail", r.text)))[:400]})
    r = client.post("/api/outcomes", json={"manifest_id": "M1", "result": "maybe"})
    out.append({"case": "outcome_bad_value", "input": "POST /api/outcomes with result 'maybe'",
                "status": r.status_code, "detail": _no_tmp(str(r.json().get("detail", r.text)))[:400]})
    return out


def security_cases(cases: Any, work: Path) -> list[dict[str, Any]]:
    """The attacks of issue 19, each with what the user sees now (the tests assert the same)."""
    import asyncio
    import shutil

    import yaml

    from riskengine.indicators import (
        PackSignatureError,
        TrustStore,
        default_packs,
        generate_keypair,
        load_verified_pack,
        merge_packs,
        parse_pack,
        sign_pack_file,
    )
    from riskengine.schema import validate_file
    from riskengine.service.auth import QUERY_TOKEN_SCOPE_KEY, QueryTokenMiddleware
    from riskengine.service.scoring import mandatory_rules
    from riskengine.synth import generate_manifests

    out: list[dict[str, Any]] = []

    def pack(pack_id: str, version: str, tlp: str, title: str, ind_id: str, condition: dict) -> dict:
        return {"metadata": {"id": pack_id, "version": version, "created": "2025-06-01", "tlp": tlp,
                             "issuer": {"agency": "Partner", "country": "BE"}},
                "indicators": [{"id": ind_id, "title": title, "rationale": "partner report",
                                "condition": condition, "severity": "critical"}]}

    # 1. TLP: a RED 2.0.0 and a CLEAR 1.0.0 of one pack; the older one given last.
    fires = {"field": "seal_mismatch", "eq": True}
    red = parse_pack(pack("be-douane-red", "2.0.0", "RED", "SECRET informant says vessel X", "be_tip", fires))
    clear = parse_pack(pack("be-douane-red", "1.0.0", "CLEAR", "public title", "be_tip", fires))
    manifests = generate_manifests(20, seed=4, start="2026-03-10")
    manifests["seal_number_gate"] = "XX0000001"
    _, text = mandatory_rules(manifests, 10.0, [red, clear])
    out.append({"case": "tlp_two_versions", "input": "be-douane-red 2.0.0 (TLP:RED) and 1.0.0 (TLP:CLEAR); "
                "officers read the mandatory reasons", "outcome": "redacted" if "SECRET" not in text[0] else "LEAK",
                "detail": str(text[0])})
    # 2. A be- key redefines the built-in seal rule at 9.0.0 so that it never fires.
    ovr = parse_pack(pack("be-douane-ovr", "9.0.0", "GREEN", "never", "seal_mismatch_at_gate",
                          {"field": "packages", "lt": 0}))
    merged = merge_packs(default_packs() + [ovr])
    mask, _ = mandatory_rules(manifests, 10.0, default_packs() + [ovr])
    out.append({"case": "cross_issuer_override", "input": "be-douane-ovr redefines seal_mismatch_at_gate at 9.0.0",
                "outcome": f"refused; built-in rule fires on {int(mask.sum())} of {len(mask)}",
                "detail": merged.refused[0].message if merged.refused else "NOT refused"})
    # 3. Rollback: a signed 1.0.0 copied over the installed 2.0.0.
    keys = generate_keypair(work / "keys", "nl")
    store = TrustStore(work / "trust")
    store.add(keys.public_key, partner="Douane NL", packs=["nl-"])
    live, old = work / "live", work / "old"
    live.mkdir()
    old.mkdir()
    for folder, version in ((old, "1.0.0"), (live, "2.0.0")):
        (folder / "nl.yaml").write_text(yaml.safe_dump(pack("nl-fruit", version, "GREEN", "t", "nl_x", fires)))
        sign_pack_file(folder / "nl.yaml", keys.private_key, signer="Douane NL")
    load_verified_pack(live / "nl.yaml", store)
    for name in ("nl.yaml", "nl.yaml.sig"):
        shutil.copy(old / name, live / name)
    try:
        load_verified_pack(live / "nl.yaml", store)
        seen = "accepted (NOT refused)"
    except PackSignatureError as exc:
        seen = f"PackSignatureError: {exc}"
    out.append({"case": "pack_rollback", "input": "signed nl-fruit 1.0.0 (+ .sig) copied over 2.0.0",
                "outcome": "refused" if "downgrade" in seen else "accepted", "detail": _no_tmp(seen)})
    # 4. Formula cells in a quarantine CSV.
    folder = work / "formulas"
    folder.mkdir()
    data = cases._write(folder, "formulas.csv", cases.formula_manifests())
    validate_file(data, quarantine=folder / "q.csv")
    cells = cases.csv_cells(folder / "q.csv")
    escaped = [c for c in cells if c.startswith("'=HYPERLINK")]
    out.append({"case": "csv_formula_quarantine", "input": "=HYPERLINK(...), +cmd|..., -2+3+cmd|..., @SUM(...), "
                "tab= in weights and consignees", "outcome": f"{len(cases.formula_cells(cells))} formula cells "
                "in the quarantine CSV", "detail": f"written as {escaped[0] if escaped else '?'}"})
    # 6. The token under an encoded name.
    seen_scope: dict[str, Any] = {}

    async def app(scope, receive, send):
        seen_scope.update(scope)

    scope = {"type": "http", "query_string": b"keepalive=2&access%5Ftoken=rk_0123_secret"}
    asyncio.run(QueryTokenMiddleware(app)(scope, None, None))
    out.append({"case": "query_token_encoded_name", "input": "GET /api/feed?keepalive=2&access%5Ftoken=rk_...",
                "outcome": "moved out of the URL" if QUERY_TOKEN_SCOPE_KEY in seen_scope else "LEFT in the URL",
                "detail": f"the access log shows ?{scope['query_string'].decode()}"})
    return out


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def _cell(text: Any, limit: int = 220) -> str:
    s = " ".join(str(text).split())
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    return s.replace("|", "\\|")


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else (f"{n / 1024:.1f} kB" if n >= 1024 else f"{n} B")


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Bad input: what the user sees",
        "",
        "Every case below is a test in `tests/test_bad_inputs.py` (the test asserts the outcome, the",
        "message and a memory bound); this page is written by `python benchmarks/bad_inputs.py` from",
        "`benchmarks/results/bad_inputs.json`. Nothing is dropped silently: a file that cannot be",
        "read at all gives one error naming the file and the fix; otherwise every row read is either",
        "valid or quarantined with its reason, and `rows = valid + rejected`.",
        "",
        "Peak memory is the Python allocations (tracemalloc) plus the Arrow memory pool during the",
        "case; RSS growth is the resident memory sampled every 5 ms. CSV lines longer than 1 MiB are",
        "not read (the row is rejected with its length), so a runaway field costs one row, not the",
        "memory; images are refused from their header, before decoding, when they claim more than",
        "50 million pixels.",
        "",
        f"Measured {result['timestamp']} on {result['machine'].get('cpu_model', '?')} "
        f"({result['machine'].get('logical_cores')} cores).",
        "",
        "## Manifest files (`riskengine validate`, `riskengine ingest`, `riskengine rescore`)",
        "",
        "| case | input | size | outcome | what the user sees | peak MB | RSS growth MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in (x for x in result["cases"] if x["kind"] == "manifests"):
        if r["outcome"] == "error":
            outcome, seen = f"error `{r['error_type']}`", r["message"]
        else:
            outcome = f"{r['rows']} rows: {r['valid']} valid, {r['rejected']} rejected"
            seen = r["example_reason"] or ("(every row valid)" if r["rows"] else "(no rows, no error)")
        lines.append(f"| {r['case']} | {_cell(r['input'])} | {_size(r['input_bytes'])} | {outcome} | "
                     f"{_cell(seen)} | {r['peak_mb']:.1f} | {r['rss_growth_mb']:.1f} |")
    lines += ["", "## Scan images (`riskengine triage`, `scanvision.io.read_scan`)", "",
              "| case | input | size | outcome | what the user sees | peak MB | RSS growth MB |",
              "|---|---|---|---|---|---|---|"]
    for r in (x for x in result["cases"] if x["kind"] == "images"):
        outcome = f"error `{r['error_type']}`" if r["outcome"] == "error" else r["scan"]
        seen = r.get("message", "")
        lines.append(f"| {r['case']} | {_cell(r['input'])} | {_size(r['input_bytes'])} | {outcome} | "
                     f"{_cell(seen)} | {r['peak_mb']:.1f} | {r['rss_growth_mb']:.1f} |")
    api = result.get("api", {})
    lines += ["", "## The service (authentication off, development setting)", ""]
    if "skipped" in api:
        lines.append(f"Not measured: {_cell(api['skipped'], 400)}")
    else:
        lines += ["`POST /api/manifests` (multipart upload of the same files):", "",
                  "| case | HTTP status | answer |", "|---|---|---|"]
        for r in api["manifests"]:
            answer = (f"{r['received']} received: {r['valid']} valid, {r['rejected']} rejected"
                      + (f"; e.g. {r['example_reason']}" if r.get("example_reason") else "")
                      if r["status"] == 200 else r["detail"])
            lines.append(f"| {r['case']} | {r['status']} | {_cell(answer)} |")
        lines += ["", "`POST /api/scans` (multipart upload for a stored manifest):", "",
                  "| case | HTTP status | answer |", "|---|---|---|"]
        for r in api["scans"]:
            lines.append(f"| {r['case']} | {r['status']} | {_cell(r['detail'])} |")
        if api.get("requests"):
            lines += ["", "Malformed requests (`POST /api/manifests` unless said otherwise):", "",
                      "| case | request | HTTP status | answer |", "|---|---|---|---|"]
            for r in api["requests"]:
                lines.append(f"| {r['case']} | {_cell(r['input'])} | {r['status']} | {_cell(r['detail'])} |")
    if result.get("security"):
        lines += ["", "## Attacks (issue 19)", "",
                  "| case | input | outcome | what the user sees |", "|---|---|---|---|"]
        for r in result["security"]:
            lines.append(f"| {r['case']} | {_cell(r['input'])} | {_cell(r['outcome'])} | {_cell(r['detail'], 400)} |")
    lines += ["", "Regenerate: `python benchmarks/bad_inputs.py`.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bad_inputs.json")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "bad_inputs.md")
    ap.add_argument("--no-api", action="store_true", help="Skip the service cases.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    import pandas as pd

    from scanvision.bench import machine_info

    cases = load_cases()
    result: dict[str, Any] = {"benchmark": "bad_inputs",
                              "timestamp": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
                              "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine_info(), "cases": []}
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as tmp:
        work = Path(tmp)
        warm = work / "warm"
        warm.mkdir()
        cases.run_manifest_case(cases._write(warm, "ok.csv", cases.base()), warm / "q.csv")
        cases.run_image_case(cases._good_png(warm))
        for case in cases.MANIFEST_CASES:
            folder = work / case.name
            folder.mkdir()
            path = case.build(folder)
            out, rss = with_rss(lambda p=path, f=folder: cases.run_manifest_case(p, f / "quarantine.csv"))
            result["cases"].append(summarise(case, "manifests", out, rss))
            print(f"{case.name:22s} {result['cases'][-1].get('error_type') or result['cases'][-1].get('rejected')}",
                  file=sys.stderr)
        for case in cases.IMAGE_CASES:
            folder = work / case.name
            folder.mkdir()
            path = case.build(folder)
            out, rss = with_rss(lambda p=path: cases.run_image_case(p))
            result["cases"].append(summarise(case, "images", out, rss))
        sec_dir = work / "security"
        sec_dir.mkdir()
        result["security"] = security_cases(cases, sec_dir)
        if not args.no_api:
            api_dir = work / "api"
            api_dir.mkdir()
            result["api"] = api_cases(cases, api_dir)
        else:
            result["api"] = {"skipped": "--no-api"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(markdown(result), encoding="utf-8")
    print(f"wrote {args.out} and {args.doc}", file=sys.stderr)


if __name__ == "__main__":
    main()
