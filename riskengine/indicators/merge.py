"""Merging packs from several issuers into one set of indicators.

Rules, applied in the order the packs are given:

1. Several versions of the same pack (same ``metadata.id``): only the highest version is used, so
   an indicator withdrawn in the newer version does not come back from the older one.
2. An indicator id belongs to the first pack (in the order given) that defines it: only that
   pack may supersede it, with a higher indicator version. Another pack that defines the same
   id at another version is *refused* for that indicator: the owner's definition stays, the
   refusal is recorded and logged as an error; ``strict=True`` raises instead. A partner key
   trusted for ``be-`` packs thus cannot switch off a built-in rule by redefining it at version
   9.0.0 (give the built-in packs first, as the service and the CLI do).
3. Same id, same version, same content: one copy is kept (loading a pack twice is harmless).
4. Same id, same version, different content: a *conflict*. The indicator of the pack given
   first is kept, the conflict is recorded and logged as a warning; ``strict=True`` raises
   instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from riskengine.indicators.pack import Indicator, IndicatorPack, PackMetadata, Version

log = logging.getLogger(__name__)

__all__ = [
    "MergeConflict",
    "MergedIndicators",
    "PackConflictError",
    "RefusedIndicator",
    "SupersededIndicator",
    "merge_packs",
]


class PackConflictError(ValueError):
    """Raised by ``merge_packs(..., strict=True)`` when packs disagree; ``conflicts`` lists them."""

    def __init__(self, message: str, conflicts: tuple[MergeConflict, ...]) -> None:
        super().__init__(message)
        self.conflicts = conflicts


@dataclass(frozen=True)
class MergeConflict:
    """Packs that define the same indicator id and version with different content.

    ``pack_ids`` lists every pack involved, the kept one first; ``differences`` names the keys
    that differ from the kept definition (e.g. ``("condition", "severity")``)."""

    indicator_id: str
    version: str
    pack_ids: tuple[str, ...]
    kept_pack_id: str
    differences: tuple[str, ...]

    @property
    def message(self) -> str:
        return (f"indicator {self.indicator_id!r} version {self.version} differs between packs "
                f"{list(self.pack_ids)} ({', '.join(self.differences)}); kept the one from "
                f"{self.kept_pack_id!r}. Ask the issuers to bump the version of the changed "
                "indicator.")

    def to_dict(self) -> dict:
        return {"indicator_id": self.indicator_id, "version": self.version,
                "pack_ids": list(self.pack_ids), "kept_pack_id": self.kept_pack_id,
                "differences": list(self.differences), "message": self.message}


@dataclass(frozen=True)
class RefusedIndicator:
    """An indicator that a pack other than its owner tried to redefine; the owner's stays."""

    indicator_id: str
    pack_id: str
    version: str
    owner_pack_id: str
    owner_version: str

    @property
    def message(self) -> str:
        return (f"pack {self.pack_id!r} redefines indicator {self.indicator_id!r} (version "
                f"{self.version}) of pack {self.owner_pack_id!r} (version {self.owner_version}); "
                "a pack may only supersede its own indicators, so the definition of "
                f"{self.owner_pack_id!r} stays in force. Give the indicator an id of your own, or "
                f"ask the issuer of {self.owner_pack_id!r} to change it.")

    def to_dict(self) -> dict:
        return {"indicator_id": self.indicator_id, "pack_id": self.pack_id, "version": self.version,
                "owner_pack_id": self.owner_pack_id, "owner_version": self.owner_version,
                "message": self.message}


@dataclass(frozen=True)
class SupersededIndicator:
    """An indicator (or a whole pack version) replaced by a higher version."""

    indicator_id: str | None
    pack_id: str
    version: str
    by_pack_id: str
    by_version: str

    def to_dict(self) -> dict:
        return {"indicator_id": self.indicator_id, "pack_id": self.pack_id, "version": self.version,
                "by_pack_id": self.by_pack_id, "by_version": self.by_version}


