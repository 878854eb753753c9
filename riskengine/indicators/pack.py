"""Indicator packs: versioned YAML files of risk indicators that services exchange.

A pack is data, never code. Layout::

    metadata:
      id: nl-customs-cocaine          # letters, digits, . _ : -
      version: 2.1.0                  # semantic version, or an integer
      issuer: {agency: Douane Rotterdam, country: NL}
      created: 2025-01-15
      tlp: GREEN                      # Traffic Light Protocol: CLEAR, GREEN, AMBER, AMBER+STRICT, RED
      description: Indicators seen on the South American fruit routes.
    indicators:
      - id: seal_mismatch_gate
        title: Seal at the gate differs from the manifest seal
        rationale: Plain-language reason shown to the officer.
        condition: {field: seal_mismatch, eq: true}      # see riskengine.indicators.conditions
        severity: critical            # low | medium | high | critical, or a number 0..10
        valid_from: 2024-01-01        # optional, inclusive
        valid_until: 2026-12-31       # optional, inclusive (a date covers the whole day)
        references: ["Title of a public source", {title: ..., url: ..., year: 2023}]
        tags: [rip_on_rip_off]        # optional
        version: 2.2.0                # optional; defaults to the pack version

Keys starting with ``x-`` are extensions: kept, never interpreted. Any other unknown key is an
error (a typo such as ``valid_untill`` must not silently disable a date window).

The canonical bytes of a pack are the file's bytes: :func:`load_pack` reads them once, records
their SHA-256 and parses exactly those bytes, so a detached signature over the file can be
checked on the same bytes before parsing.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from riskengine.indicators.conditions import (
    Condition,
    ConditionError,
    parse_condition,
    parse_instant,
)
from riskengine.schema import ISO_COUNTRIES

log = logging.getLogger(__name__)

__all__ = [
    "PACK_SUFFIXES",
    "SEVERITY_SCORES",
    "TLP_MARKINGS",
    "Indicator",
    "IndicatorPack",
    "Issuer",
    "PackError",
    "PackMetadata",
    "Reference",
    "Severity",
    "Version",
    "default_pack_path",
    "default_packs",
    "dump_pack",
    "load_pack",
    "load_packs",
    "pack_files",
    "parse_pack",
]

TLP_MARKINGS = ("CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED")
SEVERITY_SCORES = {"low": 2.5, "medium": 5.0, "high": 7.5, "critical": 10.0}
"""Severity labels on the 0..10 scale that numeric severities use."""
SEVERITY_MAX = 10.0
PACK_SUFFIXES = (".yaml", ".yml")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
_SEMVER = re.compile(
    r"(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
# ISO 3166 user-assigned codes (AA, QM-QZ, XA-XZ, ZZ) and the reserved EU, for issuers that are
# not one national service.
_EXTRA_COUNTRIES = frozenset({"AA", "ZZ", "EU"} | {f"Q{c}" for c in "MNOPQRSTUVWXYZ"}
                             | {f"X{c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"})
_PACK_KEYS = ("metadata", "indicators")
_METADATA_KEYS = ("id", "version", "issuer", "created", "tlp", "description")
_ISSUER_KEYS = ("agency", "country")
_INDICATOR_KEYS = ("id", "title", "rationale", "condition", "severity", "valid_from",
                   "valid_until", "references", "tags", "version")
_REFERENCE_KEYS = ("title", "url", "publisher", "year")
_MAX_PROBLEMS = 20


class PackError(ValueError):
    """An indicator pack that cannot be used; ``problems`` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


# --------------------------------------------------------------------------------------------
# Value types
# --------------------------------------------------------------------------------------------

