"""Property tests: schema validation, ISO 6346 check digits, CSV round trip, indicator conditions,
and byte-level fuzzing of the CSV and scan readers.

Hypothesis runs under the ``riskengine-properties`` profile registered here: derandomized (the
same examples on every run and machine), no deadline (a shared CI machine is slow at times).
"""

from __future__ import annotations

import datetime as dt
import re
import string
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from stdnum import iso6346

from riskengine.indicators.conditions import (
    AllOf,
    AnyOf,
    Comparison,
    ConditionError,
    FieldFrame,
    Not,
    parse_condition,
)
from riskengine.indicators.fields import FIELDS, OPERATORS_BY_KIND
from riskengine.schema import (
    ISO_COUNTRIES,
    MANIFEST_COLUMNS,
    MAX_WEIGHT_KG,
    REQUIRED_COLUMNS,
    SchemaError,
    iso6346_check_digit,
    iso6346_valid,
    read_manifests,
    validate,
    validate_file,
    write_table,
)
from scanvision.io import ScanReadError, read_scan_bytes, write_transmission

settings.register_profile(
    "riskengine-properties", derandomize=True, deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
PROPERTIES = settings.get_profile("riskengine-properties")

GOOD_ROW = {
    "manifest_id": "M-0001", "container_id": "CSQU3054383", "container_type": "45R1",
    "bl_number": "MAEU123456789", "vessel_imo": "9074729", "voyage": "612N", "carrier": "MAERSK",
    "shipper": "FRUTAS DEL PACIFICO SA", "consignee": "ROTTERDAM FRESH BV", "notify_party": "",
    "origin_country": "EC", "port_of_loading": "ECGYE", "transshipment_ports": "PAMIT",
    "port_of_discharge": "NLRTM", "terminal": "NLRTM-ECT", "hs_code": "080390",
    "goods_description": "FRESH BANANAS CAVENDISH", "packages": "1080", "gross_weight_kg": "21000",
    "vgm_kg": "25300", "declared_value": "16500", "currency": "USD", "freight_charges": "4200",
    "freight_payment": "prepaid", "seal_number": "ML1234567", "seal_number_gate": "ML1234567",
    "filed_at": "2026-03-01T10:00:00Z", "gate_in_at": "2026-02-27T08:00:00Z",
    "cut_off_at": "2026-02-28T12:00:00Z", "last_amended_at": "", "arrival_date": "2026-03-12",
}
assert tuple(GOOD_ROW) == MANIFEST_COLUMNS


# --------------------------------------------------------------------------------------------
# ISO 6346
# --------------------------------------------------------------------------------------------

owner_codes = st.text(string.ascii_uppercase, min_size=3, max_size=3)
serials = st.text(string.digits, min_size=6, max_size=6)


@PROPERTIES
@given(owner=owner_codes, category=st.sampled_from("UJZR"), serial=serials)
def test_check_digit_matches_python_stdnum(owner, category, serial):
    prefix = owner + category + serial
    assert iso6346_check_digit(prefix) == int(iso6346.calc_check_digit(prefix))
    good = prefix + str(iso6346_check_digit(prefix))
    bad = prefix + str((iso6346_check_digit(prefix) + 1) % 10)
    assert iso6346_valid(pd.Series([good, bad])).tolist() == [True, False]
    assert iso6346.is_valid(good) and not iso6346.is_valid(bad)


@PROPERTIES
@given(st.text(string.ascii_letters + string.digits + " -", max_size=14))
def test_container_validity_agrees_with_stdnum_on_any_text(text):
    # The schema validates upper-case, 11-character numbers; stdnum also accepts spaces/case.
    ours = bool(iso6346_valid(pd.Series([text])).iloc[0])
    theirs = iso6346.is_valid(text) and text == text.upper() and len(text) == 11
    assert ours == theirs


# --------------------------------------------------------------------------------------------
# Schema validation on arbitrary values
# --------------------------------------------------------------------------------------------

TRICKY = ["", " ", "nan", "NaN", "inf", "-inf", "-1", "0", "1e309", "None", "null", "\t",
          "CSQU3054384", "csqu3054383", "2026-02-30", "31/12/2026", "9" * 40, "é€", "'", '"']
arbitrary = st.one_of(
    st.none(), st.sampled_from(TRICKY), st.text(max_size=12), st.booleans(),
    st.integers(-(10**15), 10**15), st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def manifest_frames(draw) -> pd.DataFrame:
    n = draw(st.integers(1, 6))
    rows = []
    for i in range(n):
        row = dict(GOOD_ROW, manifest_id=f"M-{i}")
        for col in draw(st.lists(st.sampled_from(MANIFEST_COLUMNS), max_size=6, unique=True)):
            row[col] = draw(arbitrary)
        rows.append(row)
    df = pd.DataFrame(rows, dtype=object)
    if draw(st.booleans()):  # repeat an id: duplicates are rejected
        df.loc[n - 1, "manifest_id"] = df.loc[0, "manifest_id"]
    drop = draw(st.lists(st.sampled_from(MANIFEST_COLUMNS), max_size=2, unique=True))
    return df.drop(columns=[c for c in drop if draw(st.booleans())])


@PROPERTIES
@given(manifest_frames())
# Years outside pandas' nanosecond range (placeholders such as 0001-01-01) used to fail the batch.
@example(pd.DataFrame([dict(GOOD_ROW, filed_at="0001-01-01"), dict(GOOD_ROW, manifest_id="M-2", gate_in_at="0000")],
                      dtype=object))
def test_validation_never_fails_and_accepted_rows_keep_the_invariants(df):
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        with pytest.raises(SchemaError, match=re.escape(str(missing))):
            validate(df)
        return
    res = validate(df)
    n = len(df)
    # Rows in = valid + rejected, each row in exactly one of the two.
    assert res.n_valid + res.n_rejected == n
    assert sorted([*res.valid["source_row"], *res.rejects["source_row"]]) == list(range(1, n + 1))
    assert res.rejects["reject_reason"].map(lambda r: isinstance(r, str) and len(r) > 10).all()
    v = res.valid
    if v.empty:
        return
    assert v["manifest_id"].notna().all() and not v["manifest_id"].duplicated().any()
    assert all(iso6346.is_valid(c) and len(c) == 11 for c in v["container_id"])
    for col in ("gross_weight_kg", "vgm_kg"):
        w = v[col].to_numpy(dtype=float)
        assert np.isfinite(w).all() and (w >= 0).all() and (w <= MAX_WEIGHT_KG).all()
    assert (v["vgm_kg"] > 0).all()
    value = v["declared_value"].to_numpy(dtype=float)
    assert np.isfinite(value).all() and (value >= 0).all()
    assert (v["packages"].astype("Int64") >= 0).all()
    assert v["origin_country"].isin(ISO_COUNTRIES).all()
    assert v["filed_at"].notna().all() and v["arrival_date"].notna().all()
    empty = v["goods_description"].str.upper().str.startswith("EMPTY")
    assert v.loc[~empty, "hs_code"].str.fullmatch(r"\d{6,10}").all()
    for col in REQUIRED_COLUMNS:
        if col != "hs_code":
            assert v[col].notna().all(), col


# --------------------------------------------------------------------------------------------
# CSV round trip of valid rows
# --------------------------------------------------------------------------------------------

# Printable text with the characters that break naive CSV: delimiters, quotes, accents.
free_text = st.text(alphabet=string.ascii_letters + string.digits + " ,;|'\"&/-.ÉÑÜØ€ñ", min_size=1, max_size=30)


@st.composite
def valid_rows(draw, i: int) -> dict[str, Any]:
    prefix = draw(owner_codes) + "U" + draw(serials)
    filed = draw(st.datetimes(dt.datetime(2025, 1, 1), dt.datetime(2027, 1, 1))).replace(microsecond=0)
    row = dict(GOOD_ROW)
    row.update({
        "manifest_id": f"{draw(st.text(string.ascii_uppercase + string.digits + '-/', min_size=1, max_size=12))}#{i}",
        "container_id": prefix + str(iso6346_check_digit(prefix)),
        "shipper": draw(free_text), "consignee": draw(free_text),
        "notify_party": draw(st.one_of(st.just(""), free_text)),
        "goods_description": draw(free_text),
        "origin_country": draw(st.sampled_from(sorted(ISO_COUNTRIES))),
        "packages": str(draw(st.integers(1, 100_000))),
        "gross_weight_kg": repr(draw(st.floats(1.0, 30_000.0))),
        "vgm_kg": repr(draw(st.floats(2_000.0, 40_000.0))),
        "declared_value": repr(draw(st.floats(0.0, 1e9))),
        "freight_payment": draw(st.sampled_from(["prepaid", "collect", "cash", "third_party"])),
        "filed_at": filed.isoformat() + "Z",
        "arrival_date": (filed + dt.timedelta(days=draw(st.integers(1, 40)))).date().isoformat(),
    })
    return row


@st.composite
def valid_frames(draw) -> pd.DataFrame:
    n = draw(st.integers(1, 8))
    return pd.DataFrame([draw(valid_rows(i)) for i in range(n)], dtype=object)


@PROPERTIES
@given(valid_frames())
def test_valid_rows_survive_a_csv_round_trip(tmp_path_factory, df):
    first = validate(df)
    assume(first.n_valid > 0)
    path = tmp_path_factory.mktemp("roundtrip") / "valid.csv"
    write_table(first.valid[list(MANIFEST_COLUMNS)], path)
    again = validate(read_manifests(path))
    assert again.n_rejected == 0
    cols = list(MANIFEST_COLUMNS)
    pd.testing.assert_frame_equal(again.valid[cols], first.valid[cols], check_dtype=False)


# --------------------------------------------------------------------------------------------
# Indicator conditions
# --------------------------------------------------------------------------------------------

# Fields of every kind that are plain columns of the test frames (derived ones given as columns).
EVAL_FIELDS = {"str": ["origin_country", "hs_code", "consignee"], "num": ["gross_weight_kg", "packages"],
               "datetime": ["filed_at", "arrival_date"], "bool": ["is_reefer", "seal_mismatch"]}
for kind, names in EVAL_FIELDS.items():
    assert all(FIELDS[n].kind == kind for n in names)

small_text = st.text(alphabet="AB0 ", max_size=3)
small_num = st.one_of(st.integers(-3, 3).map(float), st.floats(-4.0, 4.0, allow_nan=False))
small_day = st.dates(dt.date(2026, 1, 1), dt.date(2026, 1, 6))
PATTERNS = ["^A", "B$", "(?i)a", "A|0", "[0-9]", "^$", " ", "A.B"]
SCALARS = {"str": small_text, "num": small_num, "bool": st.booleans(),
           "datetime": small_day.map(lambda d: d.isoformat())}


def operands(kind: str, op: str) -> st.SearchStrategy:
    scalar = SCALARS[kind]
    if op in ("is_null", "not_null"):
        return st.booleans()
    if op in ("in", "not_in"):
        return st.lists(scalar, min_size=1, max_size=3)
    if op == "between":
        return st.lists(scalar, min_size=2, max_size=2).map(sorted)
    if op == "prefix":
        item = st.text(alphabet="AB0 ", min_size=1, max_size=2)
        return st.one_of(item, st.lists(item, min_size=1, max_size=2))
    if op == "regex":
        return st.sampled_from(PATTERNS)
    return scalar


@st.composite
def comparisons(draw, fields: dict[str, list[str]] | None = None) -> dict:
    if fields is None:
        name = draw(st.sampled_from(sorted(FIELDS)))
        kind = FIELDS[name].kind
    else:
        kind = draw(st.sampled_from(sorted(fields)))
        name = draw(st.sampled_from(fields[kind]))
    op = draw(st.sampled_from(OPERATORS_BY_KIND[kind]))
    return {"field": name, op: draw(operands(kind, op))}


def condition_trees(leaf: st.SearchStrategy) -> st.SearchStrategy:
    return st.recursive(leaf, lambda kids: st.one_of(
        st.lists(kids, min_size=1, max_size=3).map(lambda c: {"all": c}),
        st.lists(kids, min_size=1, max_size=3).map(lambda c: {"any": c}),
        kids.map(lambda c: {"not": c}),
    ), max_leaves=8)


KEYS = ["field", "all", "any", "not", *FIELDS, "eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte",
        "between", "prefix", "regex", "is_null", "not_null", "contains", "and"]
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(),
              st.text(max_size=8), st.sampled_from([*KEYS, "a{4294967296}", "(" * 300 + ")" * 300, "[z-a]",
                                                    "2026-13-45", "9999-12-31T99:00"])),
    lambda kids: st.one_of(st.lists(kids, max_size=3),
                           st.dictionaries(st.sampled_from(KEYS), kids, max_size=3)),
    max_leaves=10,
)


