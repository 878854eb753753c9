"""Synthetic port traffic: container manifests with smuggling ground truth.

The generator builds a small world once from the seed (ports and routes, carriers and their
vessels, a fixed population of long-lived traders with stable commodities and routes, new
companies that appear over time, front companies) and then draws manifests from it, block by
block, with NumPy only: there is no Python loop over rows. A small share of containers carries
cocaine, injected by modus operandi (rip-on/rip-off, front company, misdeclaration, reefer
machinery, structural concealment) with noise: every indicator signal also occurs in licit
traffic, and some illicit containers show no signal at all. A historical inspection policy (2 %
random, about 4 % targeted) says which rows have a known label.

The story, its parameters and its limits are written up in ``datasets/synthetic_port_traffic.md``.

Example
-------
>>> from riskengine.synth import generate_manifests
>>> df = generate_manifests(2_000, seed=1, days=7)
>>> len(df), df["filed_at"].is_monotonic_increasing
(2000, True)
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from riskengine.commodities import (
    COMMODITIES,
    CONTAINER_MIXES,
    EMPTY_DESCRIPTION,
    TARE_KG,
    VAGUE_DESCRIPTIONS,
)

log = logging.getLogger(__name__)

MODUS_OPERANDI: tuple[str, ...] = (
    "none", "rip_on_rip_off", "front_company", "misdeclaration", "reefer_machinery", "structural",
)
CONCEALMENT_LOCATIONS: tuple[str, ...] = ("none", "cargo", "doors", "reefer_unit", "walls", "floor", "roof")
SELECTIONS: tuple[str, ...] = ("none", "random", "targeted")
FREIGHT_PAYMENTS: tuple[str, ...] = ("prepaid", "collect", "cash", "third_party")

DEFAULT_CHUNK_ROWS = 250_000
SEAL_WIDTH = 10
# Rows drawn per random stream. Fixed, so the data never depend on the chunk size.
BLOCK_ROWS = 50_000
MAX_ROWS = 1_000_000_000

# --------------------------------------------------------------------------------------------
# The world: ports, routes, carriers
# --------------------------------------------------------------------------------------------

# (UN/LOCODE, latitude, longitude, region). Coordinates are approximate port positions.
_PORTS: tuple[tuple[str, float, float, str], ...] = (
    # Europe (ports of discharge and European hubs)
    ("NLRTM", 51.95, 4.05, "europe"), ("BEANR", 51.27, 4.33, "europe"), ("DEHAM", 53.54, 9.97, "europe"),
    ("DEBRV", 53.55, 8.58, "europe"), ("FRLEH", 49.48, 0.11, "europe"), ("ESALG", 36.13, -5.44, "europe"),
    ("ESVLC", 39.44, -0.32, "europe"), ("ESBCN", 41.35, 2.16, "europe"), ("ITGIT", 38.44, 15.90, "europe"),
    ("ITGOA", 44.40, 8.92, "europe"), ("PTSIE", 37.95, -8.87, "europe"), ("GRPIR", 37.94, 23.61, "europe"),
    ("MTMAR", 35.83, 14.54, "europe"), ("PLGDN", 54.40, 18.67, "europe"), ("SIKOP", 45.55, 13.73, "europe"),
    ("GBFXT", 51.95, 1.31, "europe"), ("GBSOU", 50.90, -1.40, "europe"),
    # Pacific coast of Latin America
    ("ECGYE", -2.28, -79.91, "latam_pacific"), ("ECMEC", -0.94, -80.72, "latam_pacific"),
    ("PECLL", -12.05, -77.15, "latam_pacific"), ("PEPAI", -5.08, -81.11, "latam_pacific"),
    ("CLSAI", -33.59, -71.62, "latam_pacific"), ("CLVAP", -33.03, -71.63, "latam_pacific"),
    ("COBUN", 3.88, -77.07, "latam_pacific"), ("PABLB", 8.95, -79.56, "latam_pacific"),
    # Caribbean and Central America
    ("COCTG", 10.39, -75.53, "caribbean"), ("COSMR", 11.25, -74.22, "caribbean"),
    ("CRMOB", 10.00, -83.08, "caribbean"), ("CRLIO", 9.99, -83.03, "caribbean"),
    ("GTSTC", 15.69, -88.62, "caribbean"), ("HNPCR", 15.84, -87.95, "caribbean"),
    ("PAMIT", 9.36, -79.88, "caribbean"), ("DOCAU", 18.42, -69.63, "caribbean"),
    ("JMKIN", 17.97, -76.80, "caribbean"), ("MXVER", 19.20, -96.13, "caribbean"),
    ("CUMAR", 22.99, -82.75, "caribbean"), ("BSFPO", 26.53, -78.77, "caribbean"),
    # East coast of South America
    ("BRSSZ", -23.98, -46.30, "east_coast_sa"), ("BRPNG", -25.50, -48.52, "east_coast_sa"),
    ("BRITJ", -26.90, -48.66, "east_coast_sa"), ("BRRIG", -32.05, -52.10, "east_coast_sa"),
    ("BRRIO", -22.89, -43.18, "east_coast_sa"), ("BRSSA", -12.97, -38.51, "east_coast_sa"),
    ("BRVIX", -20.32, -40.34, "east_coast_sa"), ("BRBEL", -1.45, -48.50, "east_coast_sa"),
    ("ARBUE", -34.60, -58.37, "east_coast_sa"), ("UYMVD", -34.90, -56.21, "east_coast_sa"),
    # North America
    ("USNYC", 40.67, -74.05, "north_america"), ("USSAV", 32.08, -81.09, "north_america"),
    ("USHOU", 29.73, -95.27, "north_america"), ("USORF", 36.85, -76.29, "north_america"),
    ("USLAX", 33.74, -118.26, "north_america"), ("CAHAL", 44.65, -63.57, "north_america"),
    ("CAMTR", 45.50, -73.55, "north_america"),
    # West Africa
    ("CIABJ", 5.29, -4.01, "west_africa"), ("CISPY", 4.74, -6.61, "west_africa"),
    ("GHTEM", 5.63, 0.02, "west_africa"), ("GHTKD", 4.88, -1.75, "west_africa"),
    ("NGAPP", 6.44, 3.37, "west_africa"), ("TGLFW", 6.13, 1.28, "west_africa"),
    ("SNDKR", 14.68, -17.42, "west_africa"), ("CMDLA", 4.05, 9.69, "west_africa"),
    # Southern and East Africa, Red Sea
    ("ZADUR", -29.87, 31.03, "southern_africa"), ("ZACPT", -33.91, 18.43, "southern_africa"),
    ("ZAPLZ", -33.96, 25.63, "southern_africa"), ("NAWVB", -22.95, 14.50, "southern_africa"),
    ("MUPLU", -20.16, 57.50, "southern_africa"), ("KEMBA", -4.06, 39.66, "east_africa"),
    ("DJJIB", 11.60, 43.14, "east_africa"), ("SAJED", 21.46, 39.17, "east_africa"),
    # North Africa and eastern Mediterranean
    ("MAPTM", 35.89, -5.50, "north_africa"), ("MAAGA", 30.42, -9.64, "north_africa"),
    ("MACAS", 33.60, -7.62, "north_africa"), ("EGALY", 31.18, 29.87, "north_africa"),
    ("EGDAM", 31.47, 31.76, "north_africa"), ("EGPSD", 31.25, 32.30, "north_africa"),
    ("TNRAD", 36.80, 10.24, "north_africa"), ("TRMER", 36.80, 34.63, "east_med"),
    ("ILHFA", 32.82, 35.00, "east_med"),
    # Middle East
    ("AEJEA", 25.01, 55.06, "middle_east"), ("OMSLL", 16.94, 54.00, "middle_east"),
    ("SAJUB", 27.03, 49.66, "middle_east"), ("SADMM", 26.50, 50.20, "middle_east"),
    # South Asia
    ("INNSA", 18.95, 72.95, "south_asia"), ("INMUN", 22.74, 69.70, "south_asia"),
    ("INMAA", 13.10, 80.30, "south_asia"), ("INCOK", 9.97, 76.27, "south_asia"),
    ("PKKHI", 24.84, 66.98, "south_asia"), ("LKCMB", 6.95, 79.85, "south_asia"),
    ("BDCGP", 22.31, 91.80, "south_asia"),
    # South-East Asia
    ("SGSIN", 1.26, 103.84, "southeast_asia"), ("MYPKG", 3.00, 101.39, "southeast_asia"),
    ("MYTPP", 1.36, 103.55, "southeast_asia"), ("THLCH", 13.08, 100.88, "southeast_asia"),
    ("VNSGN", 10.77, 106.71, "southeast_asia"), ("VNHPH", 20.86, 106.68, "southeast_asia"),
    ("IDJKT", -6.10, 106.88, "southeast_asia"), ("IDSUB", -7.20, 112.73, "southeast_asia"),
    ("IDSRG", -6.95, 110.42, "southeast_asia"), ("IDBLW", 3.78, 98.69, "southeast_asia"),
    ("KHKOS", 10.63, 103.50, "southeast_asia"), ("PHMNL", 14.58, 120.96, "southeast_asia"),
    # East Asia
    ("CNSHA", 30.63, 122.07, "east_asia"), ("CNNGB", 29.87, 121.88, "east_asia"),
    ("CNYTN", 22.57, 114.27, "east_asia"), ("CNTAO", 36.07, 120.32, "east_asia"),
    ("CNXMN", 24.48, 118.07, "east_asia"), ("HKHKG", 22.30, 114.17, "east_asia"),
    ("TWKHH", 22.61, 120.28, "east_asia"), ("KRPUS", 35.10, 129.04, "east_asia"),
    ("JPYOK", 35.45, 139.65, "east_asia"),
    # Oceania
    ("AUMEL", -37.84, 144.92, "oceania"), ("NZAKL", -36.84, 174.77, "oceania"),
)
_PORT_INDEX = {p[0]: i for i, p in enumerate(_PORTS)}
KNOWN_PORTS: frozenset[str] = frozenset(_PORT_INDEX)

# Ports of discharge the world is modelled for, with their container terminals.
DISCHARGE_PORTS: dict[str, tuple[str, ...]] = {
    "NLRTM": ("NLRTM-ECT", "NLRTM-APMT", "NLRTM-RWG", "NLRTM-EUROMAX"),
    "BEANR": ("BEANR-DPW", "BEANR-PSA", "BEANR-MPET"),
    "DEHAM": ("DEHAM-CTA", "DEHAM-CTB", "DEHAM-CTT", "DEHAM-EGH"),
    "DEBRV": ("DEBRV-NTB", "DEBRV-MSC", "DEBRV-EGB"),
    "FRLEH": ("FRLEH-TDF", "FRLEH-TNMSC", "FRLEH-GMP"),
    "ESALG": ("ESALG-APMT", "ESALG-TTIA"),
    "ESVLC": ("ESVLC-MSC", "ESVLC-CSP", "ESVLC-APMT"),
    "ESBCN": ("ESBCN-BEST", "ESBCN-APMT"),
    "ITGIT": ("ITGIT-T1", "ITGIT-T2"),
    "ITGOA": ("ITGOA-T1", "ITGOA-T2"),
    "PTSIE": ("PTSIE-T1", "PTSIE-T2"),
    "GRPIR": ("GRPIR-T1", "GRPIR-T2"),
    "MTMAR": ("MTMAR-T1", "MTMAR-T2"),
    "PLGDN": ("PLGDN-T1", "PLGDN-T2"),
    "SIKOP": ("SIKOP-T1", "SIKOP-T2"),
    "GBFXT": ("GBFXT-T1", "GBFXT-T2"),
    "GBSOU": ("GBSOU-T1", "GBSOU-T2"),
}

_EU = frozenset("AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split())

# Consignees of a port are mostly local, some in its hinterland.
_HINTERLAND: dict[str, tuple[str, ...]] = {
    "NL": ("DE", "BE"), "BE": ("NL", "DE", "FR"), "DE": ("PL", "NL"), "FR": ("BE", "ES"),
    "ES": ("PT", "FR"), "IT": ("DE", "FR"), "PT": ("ES",), "GR": ("IT",), "MT": ("IT",),
    "PL": ("DE",), "SI": ("IT", "DE"), "GB": ("NL",),
}

# Transshipment options by origin region (hub UN/LOCODEs in order, relative weight).
_ROUTE_OPTIONS: dict[str, tuple[tuple[tuple[str, ...], float], ...]] = {
    "latam_pacific": (((), 0.45), (("PAMIT",), 0.18), (("PABLB",), 0.10), (("COCTG",), 0.10),
                      (("PAMIT", "ESALG"), 0.07), (("COCTG", "ESALG"), 0.05), (("PABLB", "MAPTM"), 0.05)),
    "caribbean": (((), 0.50), (("PAMIT",), 0.15), (("DOCAU",), 0.10), (("JMKIN",), 0.10),
                  (("COCTG",), 0.10), (("BSFPO",), 0.05)),
    "east_coast_sa": (((), 0.55), (("ESALG",), 0.15), (("PTSIE",), 0.10), (("ESVLC",), 0.10),
                      (("MAPTM",), 0.10)),
    "north_america": (((), 0.90), (("ESALG",), 0.05), (("PTSIE",), 0.05)),
    "west_africa": (((), 0.35), (("TGLFW",), 0.20), (("MAPTM",), 0.20), (("ESALG",), 0.15),
                    (("ESVLC",), 0.10)),
    "southern_africa": (((), 0.50), (("ESALG",), 0.25), (("MAPTM",), 0.25)),
    "east_africa": (((), 0.30), (("OMSLL",), 0.30), (("AEJEA",), 0.20), (("EGPSD",), 0.20)),
    "north_africa": (((), 0.70), (("ESALG",), 0.15), (("MTMAR",), 0.15)),
    "east_med": (((), 0.60), (("GRPIR",), 0.20), (("MTMAR",), 0.20)),
    "middle_east": (((), 0.50), (("OMSLL",), 0.15), (("AEJEA",), 0.15), (("EGPSD",), 0.20)),
    "south_asia": (((), 0.30), (("LKCMB",), 0.25), (("AEJEA",), 0.10), (("OMSLL",), 0.10),
                   (("EGPSD",), 0.10), (("SGSIN",), 0.05), (("LKCMB", "MAPTM"), 0.10)),
    "southeast_asia": (((), 0.50), (("SGSIN",), 0.25), (("MYTPP",), 0.15), (("SGSIN", "MAPTM"), 0.10)),
    "east_asia": (((), 0.70), (("SGSIN",), 0.10), (("MYTPP",), 0.05), (("EGPSD",), 0.05),
                  (("GRPIR",), 0.05), (("MAPTM",), 0.05)),
    "oceania": (((), 0.15), (("SGSIN",), 0.50), (("MYTPP",), 0.20), (("LKCMB",), 0.15)),
    "europe": (((), 1.0),),
}
_FAR_EAST = frozenset({"south_asia", "southeast_asia", "east_asia", "oceania", "middle_east", "east_africa"})
_NEAR_EUROPE = frozenset({"europe", "north_africa", "east_med"})

# Voyage direction letter of the last leg into the port, by region of the last port of call.
_DIRECTION = {
    "latam_pacific": "N", "caribbean": "E", "east_coast_sa": "N", "north_america": "E",
    "west_africa": "N", "southern_africa": "N", "east_africa": "W", "north_africa": "N",
    "east_med": "W", "middle_east": "W", "south_asia": "W", "southeast_asia": "W",
    "east_asia": "W", "oceania": "W", "europe": "N",
}


@dataclass(frozen=True)
class _Carrier:
    name: str
    share: float
    scac: str           # bill of lading prefix
    seal_prefix: str    # seal numbers: this prefix, then digits up to SEAL_WIDTH characters
    owner_codes: tuple[str, ...]  # ISO 6346 owner prefixes of its own boxes
    focus: str          # "americas", "asia", "africa" or "global": where its network is densest


_CARRIERS: tuple[_Carrier, ...] = (
    _Carrier("MSC", 0.20, "MEDU", "FX", ("MSCU", "MEDU", "MSDU", "MSMU"), "africa"),
    _Carrier("MAERSK", 0.17, "MAEU", "ML", ("MSKU", "MRKU", "MRSU", "SUDU"), "americas"),
    _Carrier("CMA CGM", 0.13, "CMDU", "CMA", ("CMAU", "CGMU", "APHU", "ECMU"), "africa"),
    _Carrier("COSCO", 0.10, "COSU", "CSL", ("CSNU", "CBHU", "CCLU", "CSLU"), "asia"),
    _Carrier("HAPAG-LLOYD", 0.08, "HLCU", "HLD", ("HLXU", "HLBU", "HAMU", "CSQU"), "americas"),
    _Carrier("ONE", 0.06, "ONEY", "ONE", ("ONEU", "NYKU", "MOLU", "KKFU"), "asia"),
    _Carrier("EVERGREEN", 0.06, "EGLV", "EMC", ("EGHU", "EISU", "EMCU", "EGSU"), "asia"),
    _Carrier("OOCL", 0.04, "OOLU", "OOLG", ("OOLU", "OOCU"), "asia"),
    _Carrier("HMM", 0.03, "HDMU", "HMM", ("HDMU",), "asia"),
    _Carrier("YANG MING", 0.03, "YMLU", "YMA", ("YMLU", "YMMU"), "asia"),
    _Carrier("ZIM", 0.03, "ZIMU", "ZIM", ("ZIMU", "ZCSU"), "americas"),
    _Carrier("PIL", 0.01, "PCIU", "PIL", ("PCIU",), "africa"),
    _Carrier("WAN HAI", 0.01, "WHLC", "WHL", ("WHLU", "WHSU"), "asia"),
)
# Boxes leased from lessors carry the lessor's owner code.
_LESSOR_CODES: tuple[str, ...] = ("TGHU", "TCLU", "TRLU", "CAIU", "FSCU", "SEGU", "GESU", "BMOU", "TEMU", "TCNU")
_LEASED_SHARE = 0.33
_FOCUS_REGIONS = {
    "americas": {"latam_pacific", "caribbean", "east_coast_sa", "north_america"},
    "asia": {"south_asia", "southeast_asia", "east_asia", "oceania", "middle_east"},
    "africa": {"west_africa", "southern_africa", "east_africa", "north_africa"},
}

_FORWARDERS: tuple[str, ...] = (
    "KUEHNE + NAGEL", "DSV", "DB SCHENKER", "DHL GLOBAL FORWARDING", "EXPEDITORS", "CEVA LOGISTICS",
    "GEODIS", "NIPPON EXPRESS", "KERRY LOGISTICS", "RHENUS LOGISTICS", "HELLMANN WORLDWIDE LOGISTICS",
    "DACHSER", "KINTETSU WORLD EXPRESS", "AGILITY", "SCAN GLOBAL LOGISTICS", "YUSEN LOGISTICS",
)

# Static FX rates (units per USD); only orders of magnitude matter here.
_CURRENCIES: tuple[tuple[str, float], ...] = (("USD", 1.0), ("EUR", 0.92), ("CNY", 7.2), ("JPY", 150.0), ("GBP", 0.79))

# ---- smuggling risk (relative weights) --------------------------------------------------------
_RISK_COUNTRY_EARLY = {
    "EC": 1.0, "CO": 1.0, "CR": 0.6, "PA": 0.6, "PE": 0.5, "BR": 0.5, "DO": 0.4, "GT": 0.4, "HN": 0.4,
    "MX": 0.2, "JM": 0.3, "CL": 0.15, "AR": 0.15, "UY": 0.2, "PY": 0.4, "CU": 0.1, "BS": 0.2,
}
_RISK_COUNTRY_LATE = {
    "BR": 1.0, "PY": 0.8, "UY": 0.6, "AR": 0.5, "CL": 0.5, "EC": 0.4, "CO": 0.4, "CR": 0.2, "PA": 0.2,
    "PE": 0.5, "GH": 0.6, "TG": 0.6, "NG": 0.5, "CI": 0.5, "CM": 0.3, "ZA": 0.3, "NA": 0.3, "MA": 0.2,
    "DO": 0.5, "JM": 0.3, "GT": 0.3, "HN": 0.3,
}
_RISK_COUNTRY_DEFAULT = 0.01
_RISK_HUB_EARLY = {
    "PAMIT": 1.0, "PABLB": 0.6, "COCTG": 0.8, "DOCAU": 0.5, "JMKIN": 0.4, "BSFPO": 0.3, "ESALG": 0.3,
    "ITGIT": 0.3, "MAPTM": 0.2, "ESVLC": 0.2, "PTSIE": 0.1, "TGLFW": 0.2,
}
_RISK_HUB_LATE = {
    "MAPTM": 0.9, "TGLFW": 0.9, "ESALG": 0.6, "PTSIE": 0.6, "ITGIT": 0.5, "GRPIR": 0.5, "MTMAR": 0.4,
    "DOCAU": 0.6, "PAMIT": 0.3, "COCTG": 0.4, "PABLB": 0.3, "JMKIN": 0.3, "LKCMB": 0.2, "EGPSD": 0.2,
}
_RISK_COMMODITY_EARLY = {
    "bananas": 1.0, "pineapples": 0.6, "frozen_seafood": 0.5, "fruit_pulp": 0.4, "avocados": 0.3,
    "coffee": 0.3, "cocoa": 0.2, "citrus": 0.2, "vegetables": 0.15, "grapes": 0.1, "empty": 0.2,
}
_RISK_COMMODITY_LATE = {
    "coffee": 0.9, "frozen_beef": 0.8, "frozen_poultry": 0.6, "fruit_pulp": 0.8, "sugar": 0.5,
    "timber": 0.5, "cocoa": 0.5, "bananas": 0.4, "metal_scrap": 0.4, "charcoal": 0.6,
    "ceramic_tiles": 0.3, "frozen_seafood": 0.4, "pineapples": 0.3, "empty": 0.3,
}
_RISK_COMMODITY_DEFAULT = 0.05
# Cover loads a front company declares when it does not use the shipper's usual goods.
_COVER_LOADS = ("bananas", "pineapples", "fruit_pulp", "coffee", "frozen_seafood", "charcoal", "timber", "ceramic_tiles")

# Modus-operandi mix among illicit containers at the start and (with drift=1) at the end.
MO_MIX_EARLY: dict[str, float] = {
    "rip_on_rip_off": 0.55, "front_company": 0.12, "misdeclaration": 0.10,
    "reefer_machinery": 0.13, "structural": 0.10,
}
MO_MIX_LATE: dict[str, float] = {
    "rip_on_rip_off": 0.25, "front_company": 0.22, "misdeclaration": 0.18,
    "reefer_machinery": 0.15, "structural": 0.20,
}

# What the historical targeting knew (static: it does not follow the drift).
_TARGETING_COUNTRIES = frozenset({"EC", "CO", "PE", "BR", "CR", "PA", "DO", "GT", "HN", "PY", "JM"})
_TARGETING_HUBS = frozenset({"PAMIT", "PABLB", "COCTG", "DOCAU", "JMKIN"})
RANDOM_INSPECTION_RATE = 0.02
TARGETED_INSPECTION_RATE = 0.04

EMPTY_SHARE = 0.04
N_LANES = 4_000
N_NEW_LANES = 700
N_FRONT_COMPANIES = 400

# --------------------------------------------------------------------------------------------
# Company names
# --------------------------------------------------------------------------------------------

_LANG = {
    **dict.fromkeys("EC CO PE CL AR UY CR PA MX GT HN DO CU ES BO PY BS".split(), "es"),
    **dict.fromkeys("BR PT".split(), "pt"),
    **dict.fromkeys("NL BE SR".split(), "nl"),
    **dict.fromkeys("DE AT".split(), "de"),
    **dict.fromkeys("FR MA TN CI SN TG CM DJ".split(), "fr"),
    **dict.fromkeys("IT".split(), "it"),
    **dict.fromkeys("CN HK TW".split(), "zh"),
    "TR": "tr", "PL": "pl", "GR": "el",
}
_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "es": (("AGRICOLA", "COMERCIAL", "EXPORTADORA", "INVERSIONES", "DISTRIBUIDORA", "CORPORACION", "GRUPO",
            "FRUTICOLA", "AGROINDUSTRIAL", "IMPORTADORA", "PRODUCTOS", "INDUSTRIAS", "NEGOCIOS", "TRADING"),
           ("DEL PACIFICO", "SAN JOSE", "LA COSTA", "ANDINA", "TROPICAL", "DEL SUR", "VERDE", "EL ORO",
            "LOS RIOS", "SANTA MARIA", "LA ESPERANZA", "DEL VALLE", "SAN MIGUEL", "LAS PALMAS", "DEL NORTE",
            "ATLANTICO", "CARIBE", "EL CAMPO", "SOL DE AMERICA", "PUERTO NUEVO", "RIO GRANDE", "LA FLORIDA",
            "SANTA ROSA", "NUEVA ERA", "CENTRAL", "LATINA", "DORADA", "PREMIUM", "LOS ANDES", "SAN PEDRO")),
    "pt": (("COMERCIAL", "EXPORTADORA", "AGRO", "INDUSTRIA", "COOPERATIVA", "FRIGORIFICO", "DISTRIBUIDORA",
            "TRADING", "AGROPECUARIA", "ALIMENTOS"),
           ("DO BRASIL", "SAO PAULO", "SANTA CATARINA", "BOA VISTA", "MINAS", "NOVA ERA", "DO SUL", "PARANA",
            "CERRADO", "PLANALTO", "ATLANTICO", "SANTOS", "BANDEIRANTES", "VALE VERDE", "AURORA", "LUSITANA")),
    "nl": (("HOLLAND", "DUTCH", "NEDERLANDSE", "WESTLAND", "EUROPA", "NOORDZEE", "DELTA", "MAAS", "RIJN",
            "VAN DER BERG", "DE VRIES", "JANSEN", "BAKKER", "VISSER", "SMIT", "MEIJER", "DE GROOT", "MULDER",
            "VAN DIJK", "FLANDERS", "SCHELDE", "ANTWERP"),
           ("IMPORT", "FRESH", "FOOD", "TRADING", "HANDELSMAATSCHAPPIJ", "LOGISTICS", "GROOTHANDEL", "FRUIT",
            "DISTRIBUTIE", "INTERNATIONAL", "HOLDING", "AGENTUREN", "SUPPLIES", "TECHNIEK", "TEXTIEL")),
    "de": (("HANSEATISCHE", "NORDDEUTSCHE", "MUELLER", "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER", "MEYER",
            "WAGNER", "BECKER", "ELBE", "WESER", "RHEIN", "ALSTER", "BAYERISCHE"),
           ("HANDELS", "IMPORT", "FRUCHTHANDEL", "INDUSTRIEBEDARF", "LOGISTIK", "TEXTIL", "MASCHINENHANDEL",
            "LEBENSMITTEL", "WARENHANDEL", "TECHNIK")),
    "fr": (("SOCIETE", "COMPAGNIE", "ETABLISSEMENTS", "GROUPE", "NORMANDIE", "ATLANTIQUE", "DUPONT", "MARTIN",
            "BERNARD", "DUBOIS", "LEFEBVRE", "PROVENCE", "SAHEL", "LAGUNE", "ATLAS"),
           ("IMPORT EXPORT", "NEGOCE", "DISTRIBUTION", "FRUITS", "ALIMENTAIRE", "INDUSTRIE", "COMMERCE",
            "LOGISTIQUE", "TEXTILES", "INTERNATIONAL", "AGRICOLE")),
    "it": (("ROSSI", "RUSSO", "FERRARI", "ESPOSITO", "BIANCHI", "ROMANO", "COLOMBO", "MEDITERRANEA",
            "CALABRA", "LIGURE", "ADRIATICA", "ITALIANA"),
           ("IMPORT", "COMMERCIALE", "ALIMENTARI", "DISTRIBUZIONE", "TRADING", "INDUSTRIE", "FRUTTA",
            "TESSILE", "MECCANICA", "LOGISTICA")),
    "zh": (("HUAXIN", "JINLONG", "TAIFENG", "HENGYUAN", "DASHENG", "XINDA", "YONGFENG", "GUANGDA", "FUXING",
            "ZHONGTAI", "HONGDA", "TIANYU", "JIAHE", "RUIXIANG", "SHENGLI", "MINGYANG", "HUIFENG", "BAOLI",
            "KANGTAI", "JINHAI"),
           ("IMPORT AND EXPORT", "INDUSTRIAL", "TRADING", "INTERNATIONAL TRADE", "TEXTILE", "MACHINERY",
            "ELECTRONICS", "TYRE", "FURNITURE", "HOUSEWARE", "SUPPLY CHAIN", "TECHNOLOGY")),
    "tr": (("ANADOLU", "MARMARA", "EGE", "AKDENIZ", "YILDIZ", "OZTURK", "KARADENIZ", "BOSPHORUS", "TOROS"),
           ("TEKSTIL", "GIDA", "MAKINA", "DIS TICARET", "OTOMOTIV", "SERAMIK", "KIMYA")),
    "pl": (("POLSKA", "BALTYK", "GDANSKIE", "POMORSKIE", "NOWAK", "KOWALSKI", "WISLA"),
           ("HANDEL", "IMPORT", "DYSTRYBUCJA", "TRADING", "LOGISTYKA")),
    "el": (("HELLENIC", "AEGEAN", "PIRAEUS", "ATTICA", "OLYMPIC", "PAPADOPOULOS", "IONIAN"),
           ("TRADING", "IMPORTS", "FOODS", "DISTRIBUTION", "SHIPPING SUPPLIES")),
    "en": (("GLOBAL", "PACIFIC", "ATLANTIC", "UNITED", "ROYAL", "GOLDEN", "SUNRISE", "OCEANIC", "CONTINENTAL",
            "EASTERN", "WESTERN", "PREMIER", "SUMMIT", "HORIZON", "EVEREST", "CROWN", "STAR", "LOTUS", "PHOENIX",
            "ORIENT", "SILVER", "BLUE OCEAN", "GREEN VALLEY", "METRO", "ALLIANCE", "SAPPHIRE", "CEDAR"),
           ("TRADING", "INDUSTRIES", "ENTERPRISES", "EXPORTS", "INTERNATIONAL", "IMPEX", "MANUFACTURING",
            "FOODS", "AGRO PRODUCTS", "TEXTILES", "RUBBER", "HOLDINGS", "COMMODITIES", "OVERSEAS", "GARMENTS")),
}
_SUFFIX = {
    "EC": ("S.A.", "CIA. LTDA."), "CO": ("S.A.S.", "LTDA", "S.A."), "PE": ("S.A.C.", "S.A."),
    "CL": ("S.A.", "SPA", "LTDA"), "AR": ("S.A.", "S.R.L."), "MX": ("S.A. DE C.V.",), "ES": ("S.L.", "S.A."),
    "BR": ("LTDA", "S.A.", "EIRELI"), "PT": ("LDA", "S.A."), "NL": ("B.V.", "BV"), "BE": ("NV", "BV"),
    "SR": ("N.V.",), "DE": ("GMBH", "GMBH & CO. KG", "AG"), "AT": ("GMBH",), "FR": ("SARL", "SAS", "SA"),
    "IT": ("S.R.L.", "S.P.A."), "CN": ("CO., LTD.", "CO., LTD", "LIMITED"), "HK": ("LIMITED",),
    "TW": ("CO., LTD.",), "TR": ("SAN. VE TIC. A.S.", "LTD. STI."), "PL": ("SP. Z O.O.", "S.A."),
    "GR": ("S.A.", "IKE"), "IN": ("PVT. LTD.", "LIMITED"), "PK": ("(PVT) LTD",), "BD": ("LTD.",),
    "LK": ("(PVT) LTD",), "SG": ("PTE. LTD.",), "MY": ("SDN. BHD.",), "TH": ("CO., LTD.",),
    "VN": ("JOINT STOCK COMPANY", "CO., LTD"), "PH": ("INC.",), "KR": ("CO., LTD.",), "JP": ("CO., LTD.", "K.K."),
    "US": ("LLC", "INC.", "CORP."), "CA": ("INC.", "LTD."), "GB": ("LTD", "LIMITED"), "ZA": ("(PTY) LTD",),
    "KE": ("LIMITED",), "DO": ("S.R.L.", "S.A."), "GT": ("S.A.",), "HN": ("S. DE R.L.", "S.A."),
    "CR": ("S.A.",), "PA": ("S.A.", "INC."), "UY": ("S.A.",), "CU": ("S.A.",), "PY": ("S.A.",),
    "BO": ("S.R.L.",), "MA": ("SARL",), "TN": ("SARL",), "CI": ("SARL", "SA"), "SN": ("SARL",),
    "TG": ("SARL",), "CM": ("SARL",), "DJ": ("SARL",), "NG": ("LIMITED", "NIG. LTD"), "GH": ("LIMITED",), "AE": ("LLC", "FZE", "FZCO"),
    "SA": ("CO.",), "OM": ("LLC",), "EG": ("S.A.E.", "CO."), "AU": ("PTY LTD",), "NZ": ("LIMITED",),
    "IL": ("LTD",), "NA": ("(PTY) LTD",), "MU": ("LTD",), "KH": ("CO., LTD.",), "ID": ("TBK",),
    "JM": ("LIMITED",), "MT": ("LTD",), "SI": ("D.O.O.",),
}
_CN_CITY = {"CNSHA": "SHANGHAI", "CNNGB": "NINGBO", "CNYTN": "SHENZHEN", "CNTAO": "QINGDAO", "CNXMN": "XIAMEN"}
_COMMODITY_WORD = {
    "fruit": ("FRUIT", "FRESH", "BANANERA"), "frozen_meat": ("FOODS", "MEAT", "SEAFOOD"),
    "sacks": ("AGRO", "COMMODITIES", "CAFE"), "machinery": ("MACHINERY", "INDUSTRIAL", "TECHNICAL"),
    "textiles": ("TEXTILES", "GARMENTS", "FASHION"), "tyres": ("TYRE", "RUBBER", "AUTO"),
    "bottles_drums": ("BEVERAGES", "CHEMICALS", "LIQUIDS"), "general": ("GOODS", "HOME", "DEPOT"),
}


class _NameFactory:
    """Company names that look like the country they come from, all distinct."""

    def __init__(self, rng: np.random.Generator) -> None:
        import random

        # Thousands of names are drawn one by one: the stdlib generator is cheaper per call.
        self.rng = random.Random(int(rng.integers(2**63)))
        self.used: set[str] = set()

    def make(self, country: str, port: str = "", family: str = "") -> str:
        lang = _LANG.get(country, "en")
        first, second = _WORDS[lang]
        suffixes = _SUFFIX.get(country, ("LTD",))
        rng = self.rng
        for attempt in range(50):
            w1 = rng.choice(first)
            w2 = rng.choice(second)
            if family and family in _COMMODITY_WORD and rng.random() < 0.3:
                w2 = rng.choice(_COMMODITY_WORD[family])
            suffix = rng.choice(suffixes)
            if lang == "zh" and country == "CN":
                name = f"{_CN_CITY.get(port, 'GUANGZHOU')} {w1} {w2} {suffix}"
            elif country == "ID":
                name = f"PT {w1} {w2} {suffix}"
            else:
                name = f"{w1} {w2} {suffix}"
            if attempt >= 10:  # crowded name space: add a distinguishing word
                extra = rng.choice(_WORDS["en"][0])
                name = f"{extra} {name}"
            if attempt >= 30:
                name = f"{name} {attempt}"
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError("could not draw a distinct company name")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthConfig:
    """Validated generation parameters (see :func:`generate_manifests`)."""

    rows: int
    seed: int = 0
    start: str = "2026-01-01"
    days: int = 1
    port: str = "NLRTM"
    illicit_rate: float = 0.01
    drift: float = 0.0
    corrupt_rate: float = 0.0

    @classmethod
    def create(
        cls,
        rows: int,
        *,
        seed: int = 0,
        start: Any = "2026-01-01",
        days: int = 1,
        port: str = "NLRTM",
        illicit_rate: float = 0.01,
        drift: float = 0.0,
        corrupt_rate: float = 0.0,
    ) -> SynthConfig:
        """Check every parameter and say how to fix a bad one."""
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)):
            raise ValueError(f"rows must be a whole number, got {rows!r}")
        if not 1 <= int(rows) <= MAX_ROWS:
            raise ValueError(f"rows must be between 1 and {MAX_ROWS:,}, got {rows}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
            raise ValueError(f"seed must be a non-negative whole number, got {seed!r}")
        if isinstance(days, bool) or not isinstance(days, (int, np.integer)) or not 1 <= int(days) <= 3_660:
            raise ValueError(f"days must be a whole number between 1 and 3660, got {days!r}")
        try:
            start_ts = pd.Timestamp(start)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"start must be a date such as 2026-01-01, got {start!r}") from exc
        if pd.isna(start_ts):
            raise ValueError(f"start must be a date such as 2026-01-01, got {start!r}")
        if start_ts.tzinfo is not None:
            start_ts = start_ts.tz_convert("UTC").tz_localize(None)
        if not pd.Timestamp("1990-01-01") <= start_ts <= pd.Timestamp("2200-01-01"):
            raise ValueError(f"start must be between 1990-01-01 and 2200-01-01, got {start_ts.date()}")
        code = str(port).strip().upper()
        if code not in DISCHARGE_PORTS:
            raise ValueError(
                f"unknown port of discharge {port!r}; the synthetic world models imports into "
                f"{', '.join(sorted(DISCHARGE_PORTS))}"
            )
        for name, value, hi in (("illicit_rate", illicit_rate, 0.2), ("drift", drift, 1.0),
                                ("corrupt_rate", corrupt_rate, 0.5)):
            try:
                v = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name} must be a number between 0 and {hi}, got {value!r}") from exc
            if not 0.0 <= v <= hi:
                raise ValueError(f"{name} must be between 0 and {hi}, got {value}")
        return cls(
            rows=int(rows), seed=int(seed), start=str(start_ts.normalize().date()), days=int(days),
            port=code, illicit_rate=float(illicit_rate), drift=float(drift), corrupt_rate=float(corrupt_rate),
        )


# --------------------------------------------------------------------------------------------
# World construction (once per seed)
# --------------------------------------------------------------------------------------------


def _haversine_km(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(a))


def _leg_km(a: str, b: str) -> float:
    pa_, pb_ = _PORTS[_PORT_INDEX[a]], _PORTS[_PORT_INDEX[b]]
    km = float(_haversine_km(pa_[1], pa_[2], pb_[1], pb_[2]))
    # Sea routes are longer than great circles; Asia-Europe runs round via Suez.
    far = (pa_[3] in _FAR_EAST and pb_[3] in _NEAR_EUROPE) or (pb_[3] in _FAR_EAST and pa_[3] in _NEAR_EUROPE)
    return km * (1.6 if far else 1.25)


def _cum(p: np.ndarray) -> np.ndarray:
    """Row-wise cumulative probabilities (last column exactly 1) for inverse-CDF sampling."""
    p = np.asarray(p, dtype=np.float64)
    c = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
    c[..., -1] = 1.0
    return c


def _pick(cum_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per-row categorical draw: ``cum_rows`` is (n, k) cumulative probabilities."""
    return (u[:, None] > cum_rows).sum(axis=1)