@functools.total_ordering
@dataclass(frozen=True)
class Version:
    """A pack or indicator version: semantic version (``1.4.0``, ``2.0.0-rc.1``) or an integer
    (``3`` orders as ``3.0.0``). Build metadata (``+...``) is ignored when ordering."""

    raw: int | str
    key: tuple = field(repr=False)

    @classmethod
    def parse(cls, value: Any, what: str = "version") -> Version:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError(f"{what} must be a semantic version such as 1.2.0 or an integer, "
                             f"got {type(value).__name__} {value!r}")
        if isinstance(value, int):
            if value < 0:
                raise ValueError(f"{what} must not be negative, got {value}")
            return cls(value, (value, 0, 0, 1, ()))
        m = _SEMVER.fullmatch(value.strip())
        if m is None:
            raise ValueError(f"{what} {value!r} is not a semantic version (MAJOR.MINOR.PATCH, "
                             "e.g. 1.2.0 or 2.0.0-rc.1) or an integer")
        major, minor, patch, pre, _build = m.groups()
        nums = (int(major), int(minor or 0), int(patch or 0))
        if pre is None:
            return cls(value.strip(), (*nums, 1, ()))
        ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
        return cls(value.strip(), (*nums, 0, ids))

    def __str__(self) -> str:
        return str(self.raw)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self.key == other.key

    def __lt__(self, other: Version) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.key < other.key

    def __hash__(self) -> int:
        return hash(self.key)


@dataclass(frozen=True)
class Severity:
    """A severity: a label (low/medium/high/critical) or a number on the same 0..10 scale.

    ``score`` is always a number; ``label`` is the given label or the nearest one."""

    raw: str | float
    score: float
    label: str

    @classmethod
    def parse(cls, value: Any) -> Severity:
        if isinstance(value, str):
            label = value.strip().lower()
            if label not in SEVERITY_SCORES:
                raise ValueError(f"severity {value!r} is not one of {list(SEVERITY_SCORES)} "
                                 f"or a number from 0 to {SEVERITY_MAX:g}")
            return cls(label, SEVERITY_SCORES[label], label)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"severity must be one of {list(SEVERITY_SCORES)} or a number from "
                             f"0 to {SEVERITY_MAX:g}, got {type(value).__name__} {value!r}")
        if not (math.isfinite(value) and 0 <= value <= SEVERITY_MAX):
            raise ValueError(f"severity {value!r} is outside 0..{SEVERITY_MAX:g} "
                             f"(low={SEVERITY_SCORES['low']:g}, critical={SEVERITY_MAX:g})")
        score = float(value)
        label = min(SEVERITY_SCORES, key=lambda k: (abs(SEVERITY_SCORES[k] - score), -SEVERITY_SCORES[k]))
        return cls(value, score, label)

    def __str__(self) -> str:
        return self.label if isinstance(self.raw, str) else f"{self.raw:g} ({self.label})"


