import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from stdnum import iso6346

from riskengine.cli import main
from riskengine.commodities import (
    CARGO_FAMILIES,
    COMMODITIES,
    TARE_KG,
    cargo_family,
    commodity_table,
)
from riskengine.schema import MANIFEST_COLUMNS, imo_valid, read_manifests, validate
from riskengine.synth import (
    DISCHARGE_PORTS,
    KNOWN_PORTS,
    MO_MIX_EARLY,
    MODUS_OPERANDI,
    generate_manifests,
    iter_manifest_chunks,
    write_manifests,
)


@pytest.fixture(scope="module")
def traffic() -> pd.DataFrame:
    return generate_manifests(60_000, seed=11, days=60, illicit_rate=0.01)


# ---- determinism and streaming -------------------------------------------------------------


def test_same_seed_same_rows_other_seed_other_rows():
    a = generate_manifests(3_000, seed=7, days=5)
    b = generate_manifests(3_000, seed=7, days=5)
    pd.testing.assert_frame_equal(a, b)
    c = generate_manifests(3_000, seed=8, days=5)
    assert not a["container_id"].equals(c["container_id"])


def test_chunks_hold_the_same_rows_whatever_the_chunk_size():
    whole = generate_manifests(70_000, seed=3, days=20)  # more than one 50k-row random block
    chunks = list(iter_manifest_chunks(70_000, seed=3, days=20, chunk_rows=30_000))
    assert [len(c) for c in chunks] == [30_000, 30_000, 10_000]
    assert all(c["filed_at"].is_monotonic_increasing for c in chunks)
    streamed = pd.concat(chunks, ignore_index=True)
    assert streamed["manifest_id"].is_unique
    key = ["manifest_id"]
    pd.testing.assert_frame_equal(
        whole.sort_values(key).reset_index(drop=True), streamed.sort_values(key).reset_index(drop=True)
    )
    assert whole["filed_at"].is_monotonic_increasing


def test_columns_and_dtypes_follow_the_schema(traffic):
    assert list(traffic.columns[: len(MANIFEST_COLUMNS)]) == list(MANIFEST_COLUMNS)
    assert str(traffic["packages"].dtype) == "Int64"
    for col in ("filed_at", "gate_in_at", "cut_off_at", "last_amended_at", "arrival_date", "outcome_at"):
        assert traffic[col].dtype == "datetime64[ns]"
    assert (traffic["arrival_date"] == traffic["arrival_date"].dt.normalize()).all()
    days = traffic["arrival_date"].value_counts()
    assert len(days) == 60 and days.max() - days.min() <= 0.05 * days.mean()  # uniform over the days


# ---- validity --------------------------------------------------------------------------------


def test_every_generated_row_passes_validation(traffic):
    result = validate(traffic)
    assert result.n_rejected == 0, result.top_reasons()
    assert result.n_valid == len(traffic)


def test_csv_and_parquet_files_read_back_valid(tmp_path):
    for name in ("m.csv", "m.parquet", "m.csv.gz"):
        summary = write_manifests(tmp_path / name, 5_000, seed=2, days=3, chunk_rows=2_000)
        assert summary["rows"] == 5_000 and summary["chunks"] == 3
        df = read_manifests(tmp_path / name)
        res = validate(df)
        assert (res.n_valid, res.n_rejected) == (5_000, 0), res.top_reasons()
        assert res.valid["hs_code"].str.fullmatch(r"\d{6,10}|").all()
    assert pq.ParquetFile(tmp_path / "m.parquet").num_row_groups == 3


def test_check_digits_are_valid(traffic):
    sample = traffic["container_id"].sample(2_000, random_state=0)
    assert all(iso6346.is_valid(c) for c in sample)
    assert sample.str[:4].nunique() > 20  # many owner codes, carriers' and lessors'
    imo_ok = imo_valid(traffic["vessel_imo"]).mean()
    assert 0.9 < imo_ok < 0.995  # a few registrations carry a wrong check digit, as in real data


def test_corrupt_rows_are_exactly_the_rejected_rows():
    df = generate_manifests(20_000, seed=5, days=10, corrupt_rate=0.05)
    n_corrupt = df.attrs["synth"]["corrupt_rows"]
    assert 700 < n_corrupt < 1_300
    res = validate(df)
    assert res.n_rejected == n_corrupt
    assert res.n_valid + res.n_rejected == len(df)
    assert set(res.rejects["reject_column"]) == {
        "container_id", "gross_weight_kg", "filed_at", "consignee", "hs_code", "manifest_id",
    }


