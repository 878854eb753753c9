import json
import logging

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riskengine.cli import main
from riskengine.derived import DERIVED_FIELDS
from riskengine.indicators import (
    FIELDS,
    OPERATORS,
    OPERATORS_BY_KIND,
    ConditionError,
    IndicatorPack,
    PackConflictError,
    PackError,
    Severity,
    Version,
    default_pack_path,
    default_packs,
    dump_pack,
    evaluate,
    evaluate_condition,
    load_pack,
    load_packs,
    merge_packs,
    parse_condition,
    parse_pack,
)
from riskengine.indicators.conditions import parse_instant
from riskengine.schema import COLUMNS, validate

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

FRAME = pd.DataFrame(
    {
        "origin_country": ["CO", "EC", "NL", None, "BR"],
        "hs_code": ["080390", "080430", "610910", "", "030617"],
        "gross_weight_kg": [21000.0, 5.0, np.nan, 100.0, 15000.0],
        "container_type": ["45R1", "22G1", "45R1", None, "22R1"],
        "filed_at": pd.to_datetime(["2024-01-01", "2024-06-30T23:00", None, "2025-01-01", "2024-07-01"], format="ISO8601"),
        "goods_description": ["FRESH BANANAS", "PINEAPPLES", "T-SHIRTS", "EMPTY CONTAINER", "FROZEN SHRIMP"],
    },
    index=[10, 11, 12, 13, 14],
)


def mask(cond: dict, df: pd.DataFrame = FRAME) -> list[bool]:
    return evaluate_condition(cond, df).tolist()


def pack_dict(indicators: list[dict], *, pack_id: str = "p1", version="1.0.0") -> dict:
    return {
        "metadata": {"id": pack_id, "version": version,
                     "issuer": {"agency": "Test Customs", "country": "NL"},
                     "created": "2025-01-01", "tlp": "GREEN", "description": "test pack"},
        "indicators": indicators,
    }


def ind(ind_id: str = "i1", condition: dict | None = None, **extra) -> dict:
    out = {"id": ind_id, "title": f"title {ind_id}", "rationale": f"why {ind_id}",
           "condition": condition or {"field": "origin_country", "eq": "CO"}, "severity": "high"}
    out.update(extra)
    return out


def make_pack(indicators: list[dict], **kw) -> IndicatorPack:
    return parse_pack(yaml.safe_dump(pack_dict(indicators, **kw)), source=f"{kw.get('pack_id', 'p1')}.yaml")


# --------------------------------------------------------------------------------------------
# operators
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "cond, expected",
    [
        ({"field": "origin_country", "eq": "EC"}, [False, True, False, False, False]),
        ({"field": "origin_country", "ne": "EC"}, [True, False, True, False, True]),  # missing: no
        ({"field": "origin_country", "in": ["CO", "BR"]}, [True, False, False, False, True]),
        ({"field": "origin_country", "not_in": ["CO", "BR"]}, [False, True, True, False, False]),
        ({"field": "gross_weight_kg", "eq": 5}, [False, True, False, False, False]),
        ({"field": "gross_weight_kg", "ne": 5}, [True, False, False, True, True]),
        ({"field": "gross_weight_kg", "in": [100, 5.0]}, [False, True, False, True, False]),
        ({"field": "gross_weight_kg", "not_in": [100]}, [True, True, False, False, True]),
        ({"field": "gross_weight_kg", "gt": 15000}, [True, False, False, False, False]),
        ({"field": "gross_weight_kg", "gte": 15000}, [True, False, False, False, True]),
        ({"field": "gross_weight_kg", "lt": 100}, [False, True, False, False, False]),
        ({"field": "gross_weight_kg", "lte": 100}, [False, True, False, True, False]),
        ({"field": "gross_weight_kg", "between": [100, 15000]}, [False, False, False, True, True]),
        ({"field": "hs_code", "prefix": "0804"}, [False, True, False, False, False]),
        ({"field": "hs_code", "prefix": ["0803", "0306"]}, [True, False, False, False, True]),
        ({"field": "goods_description", "regex": "(?i)banana|shrimp"}, [True, False, False, False, True]),
        ({"field": "goods_description", "regex": "^T-"}, [False, False, True, False, False]),
        ({"field": "hs_code", "is_null": True}, [False, False, False, True, False]),  # "" is missing
        ({"field": "hs_code", "not_null": True}, [True, True, True, False, True]),
        ({"field": "origin_country", "is_null": False}, [True, True, True, False, True]),
        ({"field": "is_reefer", "eq": True}, [True, False, True, False, True]),
        ({"field": "is_reefer", "ne": True}, [False, True, False, True, False]),
        ({"field": "filed_at", "gte": "2024-07-01"}, [False, False, False, True, True]),
        ({"field": "filed_at", "lt": "2024-06-30T23:30:00Z"}, [True, True, False, False, False]),
        ({"field": "filed_at", "between": ["2024-06-01", "2024-12-31"]}, [False, True, False, False, True]),
        ({"field": "filed_at", "eq": "2024-01-01"}, [True, False, False, False, False]),
        ({"field": "hs4", "in": ["0803", "0804"]}, [True, True, False, False, False]),
    ],
)
def test_operator(cond, expected):
    assert mask(cond) == expected