@dataclass(frozen=True)
class Reference:
    """A public source for an indicator."""

    title: str
    url: str | None = None
    publisher: str | None = None
    year: int | None = None

    def to_dict(self) -> dict | str:
        if self.url is None and self.publisher is None and self.year is None:
            return self.title
        out: dict[str, Any] = {"title": self.title}
        for key in ("url", "publisher", "year"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def __str__(self) -> str:
        bits = [self.title]
        if self.publisher:
            bits.append(self.publisher)
        if self.year:
            bits.append(str(self.year))
        text = ", ".join(bits)
        return f"{text} <{self.url}>" if self.url else text


@dataclass(frozen=True)
class Issuer:
    """The agency that issued a pack and its country (ISO 3166 alpha-2)."""

    agency: str
    country: str

    def to_dict(self) -> dict:
        return {"agency": self.agency, "country": self.country}


@dataclass(frozen=True)
class PackMetadata:
    """The ``metadata`` block of a pack."""

    id: str
    version: Version
    issuer: Issuer
    created: dt.date
    tlp: str
    description: str = ""
    extensions: dict = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict:
        out = {"id": self.id, "version": self.version.raw, "issuer": self.issuer.to_dict(),
               "created": self.created.isoformat(), "tlp": self.tlp}
        if self.description:
            out["description"] = self.description
        out.update(self.extensions)
        return out


def _instant_text(ts: pd.Timestamp | None, date_only: bool) -> str | None:
    if ts is None:
        return None
    return ts.date().isoformat() if date_only else ts.isoformat()


@dataclass(frozen=True, eq=False)
class Indicator:
    """One risk indicator. ``version`` is its own or, by default, its pack's version.

    ``pack_tlp`` is the TLP marking of the pack the indicator came from: whoever shows the
    indicator (its title, its rationale) checks the reader's clearance against this marking,
    the marking of the very indicator that fired, never a marking looked up by pack id (two
    versions of one pack may carry different markings). Unknown (built in memory): RED.
    """

    id: str
    title: str
    rationale: str
    condition: Condition
    severity: Severity
    version: Version
    pack_id: str
    pack_version: Version
    valid_from: pd.Timestamp | None = None
    valid_until: pd.Timestamp | None = None
    valid_from_date_only: bool = False
    valid_until_date_only: bool = False
    references: tuple[Reference, ...] = ()
    tags: tuple[str, ...] = ()
    extensions: dict = field(default_factory=dict)
    pack_tlp: str = "RED"

    def fields(self) -> set[str]:
        """Fields the condition reads."""
        return self.condition.fields()

    @property
    def has_window(self) -> bool:
        return self.valid_from is not None or self.valid_until is not None

    def active_at(self, when: np.ndarray) -> np.ndarray:
        """Bool mask: the indicator is valid at each datetime64 in ``when``. Without a window it
        is always valid; with one, a missing time (NaT) is not."""
        if not self.has_window:
            return np.ones(len(when), dtype=bool)
        when = np.asarray(when, dtype="datetime64[ns]")
        ok = ~np.isnat(when)
        if self.valid_from is not None:
            ok &= when >= self.valid_from.to_datetime64()
        if self.valid_until is not None:
            if self.valid_until_date_only:
                ok &= when < (self.valid_until + pd.Timedelta(days=1)).to_datetime64()
            else:
                ok &= when <= self.valid_until.to_datetime64()
        return ok

    def content_dict(self) -> dict:
        """Everything that defines the indicator, without its pack and version (what a merge
        compares to detect a conflict)."""
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "rationale": self.rationale,
            "condition": self.condition.to_dict(),
            "severity": self.severity.raw,
        }
        if self.valid_from is not None:
            out["valid_from"] = _instant_text(self.valid_from, self.valid_from_date_only)
        if self.valid_until is not None:
            out["valid_until"] = _instant_text(self.valid_until, self.valid_until_date_only)
        if self.references:
            out["references"] = [r.to_dict() for r in self.references]
        if self.tags:
            out["tags"] = list(self.tags)
        out.update(self.extensions)
        return out

    def to_dict(self, *, with_pack: bool = True) -> dict:
        """Plain data. ``with_pack`` adds ``version`` and ``pack``; without it the version is
        written only when it differs from the pack's (the form used inside a pack file)."""
        out = self.content_dict()
        if with_pack:
            out["version"] = self.version.raw
            out["pack"] = self.pack_id
        elif self.version != self.pack_version:
            out["version"] = self.version.raw
        return out


@dataclass(frozen=True, eq=False)
class IndicatorPack:
    """A parsed, validated pack. ``source`` is the file it came from, ``raw`` its exact bytes and
    ``sha256`` their digest (all ``None`` for packs built in memory)."""

    metadata: PackMetadata
    indicators: tuple[Indicator, ...]
    source: str | None = None
    sha256: str | None = None
    extensions: dict = field(default_factory=dict)
    raw: bytes | None = field(default=None, repr=False)

    @property
    def id(self) -> str:
        return self.metadata.id

    @property
    def version(self) -> Version:
        return self.metadata.version

    def __len__(self) -> int:
        return len(self.indicators)

    def __iter__(self):
        return iter(self.indicators)

    def indicator(self, indicator_id: str) -> Indicator:
        """The indicator with this id (KeyError listing the ids otherwise)."""
        for ind in self.indicators:
            if ind.id == indicator_id:
                return ind
        raise KeyError(f"pack {self.id!r} has no indicator {indicator_id!r}; it has "
                       f"{[i.id for i in self.indicators]}")

    def to_dict(self) -> dict:
        """The pack as plain data; ``parse_pack(yaml.safe_dump(pack.to_dict()))`` gives it back."""
        out = {"metadata": self.metadata.to_dict(),
               "indicators": [i.to_dict(with_pack=False) for i in self.indicators]}
        out.update(self.extensions)
        return out


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------

