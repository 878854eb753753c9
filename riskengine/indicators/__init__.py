"""Shared risk-indicator packs: load, validate, merge and evaluate.

Services exchange the modus operandi they see as *indicator packs*: versioned YAML files whose
conditions are a small declarative language (never code) evaluated column-wise on manifests.

Example
-------
>>> from riskengine.indicators import default_packs, evaluate, load_pack, merge_packs
>>> merged = merge_packs(default_packs() + [load_pack("partner.yaml")])  # doctest: +SKIP
>>> hits = evaluate(merged, manifests)                                   # doctest: +SKIP
>>> hits.hit_ids.head()                                                  # doctest: +SKIP

A partner's pack is verified against the trust store before use (see
:mod:`riskengine.indicators.signing`):

>>> partner = load_verified_pack("partner.yaml")                         # doctest: +SKIP
"""

from riskengine.indicators.conditions import (
    OPERATORS,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    ConditionError,
    Not,
    evaluate_condition,
    parse_condition,
)
from riskengine.indicators.evaluate import IndicatorHits, evaluate, resolve_indicators
from riskengine.indicators.fields import FIELDS, OPERATORS_BY_KIND, FieldSpec
from riskengine.indicators.merge import (
    MergeConflict,
    MergedIndicators,
    PackConflictError,
    RefusedIndicator,
    SupersededIndicator,
    merge_packs,
)
from riskengine.indicators.pack import (
    SEVERITY_SCORES,
    TLP_MARKINGS,
    Indicator,
    IndicatorPack,
    Issuer,
    PackError,
    PackMetadata,
    Reference,
    Severity,
    Version,
    default_pack_path,
    default_packs,
    dump_pack,
    load_pack,
    load_packs,
    pack_files,
    parse_pack,
)
from riskengine.indicators.signing import (
    PackSignatureError,
    SigningKeyError,
    TrustedKey,
    TrustStore,
    TrustStoreError,
    VerificationResult,
    default_trust_dir,
    generate_keypair,
    load_verified_pack,
    load_verified_packs,
    sign_pack_file,
    verify_pack_file,
)
from riskengine.indicators.tlp import packs_for_clearance, tlp_allows

__all__ = [
    "FIELDS",
    "OPERATORS",
    "OPERATORS_BY_KIND",
    "SEVERITY_SCORES",
    "TLP_MARKINGS",
    "AllOf",
    "AnyOf",
    "Comparison",
    "Condition",
    "ConditionError",
    "FieldSpec",
    "Indicator",
    "IndicatorHits",
    "IndicatorPack",
    "Issuer",
    "MergeConflict",
    "MergedIndicators",
    "Not",
    "PackConflictError",
    "PackError",
    "PackMetadata",
    "PackSignatureError",
    "Reference",
    "RefusedIndicator",
    "Severity",
    "SigningKeyError",
    "SupersededIndicator",
    "TrustStore",
    "TrustStoreError",
    "TrustedKey",
    "VerificationResult",
    "Version",
    "default_pack_path",
    "default_packs",
    "default_trust_dir",
    "dump_pack",
    "evaluate",
    "evaluate_condition",
    "generate_keypair",
    "load_pack",
    "load_packs",
    "load_verified_pack",
    "load_verified_packs",
    "merge_packs",
    "pack_files",
    "packs_for_clearance",
    "parse_condition",
    "parse_pack",
    "resolve_indicators",
    "sign_pack_file",
    "tlp_allows",
    "verify_pack_file",
]