# ---- the smuggling story ---------------------------------------------------------------------


def test_base_rate_within_tolerance(traffic):
    assert abs(traffic["is_illicit"].mean() - 0.01) < 0.002
    df = generate_manifests(30_000, seed=4, illicit_rate=0.02)
    assert abs(df["is_illicit"].mean() - 0.02) < 0.004
    assert generate_manifests(5_000, seed=4, illicit_rate=0.0)["is_illicit"].sum() == 0


def test_modus_operandi_mix_and_ground_truth_are_consistent(traffic):
    ill = traffic[traffic["is_illicit"] == 1]
    share = ill["modus_operandi"].value_counts(normalize=True)
    for mo, expected in MO_MIX_EARLY.items():
        assert abs(share[mo] - expected) < 0.08, (mo, share[mo])
    licit = traffic[traffic["is_illicit"] == 0]
    assert (licit["modus_operandi"] == "none").all() and (licit["concealment_location"] == "none").all()
    assert (licit["amount_kg"] == 0).all() and (ill["amount_kg"] > 0).all()
    by_mo = ill.groupby("modus_operandi")
    locs = by_mo["concealment_location"].agg(set)
    assert locs["rip_on_rip_off"] <= {"doors", "cargo"}
    assert locs["reefer_machinery"] == {"reefer_unit"}
    assert locs["structural"] <= {"walls", "floor", "roof"}
    assert (ill.loc[ill["modus_operandi"] == "reefer_machinery", "container_type"].str[2] == "R").all()
    rip = ill.loc[ill["modus_operandi"] == "rip_on_rip_off", "amount_kg"]
    assert rip.between(20, 150).all()
    assert ill["amount_kg"].max() > 5 * ill["amount_kg"].median()  # heavy tail


def test_no_signal_is_a_perfect_detector(traffic):
    y = traffic["is_illicit"] == 1
    signals = {
        "seal mismatch": traffic["seal_number_gate"].notna() & (traffic["seal_number_gate"] != traffic["seal_number"]),
        "cash or third party": traffic["freight_payment"].isin(["cash", "third_party"]),
        "vague description": traffic["goods_description"].isin(["FAK", "STC GENERAL CARGO", "GENERAL MERCHANDISE",
                                                                 "SAID TO CONTAIN FOODSTUFF", "CONSOLIDATED CARGO",
                                                                 "MIXED GOODS"]),
        "risky origin": traffic["origin_country"].isin(["EC", "CO", "CR", "PA", "BR", "PE"]),
        "weight gap": (traffic["vgm_kg"] - traffic["gross_weight_kg"]
                       - traffic["container_type"].map(TARE_KG)).abs() > 0.08 * traffic["vgm_kg"],
    }
    for name, s in signals.items():
        s = s.fillna(False)
        assert s[~y].sum() > 0, f"{name} never occurs in licit traffic"
        assert y[s].mean() < 0.6, f"{name} is too good a detector"
        assert s[y].mean() < 0.95, f"{name} flags nearly every illicit container"
    # Some smuggling comes from origins no one targets.
    assert (y & ~signals["risky origin"]).sum() > 0


def test_history_columns(traffic):
    sel = traffic["selection"].value_counts(normalize=True)
    assert abs(sel["random"] - 0.02) < 0.004 and 0.03 <= sel["targeted"] <= 0.05
    assert ((traffic["selection"] != "none") == (traffic["inspected"] == 1)).all()
    ins = traffic[traffic["inspected"] == 1]
    lag = (ins["outcome_at"] - ins["arrival_date"]).dt.total_seconds() / 86_400
    assert lag.between(1, 6).all() and traffic.loc[traffic["inspected"] == 0, "outcome_at"].isna().all()
    hit = ins.groupby("selection")["is_illicit"].mean()
    assert hit["targeted"] > 3 * traffic["is_illicit"].mean()