def test_every_operator_is_covered_above():
    # Keeps the parametrised table honest when an operator is added.
    assert set(OPERATORS) == {"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "between",
                              "prefix", "regex", "is_null", "not_null"}


def test_all_any_not_nest():
    reefer_fruit = {"all": [{"field": "is_reefer", "eq": True},
                            {"any": [{"field": "hs4", "eq": "0803"}, {"field": "hs2", "eq": "03"}]}]}
    assert mask(reefer_fruit) == [True, False, False, False, True]
    assert mask({"not": reefer_fruit}) == [False, True, True, True, False]
    assert mask({"any": [{"not": {"field": "origin_country", "in": ["CO", "EC", "BR"]}},
                         {"all": [{"field": "gross_weight_kg", "lt": 10}]}]}) == [
        False, True, True, True, False]
    # `not` is the plain complement: true on a missing value, unlike `ne`.
    assert mask({"not": {"field": "origin_country", "eq": "EC"}})[3] is True
    assert mask({"field": "origin_country", "ne": "EC"})[3] is False


def test_condition_round_trips_through_to_dict():
    cond = {"all": [{"field": "gross_weight_kg", "between": [1, 2.5]},
                    {"not": {"field": "filed_at", "lt": "2024-01-01"}},
                    {"field": "hs_code", "prefix": ["08"]}]}
    parsed = parse_condition(cond)
    assert parse_condition(parsed.to_dict()) == parsed
    assert parsed.to_dict()["all"][0] == {"field": "gross_weight_kg", "between": [1, 2.5]}
    assert parsed.fields() == {"gross_weight_kg", "filed_at", "hs_code"}


@pytest.mark.parametrize(
    "cond, message",
    [
        ({"field": "origin_contry", "eq": "CO"}, "unknown field 'origin_contry'. Did you mean 'origin_country'"),
        ({"field": "origin_country", "equals": "CO"}, "unknown operator 'equals'.*Valid operators: eq, ne"),
        ({"field": "origin_country", "gt": "CO"}, "'gt' does not apply to text field 'origin_country'"),
        ({"field": "is_reefer", "in": [True]}, "'in' does not apply to flag field 'is_reefer'"),
        ({"field": "hs4", "eq": 803}, "must be a string, got integer 803.*Quote codes"),
        ({"field": "gross_weight_kg", "gt": "100"}, "must be a number, got string"),
        ({"field": "gross_weight_kg", "gt": True}, "must be a number, got boolean"),
        ({"field": "gross_weight_kg", "between": [1]}, r"list of two values \[low, high\]"),
        ({"field": "gross_weight_kg", "between": [5, 1]}, "low 5 is greater than high 1"),
        ({"field": "gross_weight_kg", "between": ["a", 1]}, "must be a number"),
        ({"field": "goods_description", "regex": "(unclosed"}, "not a valid regular expression"),
        ({"field": "origin_country", "in": []}, "non-empty list"),
        ({"field": "origin_country", "eq": ["CO"]}, "use 'in'/'not_in'"),
        ({"field": "hs_code", "prefix": ""}, "empty prefix"),
        ({"field": "filed_at", "gt": "next tuesday"}, "not a date"),
        ({"field": "origin_country", "is_null": "yes"}, "true or false"),
        ({"field": "origin_country", "eq": "CO", "ne": "EC"}, "exactly one operator"),
        ({"field": "origin_country"}, "exactly one operator, got none"),
        ({"all": [], }, "non-empty list"),
        ({"all": [{"field": "hs4", "eq": "0803"}], "any": []}, "must be the only key"),
        ({"field": 3, "eq": 1}, "'field' must be a field name"),
        ("origin_country == 'CO'", "expected a mapping"),
        ({"origin_country": "CO"}, "needs 'field' and one operator"),
        ({"field": "is_illicit", "eq": 1}, "unknown field 'is_illicit'"),
    ],
)
def test_bad_conditions_are_refused_with_a_clear_message(cond, message):
    with pytest.raises(ConditionError, match=message):
        parse_condition(cond)


def test_yaml_norway_problem_is_explained():
    doc = pack_dict([ind("a", {"field": "pol_country", "in": ["SE", "NO"]})])
    text = yaml.safe_dump(doc).replace("'NO'", "NO")
    with pytest.raises(PackError, match="got boolean False. YAML reads unquoted NO"):
        parse_pack(text)


def test_error_names_the_place_in_the_tree():
    with pytest.raises(ConditionError) as exc:
        parse_condition({"all": [{"field": "hs4", "eq": "0803"},
                                 {"any": [{"not": {"field": "nope", "eq": "x"}}]}]})
    assert exc.value.where == "condition.all[1].any[0].not"


def test_deep_nesting_is_refused():
    cond: dict = {"field": "hs4", "eq": "0803"}
    for _ in range(40):
        cond = {"not": cond}
    with pytest.raises(ConditionError, match="nested deeper than"):
        parse_condition(cond)


