import numpy as np
import pandas as pd
import pytest

from riskengine.commodities import TARE_KG
from riskengine.derived import (
    DERIVED_FIELD_KINDS,
    DERIVED_FIELDS,
    add_derived_fields,
    compute_derived_fields,
    first_seen_from_history,
)
from riskengine.schema import validate


def one(field: str, **cols) -> list:
    """Compute one derived field on a frame built from keyword columns."""
    return add_derived_fields(pd.DataFrame(cols), fields=[field])[field].tolist()


def nan_list(values: list) -> list:
    return ["nan" if isinstance(v, float) and np.isnan(v) else v for v in values]


def test_every_field_has_a_description_and_a_kind():
    assert set(DERIVED_FIELDS) == set(DERIVED_FIELD_KINDS)
    assert all(len(d) > 20 for d in DERIVED_FIELDS.values())
    assert set(DERIVED_FIELD_KINDS.values()) <= {"str", "num", "bool"}


def test_missing_inputs_give_nan_or_false_never_an_exception():
    df = pd.DataFrame({"unrelated": [1, 2]}, index=[10, 11])
    out = compute_derived_fields(df)
    assert list(out.index) == [10, 11]
    for name, kind in DERIVED_FIELD_KINDS.items():
        col = out[name]
        if kind == "bool":
            assert col.dtype == bool and not col.any(), name
        else:
            assert col.isna().all(), name


def test_input_is_not_modified_and_existing_columns_are_replaced():
    df = pd.DataFrame({"hs_code": ["080390"], "hs4": ["9999"]}, index=[7])
    before = df.copy()
    out = add_derived_fields(df, fields=["hs4", "hs2"])
    pd.testing.assert_frame_equal(df, before)
    assert out.loc[7, "hs4"] == "0803" and out.loc[7, "hs2"] == "08"
    assert list(out.columns).count("hs4") == 1


def test_unknown_field_lists_the_valid_ones():
    with pytest.raises(KeyError, match="valid derived fields: .*hs4"):
        add_derived_fields(pd.DataFrame({"a": [1]}), fields=["hs5"])


def test_transshipment_count_and_route():
    cols = dict(
        port_of_loading=["COCTG", "ECGYE", "ECGYE", None],
        transshipment_ports=["PAMIT;ESALG", "", None, "PAMIT"],
        port_of_discharge=["NLRTM", "BEANR", "NLRTM", "NLRTM"],
    )
    assert nan_list(one("transshipment_count", **cols)) == [2.0, 0.0, "nan", 1.0]
    assert nan_list(one("route", **cols)) == ["COCTG>PAMIT>ESALG>NLRTM", "ECGYE>BEANR", "nan", "nan"]
    assert nan_list(one("pol_country", **cols)) == ["CO", "EC", "EC", "nan"]
    # Separators are tolerated the way validation normalises them.
    assert one("transshipment_count", transshipment_ports=["PAMIT;;ESALG;"]) == [2.0]


def test_hs_prefixes():
    hs = ["080390", "0803.90.10", "08", "", None]
    assert nan_list(one("hs2", hs_code=hs)) == ["08", "08", "08", "nan", "nan"]
    assert nan_list(one("hs4", hs_code=hs)) == ["0803", "0803", "nan", "nan", "nan"]
    assert nan_list(one("hs6", hs_code=hs)) == ["080390", "080390", "nan", "nan", "nan"]


def test_container_size_reefer_and_tare():
    types = ["22G1", "42G1", "45G1", "L5G1", "22R1", "45R1", "X", None]
    assert nan_list(one("container_size_ft", container_type=types)) == [
        20.0, 40.0, 40.0, 45.0, 20.0, 40.0, "nan", "nan"]
    assert one("is_reefer", container_type=types) == [False, False, False, False, True, True, False, False]
    tare = nan_list(one("tare_estimate_kg", container_type=types))
    # Common codes take the commodity table's typical tare; others follow size, height, reefer.
    assert tare[:3] + tare[4:] == [TARE_KG["22G1"], TARE_KG["42G1"], TARE_KG["45G1"],
                                   TARE_KG["22R1"], TARE_KG["45R1"], "nan", "nan"]
    assert tare[3] == 4800.0  # 45 ft high-cube: 4650 + 150
    assert one("tare_estimate_kg", container_type=["25G1", "L5R1"]) == [2350.0, 5500.0]