class _StrictSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys (the last one would silently win)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    loader.flatten_mapping(node)
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1}); each key may appear once",
                mark)
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictSafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _safe_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass


def _extensions(mapping: Mapping) -> dict:
    return {k: v for k, v in mapping.items() if isinstance(k, str) and k.startswith("x-")}


def _check_keys(mapping: Mapping, allowed: tuple[str, ...], what: str) -> None:
    unknown = [k for k in mapping if not (isinstance(k, str) and (k in allowed or k.startswith("x-")))]
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {what}; valid keys: {list(allowed)} "
                         "(or 'x-...' for extensions)")


def _text(mapping: Mapping, key: str, what: str, *, required: bool = True) -> str:
    value = mapping.get(key)
    if value is None:
        if required:
            raise ValueError(f"{what} needs {key!r} (a non-empty string)")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise ValueError(f"{what}: {key!r} must be a non-empty string, got "
                         f"{type(value).__name__} {value!r}")
    return value.strip()


def _identifier(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"{what} must be 1-128 letters, digits or . _ : - (starting with a letter "
                         f"or digit), got {value!r}")
    return value


def _parse_metadata(meta: Any) -> PackMetadata:
    if not isinstance(meta, Mapping):
        raise ValueError(f"'metadata' must be a mapping with keys {list(_METADATA_KEYS)}, got "
                         f"{type(meta).__name__}")
    _check_keys(meta, _METADATA_KEYS, "metadata")
    pack_id = _identifier(meta.get("id"), "metadata.id")
    if "version" not in meta:
        raise ValueError("metadata needs 'version' (a semantic version such as 1.0.0, or an integer)")
    version = Version.parse(meta["version"], "metadata.version")
    issuer = meta.get("issuer")
    if not isinstance(issuer, Mapping):
        raise ValueError("metadata.issuer must be a mapping {agency: ..., country: XX}, got "
                         f"{type(issuer).__name__} {issuer!r}")
    _check_keys(issuer, _ISSUER_KEYS, "metadata.issuer")
    agency = _text(issuer, "agency", "metadata.issuer")
    country = _text(issuer, "country", "metadata.issuer").upper()
    if country not in ISO_COUNTRIES and country not in _EXTRA_COUNTRIES:
        raise ValueError(f"metadata.issuer.country {country!r} is not an ISO 3166 alpha-2 code "
                         "(e.g. NL, BE; EU or ZZ for an issuer that is not one national service)")
    created = meta.get("created")
    if created is None:
        raise ValueError("metadata needs 'created' (a date such as 2025-01-15)")
    created_ts, _ = parse_instant(created, "metadata.created")
    tlp = meta.get("tlp")
    if not isinstance(tlp, str):
        raise ValueError(f"metadata needs 'tlp', one of {list(TLP_MARKINGS)}, got {tlp!r}")
    tlp_norm = re.sub(r"^TLP:", "", tlp.strip().upper())
    if tlp_norm == "WHITE":  # TLP 1.0 name of CLEAR
        tlp_norm = "CLEAR"
    if tlp_norm not in TLP_MARKINGS:
        raise ValueError(f"metadata.tlp {tlp!r} is not a TLP marking; use one of {list(TLP_MARKINGS)}")
    description = _text(meta, "description", "metadata", required=False)
    return PackMetadata(pack_id, version, Issuer(agency, country), created_ts.date(), tlp_norm,
                        description, _extensions(meta))


