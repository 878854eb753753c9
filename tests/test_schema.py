import pandas as pd
import pytest
from stdnum import iso6346

from riskengine.schema import (
    REQUIRED_COLUMNS,
    SchemaError,
    imo_valid,
    iso6346_check_digit,
    iso6346_valid,
    read_manifests,
    validate,
    validate_file,
)


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).astype("string")


def test_iso6346_check_digits_match_stdnum():
    ids = ["CSQU3054383", "CSQU3054384", "MSKU1234565", "TGHU9876543", "csqu3054383", "CSQ3054383", ""]
    got = iso6346_valid(pd.Series(ids)).tolist()
    assert got[:2] == [True, False]
    for cid, ok in zip(ids, got, strict=True):
        assert ok == (iso6346.is_valid(cid) and cid == cid.upper() and len(cid) == 11)
    assert iso6346_check_digit("CSQU305438") == 3


def test_imo_check_digit_valid_and_invalid():
    assert imo_valid(pd.Series(["9074729", "9074728", "123", None])).tolist() == [True, False, False, False]


def test_valid_row_is_normalised(good_row):
    res = validate(frame([good_row]))
    assert res.n_valid == 1 and res.n_rejected == 0
    row = res.valid.iloc[0]
    assert row["hs_code"] == "080390"  # leading zero kept
    assert row["filed_at"] == pd.Timestamp("2026-03-01 10:00:00")
    assert row["arrival_date"] == pd.Timestamp("2026-03-12")
    assert row["packages"] == 1080
    assert row["transshipment_ports"] == "PAMIT"


@pytest.mark.parametrize(
    ("column", "value", "expected_reason"),
    [
        ("container_id", "CSQU3054384", "valid check digit"),
        ("container_type", "4", "size/type code"),
        ("vessel_imo", "IMO12", "7-digit IMO"),
        ("origin_country", "XX", "ISO 3166"),
        ("port_of_loading", "GUAYAQUIL", "UN/LOCODE"),
        ("transshipment_ports", "PAMIT;??", "UN/LOCODEs"),
        ("hs_code", "0803", "6 to 10 digits"),
        ("gross_weight_kg", "-5", "negative"),
        ("gross_weight_kg", "heavy", "not a number"),
        ("vgm_kg", "inf", "infinite"),
        ("vgm_kg", "99999", "exceeds"),
        ("packages", "10.5", "whole number"),
        ("freight_payment", "barter", "must be one of"),
        ("currency", "dollars", "ISO 4217"),
        ("filed_at", "yesterday", "not a date/time"),
        ("consignee", "", "missing (required)"),
        ("goods_description", "X" * 5000, "longer than"),
    ],
)
def test_each_bad_value_is_rejected_with_reason(good_row, column, value, expected_reason):
    bad = dict(good_row, manifest_id="M-BAD", **{column: value})
    res = validate(frame([good_row, bad]))
    assert res.n_valid == 1 and res.n_rejected == 1
    rej = res.rejects.iloc[0]
    assert rej["reject_column"] == column
    assert expected_reason in rej["reject_reason"]
    assert rej["source_row"] == 2
    assert rej["manifest_id"] == "M-BAD"  # the row is kept as received


def test_invalid_imo_check_digit_only_warns(good_row):
    res = validate(frame([dict(good_row, vessel_imo="9074728")]))
    assert res.n_valid == 1 and res.n_rejected == 0
    assert len(res.warnings) == 1 and "check digit" in res.warnings.iloc[0]["message"]


def test_duplicate_ids_keep_the_first_valid_row(good_row):
    broken_first = dict(good_row, container_id="BAD")
    res = validate(frame([broken_first, good_row, good_row]))
    assert res.n_valid == 1 and res.n_rejected == 2
    assert res.valid.iloc[0]["source_row"] == 2
    dup = res.rejects[res.rejects["source_row"] == 3].iloc[0]
    assert "duplicate manifest_id 'M-0001' (first seen at row 2)" in dup["reject_reason"]