def test_is_empty_declared():
    out = one(
        "is_empty_declared",
        goods_description=["EMPTY CONTAINER", "empty", "EMPTY BOTTLES", "BANANAS", None],
        hs_code=["", "", "701090", "080390", ""],
        packages=[0, 0, 100, 10, 0],
    )
    # Row 5: no description but no HS code and no packages -> declared empty by its codes.
    assert out == [True, True, False, False, True]


def test_weight_discrepancy_ratio_uses_cargo_plus_tare():
    out = one(
        "weight_discrepancy_ratio",
        container_type=["45R1", "45R1", "22G1", "22G1", None],
        gross_weight_kg=[21000.0, 21000.0, 10000.0, 10000.0, 10000.0],
        vgm_kg=[21000.0 + TARE_KG["45R1"], 30000.0, 0.0, np.nan, 12200.0],
    )
    assert out[0] == pytest.approx(0.0)  # declared cargo + tare = VGM
    assert out[1] == pytest.approx((30000 - 21000 - TARE_KG["45R1"]) / 30000)
    assert all(np.isnan(out[2:]))  # no VGM, or no container type to estimate the tare


def test_money_ratios():
    cols = dict(declared_value=[16500.0, 0.0, 1000.0, np.nan],
                gross_weight_kg=[21000.0, 1000.0, 0.0, 10.0],
                freight_charges=[4200.0, 500.0, 2000.0, 10.0])
    assert nan_list(one("value_per_kg", **cols)) == [pytest.approx(16500 / 21000), 0.0, "nan", "nan"]
    assert nan_list(one("freight_to_value_ratio", **cols)) == [pytest.approx(4200 / 16500), "nan", 2.0, "nan"]


def test_seal_mismatch():
    out = one(
        "seal_mismatch",
        seal_number=["ML1234567", "ML1234567", "ML-123 4567", "ML1234567", None, "ML1"],
        seal_number_gate=["ML1234567", "ML7654321", "ml1234567", None, "ML1", ""],
    )
    # Case, spaces and dashes do not count; no gate reading is no evidence.
    assert out == [False, True, False, False, True, False]


def test_timings():
    cols = dict(
        gate_in_at=pd.to_datetime(["2026-02-28T10:30", "2026-02-28T13:00", None]),
        cut_off_at=pd.to_datetime(["2026-02-28T12:00", "2026-02-28T12:00", "2026-02-28T12:00"]),
        filed_at=pd.to_datetime(["2026-03-01T12:00", "2026-03-11T18:00", None]),
        last_amended_at=pd.to_datetime([None, "2026-03-11T20:00", "2026-03-12T06:00"]),
        arrival_date=pd.to_datetime(["2026-03-12", "2026-03-12", "2026-03-12"]),
    )
    assert nan_list(one("gate_in_minutes_before_cut_off", **cols)) == [90.0, -60.0, "nan"]
    assert nan_list(one("days_filed_before_arrival", **cols)) == [10.5, 0.25, "nan"]
    assert nan_list(one("hours_amended_before_arrival", **cols)) == ["nan", 4.0, -6.0]


def test_timings_accept_strings_and_time_zones():
    out = one("gate_in_minutes_before_cut_off",
              gate_in_at=["2026-02-28T10:00:00+01:00", "not a date"],
              cut_off_at=pd.to_datetime(["2026-02-28T12:00Z", "2026-02-28T12:00Z"]))
    assert nan_list(out) == [180.0, "nan"]


def test_party_first_seen_days_is_as_of_within_the_frame():
    df = pd.DataFrame({
        "consignee": ["ACME BV", "Other", "acme  bv", "ACME BV", None],
        "filed_at": pd.to_datetime(["2024-01-10", "2024-01-01", "2024-01-01", "2024-03-01", "2024-01-05"]),
    })
    out = one("party_first_seen_days", **df)
    # Row 2 is ACME's first filing (same name once normalised) even though it comes later in the
    # frame; rows are never compared with later filings.
    assert nan_list(out) == [9.0, 0.0, 0.0, 60.0, "nan"]
    # Adding a filing earlier in the frame but later in time changes nothing for earlier rows.
    later = pd.concat([pd.DataFrame({"consignee": ["ACME BV"], "filed_at": pd.to_datetime(["2025-01-01"])}), df],
                      ignore_index=True)
    assert nan_list(one("party_first_seen_days", **later)[1:]) == nan_list(out)