def _parse_references(value: Any) -> tuple[Reference, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"'references' must be a list of strings or {{title, url}} mappings, got "
                         f"{type(value).__name__}")
    refs = []
    for i, item in enumerate(value):
        what = f"references[{i}]"
        if isinstance(item, str) and item.strip():
            refs.append(Reference(item.strip()))
            continue
        if not isinstance(item, Mapping):
            raise ValueError(f"{what} must be a string or a mapping with 'title', got {item!r}")
        _check_keys(item, _REFERENCE_KEYS, what)
        year = item.get("year")
        if year is not None and (isinstance(year, bool) or not isinstance(year, int)):
            raise ValueError(f"{what}.year must be an integer, got {year!r}")
        refs.append(Reference(_text(item, "title", what), _text(item, "url", what, required=False) or None,
                              _text(item, "publisher", what, required=False) or None, year))
    return tuple(refs)


def _parse_indicator(item: Any, index: int, meta: PackMetadata) -> Indicator:
    if not isinstance(item, Mapping):
        raise ValueError(f"indicators[{index}] must be a mapping, got {type(item).__name__}")
    _check_keys(item, _INDICATOR_KEYS, "the indicator")
    ind_id = _identifier(item.get("id"), "'id'")
    for key in ("title", "rationale", "condition", "severity"):
        if key not in item:
            raise ValueError(f"missing {key!r}; an indicator needs id, title, rationale, condition "
                             "and severity")
    title = _text(item, "title", "the indicator")
    rationale = _text(item, "rationale", "the indicator")
    condition = parse_condition(item["condition"])
    severity = Severity.parse(item["severity"])
    version = Version.parse(item["version"], "'version'") if "version" in item else meta.version
    windows: dict[str, tuple[pd.Timestamp | None, bool]] = {}
    for key in ("valid_from", "valid_until"):
        windows[key] = (None, False) if item.get(key) is None else parse_instant(item[key], repr(key))
    (start, start_d), (end, end_d) = windows["valid_from"], windows["valid_until"]
    if start is not None and end is not None and start > end:
        raise ValueError(f"valid_from {_instant_text(start, start_d)} is after valid_until "
                         f"{_instant_text(end, end_d)}")
    tags = item.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise ValueError(f"'tags' must be a list of strings, got {tags!r}")
    return Indicator(
        id=ind_id, title=title, rationale=rationale, condition=condition, severity=severity,
        version=version, pack_id=meta.id, pack_version=meta.version, valid_from=start,
        valid_until=end, valid_from_date_only=start_d, valid_until_date_only=end_d,
        references=_parse_references(item.get("references")), tags=tuple(tags),
        extensions=_extensions(item), pack_tlp=meta.tlp,
    )


def parse_pack(data: bytes | str | Mapping, *, source: str | None = None) -> IndicatorPack:
    """Parse and validate a pack from its bytes, text, or already-loaded plain data.

    Every indicator is checked (fields and operators exist, operands have the right type,
    regular expressions compile, ``between`` has two ordered values, dates parse); all problems
    are reported together in one :class:`PackError` naming the pack and each indicator.
    """
    where = source or "<memory>"
    digest = raw = None
    if isinstance(data, (bytes, bytearray)):
        raw = bytes(data)
        digest = hashlib.sha256(raw).hexdigest()
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise PackError(f"pack {where}: not UTF-8 text (byte {exc.start}); save the YAML as UTF-8") from exc
    if isinstance(data, str):
        try:
            doc = _safe_yaml(data)
        except yaml.YAMLError as exc:
            raise PackError(f"pack {where}: not valid YAML: {exc}") from exc
    else:
        doc = data
    if not isinstance(doc, Mapping):
        raise PackError(f"pack {where}: expected a mapping with 'metadata' and 'indicators', got "
                        f"{type(doc).__name__}")
    try:
        _check_keys(doc, _PACK_KEYS, "the pack")
        if "metadata" not in doc:
            raise ValueError("missing 'metadata' (id, version, issuer, created, tlp, description)")
        meta = _parse_metadata(doc["metadata"])
    except ValueError as exc:
        raise PackError(f"pack {where}: {exc}") from exc
    label = f"pack {meta.id!r} ({where})" if source else f"pack {meta.id!r}"
    items = doc.get("indicators")
    if not isinstance(items, list) or not items:
        raise PackError(f"{label}: 'indicators' must be a non-empty list, got {items!r:.80}")
    problems: list[str] = []
    indicators: list[Indicator] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        name = item.get("id") if isinstance(item, Mapping) else None
        who = f"indicator {name!r}" if isinstance(name, str) else f"indicators[{i}]"
        try:
            ind = _parse_indicator(item, i, meta)
        except (ConditionError, ValueError) as exc:
            problems.append(f"{label}, {who}: {exc}")
            continue
        if ind.id in seen:
            problems.append(f"{label}, {who}: duplicate id (also indicators[{seen[ind.id]}])")
            continue
        seen[ind.id] = i
        indicators.append(ind)
    if problems:
        shown = problems[:_MAX_PROBLEMS]
        more = f"\n... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise PackError("\n".join(shown) + more, problems)
    log.debug("loaded %s: %d indicators, version %s", label, len(indicators), meta.version)
    return IndicatorPack(meta, tuple(indicators), source, digest, _extensions(doc), raw)