@dataclass(frozen=True, eq=False)
class MergedIndicators:
    """The indicators in force after merging, with what was replaced and what conflicted."""

    indicators: tuple[Indicator, ...]
    packs: tuple[PackMetadata, ...]
    conflicts: tuple[MergeConflict, ...] = ()
    superseded: tuple[SupersededIndicator, ...] = ()
    refused: tuple[RefusedIndicator, ...] = ()

    def __len__(self) -> int:
        return len(self.indicators)

    def __iter__(self) -> Iterator[Indicator]:
        return iter(self.indicators)

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.indicators]

    def indicator(self, indicator_id: str) -> Indicator:
        """The indicator in force with this id (KeyError listing the ids otherwise)."""
        for ind in self.indicators:
            if ind.id == indicator_id:
                return ind
        raise KeyError(f"no indicator {indicator_id!r}; in force: {self.ids}")

    def to_dict(self) -> dict:
        return {
            "packs": [m.to_dict() for m in self.packs],
            "indicators": [i.to_dict() for i in self.indicators],
            "conflicts": [c.to_dict() for c in self.conflicts],
            "superseded": [s.to_dict() for s in self.superseded],
            "refused": [r.to_dict() for r in self.refused],
        }


def _differences(a: Indicator, b: Indicator) -> tuple[str, ...]:
    da, db = a.content_dict(), b.content_dict()
    return tuple(k for k in dict.fromkeys([*da, *db]) if da.get(k) != db.get(k))


def merge_packs(packs: Iterable[IndicatorPack], *, strict: bool = False) -> MergedIndicators:
    """Merge packs into the indicators in force (see the module docstring for the rules).

    Args:
        packs: packs in order of preference for conflicts (the first one given wins a tie).
        strict: raise :class:`PackConflictError` instead of warning when packs conflict.
    """
    packs = list(packs)
    for p in packs:
        if not isinstance(p, IndicatorPack):
            raise TypeError(f"merge_packs expects IndicatorPack objects (from load_pack), got "
                            f"{type(p).__name__}")
    superseded: list[SupersededIndicator] = []

    newest: dict[str, Version] = {}
    for p in packs:
        if p.id not in newest or p.version > newest[p.id]:
            newest[p.id] = p.version
    used: list[IndicatorPack] = []
    for p in packs:
        if p.version != newest[p.id]:
            log.info("pack %r version %s is replaced by version %s", p.id, p.version, newest[p.id])
            superseded.append(SupersededIndicator(None, p.id, str(p.version), p.id, str(newest[p.id])))
        else:
            used.append(p)

    chosen: dict[str, Indicator] = {}
    owner: dict[str, str] = {}  # indicator id -> the pack id that defined it first
    clashes: dict[tuple[str, Version], list[Indicator]] = {}
    refused: list[RefusedIndicator] = []
    for p in used:
        for ind in p.indicators:
            kept = chosen.get(ind.id)
            if kept is None:
                chosen[ind.id] = ind
                owner[ind.id] = ind.pack_id
            elif ind.pack_id != owner[ind.id] and ind.version != kept.version:
                refused.append(RefusedIndicator(ind.id, ind.pack_id, str(ind.version),
                                                kept.pack_id, str(kept.version)))
            elif ind.version > kept.version:
                superseded.append(SupersededIndicator(ind.id, kept.pack_id, str(kept.version),
                                                      ind.pack_id, str(ind.version)))
                chosen[ind.id] = ind
            elif ind.version < kept.version:
                superseded.append(SupersededIndicator(ind.id, ind.pack_id, str(ind.version),
                                                      kept.pack_id, str(kept.version)))
            elif ind.content_dict() != kept.content_dict():
                clashes.setdefault((ind.id, ind.version), [kept]).append(ind)
            else:
                log.debug("indicator %r version %s appears identically in %r and %r", ind.id,
                          ind.version, kept.pack_id, ind.pack_id)

    conflicts = []
    for (ind_id, version), group in clashes.items():
        kept = chosen[ind_id]
        if kept.version != version:  # a higher version replaced the disputed one
            continue
        others = group[1:]
        conflicts.append(MergeConflict(
            indicator_id=ind_id, version=str(version),
            pack_ids=tuple(dict.fromkeys([kept.pack_id, *(o.pack_id for o in others)])),
            kept_pack_id=kept.pack_id,
            differences=tuple(dict.fromkeys(d for o in others for d in _differences(kept, o))),
        ))
    if (conflicts or refused) and strict:
        raise PackConflictError(
            f"{len(conflicts) + len(refused)} conflicting indicator(s) between packs:\n"
            + "\n".join([*(c.message for c in conflicts), *(r.message for r in refused)]),
            tuple(conflicts))
    for c in conflicts:
        log.warning("%s", c.message)
    for r in refused:
        log.error("%s", r.message)
    return MergedIndicators(
        indicators=tuple(chosen.values()),
        packs=tuple(p.metadata for p in used),
        conflicts=tuple(conflicts),
        superseded=tuple(superseded),
        refused=tuple(refused),
    )