def test_unknown_field_in_data_is_missing_not_an_error(caplog):
    df = pd.DataFrame({"origin_country": ["CO"]})
    with caplog.at_level(logging.WARNING):
        assert mask({"field": "terminal", "is_null": True}, df) == [True]
    assert "terminal" in caplog.text


def test_bad_flag_column_is_a_clear_error():
    df = pd.DataFrame({"is_reefer": ["maybe"]})
    with pytest.raises(ValueError, match="must hold true/false values"):
        mask({"field": "is_reefer", "eq": True}, df)


def test_field_catalogue_matches_the_schema_and_derived_fields():
    schema = {c.name for c in COLUMNS}
    assert {n for n, f in FIELDS.items() if not f.derived} == schema
    assert {n for n, f in FIELDS.items() if f.derived} == set(DERIVED_FIELDS)
    assert set(OPERATORS_BY_KIND) == {"str", "num", "bool", "datetime"}


# --------------------------------------------------------------------------------------------
# property test: random valid condition trees
# --------------------------------------------------------------------------------------------

_TEXT = st.sampled_from(["CO", "EC", "NL", "BR", "08", "0803", "FRESH", ""])
_NUM = st.one_of(st.integers(-10, 30000), st.floats(-1e5, 1e5, allow_nan=False))
_WHEN = st.sampled_from(["2024-01-01", "2024-06-30T12:00:00", "2025-01-01T00:00:00Z"])


@st.composite
def _leaf(draw):
    name = draw(st.sampled_from(["origin_country", "hs4", "goods_description", "gross_weight_kg",
                                 "is_reefer", "filed_at", "weight_discrepancy_ratio"]))
    kind = FIELDS[name].kind
    op = draw(st.sampled_from(OPERATORS_BY_KIND[kind]))
    if op in ("is_null", "not_null"):
        return {"field": name, op: draw(st.booleans())}
    scalar = {"str": _TEXT.filter(bool), "num": _NUM, "bool": st.booleans(), "datetime": _WHEN}[kind]
    if op in ("in", "not_in"):
        value = draw(st.lists(scalar, min_size=1, max_size=3))
    elif op == "between":
        order = (lambda v: parse_instant(v)[0]) if kind == "datetime" else (lambda v: v)
        value = sorted(draw(st.lists(scalar, min_size=2, max_size=2)), key=order)
    elif op == "prefix":
        value = draw(st.one_of(scalar, st.lists(scalar, min_size=1, max_size=2)))
    elif op == "regex":
        value = draw(st.sampled_from(["^C", "0$", "(?i)fresh", "[0-9]{2}"]))
    else:
        value = draw(scalar)
    return {"field": name, op: value}


_TREES = st.recursive(
    _leaf(),
    lambda kids: st.one_of(
        st.builds(lambda xs: {"all": xs}, st.lists(kids, min_size=1, max_size=3)),
        st.builds(lambda xs: {"any": xs}, st.lists(kids, min_size=1, max_size=3)),
        st.builds(lambda x: {"not": x}, kids),
    ),
    max_leaves=8,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TREES)
def test_random_condition_trees_evaluate_and_not_inverts(tree):
    hit = evaluate_condition(tree, FRAME)
    assert hit.dtype == bool and list(hit.index) == list(FRAME.index)
    inverted = evaluate_condition({"not": tree}, FRAME)
    assert (inverted == ~hit).all()
    both = evaluate_condition({"all": [tree, {"not": tree}]}, FRAME)
    assert not both.any()
    assert parse_condition(parse_condition(tree).to_dict()) == parse_condition(tree)


# --------------------------------------------------------------------------------------------
# packs
# --------------------------------------------------------------------------------------------

def test_pack_loads_with_metadata_and_defaults(tmp_path):
    p = tmp_path / "pack.yaml"
    p.write_text(yaml.safe_dump(pack_dict([ind("a", references=["A public report"], tags=["route"]),
                                           ind("b", severity=6, version=3, **{"x-internal": 7})])))
    pack = load_pack(p)
    assert (pack.id, str(pack.version), pack.metadata.tlp) == ("p1", "1.0.0", "GREEN")
    assert pack.metadata.issuer.country == "NL" and pack.source == str(p)
    a, b = pack.indicators
    assert a.version == Version.parse("1.0.0") and b.version == Version.parse(3)
    assert (a.severity.label, a.severity.score) == ("high", 7.5)
    assert (b.severity.label, b.severity.score) == ("medium", 6.0)
    assert str(a.references[0]) == "A public report" and a.tags == ("route",)
    assert b.extensions == {"x-internal": 7}
    assert len(pack.sha256) == 64