def test_empty_container_may_have_no_hs_code(good_row):
    empty = dict(good_row, manifest_id="M-E", hs_code="", goods_description="EMPTY CONTAINER",
                 packages="0", gross_weight_kg="0", declared_value="0")
    no_hs = dict(good_row, manifest_id="M-N", hs_code="")
    res = validate(frame([empty, no_hs]))
    assert res.valid["manifest_id"].tolist() == ["M-E"]
    assert "hs_code is missing" in res.rejects.iloc[0]["reject_reason"]


def test_missing_required_column_is_one_clear_error(good_row):
    df = frame([good_row]).drop(columns=["vgm_kg", "hs_code"])
    with pytest.raises(SchemaError, match=r"missing required column\(s\) \['hs_code', 'vgm_kg'\]"):
        validate(df)


def test_rows_in_equal_valid_plus_rejected_on_mixed_batch(good_row):
    rows = []
    for i in range(200):
        r = dict(good_row, manifest_id=f"M{i}")
        if i % 7 == 0:
            r["gross_weight_kg"] = "-1"
        if i % 11 == 0:
            r["container_id"] = "ABCD1234567"
        rows.append(r)
    res = validate(frame(rows))
    assert res.n_valid + res.n_rejected == 200
    assert res.n_rejected == len({i for i in range(200) if i % 7 == 0 or i % 11 == 0})
    assert sorted(res.valid["source_row"].tolist() + res.rejects["source_row"].tolist()) == list(range(1, 201))


def test_csv_reader_keeps_malformed_lines_and_recovers_the_rest(tmp_path, good_row):
    header = ",".join(good_row)
    line = ",".join(good_row.values())
    lines = [header, line.replace("M-0001", "A"), line.replace("M-0001", "B").replace("FRESH BANANAS", '"FRESH, BANANAS'),
             line.replace("M-0001", "C"), line.replace("M-0001", "D") + ",extra"]
    p = tmp_path / "m.csv"
    p.write_text("\n".join(lines) + "\n")
    df = read_manifests(p)
    assert len(df) == 4
    res = validate(df)
    assert res.valid["manifest_id"].tolist() == ["A", "C"]
    assert res.rejects["source_row"].tolist() == [2, 4]
    assert all(res.rejects["reject_reason"].str.startswith("malformed line"))


def test_csv_semicolon_delimiter_and_cp1252_encoding(tmp_path, good_row):
    row = dict(good_row, consignee="CAFÉ IMPORT BV")
    p = tmp_path / "m.csv"
    text = ";".join(row) + "\n" + ";".join(row.values()) + "\n"
    p.write_bytes(text.encode("cp1252"))
    res = validate(read_manifests(p))
    assert res.n_valid == 1 and res.valid.iloc[0]["consignee"] == "CAFÉ IMPORT BV"


def test_parquet_and_chunked_validation_with_quarantine(tmp_path, good_row):
    rows = [dict(good_row, manifest_id=f"M{i}") for i in range(50)]
    rows[10]["vgm_kg"] = "-3"
    rows[33]["hs_code"] = "12"
    p = tmp_path / "m.parquet"
    frame(rows).to_parquet(p)
    q = tmp_path / "q.csv"
    summary = validate_file(p, quarantine=q, chunk_rows=8)
    assert (summary["rows"], summary["valid"], summary["rejected"]) == (50, 48, 2)
    quarantined = pd.read_csv(q)
    assert quarantined["source_row"].tolist() == [11, 34]
    assert quarantined["manifest_id"].tolist() == ["M10", "M33"]


def test_unsupported_and_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_manifests(tmp_path / "nope.csv")
    (tmp_path / "m.xlsx").write_text("x")
    with pytest.raises(ValueError, match="expected .csv or .parquet"):
        read_manifests(tmp_path / "m.xlsx")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        read_manifests(tmp_path / "empty.csv")


def test_required_columns_cover_the_issue_list():
    for c in ["manifest_id", "container_id", "vessel_imo", "hs_code", "vgm_kg", "filed_at", "arrival_date"]:
        assert c in REQUIRED_COLUMNS