def _weighted_sample(rng: np.random.Generator, w: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` items drawn without replacement with probability proportional to ``w``."""
    candidates = np.flatnonzero(w > 0)
    k = int(min(k, len(candidates)))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k == len(candidates):
        return candidates
    # Efraimidis-Spirakis: the k smallest Exp(1)/w keys form a weighted sample without replacement.
    keys = rng.exponential(size=len(candidates)) / w[candidates]
    return candidates[np.argpartition(keys, k - 1)[:k]]


@dataclass
class _World:
    cfg: SynthConfig
    start_ns: int
    # dictionaries (index -> string)
    parties: pa.Array
    countries: pa.Array
    ports: pa.Array
    routes: pa.Array
    terminals: pa.Array
    discharge: pa.Array
    carriers: pa.Array
    scacs: _Codes
    seal_prefixes: _Codes
    owner_codes: _Codes
    owner_sums: np.ndarray
    ctypes: pa.Array
    hs_codes: pa.Array
    descriptions: pa.Array
    currencies: pa.Array
    imos: pa.Array
    directions: _Codes
    port_region: np.ndarray
    # products
    prod_hs: np.ndarray
    prod_desc: np.ndarray
    comm_prod_start: np.ndarray
    comm_prod_count: np.ndarray
    comm_mix_cum: np.ndarray        # (n_comm + 1, n_types); last row: empties
    comm_payload: np.ndarray        # (n_comm, 2)
    comm_unit: np.ndarray
    comm_pack: np.ndarray
    comm_usd: np.ndarray
    comm_reefer: np.ndarray
    comm_fruit: np.ndarray
    comm_risk_e: np.ndarray         # (n_comm + 1,)
    comm_risk_l: np.ndarray
    cover_comms: np.ndarray
    ctype_reefer: np.ndarray
    ctype_20: np.ndarray
    ctype_tare: np.ndarray
    reefer_type: int
    dry_type: int
    empty_desc: int
    empty_hs: int
    hs_broken: np.ndarray           # index of a malformed version of each HS code (for corruption)
    vague_desc: np.ndarray
    # paths (origin port + route)
    path_pol: np.ndarray
    path_route: np.ndarray
    path_km: np.ndarray
    pol_path_start: np.ndarray
    pol_path_count: np.ndarray
    route_hubs: np.ndarray
    route_last_region: np.ndarray
    route_risk_e: np.ndarray
    route_risk_l: np.ndarray
    route_targeted: np.ndarray
    port_country_idx: np.ndarray
    country_risk_e: np.ndarray
    country_risk_l: np.ndarray
    country_targeted: np.ndarray
    # lanes (long-lived and new trade relationships)
    lane_cum: np.ndarray
    old_lane_cum: np.ndarray
    old_lanes: np.ndarray
    lane_comm: np.ndarray
    lane_prod: np.ndarray
    lane_path: np.ndarray
    lane_origin: np.ndarray
    lane_shipper: np.ndarray
    lane_consignee: np.ndarray
    lane_notify: np.ndarray
    lane_carrier: np.ndarray
    lane_payment: np.ndarray
    lane_currency: np.ndarray
    lane_birth: np.ndarray
    lane_new_consignee: np.ndarray
    # empties
    empty_path_cum: np.ndarray
    empty_paths: np.ndarray
    carrier_cum: np.ndarray
    carrier_empty_shipper: np.ndarray
    carrier_empty_consignee: np.ndarray
    carrier_own: np.ndarray         # (n_carriers, 4): indices into owner codes, padded by repetition
    carrier_own_n: np.ndarray
    lessors: np.ndarray
    carrier_terminal: np.ndarray
    # vessels: service = carrier * n_regions + region
    n_regions: int
    service_vessels: np.ndarray     # (n_services, R)
    service_offset: np.ndarray
    service_voyage_base: np.ndarray  # (n_services, R)
    # front companies and new shippers in risky countries
    front_birth: np.ndarray
    front_party: np.ndarray
    front_shipper_start: np.ndarray  # per country
    front_shipper_count: np.ndarray
    front_shippers: np.ndarray
    currency_fx: np.ndarray
    mo_mix_e: np.ndarray
    mo_mix_l: np.ndarray
    manifest_prefix: str


def _build_world(cfg: SynthConfig) -> _World:
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(0,)))
    names = _NameFactory(rng)
    port = cfg.port
    port_country = port[:2]
    excluded = _EU if port_country in _EU else frozenset({port_country})

    # ---- countries, ports ------------------------------------------------------------------
    port_codes = [p[0] for p in _PORTS]
    regions = sorted({p[3] for p in _PORTS})
    region_idx = {r: i for i, r in enumerate(regions)}
    country_list = sorted({c[:2] for c in port_codes} | {"PY", "BO"} | set(_HINTERLAND.get(port_country, ())))
    country_idx = {c: i for i, c in enumerate(country_list)}
    port_country_idx = np.array([country_idx[c[:2]] for c in port_codes])
    country_risk_e = np.array([_RISK_COUNTRY_EARLY.get(c, _RISK_COUNTRY_DEFAULT) for c in country_list])
    country_risk_l = np.array([_RISK_COUNTRY_LATE.get(c, _RISK_COUNTRY_DEFAULT) for c in country_list])
    country_targeted = np.array([c in _TARGETING_COUNTRIES for c in country_list])

    # ---- commodities and products ----------------------------------------------------------
    comms = [c for c in COMMODITIES if any(_origin_country(o) not in excluded for o, _ in c.origins)]
    comm_keys = [c.key for c in comms] + ["empty"]
    ctype_codes = sorted({t for mix in CONTAINER_MIXES.values() for t in mix})
    ctype_idx = {t: i for i, t in enumerate(ctype_codes)}
    hs_list: list[str] = []
    desc_list: list[str] = []
    prod_comm, prod_hs, prod_desc, prod_start, prod_count = [], [], [], [], []
    for ci, c in enumerate(comms):
        prod_start.append(len(prod_comm))
        prod_count.append(len(c.products))
        for hs, desc in c.products:
            if hs not in hs_list:
                hs_list.append(hs)
            if desc not in desc_list:
                desc_list.append(desc)
            prod_comm.append(ci)
            prod_hs.append(hs_list.index(hs))
            prod_desc.append(desc_list.index(desc))
    vague_desc = []
    for d in VAGUE_DESCRIPTIONS:
        desc_list.append(d)
        vague_desc.append(len(desc_list) - 1)
    desc_list.append(EMPTY_DESCRIPTION)
    hs_list.append("")
    n_hs = len(hs_list)
    broken = [h[:4] if h else "TBA" for h in hs_list]
    hs_broken = np.array([n_hs + sorted(set(broken)).index(b) for b in broken])
    hs_list.extend(sorted(set(broken)))

    def mix_row(mix_name: str) -> np.ndarray:
        row = np.zeros(len(ctype_codes))
        for t, w in CONTAINER_MIXES[mix_name].items():
            row[ctype_idx[t]] = w
        return row

    comm_mix = np.stack([mix_row(c.mix) for c in comms] + [mix_row("empty")])

    # ---- routes and paths -----------------------------------------------------------------
    route_keys: dict[tuple[str, ...], int] = {}
    path_pol, path_route, path_km, path_w = [], [], [], []
    pol_path_start = np.zeros(len(port_codes), dtype=np.int64)
    pol_path_count = np.zeros(len(port_codes), dtype=np.int64)
    for pi, (code, _lat, _lon, region) in enumerate(_PORTS):
        pol_path_start[pi] = len(path_pol)
        if code == port or code[:2] in excluded:
            continue
        seen: dict[tuple[str, ...], float] = {}
        for hubs, w in _ROUTE_OPTIONS[region]:
            hubs = tuple(h for h in hubs if h != code and h != port)
            seen[hubs] = seen.get(hubs, 0.0) + w
        for hubs, w in seen.items():
            rid = route_keys.setdefault(hubs, len(route_keys))
            stops = (code, *hubs, port)
            km = sum(_leg_km(a, b) for a, b in zip(stops[:-1], stops[1:], strict=True))
            path_pol.append(pi)
            path_route.append(rid)
            path_km.append(km)
            path_w.append(w)
        pol_path_count[pi] = len(path_pol) - pol_path_start[pi]
    routes_sorted = sorted(route_keys.items(), key=lambda kv: kv[1])
    route_hubs = np.array([len(h) for h, _ in routes_sorted])
    route_last_region = np.array([region_idx[_PORTS[_PORT_INDEX[h[-1]]][3]] if h else -1 for h, _ in routes_sorted])
    route_risk_e = np.array([max([_RISK_HUB_EARLY.get(x, 0.0) for x in h], default=0.0) for h, _ in routes_sorted])
    route_risk_l = np.array([max([_RISK_HUB_LATE.get(x, 0.0) for x in h], default=0.0) for h, _ in routes_sorted])
    route_targeted = np.array([any(x in _TARGETING_HUBS for x in h) for h, _ in routes_sorted])
    path_pol_a = np.array(path_pol)
    path_route_a = np.array(path_route)
    path_w_a = np.array(path_w)


    # ---- carriers, terminals, vessels ------------------------------------------------------
    n_car = len(_CARRIERS)
    carrier_share = np.array([c.share for c in _CARRIERS])
    owner_list = sorted({o for c in _CARRIERS for o in c.owner_codes} | set(_LESSOR_CODES))
    owner_idx = {o: i for i, o in enumerate(owner_list)}
    carrier_own = np.array([[owner_idx[c.owner_codes[k % len(c.owner_codes)]] for k in range(4)] for c in _CARRIERS])
    terminals = DISCHARGE_PORTS[port]
    carrier_terminal = rng.integers(0, len(terminals), size=n_car)
    n_regions = len(regions)
    R = 8
    n_services = n_car * n_regions
    n_vessels = n_services * R
    first6 = rng.choice(np.arange(910_000, 990_000), size=n_vessels, replace=False)
    digits = (first6[:, None] // 10 ** np.arange(5, -1, -1)) % 10
    check = (digits * np.arange(7, 1, -1)).sum(axis=1) % 10
    bad = rng.random(n_vessels) < 0.03  # a few registrations carry a wrong check digit
    check = np.where(bad, (check + rng.integers(1, 10, n_vessels)) % 10, check)
    imos = [f"{a}{b}" for a, b in zip(first6.tolist(), check.tolist(), strict=True)]
    service_vessels = np.arange(n_vessels).reshape(n_services, R)
    service_offset = rng.integers(0, R, size=n_services)
    service_voyage_base = rng.integers(100, 900, size=(n_services, R))

    def carrier_weights(region: str) -> np.ndarray:
        w = carrier_share.copy()
        for ci, c in enumerate(_CARRIERS):
            if c.focus in _FOCUS_REGIONS and region in _FOCUS_REGIONS[c.focus]:
                w[ci] *= 2.0
        return w / w.sum()

    # ---- parties -----------------------------------------------------------------------------
    parties: list[str] = [""]  # index 0: no party (empty notify)
    forwarders = list(range(len(parties), len(parties) + len(_FORWARDERS)))
    parties.extend(_FORWARDERS)
    names.used.update(_FORWARDERS)
    carrier_empty_shipper = np.zeros(n_car, dtype=np.int64)
    carrier_empty_consignee = np.zeros(n_car, dtype=np.int64)
    for ci, c in enumerate(_CARRIERS):
        carrier_empty_shipper[ci] = len(parties)
        parties.append(f"{c.name} EQUIPMENT CONTROL")
        carrier_empty_consignee[ci] = len(parties)
        parties.append(f"{c.name} {port_country} AGENCY")

    consignee_countries = [port_country, *_HINTERLAND.get(port_country, ())]
    n_cc = len(consignee_countries)
    consignee_country_p = np.array([1.0] if n_cc == 1 else [0.75] + [0.25 / (n_cc - 1)] * (n_cc - 1))

    def new_party(country: str, pol: str = "", family: str = "") -> int:
        parties.append(names.make(country, pol, family))
        return len(parties) - 1

    # ---- lanes ---------------------------------------------------------------------------------
    n_lanes = N_LANES + N_NEW_LANES
    comm_share = np.array([c.share for c in comms])
    lane_comm = rng.choice(len(comms), size=n_lanes, p=comm_share / comm_share.sum())
    lane_origin_port = np.zeros(n_lanes, dtype=np.int64)
    lane_origin_country = np.zeros(n_lanes, dtype=np.int64)
    for ci, c in enumerate(comms):
        members = np.flatnonzero(lane_comm == ci)
        opts = [(o, w) for o, w in c.origins if _origin_country(o) not in excluded]
        ow = np.array([w for _, w in opts], dtype=float)
        picks = rng.choice(len(opts), size=len(members), p=ow / ow.sum())
        for m, k in zip(members.tolist(), picks.tolist(), strict=True):
            o = opts[k][0]
            lane_origin_port[m] = _PORT_INDEX[o.split("/")[-1]]
            lane_origin_country[m] = country_idx[_origin_country(o)]
    lane_birth = np.full(n_lanes, -100_000, dtype=np.int64)
    lane_birth[N_LANES:] = rng.integers(0, cfg.days, size=N_NEW_LANES) if cfg.days > 1 else 0
    is_new = lane_birth >= 0

    # Shippers: exporters with one specialism (commodity, origin); several lanes each.
    lane_shipper = np.zeros(n_lanes, dtype=np.int64)
    group_key = lane_comm * 10_000 + lane_origin_port
    for g in np.unique(group_key):
        members = np.flatnonzero(group_key == g)
        old_m = members[~is_new[members]]
        new_m = members[is_new[members]]
        ci, pol = int(g // 10_000), int(g % 10_000)
        country = country_list[lane_origin_country[members[0]]]
        n_sh = max(1, int(round(0.55 * len(old_m))))
        pool = [new_party(country, port_codes[pol], comms[ci].family) for _ in range(n_sh)]
        if len(old_m):
            lane_shipper[old_m] = np.asarray(pool)[(n_sh * rng.random(len(old_m)) ** 1.6).astype(int)]
        for m in new_m.tolist():
            if rng.random() < 0.4 or not len(old_m):
                lane_shipper[m] = new_party(country, port_codes[pol], comms[ci].family)
            else:
                lane_shipper[m] = pool[int(rng.integers(n_sh))]
    # Consignees: importers specialised by cargo family.
    lane_consignee = np.zeros(n_lanes, dtype=np.int64)
    lane_new_consignee = np.zeros(n_lanes, dtype=bool)
    families = np.array([comms[c].family for c in lane_comm])
    for fam in np.unique(families):
        members = np.flatnonzero(families == fam)
        old_m = members[~is_new[members]]
        new_m = members[is_new[members]]
        n_co = max(1, int(round(0.35 * len(old_m))))
        ccountries = rng.choice(len(consignee_countries), size=n_co, p=consignee_country_p)
        pool = [new_party(consignee_countries[k], "", str(fam)) for k in ccountries.tolist()]
        if len(old_m):
            lane_consignee[old_m] = np.asarray(pool)[(n_co * rng.random(len(old_m)) ** 1.8).astype(int)]
        for m in new_m.tolist():
            if rng.random() < 0.6 or not len(old_m):
                k = int(rng.choice(len(consignee_countries), p=consignee_country_p))
                lane_consignee[m] = new_party(consignee_countries[k], "", str(fam))
                lane_new_consignee[m] = True
            else:
                lane_consignee[m] = pool[int(rng.integers(n_co))]
    u = rng.random(n_lanes)
    lane_notify = np.where(u < 0.55, lane_consignee, np.where(u < 0.85, rng.choice(forwarders, size=n_lanes), 0))
    lane_path = np.zeros(n_lanes, dtype=np.int64)
    lane_carrier = np.zeros(n_lanes, dtype=np.int64)
    for pol in np.unique(lane_origin_port).tolist():
        members = np.flatnonzero(lane_origin_port == pol)
        s0, n0 = pol_path_start[pol], pol_path_count[pol]
        w = path_w_a[s0:s0 + n0]
        lane_path[members] = s0 + rng.choice(n0, size=len(members), p=w / w.sum())
        lane_carrier[members] = rng.choice(n_car, size=len(members), p=carrier_weights(_PORTS[pol][3]))
    lane_payment = rng.choice(4, size=n_lanes, p=[0.62, 0.34, 0.01, 0.03])
    cur_codes = [c for c, _ in _CURRENCIES]
    lane_currency = rng.choice([0, 1], size=n_lanes, p=[0.74, 0.26])
    origin_codes = np.array([country_list[c] for c in lane_origin_country])
    local = rng.random(n_lanes)
    lane_currency = np.where((origin_codes == "CN") & (local < 0.12), cur_codes.index("CNY"), lane_currency)
    lane_currency = np.where((origin_codes == "JP") & (local < 0.3), cur_codes.index("JPY"), lane_currency)
    lane_prod = np.asarray(prod_start)[lane_comm] + (rng.random(n_lanes) * np.asarray(prod_count)[lane_comm]).astype(np.int64)
    # Zipf-like volumes inside each commodity, so commodity shares hold at row level.
    rank = rng.permutation(n_lanes) + 1
    vol = 1.0 / rank.astype(float) ** 0.9
    comm_tot = np.bincount(lane_comm, weights=vol, minlength=len(comms))
    lane_w = comm_share[lane_comm] * vol / comm_tot[lane_comm]
    old_lanes = np.flatnonzero(~is_new)

    # ---- empties ---------------------------------------------------------------------------
    empty_paths = np.flatnonzero(np.isin(path_pol_a, lane_origin_port))
    empty_w = np.ones(len(empty_paths))

    # ---- front companies and fresh shippers in risky countries ------------------------------
    front_birth = np.sort(rng.integers(-60, cfg.days, size=N_FRONT_COMPANIES))
    front_party = np.array([
        new_party(consignee_countries[int(rng.choice(len(consignee_countries), p=consignee_country_p))])
        for _ in range(N_FRONT_COMPANIES)
    ])
    risky = [c for c in country_list if _RISK_COUNTRY_EARLY.get(c, 0) + _RISK_COUNTRY_LATE.get(c, 0) > 0.2]
    front_shipper_start = np.zeros(len(country_list), dtype=np.int64)
    front_shipper_count = np.zeros(len(country_list), dtype=np.int64)
    fs: list[int] = []
    for c in risky:
        front_shipper_start[country_idx[c]] = len(fs)
        front_shipper_count[country_idx[c]] = 25
        fs.extend(new_party(c) for _ in range(25))

    # ---- risk by commodity -------------------------------------------------------------------
    comm_risk_e = np.array([_RISK_COMMODITY_EARLY.get(k, _RISK_COMMODITY_DEFAULT) for k in comm_keys])
    comm_risk_l = np.array([_RISK_COMMODITY_LATE.get(k, _RISK_COMMODITY_DEFAULT) for k in comm_keys])
    cover = np.array([comm_keys.index(k) for k in _COVER_LOADS if k in comm_keys])

    start_ts = pd.Timestamp(cfg.start)
    log.debug("world for %s: %d lanes, %d parties, %d paths, %d vessels",
              port, n_lanes, len(parties), len(path_pol), n_vessels)
    return _World(
        cfg=cfg,
        start_ns=int(start_ts.value),
        parties=pa.array(parties, type=pa.string()),
        countries=pa.array(country_list, type=pa.string()),
        ports=pa.array(port_codes, type=pa.string()),
        routes=pa.array([";".join(h) for h, _ in routes_sorted], type=pa.string()),
        terminals=pa.array(list(terminals), type=pa.string()),
        discharge=pa.array([port], type=pa.string()),
        carriers=pa.array([c.name for c in _CARRIERS], type=pa.string()),
        scacs=_Codes([c.scac for c in _CARRIERS]),
        seal_prefixes=_Codes([c.seal_prefix for c in _CARRIERS] + ["SH"]),
        owner_codes=_Codes(owner_list),
        owner_sums=_iso6346_prefix_sums(owner_list),
        ctypes=pa.array(ctype_codes, type=pa.string()),
        hs_codes=pa.array(hs_list, type=pa.string()),
        descriptions=pa.array(desc_list, type=pa.string()),
        currencies=pa.array(cur_codes, type=pa.string()),
        imos=pa.array(imos, type=pa.string()),
        directions=_Codes([_DIRECTION[r] for r in regions]),
        port_region=np.array([region_idx[p[3]] for p in _PORTS]),
        prod_hs=np.asarray(prod_hs),
        prod_desc=np.asarray(prod_desc),
        comm_prod_start=np.asarray(prod_start),
        comm_prod_count=np.asarray(prod_count),
        comm_mix_cum=_cum(comm_mix),
        comm_payload=np.array([c.payload_kg for c in comms], dtype=float),
        comm_unit=np.array([c.unit_kg for c in comms]),
        comm_pack=np.array([c.packaging_frac for c in comms]),
        comm_usd=np.array([c.usd_per_kg for c in comms]),
        comm_reefer=np.array([c.reefer for c in comms] + [False]),
        comm_fruit=np.array([c.family == "fruit" for c in comms] + [False]),
        comm_risk_e=comm_risk_e,
        comm_risk_l=comm_risk_l,
        cover_comms=cover,
        ctype_reefer=np.array([t[2] == "R" for t in ctype_codes]),
        ctype_20=np.array([t[0] == "2" for t in ctype_codes]),
        ctype_tare=np.array([TARE_KG[t] for t in ctype_codes]),
        reefer_type=ctype_idx["45R1"],
        dry_type=ctype_idx["22G1"],
        empty_desc=len(desc_list) - 1,
        empty_hs=n_hs - 1,
        hs_broken=hs_broken,
        vague_desc=np.asarray(vague_desc),
        path_pol=path_pol_a,
        path_route=path_route_a,
        path_km=np.asarray(path_km),
        pol_path_start=pol_path_start,
        pol_path_count=pol_path_count,
        route_hubs=route_hubs,
        route_last_region=route_last_region,
        route_risk_e=route_risk_e,
        route_risk_l=route_risk_l,
        route_targeted=route_targeted,
        port_country_idx=port_country_idx,
        country_risk_e=country_risk_e,
        country_risk_l=country_risk_l,
        country_targeted=country_targeted,
        lane_cum=_cum(lane_w),
        old_lane_cum=_cum(lane_w[old_lanes]),
        old_lanes=old_lanes,
        lane_comm=lane_comm,
        lane_prod=lane_prod,
        lane_path=lane_path,
        lane_origin=lane_origin_country,
        lane_shipper=lane_shipper,
        lane_consignee=lane_consignee,
        lane_notify=lane_notify,
        lane_carrier=lane_carrier,
        lane_payment=lane_payment,
        lane_currency=lane_currency,
        lane_birth=lane_birth,
        lane_new_consignee=lane_new_consignee,
        empty_path_cum=_cum(empty_w),
        empty_paths=empty_paths,
        carrier_cum=_cum(carrier_share),
        carrier_empty_shipper=carrier_empty_shipper,
        carrier_empty_consignee=carrier_empty_consignee,
        carrier_own=carrier_own,
        carrier_own_n=np.array([len(c.owner_codes) for c in _CARRIERS]),
        lessors=np.array([owner_idx[o] for o in _LESSOR_CODES]),
        carrier_terminal=carrier_terminal,
        n_regions=n_regions,
        service_vessels=service_vessels,
        service_offset=service_offset,
        service_voyage_base=service_voyage_base,
        front_birth=front_birth,
        front_party=front_party,
        front_shipper_start=front_shipper_start,
        front_shipper_count=front_shipper_count,
        front_shippers=np.asarray(fs, dtype=np.int64),
        currency_fx=np.array([fx for _, fx in _CURRENCIES]),
        mo_mix_e=np.array([MO_MIX_EARLY[m] for m in MODUS_OPERANDI[1:]]),
        mo_mix_l=np.array([MO_MIX_LATE[m] for m in MODUS_OPERANDI[1:]]),
        manifest_prefix=f"{start_ts.year % 100:02d}{port}",
    )


def _origin_country(origin: str) -> str:
    """Country of origin of a commodity origin entry ("ECGYE" or "PY/UYMVD")."""
    return origin.split("/")[0] if "/" in origin else origin[:2]


# --------------------------------------------------------------------------------------------
# String assembly (Arrow kernels, no per-row Python)
# --------------------------------------------------------------------------------------------


def _dict(dictionary: pa.Array, idx: np.ndarray, missing: np.ndarray | None = None) -> pa.DictionaryArray:
    """A dictionary-encoded column: cheap to build, sort and write; decoded for pandas and CSV."""
    indices = pa.array(np.asarray(idx, dtype=np.int32), mask=missing)
    return pa.DictionaryArray.from_arrays(indices, dictionary)


class _Codes:
    """A small list of ASCII strings as a padded byte matrix, for building row strings."""

    def __init__(self, values: list[str] | tuple[str, ...]) -> None:
        width = max(1, max(len(v) for v in values))
        self.bytes = np.zeros((len(values), width), dtype=np.uint8)
        for i, v in enumerate(values):
            self.bytes[i, : len(v)] = np.frombuffer(v.encode("ascii"), dtype=np.uint8)
        self.lengths = np.array([len(v) for v in values])
        self.fixed = bool((self.lengths == width).all())

    def piece(self, idx: np.ndarray) -> np.ndarray:
        """(n, width) matrix of the codes at ``idx`` (all codes must have the same length)."""
        if not self.fixed:
            raise ValueError("codes of different lengths cannot form a fixed-width piece")
        return self.bytes[idx]


# ASCII of every 4-digit group "0000".."9999" as one uint32: one gather per 4 digits.
_DIGITS4 = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8).view(np.uint32).ravel()


def _digit_piece(values: np.ndarray, width: int) -> np.ndarray:
    """(n, width) ASCII matrix of zero-padded decimal digits (the last ``width`` digits)."""
    v = np.asarray(values, dtype=np.int64)
    n_groups = -(-width // 4)
    out = np.empty((len(v), n_groups), dtype=np.uint32)
    for k in range(n_groups):
        q = v // 10_000
        out[:, n_groups - 1 - k] = _DIGITS4[v - q * 10_000]
        v = q
    return out.view(np.uint8).reshape(len(out), 4 * n_groups)[:, 4 * n_groups - width:]


def _strings(*pieces: np.ndarray | bytes, n: int, valid: np.ndarray | None = None) -> pa.Array:
    """Concatenate fixed-width ASCII pieces row by row into an Arrow string array.

    Each piece is an (n, w) uint8 matrix or a literal ``bytes`` shared by all rows. Every row has
    the same width, so the array is built from its buffers without any per-row work.
    """
    widths = [len(p) if isinstance(p, bytes) else p.shape[1] for p in pieces]
    total = sum(widths)
    out = np.empty((n, total), dtype=np.uint8)
    pos = 0
    for p, w in zip(pieces, widths, strict=True):
        out[:, pos:pos + w] = np.frombuffer(p, dtype=np.uint8) if isinstance(p, bytes) else p
        pos += w
    offsets = np.arange(n + 1, dtype=np.int32) * total
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(out.reshape(-1))]
    null_count = 0
    if valid is not None and not valid.all():
        buffers[0] = pa.py_buffer(np.packbits(valid, bitorder="little"))
        null_count = int(n - valid.sum())
    return pa.Array.from_buffers(pa.string(), n, buffers, null_count=null_count)


def _prefixed(prefixes: _Codes, idx: np.ndarray, numbers: np.ndarray, width: int) -> np.ndarray:
    """(n, width) matrix: a variable-length prefix, then the number's digits filling the rest."""
    pre = np.zeros((len(idx), width), dtype=np.uint8)
    pre[:, : prefixes.bytes.shape[1]] = prefixes.bytes[idx]
    digits = _digit_piece(numbers, width)
    return np.where(np.arange(width) < prefixes.lengths[idx][:, None], pre, digits)


def _iso6346_prefix_sums(owner_codes: list[str]) -> np.ndarray:
    values = {}
    v = 10
    for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        if v % 11 == 0:
            v += 1
        values[ch] = v
        v += 1
    return np.array([sum(values[ch] * 2 ** i for i, ch in enumerate(code)) for code in owner_codes], dtype=np.int64)


def _serial_weight_table(weights: np.ndarray) -> np.ndarray:
    """Weighted digit sums of every 3-digit group 000..999 for the given position weights."""
    d = (np.arange(1000)[:, None] // np.array([100, 10, 1])) % 10
    return (d * weights).sum(axis=1).astype(np.int64)


# ISO 6346 weights 2**4..2**9 on the six serial digits, split in two groups of three.
_SERIAL_HI = _serial_weight_table(2 ** np.arange(4, 7))
_SERIAL_LO = _serial_weight_table(2 ** np.arange(7, 10))


def container_check_digits(prefix_sums: np.ndarray, serials: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ISO 6346 check digits for owner-code weighted sums and 6-digit serial numbers.

    Owners do not issue serials whose remainder is 10 (the check digit would be ambiguous), so
    such serials are bumped to a neighbour. Returns (serials, check digits).
    """
    serials = np.asarray(serials, dtype=np.int64).copy()
    for _ in range(2):
        hi = serials // 1000
        rem = (prefix_sums + _SERIAL_HI[hi] + _SERIAL_LO[serials - hi * 1000]) % 11
        ten = rem == 10
        if not ten.any():
            break
        last = serials[ten] % 10
        serials[ten] += np.where(last < 9, 1, -9)
    return serials, rem % 10


# --------------------------------------------------------------------------------------------
# One block of rows
# --------------------------------------------------------------------------------------------

_DAY_NS = 86_400 * 1_000_000_000
_PAYMENTS_ARR = pa.array(FREIGHT_PAYMENTS, type=pa.string())
_MO_ARR = pa.array(MODUS_OPERANDI, type=pa.string())
_LOC_ARR = pa.array(CONCEALMENT_LOCATIONS, type=pa.string())
_SEL_ARR = pa.array(SELECTIONS, type=pa.string())
_CORRUPT_DATES = ("2026-13-45", "31/02/2026 10:00", "TBA", "2026-02-30T25:61:00")


def _block_table(world: _World, block: int) -> pa.Table:
    """Rows ``block * BLOCK_ROWS`` onwards, from the block's own random stream.

    Order of the story: shipments and their lanes, containers, smuggling (chosen from the risk
    context, then written into the manifest), weights and values (after any change of goods),
    times, historical inspections, corruption, and finally the Arrow columns.
    """
    cfg = world.cfg
    lo = block * BLOCK_ROWS
    n = min(BLOCK_ROWS, cfg.rows - lo)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(1, block)))

    # ---- shipments (one bill of lading, 1..n containers) ----------------------------------
    sizes = np.minimum(rng.geometric(0.6, size=n), 12)
    ends = np.cumsum(sizes)
    n_ship = int(np.searchsorted(ends, n) + 1)
    sizes = sizes[:n_ship]
    sizes[-1] -= ends[n_ship - 1] - n
    ship_first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    day = ((lo + ship_first) * cfg.days) // cfg.rows
    t_frac = (day + 0.5) / cfg.days
    a = cfg.drift * t_frac

    empty = rng.random(n_ship) < EMPTY_SHARE
    u = rng.random(n_ship)
    lane = np.searchsorted(world.lane_cum, u, side="right")
    unborn = world.lane_birth[lane] > day
    lane[unborn] = world.old_lanes[np.searchsorted(world.old_lane_cum, rng.random(int(unborn.sum())), side="right")]
    comm = world.lane_comm[lane]
    prod = world.lane_prod[lane].copy()
    vary = rng.random(n_ship) < 0.2
    prod[vary] = world.comm_prod_start[comm[vary]] + (rng.random(int(vary.sum())) * world.comm_prod_count[comm[vary]]).astype(np.int64)
    path = world.lane_path[lane].copy()
    pol = world.path_pol[path]
    alt = rng.random(n_ship) < 0.1
    path[alt] = world.pol_path_start[pol[alt]] + (rng.random(int(alt.sum())) * world.pol_path_count[pol[alt]]).astype(np.int64)
    carrier = world.lane_carrier[lane].copy()
    disloyal = rng.random(n_ship) < 0.15
    carrier[disloyal] = np.searchsorted(world.carrier_cum, rng.random(int(disloyal.sum())), side="right")
    origin = world.lane_origin[lane].copy()
    shipper = world.lane_shipper[lane].copy()
    consignee = world.lane_consignee[lane].copy()
    notify = world.lane_notify[lane].copy()
    payment = world.lane_payment[lane].copy()
    currency = world.lane_currency[lane].copy()
    new_consignee = world.lane_new_consignee[lane] & (day - world.lane_birth[lane] < 90)
    long_lived = world.lane_birth[lane] < 0

    # Empty containers being repositioned by their carrier.
    ne = int(empty.sum())
    if ne:
        path[empty] = world.empty_paths[np.searchsorted(world.empty_path_cum, rng.random(ne), side="right")]
        carrier[empty] = np.searchsorted(world.carrier_cum, rng.random(ne), side="right")
        shipper[empty] = world.carrier_empty_shipper[carrier[empty]]
        consignee[empty] = world.carrier_empty_consignee[carrier[empty]]
        notify[empty] = 0
        payment[empty] = 0
        currency[empty] = 0
        comm[empty] = len(world.comm_payload)
        new_consignee[empty] = False
        long_lived[empty] = False
    pol = world.path_pol[path]
    origin[empty] = world.port_country_idx[pol[empty]]
    route = world.path_route[path]
    ctype = _pick(world.comm_mix_cum[comm], rng.random(n_ship))

    # Vessel calls: one service per (carrier, region of the last port of call), calling daily.
    last_region = world.route_last_region[route]
    last_region = np.where(last_region < 0, world.port_region[pol], last_region)
    service = carrier * world.n_regions + last_region
    rot = day + world.service_offset[service]
    R = world.service_vessels.shape[1]
    k = rot % R
    vessel = world.service_vessels[service, k]
    voyage = (world.service_voyage_base[service, k] + rot // R) % 1000
    terminal = np.where(rng.random(n_ship) < 0.88, world.carrier_terminal[carrier],
                        rng.integers(0, len(world.terminals), size=n_ship))

    # Times in days from the start of the period.
    arrival = day + rng.uniform(0.0, 1.0, n_ship)
    transit = world.path_km[path] / 650.0 + 1.0 + 2.5 * world.route_hubs[route] + rng.normal(0, 1.0, n_ship)
    departure = arrival - np.maximum(transit, 2.0)
    cut_off = departure - rng.uniform(0.5, 2.0, n_ship)
    late = rng.random(n_ship) < 0.02
    lead = np.where(late, rng.uniform(-0.5, 1.0, n_ship), rng.uniform(1.0, 10.0, n_ship))
    filed = arrival - lead
    amended = rng.random(n_ship) < 0.06
    bl_serial = ((block * BLOCK_ROWS + np.arange(n_ship)) * 7_919 + 104_729) % 1_000_000_000

    # ---- rows ------------------------------------------------------------------------------
    ship = np.repeat(np.arange(n_ship), sizes)
    single = (sizes == 1)[ship]
    r_day = day[ship]
    r_a = a[ship]
    r_empty = empty[ship]
    r_comm = comm[ship]
    r_prod = prod[ship]
    r_origin = origin[ship]
    r_route = route[ship]
    r_ctype = ctype[ship]
    r_shipper = shipper[ship]
    r_consignee = consignee[ship]
    r_notify = notify[ship]
    r_payment = payment[ship]
    r_carrier = carrier[ship]
    r_new_consignee = new_consignee[ship]
    r_long_lived = long_lived[ship]
    r_filed = filed[ship]
    r_late = late[ship]
    r_amended = amended[ship]
    r_desc = world.prod_desc[np.minimum(r_prod, len(world.prod_desc) - 1)]
    r_desc = np.where(r_empty, world.empty_desc, r_desc)
    # Forwarders' consolidated loads are declared vaguely, quite legitimately.
    vague_licit = ~r_empty & (rng.random(n) < 0.012)
    r_desc = np.where(vague_licit, world.vague_desc[rng.integers(0, len(world.vague_desc), n)], r_desc)
    dwell = np.clip(rng.lognormal(np.log(2.5), 0.6, n), 0.1, 14.0)
    gate_in = cut_off[ship] - dwell

    # Containers: owner code by carrier (own or leased box), serial, ISO 6346 check digit.
    leased = rng.random(n) < _LEASED_SHARE
    owner = np.where(
        leased,
        world.lessors[rng.integers(0, len(world.lessors), n)],
        world.carrier_own[r_carrier, (rng.random(n) * world.carrier_own_n[r_carrier]).astype(np.int64)],
    )
    serial, check = container_check_digits(world.owner_sums[owner], rng.integers(0, 1_000_000, n))
    merchant_seal = rng.random(n) < 0.08
    seal_kind = np.where(merchant_seal, len(_CARRIERS), r_carrier)
    seal_num = rng.integers(0, 10 ** SEAL_WIDTH, n)
    gate_recorded = rng.random(n) < 0.75
    gate_num = seal_num.copy()
    clerical = gate_recorded & (rng.random(n) < 0.005)
    gate_num[clerical] = (seal_num[clerical] // 10) * 10 + (seal_num[clerical] % 10 + rng.integers(1, 10, int(clerical.sum()))) % 10

    # ---- smuggling ---------------------------------------------------------------------------
    risk_c = (1 - r_a) * world.country_risk_e[r_origin] + r_a * world.country_risk_l[r_origin]
    risk_h = (1 - r_a) * world.route_risk_e[r_route] + r_a * world.route_risk_l[r_route]
    risk_k = (1 - r_a) * world.comm_risk_e[r_comm] + r_a * world.comm_risk_l[r_comm]
    reefer = world.ctype_reefer[r_ctype]
    loaded = ~r_empty
    dwell_f = np.clip(dwell / 2.5, 0.3, 4.0)
    weights = {
        "reefer_machinery": reefer * (0.05 + risk_c + risk_h),
        "front_company": (single & loaded) * (risk_c + 0.5 * risk_h + 0.02) * (0.3 + risk_k),
        "rip_on_rip_off": (r_long_lived & loaded) * ((risk_c + risk_h) * (0.2 + risk_k) * dwell_f
                                                     * np.where(reefer, 1.5, 1.0) + 0.002),
        "misdeclaration": loaded * (0.15 + risk_c + 0.3 * risk_h),
        "structural": (0.25 + risk_c + 0.5 * risk_h) * np.where(r_empty, 0.6, 1.0),
    }
    mo = np.zeros(n, dtype=np.int64)
    k_total = rng.binomial(n, cfg.illicit_rate)
    if k_total:
        a_mid = float(r_a.mean())
        mix = (1 - a_mid) * world.mo_mix_e + a_mid * world.mo_mix_l
        counts = dict(zip(MODUS_OPERANDI[1:], rng.multinomial(k_total, mix / mix.sum()).tolist(), strict=True))
        taken = np.zeros(n, dtype=bool)
        deficit = 0
        for name in ("reefer_machinery", "front_company", "rip_on_rip_off", "misdeclaration", "structural"):
            want = counts[name] + (deficit if name == "structural" else 0)
            w = np.where(taken, 0.0, weights[name])
            idx = _weighted_sample(rng, w, want)
            deficit += want - len(idx) if name != "structural" else 0
            mo[idx] = MODUS_OPERANDI.index(name)
            taken[idx] = True
    illicit = mo > 0
    is_mo = {name: mo == MODUS_OPERANDI.index(name) for name in MODUS_OPERANDI[1:]}
    loc = np.zeros(n, dtype=np.int64)
    amount = np.zeros(n)
    L = CONCEALMENT_LOCATIONS.index

    m = is_mo["rip_on_rip_off"]
    if m.any():
        k_ = int(m.sum())
        loc[m] = np.where(rng.random(k_) < 0.85, L("doors"), L("cargo"))
        amount[m] = np.clip(rng.integers(1, 6, k_) * rng.uniform(20.0, 32.0, k_), 20.0, 150.0)
        swapped = rng.random(k_) < 0.35
        idx = np.flatnonzero(m)[swapped]
        gate_recorded[idx] = True
        gate_num[idx] = rng.integers(0, 10 ** SEAL_WIDTH, len(idx))
    m = is_mo["front_company"]
    if m.any():
        idx = np.flatnonzero(m)
        k_ = len(idx)
        loc[idx] = np.where(rng.random(k_) < 0.9, L("cargo"), L("doors"))
        amount[idx] = np.clip(rng.lognormal(np.log(200.0), 1.0, k_), 10.0, 3_000.0)
        d = r_day[idx]
        lo_f = np.searchsorted(world.front_birth, d - 60)
        hi_f = np.searchsorted(world.front_birth, d, side="right")
        pick = np.where(hi_f > lo_f, lo_f + (rng.random(k_) * (hi_f - lo_f)).astype(np.int64), np.maximum(hi_f - 1, 0))
        r_consignee[idx] = world.front_party[pick]
        r_new_consignee[idx] = True
        r_notify[idx] = np.where(rng.random(k_) < 0.5, 0, r_consignee[idx])
        r_payment[idx] = rng.choice(4, size=k_, p=[0.15, 0.20, 0.35, 0.30])
        cnt = world.front_shipper_count[r_origin[idx]]
        fresh = (rng.random(k_) < 0.5) & (cnt > 0)
        r_shipper[idx[fresh]] = world.front_shippers[
            world.front_shipper_start[r_origin[idx[fresh]]] + (rng.random(int(fresh.sum())) * cnt[fresh]).astype(np.int64)]
        # A cover load that does not fit the shipper's usual trade.
        switch = rng.random(k_) < 0.5
        sidx = idx[switch]
        new_comm = world.cover_comms[rng.integers(0, len(world.cover_comms), len(sidx))]
        r_comm[sidx] = new_comm
        r_prod[sidx] = world.comm_prod_start[new_comm] + (rng.random(len(sidx)) * world.comm_prod_count[new_comm]).astype(np.int64)
        need_reefer = world.comm_reefer[new_comm]
        mismatch = need_reefer != world.ctype_reefer[r_ctype[sidx]]
        r_ctype[sidx[mismatch]] = np.where(need_reefer[mismatch], world.reefer_type, world.dry_type)
        r_desc[idx] = world.prod_desc[r_prod[idx]]
        vague = rng.random(k_) < 0.5
        r_desc[idx[vague]] = world.vague_desc[rng.integers(0, len(world.vague_desc), int(vague.sum()))]
        r_amended[idx] |= rng.random(k_) < 0.25
        late_f = rng.random(k_) < 0.1
        r_late[idx] |= late_f
        r_filed[idx[late_f]] = arrival[ship][idx[late_f]] - rng.uniform(-0.5, 1.0, int(late_f.sum()))
    m = is_mo["misdeclaration"]
    if m.any():
        k_ = int(m.sum())
        loc[m] = L("cargo")
        amount[m] = np.clip(rng.lognormal(np.log(80.0), 1.0, k_), 5.0, 2_000.0)
        idx = np.flatnonzero(m)
        fresh = (rng.random(k_) < 0.3) & (world.front_shipper_count[r_origin[idx]] > 0)
        cnt = world.front_shipper_count[r_origin[idx[fresh]]]
        r_shipper[idx[fresh]] = world.front_shippers[
            world.front_shipper_start[r_origin[idx[fresh]]] + (rng.random(int(fresh.sum())) * cnt).astype(np.int64)]
        r_amended[idx] |= rng.random(k_) < 0.2
    m = is_mo["reefer_machinery"]
    if m.any():
        k_ = int(m.sum())
        loc[m] = L("reefer_unit")
        amount[m] = np.clip(rng.lognormal(np.log(30.0), 0.6, k_), 5.0, 80.0)
    m = is_mo["structural"]
    if m.any():
        k_ = int(m.sum())
        loc[m] = np.array([L("walls"), L("floor"), L("roof")])[_pick(np.tile(_cum([0.45, 0.40, 0.15]), (k_, 1)), rng.random(k_))]
        amount[m] = np.clip(rng.lognormal(np.log(25.0), 0.7, k_), 3.0, 120.0)

    # ---- weights, packages, values -------------------------------------------------------------
    reefer = world.ctype_reefer[r_ctype]  # a front company's cover load may have changed the box
    nc = len(world.comm_payload)
    c_ = np.minimum(r_comm, nc - 1)
    is20 = world.ctype_20[r_ctype]
    payload = np.where(is20, world.comm_payload[c_, 0], world.comm_payload[c_, 1])
    net = np.clip(payload * rng.lognormal(0.0, 0.12, n), 0.25 * payload, np.minimum(1.2 * payload, 28_000.0))
    unit = world.comm_unit[c_] * rng.uniform(0.93, 1.07, n)
    packages = np.maximum(1, np.round(net / unit)).astype(np.int64)
    true_gross = net * (1.0 + world.comm_pack[c_] * rng.uniform(0.7, 1.3, n))
    gross = np.round(true_gross)
    rnd = rng.random(n)
    gross = np.where(rnd < 0.3, np.round(gross, -1), np.where(rnd < 0.45, np.round(gross, -2), gross))
    quirk = rng.random(n)
    gross = np.where(quirk < 0.005, np.round(net), gross)                                   # packaging left out
    gross = np.where((quirk >= 0.005) & (quirk < 0.01), np.round(gross * rng.uniform(0.85, 0.95, n)), gross)
    gross = np.where((quirk >= 0.01) & (quirk < 0.015), np.round(gross * rng.uniform(1.05, 1.25, n)), gross)
    tare = world.ctype_tare[r_ctype] * (1.0 + rng.normal(0, 0.02, n))
    weighed_with_drugs = illicit & ~is_mo["rip_on_rip_off"]   # rip-on happens after weighing
    vgm = (true_gross + tare + np.where(weighed_with_drugs, amount, 0.0)) * (1.0 + rng.normal(0, 0.006, n))
    vq = rng.random(n)
    vgm = np.where(vq < 0.01, vgm * (1.0 + rng.uniform(-0.08, 0.08, n)), vgm)
    vgm = np.where((vq >= 0.01) & (vq < 0.013), gross, vgm)                                # tare forgotten
    value = net * world.comm_usd[c_] * rng.lognormal(0.0, 0.25, n)
    vq = rng.random(n)
    value = np.where(vq < 0.007, value * rng.uniform(0.1, 0.4, n), np.where(vq < 0.01, value * rng.uniform(3, 8, n), value))
    m = is_mo["misdeclaration"]
    if m.any():
        idx = np.flatnonzero(m)
        k_ = len(idx)
        wgt, val, pkg = rng.random(k_) < 0.6, rng.random(k_) < 0.5, rng.random(k_) < 0.3
        wgt |= ~(wgt | val | pkg)
        gross[idx[wgt]] = np.round(gross[idx[wgt]] * rng.uniform(0.55, 0.85, int(wgt.sum())))
        value[idx[val]] *= rng.uniform(0.15, 0.5, int(val.sum()))
        packages[idx[pkg]] = np.maximum(1, np.round(packages[idx[pkg]] * rng.uniform(0.5, 0.8, int(pkg.sum())))).astype(np.int64)
    fx = world.currency_fx[currency[ship]]
    value = np.round(value * fx, 2)
    freight = (350.0 + 0.11 * world.path_km[path[ship]]) * np.where(is20, 1.0, 1.55) * np.where(reefer, 1.7, 1.0)
    freight = np.round(freight * rng.lognormal(0.0, 0.2, n) * np.where(r_empty, 0.3, 1.0) * fx, 2)
    freight[rng.random(n) < 0.1] = np.nan
    # Empty boxes: no cargo, the VGM is the tare (plus anything hidden in the structure).
    packages[r_empty] = 0
    gross[r_empty] = 0.0
    value[r_empty] = 0.0
    vgm = np.where(r_empty, tare * (1.0 + rng.normal(0, 0.01, n)) + np.where(illicit, amount, 0.0), vgm)
    vgm = np.maximum(np.round(vgm, -1), 10.0)
    gross = np.maximum(gross, np.where(r_empty, 0.0, 1.0))

    # ---- timestamps ------------------------------------------------------------------------------
    r_arrival = arrival[ship]
    amend_at = r_filed + rng.uniform(0.02, 1.0, n) * np.maximum(r_arrival + 0.5 - r_filed, 0.05)
    post = rng.random(n) < 0.15
    amend_at = np.where(post, r_arrival + rng.uniform(0.1, 3.0, n), amend_at)
    amend_at = np.where(r_amended, amend_at, np.nan)
    gate_missing = rng.random(n) < 0.06
    cut_missing = rng.random(n) < 0.08

    # ---- historical inspections ------------------------------------------------------------------
    vague_row = np.isin(r_desc, world.vague_desc)
    seal_mismatch = gate_recorded & (gate_num != seal_num)
    score = (0.3 + 2.0 * world.country_targeted[r_origin] + 1.5 * world.route_targeted[r_route]
             + 1.5 * r_new_consignee + 1.0 * vague_row + 1.0 * (r_payment >= 2)
             + 0.7 * (reefer & world.comm_fruit[r_comm]) + 1.0 * seal_mismatch + 0.8 * r_late)
    random_pick = rng.random(n) < RANDOM_INSPECTION_RATE
    w_t = np.where(random_pick, 0.0, score ** 3)
    targeted = np.zeros(n, dtype=bool)
    targeted[_weighted_sample(rng, w_t, int(round(TARGETED_INSPECTION_RATE * n)))] = True
    selection = np.where(random_pick, 1, np.where(targeted, 2, 0))
    inspected = selection > 0
    outcome = np.where(inspected, r_day + rng.uniform(1.0, 6.0, n), np.nan)

    # ---- corruption ----------------------------------------------------------------------------
    corrupt_kind = np.zeros(n, dtype=np.int64)
    if cfg.corrupt_rate > 0:
        bad = rng.random(n) < cfg.corrupt_rate
        corrupt_kind[bad] = rng.integers(1, 7, int(bad.sum()))
        if (corrupt_kind == 6).any() and (corrupt_kind == 0).sum() == 0:
            corrupt_kind[corrupt_kind == 6] = 5
    ck = corrupt_kind
    check = np.where(ck == 1, (check + rng.integers(1, 10, n)) % 10, check)
    gross = np.where(ck == 2, -np.maximum(gross, 1.0), gross)
    manifest_no = lo + np.arange(n) + 1
    dup = np.flatnonzero(ck == 6)
    if len(dup):
        clean = np.flatnonzero(ck == 0)
        manifest_no[dup] = manifest_no[clean[rng.integers(0, len(clean), len(dup))]]

    # ---- Arrow table ---------------------------------------------------------------------------
    def ts(days_from_start: np.ndarray, missing: np.ndarray | None = None, unit_s: int = 1) -> pa.Array:
        sec = np.round(days_from_start * 86_400.0 / unit_s) * unit_s
        ns = np.where(np.isnan(sec), 0, sec).astype(np.int64) * 1_000_000_000 + world.start_ns
        mask = np.isnan(sec) if missing is None else (np.isnan(sec) | missing)
        return pa.array(ns, type=pa.timestamp("ns"), mask=mask)

    filed_ns_days = r_filed
    hs_idx = np.where(r_empty, world.empty_hs, world.prod_hs[np.minimum(r_prod, len(world.prod_hs) - 1)])
    seal_mat = _prefixed(world.seal_prefixes, seal_kind, seal_num, SEAL_WIDTH)
    gate_mat = seal_mat.copy()
    differs = np.flatnonzero(gate_num != seal_num)
    gate_mat[differs] = _prefixed(world.seal_prefixes, seal_kind[differs], gate_num[differs], SEAL_WIDTH)
    table = {
        "manifest_id": _strings(world.manifest_prefix.encode(), _digit_piece(manifest_no, 10), n=n),
        "container_id": _strings(world.owner_codes.piece(owner), _digit_piece(serial * 10 + check, 7), n=n),
        "container_type": _dict(world.ctypes, r_ctype),
        "bl_number": _strings(world.scacs.piece(r_carrier), _digit_piece(bl_serial[ship], 9), n=n),
        "vessel_imo": _dict(world.imos, vessel[ship]),
        "voyage": _strings(_digit_piece(voyage[ship], 3), world.directions.piece(last_region[ship]), n=n),
        "carrier": _dict(world.carriers, r_carrier),
        "shipper": _dict(world.parties, r_shipper),
        "consignee": _dict(world.parties, r_consignee),
        "notify_party": _dict(world.parties, r_notify),
        "origin_country": _dict(world.countries, r_origin),
        "port_of_loading": _dict(world.ports, world.path_pol[path[ship]]),
        "transshipment_ports": _dict(world.routes, r_route),
        "port_of_discharge": _dict(world.discharge, np.zeros(n, dtype=np.int32)),
        "terminal": _dict(world.terminals, terminal[ship]),
        "hs_code": _dict(world.hs_codes, hs_idx),
        "goods_description": _dict(world.descriptions, r_desc),
        "packages": pa.array(packages, type=pa.int64()),
        "gross_weight_kg": pa.array(gross.astype(np.float64)),
        "vgm_kg": pa.array(vgm.astype(np.float64)),
        "declared_value": pa.array(value),
        "currency": _dict(world.currencies, currency[ship]),
        "freight_charges": pa.array(freight, from_pandas=True),
        "freight_payment": _dict(_PAYMENTS_ARR, r_payment),
        "seal_number": _strings(seal_mat, n=n),
        "seal_number_gate": _strings(gate_mat, n=n, valid=gate_recorded),
        "filed_at": ts(filed_ns_days),
        "gate_in_at": ts(gate_in, gate_missing, 60),
        "cut_off_at": ts(cut_off[ship], cut_missing, 3_600),
        "last_amended_at": ts(amend_at),
        "arrival_date": pa.array(r_day.astype(np.int64) * _DAY_NS + world.start_ns, type=pa.timestamp("ns")),
        "is_illicit": pa.array(illicit.astype(np.int8)),
        "modus_operandi": _dict(_MO_ARR, mo),
        "concealment_location": _dict(_LOC_ARR, loc),
        "amount_kg": pa.array(np.round(amount, 1)),
        "inspected": pa.array(inspected.astype(np.int8)),
        "selection": _dict(_SEL_ARR, selection),
        "outcome_at": ts(outcome),
    }
    if cfg.corrupt_rate > 0:
        table["consignee"] = _dict(world.parties, r_consignee, missing=ck == 4)
        table["hs_code"] = _dict(world.hs_codes, np.where(ck == 5, world.hs_broken[hs_idx], hs_idx))
        # Dates arrive as text in broken files; some of it does not parse.
        filed_txt = pc.strftime(pc.cast(table["filed_at"], pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%S")
        garbage = pa.array(np.asarray(_CORRUPT_DATES, dtype=object)[rng.integers(0, len(_CORRUPT_DATES), n)], type=pa.string())
        table["filed_at"] = pc.if_else(pa.array(ck == 3), garbage, filed_txt)
    table["_filed_key"] = pa.array(np.round(filed_ns_days * 86_400.0).astype(np.int64))
    table["_corrupt"] = pa.array(ck > 0)
    return pa.table(table)


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype()}
# Columns with (nearly) one value per row: dictionary encoding would only cost time.
_HIGH_CARDINALITY = frozenset({
    "manifest_id", "container_id", "bl_number", "seal_number", "seal_number_gate", "packages",
    "gross_weight_kg", "vgm_kg", "declared_value", "freight_charges", "amount_kg", "filed_at",
    "gate_in_at", "cut_off_at", "last_amended_at", "outcome_at",
})


def _iter_tables(cfg: SynthConfig, chunk_rows: int, first_block: int = 0) -> Iterator[pa.Table]:
    """Chunks of ``chunk_rows`` rows as Arrow tables sorted by filed_at (helper columns kept)."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive whole number, got {chunk_rows!r}")
    world = _build_world(cfg)
    n_blocks = -(-cfg.rows // BLOCK_ROWS)
    pending: list[pa.Table] = []
    pending_rows = 0
    for b in range(first_block, n_blocks):
        t = _block_table(world, b)
        pending.append(t)
        pending_rows += t.num_rows
        while pending_rows >= chunk_rows:
            whole = pa.concat_tables(pending)
            yield _sorted(whole.slice(0, chunk_rows))
            rest = whole.slice(chunk_rows)
            pending, pending_rows = [rest], rest.num_rows
    if pending_rows:
        yield _sorted(pa.concat_tables(pending))


def _prefetch(items: Iterator[pa.Table]) -> Iterator[pa.Table]:
    """Produce the next item in a background thread while the caller consumes the current one.

    Generation (NumPy) and writing (Arrow/Parquet, outside the GIL) then overlap on two cores;
    at most one finished item waits, so memory stays bounded. Errors are re-raised here.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed over to the consumer
            q.put(exc)

    thread = threading.Thread(target=work, name="synth-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _sorted(table: pa.Table) -> pa.Table:
    order = pc.sort_indices(table, sort_keys=[("_filed_key", "ascending")])
    return table.take(order)


def _public(table: pa.Table) -> pa.Table:
    return table.drop_columns(["_filed_key", "_corrupt"])


def _decoded(table: pa.Table) -> pa.Table:
    """The same table with dictionary-encoded columns as plain strings."""
    cols = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.table(cols, names=table.column_names)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return _decoded(_public(table)).to_pandas(types_mapper=_PANDAS_TYPES.get)


def iter_manifest_chunks(
    rows: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    seed: int = 0,
    start: Any = "2026-01-01",
    days: int = 1,
    port: str = "NLRTM",
    illicit_rate: float = 0.01,
    drift: float = 0.0,
    corrupt_rate: float = 0.0,
) -> Iterator[pd.DataFrame]:
    """Generate ``rows`` manifests as DataFrames of at most ``chunk_rows`` rows.

    The world (ports, carriers, vessels, traders) is built once from ``seed`` and shared by
    all chunks; ``manifest_id`` is unique across chunks. Chunks follow the arrival calendar and
    each chunk is sorted by ``filed_at``; filing times of neighbouring chunks overlap by at most
    the ten-day filing lead, so sort the whole set if you need a strict global order. The rows do
    not depend on ``chunk_rows``: only how they are cut and ordered inside the overlap does.
    """
    cfg = SynthConfig.create(rows, seed=seed, start=start, days=days, port=port,
                             illicit_rate=illicit_rate, drift=drift, corrupt_rate=corrupt_rate)
    for table in _iter_tables(cfg, chunk_rows):
        yield _to_pandas(table)


def generate_manifests(
    rows: int,
    *,
    seed: int = 0,
    start: Any = "2026-01-01",
    days: int = 1,
    port: str = "NLRTM",
    illicit_rate: float = 0.01,
    drift: float = 0.0,
    corrupt_rate: float = 0.0,
    last_days: int | None = None,
) -> pd.DataFrame:
    """Generate ``rows`` synthetic container manifests arriving at ``port``.

    Arrival dates spread uniformly over ``days`` days from ``start``; rows are sorted by
    ``filed_at``. ``illicit_rate`` is the expected share of containers carrying drugs (ground
    truth in ``is_illicit``, ``modus_operandi``, ``concealment_location``, ``amount_kg``);
    ``drift`` in [0, 1] shifts the smugglers' modus operandi, origins, hubs and cover loads over
    the period (0: stationary); ``corrupt_rate`` breaks that share of rows the way real files
    break (then ``filed_at`` is text, as read from a raw file). The same arguments always give
    the same frame. ``last_days`` keeps only the rows arriving in the last ``last_days`` days
    of the period — exactly those rows of the full generation, without generating the rest —
    so that a "today" can be drawn from the same world as a year of history.

    >>> df = generate_manifests(1_000, seed=3, illicit_rate=0.02)
    >>> sorted(df["modus_operandi"].unique())[:2]
    ['front_company', 'misdeclaration']
    """
    cfg = SynthConfig.create(rows, seed=seed, start=start, days=days, port=port,
                             illicit_rate=illicit_rate, drift=drift, corrupt_rate=corrupt_rate)
    first_block = 0
    if last_days is not None:
        if isinstance(last_days, bool) or not isinstance(last_days, (int, np.integer)) or not 1 <= last_days <= cfg.days:
            raise ValueError(f"last_days must be a whole number between 1 and days ({cfg.days}), got {last_days!r}")
        # Rows follow the calendar, so the tail only needs the blocks from its first day on
        # (one block earlier for bills of lading that straddle a block boundary).
        first_row = (cfg.rows * (cfg.days - last_days)) // cfg.days
        first_block = max(0, first_row // BLOCK_ROWS - 1)
    tables = list(_iter_tables(cfg, DEFAULT_CHUNK_ROWS, first_block))
    table = _sorted(pa.concat_tables(tables)) if len(tables) > 1 else tables[0]
    if last_days is not None:
        cut = pd.Timestamp(cfg.start) + pd.Timedelta(days=cfg.days - last_days)
        table = table.filter(pc.greater_equal(table["arrival_date"], pa.scalar(cut, type=table["arrival_date"].type)))
    df = _to_pandas(table)
    df.attrs["synth"] = {**cfg.__dict__, "corrupt_rows": int(pc.sum(table["_corrupt"]).as_py() or 0)}
    return df


def write_manifests(
    path: str | Path,
    rows: int,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
    seed: int = 0,
    start: Any = "2026-01-01",
    days: int = 1,
    port: str = "NLRTM",
    illicit_rate: float = 0.01,
    drift: float = 0.0,
    corrupt_rate: float = 0.0,
    exclude_last_days: int = 0,
) -> dict[str, Any]:
    """Stream generated manifests to a Parquet (one row group per chunk) or CSV file.

    Memory stays bounded by the chunk size whatever ``rows`` is. The file appears only when
    complete (written beside it, then renamed). ``progress`` is called with the number of rows
    of each chunk written. ``exclude_last_days`` leaves out the arrivals of the last days of the
    period, so that they can be drawn later as "today" (``generate_manifests(last_days=...)``)
    from the same world. Returns a summary: rows, illicit count and rate, modus-operandi
    counts, inspections by selection, corrupted rows, seconds and rows per second.
    """
    p = Path(path)
    fmt = _output_format(p)
    cfg = SynthConfig.create(rows, seed=seed, start=start, days=days, port=port,
                             illicit_rate=illicit_rate, drift=drift, corrupt_rate=corrupt_rate)
    if p.is_dir():
        raise IsADirectoryError(f"--out must be a file path ending in .parquet or .csv, got a directory: {p}")
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(exclude_last_days, bool) or not isinstance(exclude_last_days, (int, np.integer)) \
            or not 0 <= exclude_last_days < cfg.days:
        raise ValueError(f"exclude_last_days must be a whole number from 0 to days - 1 ({cfg.days - 1}), "
                         f"got {exclude_last_days!r}")
    cutoff = (pd.Timestamp(cfg.start) + pd.Timedelta(days=cfg.days - exclude_last_days)) if exclude_last_days else None
    tmp = p.with_name(f".{p.name}.part")
    t0 = time.perf_counter()
    mo_counts = dict.fromkeys(MODUS_OPERANDI[1:], 0)
    sel_counts = dict.fromkeys(SELECTIONS[1:], 0)
    written = illicit = corrupt = chunks = 0
    writer = None
    sink = None
    try:
        for table in _prefetch(_iter_tables(cfg, chunk_rows)):
            if cutoff is not None:
                table = table.filter(pc.less(table["arrival_date"], pa.scalar(cutoff, type=table["arrival_date"].type)))
                if table.num_rows == 0:
                    continue
            illicit += int(pc.sum(table["is_illicit"]).as_py() or 0)
            corrupt += int(pc.sum(table["_corrupt"]).as_py() or 0)
            for row in pc.value_counts(table["modus_operandi"]).to_pylist():
                if row["values"] in mo_counts:
                    mo_counts[row["values"]] += row["counts"]
            for row in pc.value_counts(table["selection"]).to_pylist():
                if row["values"] in sel_counts:
                    sel_counts[row["values"]] += row["counts"]
            out = _public(table)
            if fmt == "parquet":
                import pyarrow.parquet as pq

                if writer is None:
                    # Without the stored Arrow schema, readers get plain strings, not categoricals.
                    writer = pq.ParquetWriter(tmp, out.schema, compression="zstd", store_schema=False,
                                              use_dictionary=[c for c in out.column_names
                                                              if c not in _HIGH_CARDINALITY])
                writer.write_table(out, row_group_size=out.num_rows)
            else:
                import pyarrow.csv as pacsv

                out = _csv_ready(out)
                if writer is None:
                    sink = pa.CompressedOutputStream(str(tmp), "gzip") if fmt == "csv.gz" else pa.OSFile(str(tmp), "wb")
                    writer = pacsv.CSVWriter(sink, out.schema)
                writer.write_table(out)
            written += table.num_rows
            chunks += 1
            if progress is not None:
                progress(table.num_rows)
        if writer is not None:
            writer.close()
            writer = None
        if sink is not None:
            sink.close()
            sink = None
        os.replace(tmp, p)
    finally:
        if writer is not None:
            writer.close()
        if sink is not None:
            sink.close()
        if tmp.exists():
            tmp.unlink()
    seconds = time.perf_counter() - t0
    summary = {
        "path": str(p),
        "format": fmt,
        "rows": written,
        "chunks": chunks,
        "illicit": illicit,
        "illicit_rate": illicit / written if written else 0.0,
        "modus_operandi": mo_counts,
        "inspected": sum(sel_counts.values()),
        "selection": sel_counts,
        "corrupt_rows": corrupt,
        "seconds": round(seconds, 3),
        "rows_per_s": round(written / seconds, 1) if seconds > 0 else None,
        "bytes": p.stat().st_size,
        "params": dict(cfg.__dict__),
    }
    log.info("wrote %d manifests to %s in %.1f s (%.0f rows/s)", written, p, seconds, written / max(seconds, 1e-9))
    return summary


def _output_format(p: Path) -> str:
    name = p.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".csv.gz"):
        return "csv.gz"
    if name.endswith(".csv"):
        return "csv"
    raise ValueError(f"unsupported output file {p.name!r}: the name must end in .parquet, .csv or .csv.gz")


def _csv_ready(table: pa.Table) -> pa.Table:
    """Seconds-resolution timestamps and plain dates, which read back as ISO 8601 text."""
    cols = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if name == "arrival_date":
            col = pc.cast(col, pa.date32())
        elif pa.types.is_timestamp(col.type):
            col = pc.strftime(pc.cast(col, pa.timestamp("s")), format="%Y-%m-%dT%H:%M:%S")
        cols.append(col)
    return pa.table(cols, names=table.column_names)