def test_world_is_realistic(traffic):
    t = traffic
    lead = (t["arrival_date"] - t["filed_at"]).dt.total_seconds() / 86_400
    assert lead.between(-1.6, 10.0).all() and lead.median() > 3
    assert (lead < 1).mean() > 0.01  # some late filings
    gi, co = t["gate_in_at"], t["cut_off_at"]
    assert (gi[gi.notna() & co.notna()] < co[gi.notna() & co.notna()]).all()
    amended = t["last_amended_at"].notna()
    assert 0.03 < amended.mean() < 0.12 and (t.loc[amended, "last_amended_at"] > t.loc[amended, "filed_at"]).all()
    empty = t["goods_description"] == "EMPTY CONTAINER"
    assert 0.02 < empty.mean() < 0.07
    assert (t.loc[empty, "hs_code"] == "").all() and (t.loc[empty, "packages"] == 0).all()
    assert (t.loc[~empty, "packages"] > 0).all()
    assert not t["transshipment_ports"].str.contains("NLRTM").any()
    assert 0.3 < (t["transshipment_ports"] != "").mean() < 0.8
    assert t["terminal"].str.startswith("NLRTM-").all()
    reefer_goods = t["hs_code"].str[:4].isin(["0803", "0202", "0203", "0207"])
    assert (t.loc[reefer_goods, "container_type"].str[2] == "R").mean() > 0.97
    # Traders: a stable population with heavy-tailed volumes.
    counts = t.loc[~empty, "shipper"].value_counts()
    assert counts.iloc[0] > 20 * counts.median()
    # New companies keep appearing.
    first_seen = t.groupby("consignee")["arrival_date"].min()
    assert (first_seen > t["arrival_date"].min() + pd.Timedelta(days=30)).sum() > 20


def test_drift_moves_smugglers_over_time():
    df = generate_manifests(150_000, seed=9, days=120, illicit_rate=0.02, drift=1.0)
    ill = df[df["is_illicit"] == 1]
    month = (ill["arrival_date"] - ill["arrival_date"].min()).dt.days // 30
    early, late = ill[month == 0], ill[month == 3]
    rip = "rip_on_rip_off"
    assert (late["modus_operandi"] == rip).mean() < (early["modus_operandi"] == rip).mean() - 0.1
    assert (late["origin_country"] == "BR").mean() > (early["origin_country"] == "BR").mean() + 0.03


def test_other_ports_and_start_dates():
    df = generate_manifests(2_000, seed=1, port="beanr", start="2025-06-30", days=2)
    assert (df["port_of_discharge"] == "BEANR").all()
    assert df["terminal"].isin(DISCHARGE_PORTS["BEANR"]).all()
    assert set(df["arrival_date"].dt.strftime("%Y-%m-%d")) == {"2025-06-30", "2025-07-01"}
    assert not df["origin_country"].isin(["BE", "NL", "DE", "FR", "ES"]).any()  # EU goods are not imports
    assert validate(df).n_rejected == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rows": 0}, "rows must be between 1"),
        ({"rows": 10, "port": "XXABC"}, "unknown port of discharge 'XXABC'"),
        ({"rows": 10, "illicit_rate": 0.5}, "illicit_rate must be between 0 and 0.2"),
        ({"rows": 10, "drift": -1}, "drift must be between 0 and 1"),
        ({"rows": 10, "days": 0}, "days must be a whole number"),
        ({"rows": 10, "start": "someday"}, "start must be a date"),
    ],
)
def test_bad_parameters_say_what_to_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_manifests(**kwargs)


def test_failed_write_leaves_no_file(tmp_path):
    out = tmp_path / "m.parquet"

    def boom(_rows: int) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_manifests(out, 3_000, chunk_rows=1_000, progress=boom)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=r"must end in \.parquet, \.csv"):
        write_manifests(tmp_path / "m.xlsx", 10)


# ---- commodities -------------------------------------------------------------------------------


def test_commodity_table_hs_codes_map_to_their_family():
    table = commodity_table()
    fam = cargo_family(table["hs_code"], table["goods_description"])
    assert (fam == table["family"]).all(), table.loc[fam != table["family"], ["commodity", "hs_code"]]
    assert set(table["family"]) == set(CARGO_FAMILIES) - {"empty"}
    for c in COMMODITIES:
        for origin, _ in c.origins:
            assert origin.split("/")[-1] in KNOWN_PORTS, (c.key, origin)


def test_cargo_family_rules():
    hs = pd.Series(["080390", "0901.11", "401110", "8471 30", "", None, "999999", "xx", "0202"])
    assert cargo_family(hs).tolist() == [
        "fruit", "sacks", "tyres", "general", "empty", "empty", "general", "general", "general",
    ]
    desc = pd.Series(["BANANAS", "COFFEE", "TYRES", "LAPTOPS", "EMPTY CONTAINER", None, "WIDGETS",
                      "FRESH BANANAS", "FROZEN BEEF"])
    assert cargo_family(hs, desc).tolist() == [
        "fruit", "sacks", "tyres", "general", "empty", "empty", "general", "fruit", "frozen_meat",
    ]
    with pytest.raises(ValueError, match="same length"):
        cargo_family(hs, desc.iloc[:3])