def test_pack_round_trips_and_dump_keeps_the_bytes(tmp_path):
    original = default_packs()[0]
    again = parse_pack(yaml.safe_dump(original.to_dict()))
    assert again.to_dict() == original.to_dict()
    copied = dump_pack(original, tmp_path / "copy.yaml")
    assert copied.read_bytes() == default_pack_path().read_bytes()
    assert load_pack(copied).sha256 == original.sha256
    in_memory = parse_pack(original.to_dict())
    written = dump_pack(in_memory, tmp_path / "mem.yaml")
    assert load_pack(written).to_dict() == original.to_dict()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["metadata"].update(tlp="PURPLE"), "not a TLP marking"),
        (lambda d: d["metadata"].update(version="v1"), "not a semantic version"),
        (lambda d: d["metadata"].update(version=True), "semantic version"),
        (lambda d: d["metadata"]["issuer"].update(country="Netherlands"), "ISO 3166"),
        (lambda d: d["metadata"].pop("created"), "needs 'created'"),
        (lambda d: d["metadata"].update(id="has space"), "metadata.id must be"),
        (lambda d: d.update(indicators=[]), "non-empty list"),
        (lambda d: d.update(extra=1), r"unknown key\(s\) \['extra'\] in the pack"),
        (lambda d: d["indicators"][0].update(valid_untill="2025-01-01"), r"unknown key\(s\) \['valid_untill'\]"),
        (lambda d: d["indicators"][0].update(severity="urgent"), "severity 'urgent' is not one of"),
        (lambda d: d["indicators"][0].update(severity=12), "outside 0..10"),
        (lambda d: d["indicators"][0].pop("rationale"), "missing 'rationale'"),
        (lambda d: d["indicators"][0].update(valid_from="2025-02-01", valid_until="2025-01-01"),
         "valid_from 2025-02-01 is after valid_until"),
        (lambda d: d["indicators"][0].update(id="a;b"), "'id' must be"),
        (lambda d: d["indicators"].append(dict(d["indicators"][0])), "duplicate id"),
    ],
)
def test_bad_packs_are_refused(mutate, message):
    doc = pack_dict([ind("a")])
    mutate(doc)
    with pytest.raises(PackError, match=message):
        parse_pack(yaml.safe_dump(doc))


def test_pack_errors_name_pack_and_indicator_and_list_every_problem(tmp_path):
    doc = pack_dict([ind("good"),
                     ind("typo", {"field": "seal_missmatch", "eq": True}),
                     ind("badop", {"all": [{"field": "hs4", "like": "08%"}]})], pack_id="nl-rotterdam")
    p = tmp_path / "partner.yaml"
    p.write_text(yaml.safe_dump(doc))
    with pytest.raises(PackError) as exc:
        load_pack(p)
    text = str(exc.value)
    assert "pack 'nl-rotterdam'" in text and str(p) in text
    assert "indicator 'typo': unknown field 'seal_missmatch'. Did you mean 'seal_mismatch'" in text
    assert "Valid fields: arrival_date" in text
    assert "indicator 'badop': unknown operator 'like'" in text and "condition.all[0]" in text
    assert len(exc.value.problems) == 2


def test_yaml_duplicate_keys_and_broken_yaml_are_refused():
    text = yaml.safe_dump(pack_dict([ind("a")]))
    dup = text.replace("severity: high", "severity: high\n  severity: low")
    with pytest.raises(PackError, match="duplicate key 'severity'"):
        parse_pack(dup)
    with pytest.raises(PackError, match="not valid YAML"):
        parse_pack("metadata: [unclosed")
    with pytest.raises(PackError, match="not UTF-8"):
        parse_pack(b"\xff\xfe garbage")


def test_yaml_is_loaded_safely():
    doc = "!!python/object/apply:os.system ['echo hacked']"
    with pytest.raises(PackError, match="not valid YAML"):
        parse_pack(doc)


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="indicator pack not found"):
        load_pack(tmp_path / "nope.yaml")
    with pytest.raises(IsADirectoryError, match="use load_packs"):
        load_pack(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no indicator packs \(\*.yaml\)"):
        load_packs(tmp_path)
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(pack_dict([ind("x")], pack_id="b")))
    (tmp_path / "a.yml").write_text(yaml.safe_dump(pack_dict([ind("y")], pack_id="a")))
    assert [p.id for p in load_packs(tmp_path)] == ["a", "b"]


def test_versions_order_like_semver():
    order = ["0.9.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta", "1.0.0-rc.1", 1, "1.0.1", "1.2", 2, "10.0.0"]
    parsed = [Version.parse(v) for v in order]
    assert parsed == sorted(parsed)
    assert Version.parse(1) == Version.parse("1.0.0") == Version.parse("1.0.0+build.5")
    assert Version.parse("1.0.0-rc.2") > Version.parse("1.0.0-rc.1")


def test_severity_numbers_and_labels():
    assert Severity.parse("Critical").score == 10.0
    assert Severity.parse(0).label == "low" and Severity.parse(9).label == "critical"
    with pytest.raises(ValueError):
        Severity.parse(float("nan"))


# --------------------------------------------------------------------------------------------
# merging
# --------------------------------------------------------------------------------------------

