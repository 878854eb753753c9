"""The indicator packs the service uses: the built-in packs plus the partner packs of ``packs_dir``.

Partner packs are verified before use (:func:`riskengine.indicators.signing.load_verified_pack`,
unsigned ones only with ``allow_unsigned_packs``). A partner pack that redefines an indicator of
another pack (a built-in one, or one of a partner file read before it) at another version is
refused as a whole: a key trusted for one issuer's packs cannot switch off another issuer's
rule. A pack that does not load is left out and reported (file and reason), never silently
skipped. The set is reloaded when a file in the
folder changes, so a new pack is used without a restart.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from riskengine.indicators import IndicatorPack, default_pack_path, default_packs, load_pack
from riskengine.indicators.pack import PACK_SUFFIXES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServicePack:
    """One pack in use: where it came from and how its origin was checked.

    ``signature``: ``built-in`` (ships with the engine), ``verified`` (its ``.sig`` checked
    against the trust store), ``unsigned`` (loaded without a signature because
    ``allow_unsigned_packs`` is on) or ``not checked`` (no signature support installed).
    """

    pack: IndicatorPack
    origin: str
    file: str
    signature: str


@dataclass(frozen=True)
class RejectedPack:
    """A file of ``packs_dir`` that is not used, and why."""

    file: str
    error_type: str
    reason: str


@dataclass(frozen=True)
class ServicePacks:
    packs: tuple[ServicePack, ...] = ()
    rejected: tuple[RejectedPack, ...] = field(default_factory=tuple)

    def indicator_packs(self) -> list[IndicatorPack]:
        return [p.pack for p in self.packs]


def _signing():
    try:
        return importlib.import_module("riskengine.indicators.signing")
    except ModuleNotFoundError:
        return None


def _load_partner(path: Path, allow_unsigned: bool) -> ServicePack:
    signing = _signing()
    if signing is None:
        log.warning("pack signatures cannot be checked (riskengine.indicators.signing is missing); "
                    "loading %s unverified", path)
        return ServicePack(load_pack(path), "packs_dir", path.name, "not checked")
    pack = signing.load_verified_pack(path, allow_unsigned=allow_unsigned)
    signed = signing.signature_path(path).exists()
    return ServicePack(pack, "packs_dir", path.name, "verified" if signed else "unsigned")


def _check_ownership(pack: IndicatorPack, owners: dict) -> None:
    """Refuse a pack that redefines, at another version, an indicator another pack owns."""
    from riskengine.indicators import PackConflictError, RefusedIndicator

    refused = [RefusedIndicator(i.id, pack.id, str(i.version), owners[i.id][0], str(owners[i.id][1]))
               for i in pack.indicators
               if i.id in owners and owners[i.id][0] != pack.id and owners[i.id][1] != i.version]
    if refused:
        raise PackConflictError(f"pack {pack.id!r} is not used: " + " ".join(r.message for r in refused), ())


class PackSource:
    """Loads the service's packs, again only when a file of ``packs_dir`` changed.

    Args:
        packs_dir: folder of partner packs (``*.yaml``/``*.yml``), or None for the built-in only.
        allow_unsigned: load partner packs that have no signature (development only).
    """

    def __init__(self, packs_dir: str | Path | None = None, *, allow_unsigned: bool = False) -> None:
        self.packs_dir = Path(packs_dir) if packs_dir is not None else None
        self.allow_unsigned = allow_unsigned
        self._key: tuple | None = None
        self._loaded: ServicePacks | None = None
        self._lock = threading.Lock()

    def _files(self) -> list[Path]:
        if self.packs_dir is None or not self.packs_dir.is_dir():
            return []
        return sorted(f for f in self.packs_dir.iterdir() if f.suffix.lower() in PACK_SUFFIXES and f.is_file())

    def _state(self, files: list[Path]) -> tuple:
        # A signature file changing (or appearing) must reload the pack it signs.
        parts = []
        for f in files:
            for g in (f, f.with_name(f.name + ".sig")):
                try:
                    st = g.stat()
                    parts.append((g.name, st.st_mtime_ns, st.st_size))
                except FileNotFoundError:
                    parts.append((g.name, None, None))
        return tuple(parts)

    def load(self) -> ServicePacks:
        """The packs in use now (cached until a file changes)."""
        files = self._files()
        key = self._state(files)
        with self._lock:
            if self._loaded is not None and key == self._key:
                return self._loaded
            builtin = [ServicePack(p, "built-in", Path(p.source or default_pack_path()).name, "built-in")
                       for p in default_packs()]
            partner: list[ServicePack] = []
            rejected: list[RejectedPack] = []
            if self.packs_dir is not None and not self.packs_dir.is_dir():
                log.error("the packs folder %s does not exist; only the built-in packs are used", self.packs_dir)
                rejected.append(RejectedPack(str(self.packs_dir), "FileNotFoundError", "the packs folder does not exist"))
            # Indicator id -> (pack id, version) of the pack that defines it: the built-in packs
            # first, then the partner files by name. Only the owning pack may supersede it.
            owners = {i.id: (i.pack_id, i.version) for p in builtin for i in p.pack.indicators}
            for f in files:
                try:
                    sp = _load_partner(f, self.allow_unsigned)
                    _check_ownership(sp.pack, owners)
                except Exception as exc:  # a partner's file must never take the service down
                    log.error("indicator pack %s is not used: %s: %s", f, type(exc).__name__, exc)
                    rejected.append(RejectedPack(f.name, type(exc).__name__, str(exc)))
                    continue
                partner.append(sp)
                for i in sp.pack.indicators:
                    owners.setdefault(i.id, (i.pack_id, i.version))
            self._loaded = ServicePacks(tuple(builtin + partner), tuple(rejected))
            self._key = key
            log.info("indicator packs in use: %s; rejected: %s",
                     [f"{p.pack.id}@{p.pack.version.raw}" for p in self._loaded.packs],
                     [r.file for r in rejected])
            return self._loaded