def load_pack(path: str | Path) -> IndicatorPack:
    """Load and validate one pack file (YAML).

    This is the low-level parser: it checks no signature. A pack from a partner is loaded with
    :func:`riskengine.indicators.signing.load_verified_pack`, which verifies it first.

    >>> pack = load_pack(default_pack_path())
    >>> pack.metadata.tlp
    'CLEAR'
    """
    p, data = read_pack_bytes(path, folder_hint="use load_packs() to load every pack in a folder")
    return parse_pack(data, source=str(p))


def read_pack_bytes(path: str | Path, *, folder_hint: str) -> tuple[Path, bytes]:
    """The exact bytes of one pack file; clear errors for a missing file or a folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"indicator pack not found: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"expected an indicator pack file (.yaml), got a directory: {p}; {folder_hint}")
    return p, p.read_bytes()


def pack_files(paths: Iterable[str | Path] | str | Path) -> list[Path]:
    """The pack files named by ``paths``: a file as given, a folder as every ``*.yaml``/``*.yml``
    in it, by name. A folder without packs is an error (``FileNotFoundError``)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in PACK_SUFFIXES and f.is_file())
            if not found:
                raise FileNotFoundError(f"no indicator packs (*.yaml) in folder {p}")
            files.extend(found)
        else:
            files.append(p)
    return files


def load_packs(paths: Iterable[str | Path] | str | Path) -> list[IndicatorPack]:
    """Load several packs; a folder contributes every ``*.yaml``/``*.yml`` in it, by name.

    This is the low-level parser: it checks no signature. Packs from partners are loaded with
    :func:`riskengine.indicators.signing.load_verified_packs`.
    """
    return [load_pack(f) for f in pack_files(paths)]


def dump_pack(pack: IndicatorPack, path: str | Path) -> Path:
    """Write a pack to a YAML file and return its path.

    A pack loaded from a file is written byte for byte as it was read, so its digest (and a
    signature over it) stays valid; a pack built in memory is written from :meth:`to_dict`.
    """
    p = Path(path)
    if p.suffix.lower() not in PACK_SUFFIXES:
        raise ValueError(f"an indicator pack file must end in .yaml or .yml, got {p.name!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    if pack.raw is not None:
        p.write_bytes(pack.raw)
    else:
        text = yaml.safe_dump(pack.to_dict(), sort_keys=False, allow_unicode=True, width=100)
        p.write_text(text, encoding="utf-8")
    return p


def default_pack_path() -> Path:
    """The example pack shipped with the engine (indicators from public sources, TLP:CLEAR)."""
    return Path(__file__).resolve().parent / "packs" / "default.yaml"


def default_packs() -> list[IndicatorPack]:
    """The packs shipped with the engine (every ``*.yaml`` next to :func:`default_pack_path`)."""
    return load_packs([default_pack_path().parent])