def test_merge_higher_version_wins_only_within_the_owning_pack(caplog):
    be = make_pack([ind("shared", severity="low"), ind("only_be")], pack_id="be", version="1.0.0")
    nl = make_pack([ind("shared", severity="critical", version="1.1.0")], pack_id="nl", version="1.0.0")
    with caplog.at_level(logging.ERROR):
        merged = merge_packs([be, nl])
    # "shared" belongs to be (given first): nl's higher version does not replace it.
    assert merged.ids == ["shared", "only_be"]
    assert merged.indicator("shared").severity.label == "low"
    assert merged.indicator("shared").pack_id == "be"
    assert merged.conflicts == () and merged.superseded == ()
    (refused,) = merged.refused
    assert (refused.indicator_id, refused.pack_id, refused.owner_pack_id) == ("shared", "nl", "be")
    assert "pack 'nl' redefines indicator 'shared' (version 1.1.0) of pack 'be'" in caplog.text
    with pytest.raises(PackConflictError, match="may only supersede its own indicators"):
        merge_packs([be, nl], strict=True)
    # The owner supersedes its own indicator with a higher version.
    be2 = make_pack([ind("shared", severity="critical", version="1.1.0")], pack_id="be", version="1.1.0")
    merged = merge_packs([be, be2, nl])
    assert merged.indicator("shared").severity.label == "critical" and merged.refused == ()


def test_merge_newer_pack_version_replaces_the_whole_older_one():
    v1 = make_pack([ind("a"), ind("withdrawn")], pack_id="nl", version=1)
    v2 = make_pack([ind("a", severity="low")], pack_id="nl", version=2)
    merged = merge_packs([v2, v1])
    assert merged.ids == ["a"]
    assert merged.indicator("a").severity.label == "low"
    assert merged.superseded[0].indicator_id is None and merged.superseded[0].version == "1"


def test_merge_identical_copies_is_silent():
    a = make_pack([ind("x")], pack_id="a")
    b = make_pack([ind("x")], pack_id="b")
    merged = merge_packs([a, b, a])
    assert merged.ids == ["x"] and merged.conflicts == ()


def test_merge_conflict_is_reported_and_strict_raises(caplog):
    a = make_pack([ind("x", severity="high")], pack_id="be-antwerp")
    b = make_pack([ind("x", severity="low", condition={"field": "origin_country", "eq": "EC"})],
                  pack_id="nl-rotterdam")
    with caplog.at_level(logging.WARNING):
        merged = merge_packs([a, b])
    (conflict,) = merged.conflicts
    assert conflict.pack_ids == ("be-antwerp", "nl-rotterdam")
    assert conflict.kept_pack_id == "be-antwerp"
    assert conflict.differences == ("condition", "severity")
    assert merged.indicator("x").severity.label == "high"
    assert "indicator 'x' version 1.0.0 differs between packs" in caplog.text
    with pytest.raises(PackConflictError, match="be-antwerp.*nl-rotterdam") as exc:
        merge_packs([a, b], strict=True)
    assert exc.value.conflicts[0].indicator_id == "x"
    # A higher version from a third pack does not settle it: only the owner may supersede.
    c = make_pack([ind("x", version="2.0.0")], pack_id="eu")
    merged = merge_packs([a, b, c])
    assert merged.indicator("x").pack_id == "be-antwerp" and [r.pack_id for r in merged.refused] == ["eu"]
    a2 = make_pack([ind("x", version="2.0.0")], pack_id="be-antwerp", version="2.0.0")
    assert merge_packs([a2, b]).indicator("x").pack_id == "be-antwerp"


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------

def test_evaluate_matrix_hit_ids_counts_and_severity():
    pack = make_pack([
        ind("co", {"field": "origin_country", "eq": "CO"}, severity="low"),
        ind("reefer_fruit", {"all": [{"field": "is_reefer", "eq": True}, {"field": "hs2", "in": ["08", "03"]}]},
            severity="critical"),
        ind("never", {"field": "gross_weight_kg", "gt": 1e9}),
    ])
    df = FRAME.copy()
    hits = evaluate(pack, df)
    pd.testing.assert_frame_equal(df, FRAME)  # derived fields are not added to the caller's frame
    assert list(hits.matrix.columns) == ["co", "reefer_fruit", "never"]
    assert list(hits.matrix.index) == list(FRAME.index)
    assert hits.matrix.dtypes.eq(bool).all()
    assert hits.hit_ids.tolist() == ["co;reefer_fruit", "", "", "", "reefer_fruit"]
    assert hits.counts().to_dict() == {"co": 1, "reefer_fruit": 2, "never": 0}
    assert hits.n_hits().tolist() == [2, 0, 0, 0, 1]
    assert hits.max_severity().tolist() == [10.0, 0.0, 0.0, 0.0, 10.0]
    assert [i.id for i in hits.reasons(10)] == ["reefer_fruit", "co"]
    assert hits.indicator("co").rationale == "why co"


def test_evaluate_uses_precomputed_derived_fields():
    pack = make_pack([ind("r", {"field": "is_reefer", "eq": True})])
    df = FRAME.assign(is_reefer=[False] * 5)
    assert evaluate(pack, df).counts()["r"] == 0