# ---- memory ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_streaming_a_million_rows_keeps_memory_bounded(tmp_path):
    script = textwrap.dedent(f"""
        import json, resource
        from riskengine.synth import write_manifests
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        s = write_manifests({str(tmp_path / 'big.parquet')!r}, 1_000_000, days=30, chunk_rows=100_000)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"rows": s["rows"], "growth_mb": (peak - base) / 1024}}))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["rows"] == 1_000_000
    # 1 M rows in memory take over 1 GB; streaming holds a few 100k-row chunks at most.
    assert out["growth_mb"] < 450, out
    pf = pq.ParquetFile(tmp_path / "big.parquet")
    assert pf.metadata.num_rows == 1_000_000 and pf.num_row_groups == 10


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_help():
    res = CliRunner().invoke(main, ["generate", "manifests", "--help"])
    assert res.exit_code == 0
    for opt in ("--rows", "--seed", "--start", "--days", "--port", "--illicit-rate", "--corrupt-rate", "--drift", "--out"):
        assert opt in res.output


def test_cli_small_run(tmp_path):
    out = tmp_path / "traffic.parquet"
    res = CliRunner().invoke(main, ["generate", "manifests", "--rows", "3000", "--days", "3", "--seed", "4",
                                    "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "rows/s" in res.output and "3,000" in res.output and "Modus operandi" in res.output
    df = read_manifests(out)
    assert len(df) == 3_000
    res = CliRunner().invoke(main, ["generate", "manifests", "--rows", "500", "--json", "--out", str(tmp_path / "t.csv")])
    assert res.exit_code == 0
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["rows"] == 500 and set(summary["modus_operandi"]) == set(MODUS_OPERANDI[1:])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rows", "0"], "rows must be between 1"),
        (["--rows", "10", "--port", "XXABC"], "unknown port of discharge"),
        (["--rows", "10", "--illicit-rate", "3"], "illicit_rate must be between"),
    ],
)
def test_cli_bad_arguments(tmp_path, args, message):
    out = tmp_path / "x.parquet"
    res = CliRunner().invoke(main, ["generate", "manifests", *args, "--out", str(out)])
    assert res.exit_code != 0
    assert message in " ".join(res.output.split())
    assert not out.exists()


def test_cli_rows_must_be_a_number(tmp_path):
    res = CliRunner().invoke(main, ["generate", "manifests", "--rows", "many", "--out", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "many" in res.output


def test_numbers_stay_in_physical_ranges(traffic):
    t = traffic
    assert (t["gross_weight_kg"] >= 0).all() and (t["vgm_kg"] > 1_000).all() and (t["vgm_kg"] < 40_000).all()
    loaded = t["goods_description"] != "EMPTY CONTAINER"
    gap = t.loc[loaded, "vgm_kg"] - t.loc[loaded, "gross_weight_kg"] - t.loc[loaded, "container_type"].map(TARE_KG)
    assert (gap.abs() < 0.03 * t.loc[loaded, "vgm_kg"]).mean() > 0.95  # VGM = cargo + tare, give or take
    assert t["currency"].isin(["USD", "EUR", "CNY", "JPY", "GBP"]).all()
    assert np.isfinite(t["declared_value"]).all()
    assert t["freight_charges"].isna().mean() < 0.15


def test_last_days_gives_exactly_the_tail_of_the_full_period():
    full = generate_manifests(120_000, seed=5, days=30)
    tail = generate_manifests(120_000, seed=5, days=30, last_days=1)
    expected = full[full["arrival_date"] == full["arrival_date"].max()]
    assert len(tail) == len(expected) > 3000
    a = expected.sort_values("manifest_id").reset_index(drop=True)
    b = tail.sort_values("manifest_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(ValueError, match="last_days must be"):
        generate_manifests(1000, seed=5, days=3, last_days=4)


def test_exclude_last_days_and_last_days_split_one_world(tmp_path):
    path = tmp_path / "history.parquet"
    summary = write_manifests(path, 20_000, seed=3, days=10, exclude_last_days=1)
    history = pd.read_parquet(path)
    today = generate_manifests(20_000, seed=3, days=10, last_days=1)
    assert summary["rows"] == len(history)
    assert len(history) + len(today) == 20_000
    assert history["arrival_date"].max() < today["arrival_date"].min()
    assert not set(history["manifest_id"]) & set(today["manifest_id"])
    # the same parties trade in both: today's consignees were mostly seen in the history
    assert today["consignee"].isin(history["consignee"]).mean() > 0.9