def test_party_first_seen_days_with_history():
    df = pd.DataFrame({
        "consignee": ["ACME BV", "NEWCO", "LATE HISTORY"],
        "filed_at": pd.to_datetime(["2024-03-01", "2024-03-01", "2024-03-01"]),
    })
    history = {"acme bv": pd.Timestamp("2023-03-02"), "LATE HISTORY": "2024-04-01"}
    out = add_derived_fields(df, first_seen=history, fields=["party_first_seen_days"])
    # Unknown to the history: first seen now; history later than the row: the row itself.
    assert out["party_first_seen_days"].tolist() == [365.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="not timestamps"):
        add_derived_fields(df, first_seen={"ACME BV": "yesterday-ish"}, fields=["party_first_seen_days"])


def test_consignee_history_and_new_commodity():
    df = pd.DataFrame({
        "consignee": ["T"] * 5 + ["U", "U"],
        "hs_code": ["610910", "080390", "080390", "080390", "610910", "080390", "610910"],
        "filed_at": pd.to_datetime(["2024-05-01", "2024-01-01", "2024-02-01", "2024-03-01",
                                    "2024-04-01", "2024-01-01", "2024-02-01"]),
    })
    prior = one("consignee_prior_shipments", **df)
    assert prior == [4.0, 0.0, 1.0, 2.0, 3.0, 0.0, 1.0]
    new = one("consignee_new_commodity", **df)
    # Row 4 (April): T imported chapter 08 three times, then chapter 61 for the first time.
    # Row 0 (May): chapter 61 again -> no longer new. U has too little history to judge.
    assert new == [False, False, False, False, True, False, False]


def test_vague_description():
    desc = ["FAK", "GENERAL CARGO", "S.T.C. 20 PALLETS", "SAID TO CONTAIN: 1200 CARTONS",
            "STC 1200 CARTONS FRESH BANANAS CAVENDISH", "TEA", "EMPTY CONTAINER",
            "Various goods", "USED TYRES", None, "", "SAID TO CONTAIN FOODSTUFF",
            "FROZEN FOODSTUFF", "AUTO PARTS"]
    assert one("vague_description", goods_description=desc) == [
        True, True, True, True, False, True, False, True, False, False, True, True,
        False, False]


def test_freight_payment_risky():
    assert one("freight_payment_risky",
               freight_payment=["cash", "third_party", "Third-Party", "prepaid", "collect", None]) == [
        True, True, True, False, False, False]


def test_same_results_on_raw_strings_and_validated_rows(good_row):
    rows = [dict(good_row, manifest_id=f"M{i}") for i in range(3)]
    rows[1].update(seal_number_gate="XX999", freight_payment="cash", last_amended_at="2026-03-11T20:00:00Z")
    raw = pd.DataFrame(rows)
    valid = validate(raw).valid
    a = compute_derived_fields(raw.astype(object))
    b = compute_derived_fields(valid)
    for name in DERIVED_FIELDS:
        assert nan_list(a[name].tolist()) == nan_list(b[name].tolist()), name
    assert b["seal_mismatch"].tolist() == [False, True, False]
    assert b["hours_amended_before_arrival"].tolist()[1] == pytest.approx(4.0)
    assert b["route"].tolist()[0] == "ECGYE>PAMIT>NLRTM"


def test_first_seen_from_history():
    history = pd.DataFrame({"consignee": ["Acme BV", "ACME  BV", "Newco", None, "Bad date"],
                            "filed_at": ["2024-02-01T10:00:00Z", "2024-01-01", "2024-03-01", "2024-01-01",
                                         "not a date"]})
    assert first_seen_from_history(history) == {"ACME BV": pd.Timestamp("2024-01-01"),
                                                "NEWCO": pd.Timestamp("2024-03-01")}
    with pytest.raises(KeyError, match="missing \\['filed_at'\\]"):
        first_seen_from_history(pd.DataFrame({"consignee": ["A"]}))