def test_evaluate_passes_first_seen_history():
    pack = make_pack([ind("new", {"field": "party_first_seen_days", "lt": 90})])
    df = pd.DataFrame({"consignee": ["OLD BV", "NEW BV"], "filed_at": pd.to_datetime(["2024-06-01"] * 2)})
    assert evaluate(pack, df).matrix["new"].tolist() == [True, True]
    hits = evaluate(pack, df, first_seen={"OLD BV": pd.Timestamp("2020-01-01")})
    assert hits.matrix["new"].tolist() == [False, True]


def test_validity_windows():
    pack = make_pack([
        ind("from_july", {"field": "origin_country", "not_null": True}, valid_from="2024-07-01"),
        ind("until_june", {"field": "origin_country", "not_null": True}, valid_until="2024-06-30"),
        ind("until_noon", {"field": "origin_country", "not_null": True}, valid_until="2024-06-30T12:00:00"),
        ind("always", {"field": "origin_country", "not_null": True}),
    ])
    m = evaluate(pack, FRAME).matrix
    # Rows: 2024-01-01, 2024-06-30 23:00, NaT, 2025-01-01 (origin missing), 2024-07-01.
    assert m["from_july"].tolist() == [False, False, False, False, True]
    assert m["until_june"].tolist() == [True, True, False, False, False]  # a date covers its whole day
    assert m["until_noon"].tolist() == [True, False, False, False, False]
    assert m["always"].tolist() == [True, True, True, False, True]  # no window: NaT does not matter


def test_evaluate_merges_several_packs_and_reports_conflicts():
    a = make_pack([ind("x")], pack_id="a")
    b = make_pack([ind("x", severity="low")], pack_id="b")
    hits = evaluate([a, b], FRAME)
    assert hits.matrix.shape == (5, 1) and len(hits.conflicts) == 1
    with pytest.raises(PackConflictError):
        evaluate([a, b], FRAME, strict=True)


def test_evaluate_on_no_rows_and_summary_with_labels():
    pack = make_pack([ind("co"), ind("ec", {"field": "origin_country", "eq": "EC"})])
    empty = evaluate(pack, FRAME.iloc[:0])
    assert empty.matrix.shape == (0, 2) and empty.hit_ids.tolist() == []
    hits = evaluate(pack, FRAME)
    truth = pd.Series([1, 0, 1, np.nan, 0], index=FRAME.index)
    s = hits.summary(truth)
    assert s.loc["co", "hits"] == 1 and s.loc["co", "hit_rate"] == pytest.approx(0.2)
    assert s.loc["co", "illicit_hit_rate"] == pytest.approx(0.5)
    assert s.loc["co", "licit_hit_rate"] == pytest.approx(0.0)
    assert s.loc["co", "precision"] == pytest.approx(1.0) and s.loc["ec", "precision"] == pytest.approx(0.0)
    cov = hits.coverage(truth)
    assert (cov["hits"], cov["illicit_rows"], cov["licit_rows"]) == (2, 2, 2)
    assert cov["precision"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="0 \\(licit\\), 1 \\(illicit\\)"):
        hits.summary(pd.Series([2, 0, 0, 0, 0]))


# --------------------------------------------------------------------------------------------
# the shipped pack
# --------------------------------------------------------------------------------------------

@pytest.fixture
def pack_rows(good_row) -> pd.DataFrame:
    """Validated manifests, each row built to trigger specific indicators of the default pack."""
    base = dict(good_row, origin_country="US", port_of_loading="USSAV", transshipment_ports="",
                container_type="45G1", hs_code="847130", goods_description="LAPTOP COMPUTERS",
                gross_weight_kg="12000", vgm_kg="15900", consignee="OLD TRADER BV")
    rows = {
        "clean": {},
        "source_reefer": dict(good_row, consignee="OLD TRADER BV"),  # EC, ECGYE, via PAMIT, bananas
        "seal": {"seal_number_gate": "XX0000001"},
        "front": {"origin_country": "CO", "consignee": "NEWCO SAS", "freight_payment": "cash",
                  "goods_description": "FAK"},
        "freight": {"declared_value": "1000", "freight_charges": "3000"},
        "amended": {"last_amended_at": "2026-03-11T20:00:00Z"},
        "gate": {"gate_in_at": "2026-02-28T11:00:00Z"},
        "weight": {"vgm_kg": "22000"},
        "late": {"filed_at": "2026-03-11T12:00:00Z"},
        "late_short_sea": {"filed_at": "2026-03-11T12:00:00Z", "port_of_loading": "GBFXT",
                           "origin_country": "GB"},
        "empty": {"port_of_loading": "COCTG", "goods_description": "EMPTY CONTAINER", "hs_code": "",
                  "packages": "0", "gross_weight_kg": "0", "vgm_kg": "3900"},
    }
    frame = [{**base, **change, "manifest_id": name} for name, change in rows.items()]
    # A regular importer of fruit (chapter 08) that suddenly imports textiles.
    for k, (hs, day) in enumerate([("080390", "01"), ("080390", "02"), ("080390", "03"), ("610910", "04")]):
        frame.append(dict(base, manifest_id=f"trader{k}", consignee="FRUIT IMPORT GMBH", hs_code=hs,
                          goods_description="FRESH BANANAS" if hs == "080390" else "COTTON T-SHIRTS",
                          filed_at=f"2026-02-{day}T10:00:00Z"))
    result = validate(pd.DataFrame(frame))
    assert result.n_rejected == 0, result.rejects["reject_reasons"].tolist()
    return result.valid.set_index("manifest_id", drop=False)