@PROPERTIES
@given(st.one_of(condition_trees(comparisons()), junk, condition_trees(junk)))
# Patterns that re.compile refuses with OverflowError / RecursionError instead of re.error.
@example({"field": "goods_description", "regex": "a{4294967296}"})
@example({"any": [{"field": "shipper", "regex": "(" * 499 + ")" * 499}]})
def test_parse_succeeds_or_raises_the_documented_error(node):
    try:
        cond = parse_condition(node)
    except ConditionError as exc:
        assert exc.reason and exc.where.startswith("condition")
        assert str(exc).endswith(f"(at {exc.where})")
        return
    assert isinstance(cond, (Comparison, AllOf, AnyOf, Not))
    assert parse_condition(cond.to_dict()) == cond


@PROPERTIES
@given(condition_trees(comparisons()))
def test_a_parsed_condition_round_trips_through_its_dict(node):
    cond = parse_condition(node)
    again = parse_condition(cond.to_dict())
    assert again == cond and again.to_dict() == cond.to_dict()


@st.composite
def field_frames(draw) -> pd.DataFrame:
    n = draw(st.integers(1, 6))

    def column(kind: str) -> list:
        value = {"str": st.one_of(small_text, st.just("")), "num": small_num, "bool": st.booleans(),
                 "datetime": small_day}[kind]
        return draw(st.lists(st.one_of(st.none(), value), min_size=n, max_size=n))

    data: dict[str, Any] = {}
    for kind, names in EVAL_FIELDS.items():
        for name in names:
            values = column(kind)
            if kind == "num":
                data[name] = pd.Series([np.nan if v is None else v for v in values], dtype=float)
            elif kind == "datetime":
                data[name] = pd.to_datetime(pd.Series(values, dtype=object))
            else:
                data[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(data)


def reference(node: Any, row: pd.Series) -> bool:
    """The documented semantics, one row at a time, in plain Python."""
    if isinstance(node, AllOf):
        return all(reference(c, row) for c in node.children)
    if isinstance(node, AnyOf):
        return any(reference(c, row) for c in node.children)
    if isinstance(node, Not):
        return not reference(node.child, row)
    kind = FIELDS[node.field].kind
    v = row[node.field]
    missing = v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NaT \
        or (kind == "str" and str(v).strip() == "")
    op, x = node.op, node.operand
    if op == "is_null":
        return missing == x
    if op == "not_null":
        return (not missing) == x
    if missing:
        return False
    if kind == "datetime":
        v = pd.Timestamp(v)
    if op == "eq":
        return v == x
    if op == "ne":
        return v != x
    if op == "in":
        return v in x
    if op == "not_in":
        return v not in x
    if op == "gt":
        return v > x
    if op == "gte":
        return v >= x
    if op == "lt":
        return v < x
    if op == "lte":
        return v <= x
    if op == "between":
        return x[0] <= v <= x[1]
    if op == "prefix":
        return any(str(v).startswith(p) for p in x)
    return re.search(x, str(v)) is not None  # regex


@PROPERTIES
@given(condition_trees(comparisons(EVAL_FIELDS)), field_frames())
def test_vectorised_evaluation_equals_the_row_by_row_reference(node, df):
    cond = parse_condition(node)
    got = cond.evaluate(FieldFrame(df))
    rows = df.astype(object).where(df.notna(), None)
    want = [reference(cond, row) for _, row in rows.iterrows()]
    assert got.dtype == bool and got.tolist() == want


# --------------------------------------------------------------------------------------------
# Byte-level fuzzing of the readers
# --------------------------------------------------------------------------------------------

def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption: flipped bits, a truncation, inserted or deleted bytes."""
    buf = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 0:
        for pos in rng.integers(0, len(buf), rng.integers(1, 16)):
            buf[pos] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:
        del buf[int(rng.integers(0, len(buf))):]
    elif kind == 2:
        pos = int(rng.integers(0, len(buf)))
        buf[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    else:
        pos = int(rng.integers(0, len(buf)))
        del buf[pos:pos + int(rng.integers(1, 64))]
    return bytes(buf)


@pytest.fixture(scope="module")
def valid_csv_bytes(tmp_path_factory) -> bytes:
    from riskengine.synth import generate_manifests

    path = tmp_path_factory.mktemp("fuzz") / "ok.csv"
    generate_manifests(30, seed=6)[list(MANIFEST_COLUMNS)].to_csv(path, index=False)
    return path.read_bytes()


@pytest.mark.slow
def test_fuzzed_csv_gives_rows_or_a_documented_error(valid_csv_bytes, tmp_path):
    rng = np.random.default_rng(2026)
    outcomes = {"read": 0, "error": 0}
    for i in range(300):
        path = tmp_path / f"fuzz{i}.csv"
        path.write_bytes(mutate(valid_csv_bytes, rng))
        try:
            res = validate_file(path)
        except SchemaError as exc:  # a damaged header
            assert "missing required column" in str(exc) or "duplicate column" in str(exc)
            outcomes["error"] += 1
            continue
        except ValueError as exc:
            assert type(exc) is ValueError and str(path) in str(exc), (i, exc)
            outcomes["error"] += 1
            continue
        assert res["rows"] == res["valid"] + res["rejected"], i
        outcomes["read"] += 1
    assert outcomes["read"] > 100 and outcomes["error"] > 0, outcomes


@pytest.mark.slow
def test_fuzzed_png_gives_a_scan_or_a_documented_error(tmp_path):
    t = np.random.default_rng(1).uniform(0.05, 1.0, (48, 120)).astype(np.float32)
    good = write_transmission(tmp_path / "ok.png", t).read_bytes()
    rng = np.random.default_rng(6346)
    outcomes = {"read": 0, "error": 0}
    for i in range(300):
        data = mutate(good, rng)
        try:
            scan = read_scan_bytes(data, f"fuzz{i}.png")
        except ScanReadError as exc:
            assert f"fuzz{i}.png" in str(exc), exc
            outcomes["error"] += 1
            continue
        assert scan.transmission.dtype == np.float32 and scan.transmission.ndim == 2
        assert np.isfinite(scan.transmission).all()
        assert (scan.transmission > 0).all() and (scan.transmission <= 1).all()
        outcomes["read"] += 1
    assert outcomes["error"] > 100, outcomes
