"""Traffic Light Protocol (TLP 2.0) clearances: who may be served which indicator pack.

A pack carries one marking (``metadata.tlp``). A reader (an API token) holds one clearance, the
highest marking it may receive. The order is CLEAR < GREEN < AMBER < AMBER+STRICT < RED, so a
clearance of AMBER receives CLEAR, GREEN and AMBER packs, and neither AMBER+STRICT nor RED.

>>> tlp_allows("AMBER", "GREEN"), tlp_allows("AMBER", "RED")
(True, False)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from riskengine.indicators.pack import TLP_MARKINGS, IndicatorPack

log = logging.getLogger(__name__)

#: Clearance each service role gets unless its token says otherwise. RED is never implied by a
#: role: it must be granted to a token explicitly.
ROLE_DEFAULT_CLEARANCE = {"officer": "GREEN", "analyst": "AMBER", "admin": "AMBER"}


def normalize_tlp(value: str) -> str:
    """``"tlp:amber"`` → ``"AMBER"``; WHITE (TLP 1.0) → CLEAR. Raises ``ValueError`` otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"a TLP marking is a string, one of {list(TLP_MARKINGS)}; got {value!r}")
    norm = re.sub(r"^TLP:", "", value.strip().upper())
    if norm == "WHITE":
        norm = "CLEAR"
    if norm not in TLP_MARKINGS:
        raise ValueError(f"{value!r} is not a TLP marking; use one of {list(TLP_MARKINGS)}")
    return norm


def tlp_rank(value: str) -> int:
    """Position of a marking in CLEAR < GREEN < AMBER < AMBER+STRICT < RED (0..4)."""
    return TLP_MARKINGS.index(normalize_tlp(value))


def tlp_allows(clearance: str, marking: str) -> bool:
    """Whether a reader holding ``clearance`` may receive a pack marked ``marking``."""
    return tlp_rank(marking) <= tlp_rank(clearance)


def packs_for_clearance(packs: Iterable[IndicatorPack], clearance: str) -> list[IndicatorPack]:
    """The packs a reader holding ``clearance`` may receive, in their order.

    An unknown clearance raises ``ValueError`` (nothing is served by mistake).

    >>> from riskengine.indicators import default_packs
    >>> [p.metadata.tlp for p in packs_for_clearance(default_packs(), "GREEN")]
    ['CLEAR']
    """
    rank = tlp_rank(clearance)
    packs = list(packs)
    kept = [p for p in packs if tlp_rank(p.metadata.tlp) <= rank]
    if len(kept) < len(packs):
        log.debug("clearance %s: withheld %d of %d pack(s): %s", normalize_tlp(clearance),
                  len(packs) - len(kept), len(packs),
                  [f"{p.id} (TLP:{p.metadata.tlp})" for p in packs if p not in kept])
    return kept