def test_default_pack_content():
    (pack,) = default_packs()
    assert pack.id == "riskengine-default" and pack.metadata.tlp == "CLEAR"
    assert "public sources" in pack.metadata.issuer.agency
    assert len(pack) >= 14
    for i in pack.indicators:
        assert len(i.rationale) > 80 and i.references, i.id
    assert {i.severity.label for i in pack.indicators} == {"low", "medium", "high", "critical"}
    assert any(isinstance(i.severity.raw, float) for i in pack.indicators)


def test_every_default_indicator_fires_where_expected(pack_rows):
    history = {"OLD TRADER BV": pd.Timestamp("2020-01-01"), "FRUIT IMPORT GMBH": pd.Timestamp("2020-01-01")}
    hits = evaluate(default_packs(), pack_rows, first_seen=history)
    m = hits.matrix
    expected = {
        "origin_cocaine_source_country": {"source_reefer", "front"},
        "loading_port_cocaine_hotspot": {"source_reefer", "empty"},
        "transshipment_via_caribbean_hub": {"source_reefer"},
        "perishables_reefer_from_source": {"source_reefer"},
        "seal_mismatch_at_gate": {"seal"},
        "new_consignee": {"front"},
        "front_company_profile": {"front"},
        "goods_off_trader_profile": {"trader3"},
        "freight_paid_cash_or_third_party": {"front"},
        "freight_exceeds_goods_value": {"freight"},
        "vague_goods_description": {"front"},
        "late_amendment_before_arrival": {"amended"},
        "gate_in_near_cut_off": {"gate"},
        "weight_vgm_discrepancy": {"weight"},
        "late_filing": {"late"},
        "empty_container_from_source": {"empty"},
    }
    assert set(m.columns) == set(expected)
    for ind_id, rows in expected.items():
        assert set(m.index[m[ind_id]]) == rows, ind_id
    assert hits.hit_ids["clean"] == ""


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def test_cli_help():
    runner = CliRunner()
    for args in (["indicators", "--help"], ["indicators", "list", "--help"],
                 ["indicators", "check", "--help"], ["indicators", "hits", "--help"],
                 ["indicators", "fields", "--help"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 0, args
    assert "--inspected-only" in runner.invoke(main, ["indicators", "hits", "--help"]).output


def test_cli_fields():
    res = CliRunner().invoke(main, ["indicators", "fields", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    by_name = {f["name"]: f for f in data["fields"]}
    assert by_name["seal_mismatch"]["derived"] is True and by_name["vgm_kg"]["kind"] == "num"
    assert "between" in data["operators"]["num"] and "regex" not in data["operators"]["num"]
    assert "weight_discrepancy_ratio" in CliRunner().invoke(main, ["indicators", "fields"]).output


def test_cli_list(tmp_path):
    res = CliRunner().invoke(main, ["indicators", "list"])
    assert res.exit_code == 0, res.output
    assert "seal_mismatch_at_gate" in res.output and "critical" in res.output
    res = CliRunner().invoke(main, ["indicators", "list", "--json"])
    data = json.loads(res.output)
    assert len(data["indicators"]) == len(default_packs()[0])
    p = tmp_path / "partner.yaml"
    p.write_text(yaml.safe_dump(pack_dict([ind("seal_mismatch_at_gate", severity="low", version="9.0.0")],
                                          pack_id="partner")))
    res = CliRunner().invoke(main, ["indicators", "list", "--allow-unsigned", str(default_pack_path()),
                                    str(p), "--json"])
    data = json.loads(res.stdout)
    chosen = [i for i in data["indicators"] if i["id"] == "seal_mismatch_at_gate"]
    # Another pack may not replace a built-in indicator, whatever its version.
    assert chosen[0]["pack"] == default_packs()[0].id and chosen[0]["severity"] == "critical"
    assert data["refused"][0]["pack_id"] == "partner" and data["refused"][0]["version"] == "9.0.0"
    res = CliRunner().invoke(main, ["indicators", "list", "--allow-unsigned", str(default_pack_path()), str(p)])
    assert "refused" in res.output and "may only supersede its own indicators" in " ".join(res.output.split())


def test_cli_check_ok_and_broken(tmp_path):
    res = CliRunner().invoke(main, ["indicators", "check", str(default_pack_path())])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output and "16 indicators" in res.output.replace("\n", " ")
    bad = tmp_path / "broken.yaml"
    bad.write_text(yaml.safe_dump(pack_dict([ind("x", {"field": "hs4", "bigger": 3})], pack_id="broken")))
    res = CliRunner().invoke(main, ["indicators", "check", "--allow-unsigned", str(bad)])
    assert res.exit_code == 1
    flat = " ".join(res.output.split())
    assert "PackError" in flat and "pack 'broken'" in flat and "indicator 'x'" in flat
    assert "unknown operator 'bigger'" in flat
    res = CliRunner().invoke(main, ["indicators", "check", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_cli_list_refuses_a_broken_pack(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("metadata: {id: x}\nindicators: []\n")
    res = CliRunner().invoke(main, ["indicators", "list", "--allow-unsigned", str(bad)])
    assert res.exit_code == 1 and "PackError" in res.output


def test_package_readme_documents_every_derived_field():
    text = (default_pack_path().parent.parent / "README.md").read_text()
    assert [f for f in DERIVED_FIELDS if f"`{f}`" not in text] == []


def test_cli_check_strict_conflict(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(yaml.safe_dump(pack_dict([ind("x")], pack_id="a")))
    b.write_text(yaml.safe_dump(pack_dict([ind("x", severity="low")], pack_id="b")))
    res = CliRunner().invoke(main, ["indicators", "check", "--allow-unsigned", str(a), str(b)])
    assert res.exit_code == 0 and "conflict" in res.output
    res = CliRunner().invoke(main, ["indicators", "check", "--allow-unsigned", "--strict", str(a), str(b)])
    assert res.exit_code == 1 and "PackConflictError" in res.output


def test_cli_hits(tmp_path, good_row):
    rows = []
    for k in range(6):
        illicit = k < 2
        rows.append(dict(good_row, manifest_id=f"M{k}", is_illicit=int(illicit), inspected=1,
                         seal_number_gate="XX1" if illicit else good_row["seal_number_gate"],
                         consignee="ROTTERDAM FRESH BV"))
    rows.append(dict(good_row, manifest_id="BAD", container_id="CSQU3054384", is_illicit=0, inspected=0))
    p = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    res = CliRunner().invoke(main, ["indicators", "hits", "--data", str(p), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert (out["rows"], out["valid"], out["quarantined"]) == (7, 6, 1)
    by_id = {r["id"]: r for r in out["indicators"]}
    seal = by_id["seal_mismatch_at_gate"]
    assert (seal["hits"], seal["precision"], seal["illicit_hit_rate"], seal["licit_hit_rate"]) == (2, 1.0, 1.0, 0.0)
    assert by_id["origin_cocaine_source_country"]["hits"] == 6
    assert by_id["origin_cocaine_source_country"]["precision"] == pytest.approx(2 / 6)
    assert by_id["late_filing"]["precision"] is None  # no hits: null, not NaN
    assert out["any"]["illicit_hit_rate"] == 1.0 and out["labels"] == "is_illicit"

    table = CliRunner().invoke(main, ["indicators", "hits", "--data", str(p)])
    assert table.exit_code == 0, table.output
    flat = " ".join(table.output.split())
    assert "6 evaluated, 1 quarantined" in flat and "precision" in flat
    assert "illicit rows caught 100.0 % of 2" in flat and "precision 33.3 %" in flat

    res = CliRunner().invoke(main, ["indicators", "hits", "--data", str(p), "--pack", str(tmp_path / "x.yaml")])
    assert res.exit_code == 2
    res = CliRunner().invoke(main, ["indicators", "hits", "--data", str(tmp_path / "none.csv")])
    assert res.exit_code == 1 and "FileNotFoundError" in res.output


def test_cli_hits_with_history(tmp_path, good_row):
    p, h = tmp_path / "m.csv", tmp_path / "history.csv"
    pd.DataFrame([dict(good_row, manifest_id="A", consignee="KNOWN BV"),
                  dict(good_row, manifest_id="B", consignee="NEWCO SAS")]).to_csv(p, index=False)
    pd.DataFrame([dict(good_row, manifest_id="OLD", consignee="known bv",
                       filed_at="2025-01-01T00:00:00Z")]).to_csv(h, index=False)
    without = json.loads(CliRunner().invoke(main, ["indicators", "hits", "--data", str(p), "--json"]).output)
    res = CliRunner().invoke(main, ["indicators", "hits", "--data", str(p), "--history", str(h), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    new_hits = {o["id"]: o["hits"] for o in out["indicators"]}["new_consignee"]
    assert {o["id"]: o["hits"] for o in without["indicators"]}["new_consignee"] == 2
    assert new_hits == 1 and out["history_consignees"] == 1


def test_cli_hits_without_labels_and_all_rows_invalid(tmp_path, good_row):
    p = tmp_path / "m.csv"
    pd.DataFrame([dict(good_row, manifest_id=f"M{k}") for k in range(3)]).to_csv(p, index=False)
    res = CliRunner().invoke(main, ["indicators", "hits", "--data", str(p), "--json"])
    out = json.loads(res.output)
    assert out["labels"] is None and "precision" not in out["indicators"][0]
    res = CliRunner().invoke(main, ["indicators", "hits", "--data", str(p), "--inspected-only"])
    assert res.exit_code == 1 and "is_illicit" in res.output
    bad = tmp_path / "bad.csv"
    pd.DataFrame([dict(good_row, container_id="NOPE")]).to_csv(bad, index=False)
    res = CliRunner().invoke(main, ["indicators", "hits", "--data", str(bad)])
    assert res.exit_code == 1 and "none of the 1 rows" in " ".join(res.output.split())
