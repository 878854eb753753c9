"""Commodities carried in containers and the cargo families they belong to.

The commodity table drives the synthetic port traffic (which goods, from where, in which
container, how heavy, how valuable) and :func:`cargo_family` is the shared vocabulary between
manifests and X-ray scans: a declared HS code maps to the family of cargo an image analyst would
expect to see ("fruit" in a reefer looks nothing like "tyres" or "machinery").

Example
-------
>>> import pandas as pd
>>> cargo_family(pd.Series(["080390", "0901.11", "401110", "", "999999"])).tolist()
['fruit', 'sacks', 'tyres', 'empty', 'general']
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

# Cargo families, exact strings shared with the scan generator and the scan model.
CARGO_FAMILIES: tuple[str, ...] = (
    "fruit",
    "frozen_meat",
    "sacks",
    "tyres",
    "machinery",
    "bottles_drums",
    "textiles",
    "general",
    "empty",
)

EMPTY_DESCRIPTION = "EMPTY CONTAINER"

# Container-type mixes (ISO 6346 size/type codes) by how a commodity is shipped.
# Heavy goods fill a 20 ft box before its volume; light goods go in 40 ft high-cubes.
CONTAINER_MIXES: dict[str, dict[str, float]] = {
    "reefer": {"45R1": 0.80, "22R1": 0.15, "42R1": 0.05},
    "dry_heavy": {"22G1": 0.78, "42G1": 0.14, "45G1": 0.08},
    "dry_volume": {"45G1": 0.62, "42G1": 0.23, "22G1": 0.15},
    "dry_mixed": {"22G1": 0.40, "42G1": 0.25, "45G1": 0.35},
    "machinery": {"22G1": 0.32, "42G1": 0.22, "45G1": 0.30, "22U1": 0.08, "42U1": 0.08},
    "empty": {"45G1": 0.42, "22G1": 0.33, "42G1": 0.13, "45R1": 0.10, "22R1": 0.02},
}

# Tare (empty container mass, kg) by size/type code; used for the verified gross mass.
TARE_KG: dict[str, float] = {
    "22G1": 2_230.0,
    "42G1": 3_750.0,
    "45G1": 3_900.0,
    "22R1": 3_050.0,
    "42R1": 4_480.0,
    "45R1": 4_650.0,
    "22U1": 2_400.0,
    "42U1": 3_950.0,
}


@dataclass(frozen=True)
class Commodity:
    """One kind of goods as it moves in containers.

    ``products`` are (HS code, goods description) pairs as shippers declare them;
    ``payload_kg`` is the typical net cargo mass in a 20 ft and in a 40 ft box;
    ``origins`` are loading ports (UN/LOCODE) with relative weights; ``"PY/UYMVD"`` means goods
    of Paraguayan origin loaded at Montevideo.
    """

    key: str
    family: str
    products: tuple[tuple[str, str], ...]
    share: float
    mix: str
    payload_kg: tuple[float, float]
    unit_kg: float
    packaging_frac: float
    usd_per_kg: float
    origins: tuple[tuple[str, float], ...]

    @property
    def reefer(self) -> bool:
        return self.mix == "reefer"


def _c(key, family, products, share, mix, payload, unit, pack, usd, origins) -> Commodity:
    return Commodity(key, family, tuple(products), share, mix, payload, unit, pack, usd, tuple(origins))


# Shares are relative volumes of loaded import containers at a north-European gateway port; the
# values per kg and payloads are typical orders of magnitude, not market statistics.
COMMODITIES: tuple[Commodity, ...] = (
    # ---- reefer: fruit ------------------------------------------------------------------
    _c("bananas", "fruit", [
        ("080390", "FRESH BANANAS"), ("080390", "FRESH BANANAS CAVENDISH 18.14 KG BOXES"),
        ("08039010", "FRESH BANANAS ON PALLETS"), ("080390", "ORGANIC BANANAS FRESH"),
        ("080310", "FRESH PLANTAINS"),
    ], 7.0, "reefer", (10_500, 21_000), 18.14, 0.07, 0.85, [
        ("ECGYE", 34), ("COSMR", 9), ("COCTG", 7), ("CRMOB", 18), ("CRLIO", 5), ("GTSTC", 5),
        ("HNPCR", 4), ("DOCAU", 3), ("PEPAI", 3), ("CIABJ", 3), ("CMDLA", 3), ("PABLB", 2),
    ]),
    _c("pineapples", "fruit", [
        ("080430", "FRESH PINEAPPLES"), ("080430", "FRESH PINEAPPLES MD2 GOLDEN"),
    ], 1.6, "reefer", (9_500, 19_500), 12.0, 0.07, 0.9, [
        ("CRMOB", 60), ("CRLIO", 14), ("ECGYE", 5), ("CIABJ", 6), ("GHTEM", 6), ("HNPCR", 5), ("PABLB", 4),
    ]),
    _c("avocados", "fruit", [
        ("080440", "FRESH AVOCADOS HASS"), ("080440", "FRESH AVOCADOS"),
    ], 1.4, "reefer", (9_000, 19_000), 4.0, 0.08, 2.6, [
        ("PECLL", 30), ("PEPAI", 12), ("COCTG", 12), ("COBUN", 5), ("CLSAI", 10), ("ZADUR", 6),
        ("ZACPT", 5), ("KEMBA", 8), ("MAAGA", 6), ("ILHFA", 6),
    ]),
    _c("citrus", "fruit", [
        ("080510", "FRESH ORANGES"), ("080521", "FRESH MANDARINS"), ("080550", "FRESH LEMONS"),
        ("080550", "FRESH LIMES TAHITI"), ("080540", "FRESH GRAPEFRUIT"),
    ], 1.8, "reefer", (10_000, 20_500), 15.0, 0.07, 0.9, [
        ("ZADUR", 16), ("ZACPT", 14), ("ZAPLZ", 6), ("EGALY", 12), ("EGDAM", 6), ("MAAGA", 10),
        ("ARBUE", 6), ("UYMVD", 5), ("PECLL", 6), ("BRSSZ", 6), ("MXVER", 5), ("TRMER", 8),
    ]),
    _c("grapes", "fruit", [
        ("080610", "FRESH TABLE GRAPES"), ("080610", "FRESH SEEDLESS GRAPES"),
    ], 0.9, "reefer", (9_000, 19_000), 8.2, 0.08, 2.2, [
        ("CLSAI", 22), ("CLVAP", 12), ("PECLL", 20), ("PEPAI", 10), ("ZACPT", 24), ("INNSA", 6), ("BRSSA", 6),
    ]),
    _c("vegetables", "fruit", [
        ("070310", "FRESH ONIONS"), ("070200", "FRESH TOMATOES"), ("071080", "FROZEN VEGETABLES"),
        ("070960", "FRESH PEPPERS"), ("071410", "FRESH CASSAVA"),
    ], 0.9, "reefer", (10_000, 20_000), 10.0, 0.06, 1.1, [
        ("MAAGA", 25), ("EGALY", 20), ("NZAKL", 8), ("CRMOB", 10), ("PECLL", 12), ("CNTAO", 10), ("INNSA", 15),
    ]),
    # ---- reefer: meat and fish ------------------------------------------------------------
    _c("frozen_beef", "frozen_meat", [
        ("020230", "FROZEN BONELESS BOVINE MEAT"), ("020230", "FROZEN BEEF CUTS BONELESS"),
        ("02023090", "FROZEN BONELESS BEEF"),
    ], 1.2, "reefer", (12_500, 26_000), 25.0, 0.04, 6.0, [
        ("BRSSZ", 26), ("BRPNG", 10), ("BRITJ", 8), ("ARBUE", 22), ("UYMVD", 22), ("PY/UYMVD", 6), ("NZAKL", 6),
    ]),
    _c("frozen_pork", "frozen_meat", [
        ("020329", "FROZEN PORK CUTS"), ("020322", "FROZEN PORK HAMS AND SHOULDERS"),
    ], 0.6, "reefer", (12_500, 26_000), 25.0, 0.04, 2.6, [
        ("BRITJ", 30), ("BRRIG", 18), ("USSAV", 16), ("USORF", 8), ("CAHAL", 14), ("CAMTR", 14),
    ]),
    _c("frozen_poultry", "frozen_meat", [
        ("020714", "FROZEN CHICKEN CUTS"), ("020714", "FROZEN CHICKEN BREAST FILLETS"),
    ], 0.8, "reefer", (12_500, 26_000), 15.0, 0.04, 2.4, [
        ("BRPNG", 38), ("BRITJ", 30), ("THLCH", 20), ("ARBUE", 12),
    ]),
    _c("frozen_seafood", "frozen_meat", [
        ("030617", "FROZEN SHRIMPS AND PRAWNS"), ("030617", "FROZEN VANNAMEI SHRIMP HEAD ON"),
        ("030474", "FROZEN HAKE FILLETS"), ("030389", "FROZEN FISH WHOLE ROUND"),
        ("030743", "FROZEN SQUID"),
    ], 1.3, "reefer", (12_000, 25_000), 20.0, 0.05, 5.5, [
        ("ECGYE", 30), ("ECMEC", 6), ("INCOK", 10), ("VNSGN", 12), ("IDSUB", 6), ("ARBUE", 10),
        ("CLSAI", 6), ("NZAKL", 6), ("MAAGA", 6), ("USNYC", 4), ("PECLL", 4),
    ]),
    _c("fruit_pulp", "bottles_drums", [
        ("200899", "FROZEN FRUIT PULP IN DRUMS"), ("200989", "FRUIT JUICE CONCENTRATE IN DRUMS"),
        ("200899", "ASEPTIC BANANA PUREE IN DRUMS"),
    ], 0.5, "reefer", (14_000, 24_000), 230.0, 0.08, 1.6, [
        ("ECGYE", 34), ("COCTG", 20), ("CRMOB", 16), ("BRSSZ", 20), ("INNSA", 10),
    ]),
    # ---- sacks -----------------------------------------------------------------------------
    _c("coffee", "sacks", [
        ("090111", "GREEN COFFEE BEANS NOT ROASTED"), ("090111", "RAW COFFEE IN JUTE BAGS"),
        ("09011100", "GREEN ARABICA COFFEE"), ("090121", "ROASTED COFFEE BEANS"),
    ], 2.0, "dry_heavy", (19_200, 21_000), 60.0, 0.01, 4.5, [
        ("BRSSZ", 30), ("BRRIO", 6), ("COCTG", 8), ("COBUN", 6), ("VNSGN", 15), ("HNPCR", 6),
        ("PECLL", 4), ("GTSTC", 4), ("DJJIB", 5), ("KEMBA", 4), ("IDSUB", 4), ("INCOK", 3), ("ECGYE", 2),
    ]),
    _c("cocoa", "sacks", [
        ("180100", "RAW COCOA BEANS"), ("180100", "COCOA BEANS IN JUTE BAGS"), ("180100", "COCOA BEANS FERMENTED AND DRIED"),
    ], 1.4, "dry_heavy", (18_500, 24_000), 64.0, 0.01, 4.0, [
        ("CIABJ", 30), ("CISPY", 20), ("GHTEM", 14), ("GHTKD", 10), ("ECGYE", 12), ("CMDLA", 6), ("NGAPP", 8),
    ]),
    _c("sugar", "sacks", [
        ("170114", "CANE SUGAR RAW"), ("170199", "WHITE REFINED SUGAR IN 50 KG BAGS"),
    ], 0.7, "dry_heavy", (25_000, 26_000), 50.0, 0.01, 0.55, [
        ("BRSSZ", 40), ("BRPNG", 18), ("GTSTC", 10), ("THLCH", 10), ("INNSA", 8), ("COCTG", 6), ("MUPLU", 8),
    ]),
    _c("rice", "sacks", [
        ("100630", "MILLED RICE"), ("100630", "WHITE RICE LONG GRAIN"), ("100630", "BASMATI RICE"),
    ], 0.8, "dry_heavy", (24_000, 26_000), 25.0, 0.01, 0.8, [
        ("THLCH", 30), ("INNSA", 20), ("INMUN", 8), ("VNSGN", 20), ("PKKHI", 16), ("KHKOS", 6),
    ]),
    _c("plastics", "sacks", [
        ("390110", "POLYETHYLENE GRANULES"), ("390120", "HDPE RESIN IN 25 KG BAGS"),
        ("390210", "POLYPROPYLENE IN PRIMARY FORMS"), ("390760", "PET RESIN CHIPS"),
    ], 2.5, "dry_heavy", (24_000, 25_500), 25.0, 0.03, 1.2, [
        ("SAJUB", 26), ("SADMM", 12), ("USHOU", 20), ("KRPUS", 10), ("AEJEA", 10), ("CNSHA", 8),
        ("SGSIN", 8), ("INMUN", 6),
    ]),
    _c("charcoal", "sacks", [
        ("440290", "WOOD CHARCOAL IN BAGS"), ("440290", "HARDWOOD CHARCOAL"),
    ], 0.3, "dry_volume", (8_000, 14_000), 15.0, 0.02, 0.45, [
        ("PY/UYMVD", 25), ("PY/ARBUE", 15), ("NGAPP", 25), ("NAWVB", 15), ("CUMAR", 8), ("IDSRG", 12),
    ]),
    _c("nuts", "sacks", [
        ("080132", "CASHEW NUTS SHELLED"), ("080122", "SHELLED BRAZIL NUTS"), ("120242", "SHELLED GROUNDNUTS"),
    ], 0.4, "dry_heavy", (16_000, 20_000), 22.7, 0.02, 6.5, [
        ("VNSGN", 30), ("INCOK", 20), ("CIABJ", 15), ("BRBEL", 10), ("ARBUE", 15), ("USSAV", 10),
    ]),
    # ---- tyres -----------------------------------------------------------------------------
    _c("tyres", "tyres", [
        ("401110", "NEW PNEUMATIC TYRES FOR MOTOR CARS"), ("401120", "NEW TYRES FOR BUSES OR LORRIES"),
        ("401110", "PASSENGER CAR RADIAL TYRES"), ("401220", "USED PNEUMATIC TYRES"),
    ], 2.6, "dry_volume", (6_500, 9_500), 9.5, 0.0, 3.2, [
        ("CNTAO", 28), ("CNSHA", 10), ("THLCH", 18), ("VNHPH", 10), ("KRPUS", 8), ("INNSA", 8),
        ("IDJKT", 8), ("MYPKG", 5), ("TRMER", 5),
    ]),
    # ---- machinery and metal ----------------------------------------------------------------
    _c("machinery", "machinery", [
        ("841370", "CENTRIFUGAL PUMPS"), ("848180", "INDUSTRIAL VALVES"),
        ("847989", "MACHINES AND MECHANICAL APPLIANCES NES"), ("842139", "FILTERING MACHINERY"),
        ("843149", "PARTS OF CRANES AND LIFTING MACHINERY"), ("850211", "DIESEL GENERATING SETS"),
        ("850440", "STATIC CONVERTERS"), ("846599", "WOODWORKING MACHINES"),
    ], 7.5, "machinery", (11_000, 15_000), 320.0, 0.06, 9.0, [
        ("CNSHA", 22), ("CNNGB", 14), ("CNTAO", 8), ("KRPUS", 8), ("JPYOK", 8), ("TWKHH", 6),
        ("TRMER", 7), ("USNYC", 7), ("USSAV", 6), ("INNSA", 8), ("SGSIN", 3), ("CAMTR", 3),
    ]),
    _c("appliances", "machinery", [
        ("841810", "COMBINED REFRIGERATOR-FREEZERS"), ("845011", "HOUSEHOLD WASHING MACHINES"),
        ("841510", "AIR CONDITIONING MACHINES"), ("842211", "HOUSEHOLD DISHWASHERS"),
    ], 2.2, "dry_volume", (5_000, 8_500), 45.0, 0.08, 4.5, [
        ("CNYTN", 25), ("CNNGB", 20), ("TRMER", 15), ("THLCH", 10), ("KRPUS", 10), ("CNXMN", 10), ("VNHPH", 10),
    ]),
    _c("auto_parts", "machinery", [
        ("870899", "PARTS AND ACCESSORIES OF MOTOR VEHICLES"), ("870830", "BRAKES AND SERVO-BRAKES"),
        ("840991", "PARTS OF SPARK-IGNITION ENGINES"), ("870840", "GEAR BOXES"),
    ], 3.8, "dry_mixed", (12_000, 16_000), 180.0, 0.06, 7.5, [
        ("CNSHA", 20), ("JPYOK", 14), ("KRPUS", 14), ("TRMER", 12), ("MAPTM", 12), ("USSAV", 8),
        ("MXVER", 8), ("INMAA", 8), ("THLCH", 4),
    ]),
    _c("steel_products", "machinery", [
        ("730890", "STEEL STRUCTURES AND PARTS"), ("731815", "STEEL BOLTS AND SCREWS"),
        ("721049", "GALVANISED STEEL SHEETS"), ("730439", "SEAMLESS STEEL TUBES"),
    ], 2.4, "dry_heavy", (22_000, 25_000), 1_200.0, 0.02, 1.3, [
        ("CNTAO", 22), ("CNSHA", 12), ("INNSA", 14), ("INMUN", 8), ("KRPUS", 10), ("TRMER", 14),
        ("VNHPH", 10), ("TWKHH", 10),
    ]),
    _c("metal_scrap", "machinery", [
        ("720449", "FERROUS WASTE AND SCRAP"), ("740400", "COPPER WASTE AND SCRAP"),
        ("760200", "ALUMINIUM WASTE AND SCRAP"),
    ], 0.6, "dry_heavy", (20_000, 24_000), 1_000.0, 0.0, 1.1, [
        ("USNYC", 22), ("USSAV", 12), ("USHOU", 10), ("AEJEA", 16), ("NGAPP", 10), ("GHTEM", 8),
        ("DOCAU", 8), ("PABLB", 6), ("JMKIN", 8),
    ]),
    # ---- electronics and general goods --------------------------------------------------------
    _c("electronics", "general", [
        ("851712", "MOBILE TELEPHONES"), ("852872", "TELEVISION RECEIVERS LCD"),
        ("847130", "PORTABLE COMPUTERS"), ("854143", "PHOTOVOLTAIC MODULES"),
        ("850760", "LITHIUM-ION BATTERIES"), ("851830", "HEADPHONES AND EARPHONES"),
    ], 8.0, "dry_volume", (5_500, 9_000), 18.0, 0.12, 22.0, [
        ("CNYTN", 28), ("CNSHA", 18), ("CNNGB", 12), ("HKHKG", 6), ("TWKHH", 6), ("KRPUS", 8),
        ("VNHPH", 10), ("MYPKG", 6), ("SGSIN", 3), ("THLCH", 3),
    ]),
    _c("furniture", "general", [
        ("940360", "WOODEN FURNITURE"), ("940161", "UPHOLSTERED SEATS WITH WOODEN FRAMES"),
        ("940350", "WOODEN BEDROOM FURNITURE"), ("940320", "METAL FURNITURE"),
    ], 5.5, "dry_volume", (5_000, 8_000), 28.0, 0.10, 4.2, [
        ("CNYTN", 20), ("CNNGB", 18), ("VNSGN", 16), ("VNHPH", 8), ("MYPKG", 10), ("IDSRG", 10),
        ("TRMER", 8), ("INMUN", 5), ("BRITJ", 5),
    ]),
    _c("toys_sports", "general", [
        ("950300", "TOYS"), ("950300", "PLASTIC TOYS AND GAMES"), ("950691", "FITNESS EQUIPMENT"),
        ("950510", "CHRISTMAS DECORATIONS"),
    ], 3.5, "dry_volume", (4_500, 7_500), 12.0, 0.12, 6.0, [
        ("CNYTN", 45), ("CNSHA", 20), ("CNXMN", 10), ("VNHPH", 10), ("HKHKG", 5), ("IDJKT", 10),
    ]),
    _c("footwear", "general", [
        ("640299", "FOOTWEAR WITH RUBBER OR PLASTIC SOLES"), ("640399", "LEATHER FOOTWEAR"),
        ("640411", "SPORTS FOOTWEAR TEXTILE UPPERS"),
    ], 2.5, "dry_volume", (4_500, 7_000), 12.0, 0.12, 14.0, [
        ("CNYTN", 28), ("CNXMN", 10), ("VNSGN", 26), ("IDJKT", 14), ("INMAA", 10), ("BDCGP", 6), ("KHKOS", 6),
    ]),
    _c("household", "general", [
        ("392410", "PLASTIC TABLEWARE AND KITCHENWARE"), ("442190", "WOODEN HOUSEHOLD ARTICLES"),
        ("691200", "CERAMIC TABLEWARE"), ("961700", "VACUUM FLASKS"), ("701349", "GLASSWARE FOR TABLE"),
    ], 4.5, "dry_volume", (6_000, 10_000), 14.0, 0.10, 3.5, [
        ("CNNGB", 30), ("CNYTN", 20), ("CNSHA", 12), ("INNSA", 8), ("TRMER", 10), ("VNHPH", 10), ("THLCH", 10),
    ]),
    _c("paper_pulp", "general", [
        ("470321", "BLEACHED CHEMICAL WOOD PULP"), ("480256", "UNCOATED COPY PAPER A4"),
        ("481910", "CARTONS OF CORRUGATED PAPER"),
    ], 2.2, "dry_heavy", (22_000, 25_000), 250.0, 0.02, 0.9, [
        ("BRSSZ", 20), ("BRVIX", 16), ("UYMVD", 14), ("CLSAI", 10), ("USSAV", 14), ("IDJKT", 10),
        ("CAHAL", 8), ("BRPNG", 8),
    ]),
    _c("timber", "general", [
        ("440729", "TROPICAL SAWN WOOD"), ("441299", "PLYWOOD"), ("441810", "WOODEN WINDOWS AND FRAMES"),
        ("440799", "SAWN HARDWOOD"),
    ], 1.4, "dry_mixed", (18_000, 22_000), 900.0, 0.01, 0.9, [
        ("BRPNG", 18), ("BRBEL", 14), ("CMDLA", 16), ("MYPKG", 14), ("IDSRG", 12), ("USSAV", 10),
        ("GHTKD", 8), ("CNTAO", 8),
    ]),
    _c("ceramic_tiles", "general", [
        ("690721", "CERAMIC FLOOR TILES"), ("690722", "PORCELAIN WALL TILES"), ("680221", "MARBLE SLABS"),
    ], 1.5, "dry_heavy", (24_000, 25_000), 32.0, 0.04, 0.6, [
        ("INMUN", 40), ("CNYTN", 14), ("TRMER", 20), ("EGALY", 10), ("BRSSZ", 8), ("INNSA", 8),
    ]),
    _c("canned_food", "general", [
        ("160414", "CANNED TUNA IN OIL"), ("200820", "CANNED PINEAPPLE SLICES"),
        ("200290", "TOMATO PASTE IN CANS"), ("200599", "CANNED VEGETABLES"),
    ], 1.6, "dry_heavy", (19_000, 22_000), 12.0, 0.10, 2.6, [
        ("ECMEC", 16), ("THLCH", 22), ("MUPLU", 8), ("GHTEM", 8), ("CIABJ", 8), ("CNTAO", 14),
        ("PHMNL", 10), ("KEMBA", 6), ("PECLL", 8),
    ]),
    _c("natural_rubber", "general", [
        ("400122", "TECHNICALLY SPECIFIED NATURAL RUBBER"), ("400110", "NATURAL RUBBER LATEX"),
    ], 0.7, "dry_heavy", (19_000, 21_000), 35.0, 0.05, 1.6, [
        ("THLCH", 34), ("MYPKG", 20), ("IDBLW", 22), ("CIABJ", 14), ("VNSGN", 10),
    ]),
    # ---- textiles ----------------------------------------------------------------------------
    _c("apparel", "textiles", [
        ("610910", "COTTON T-SHIRTS KNITTED"), ("620342", "MENS COTTON TROUSERS"),
        ("620462", "WOMENS COTTON TROUSERS"), ("611020", "COTTON JERSEYS AND PULLOVERS"),
        ("620193", "ANORAKS OF MAN-MADE FIBRES"), ("611030", "SWEATERS OF MAN-MADE FIBRES"),
    ], 7.5, "dry_volume", (5_000, 8_500), 14.0, 0.08, 13.0, [
        ("BDCGP", 24), ("CNSHA", 14), ("CNNGB", 10), ("VNSGN", 12), ("INMAA", 8), ("INNSA", 6),
        ("PKKHI", 8), ("TRMER", 8), ("LKCMB", 5), ("KHKOS", 5),
    ]),
    _c("textile_materials", "textiles", [
        ("520100", "RAW COTTON NOT CARDED"), ("630790", "MADE-UP TEXTILE ARTICLES"),
        ("630231", "COTTON BED LINEN"), ("540752", "WOVEN FABRICS OF POLYESTER"),
    ], 2.0, "dry_mixed", (14_000, 18_000), 180.0, 0.03, 3.0, [
        ("PKKHI", 20), ("INMUN", 15), ("INNSA", 10), ("CNSHA", 20), ("TRMER", 15), ("USSAV", 10), ("BDCGP", 10),
    ]),
    # ---- bottles and drums -------------------------------------------------------------------
    _c("beverages", "bottles_drums", [
        ("220421", "WINE IN BOTTLES"), ("220300", "BEER MADE FROM MALT"),
        ("220421", "RED WINE 75CL BOTTLES"), ("220830", "WHISKIES"), ("220210", "SOFT DRINKS IN CANS"),
    ], 2.3, "dry_heavy", (17_500, 20_000), 9.0, 0.10, 3.2, [
        ("CLSAI", 20), ("CLVAP", 8), ("ARBUE", 14), ("ZACPT", 16), ("AUMEL", 10), ("MXVER", 12),
        ("USNYC", 8), ("NZAKL", 6), ("USLAX", 6),
    ]),
    _c("chemicals", "bottles_drums", [
        ("290531", "ETHYLENE GLYCOL IN DRUMS"), ("340319", "LUBRICANT PREPARATIONS"),
        ("320890", "PAINTS AND VARNISHES"), ("380893", "HERBICIDES"), ("291521", "ACETIC ACID IN IBC"),
        ("280530", "RARE-EARTH METALS"),
    ], 3.0, "dry_heavy", (17_000, 21_000), 210.0, 0.06, 2.2, [
        ("CNSHA", 22), ("INNSA", 16), ("USHOU", 16), ("SAJUB", 10), ("KRPUS", 10), ("SGSIN", 10), ("INMUN", 8),
        ("CNNGB", 8),
    ]),
    _c("vegetable_oils", "bottles_drums", [
        ("151190", "REFINED PALM OIL IN FLEXITANK"), ("150990", "OLIVE OIL IN BOTTLES"),
        ("151219", "SUNFLOWER OIL"), ("151329", "PALM KERNEL OIL"),
    ], 1.0, "dry_heavy", (20_000, 22_000), 190.0, 0.03, 1.1, [
        ("MYPKG", 25), ("IDBLW", 25), ("TNRAD", 10), ("ARBUE", 26), ("TRMER", 14),
    ]),
)

# Descriptions used for consolidated loads by forwarders (licit) and by front companies.
VAGUE_DESCRIPTIONS: tuple[str, ...] = (
    "FAK",
    "STC GENERAL CARGO",
    "GENERAL MERCHANDISE",
    "SAID TO CONTAIN FOODSTUFF",
    "CONSOLIDATED CARGO",
    "MIXED GOODS",
)

# ---- HS code → cargo family --------------------------------------------------------------------
# Looked up from the most specific prefix (6, then 4, then 2 digits).
_HS_CHAPTER_FAMILY: dict[str, str] = {
    **{f"{c:02d}": "frozen_meat" for c in (1, 2, 3)},
    "04": "general", "05": "general", "06": "general",
    "07": "fruit", "08": "fruit",
    **{f"{c:02d}": "sacks" for c in (9, 10, 11, 12, 13, 14, 23, 25, 31)},
    "15": "bottles_drums", "16": "general", "17": "sacks", "18": "general", "19": "general",
    "20": "general", "21": "general", "22": "bottles_drums", "24": "general",
    **{f"{c:02d}": "bottles_drums" for c in (27, 28, 29, 32, 33, 38)},
    **{f"{c:02d}": "general" for c in (26, 30, 34, 35, 36, 37, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49)},
    **{f"{c:02d}": "textiles" for c in range(50, 64)},
    **{f"{c:02d}": "general" for c in range(64, 72)},
    **{f"{c:02d}": "machinery" for c in range(72, 84)},
    "84": "machinery", "85": "general",
    **{f"{c:02d}": "machinery" for c in (86, 87, 88, 89)},
    **{f"{c:02d}": "general" for c in range(90, 98)},
}

_HS_HEADING_FAMILY: dict[str, str] = {
    "0801": "sacks", "0802": "sacks",          # nuts travel in sacks, not reefers
    "0901": "sacks", "1801": "sacks",
    "2009": "bottles_drums",                   # juices in drums
    "3401": "general", "3402": "bottles_drums", "3403": "bottles_drums",
    **{f"39{h:02d}": "sacks" for h in range(1, 15)},  # plastics in primary forms: bags of pellets
    "4011": "tyres", "4012": "tyres", "4013": "tyres",
    "4402": "sacks",                           # charcoal
    "8471": "general",                         # computers in cartons
    **{f"85{h:02d}": "machinery" for h in (1, 2, 3, 4)},  # motors, generators, transformers
}

_HS_SUBHEADING_FAMILY: dict[str, str] = {
    "200899": "bottles_drums",                 # fruit pulp / purée in drums
    "200989": "bottles_drums",
}

# When the HS code is unusable, the description decides (first match wins).
_DESCRIPTION_RULES: tuple[tuple[str, str], ...] = (
    (r"\bEMPTY\b", "empty"),
    (r"\bTYRES?\b|\bTIRES?\b", "tyres"),
    (r"BANANA|PINEAPPLE|AVOCADO|ORANGE|MANDARIN|LEMON|LIME|GRAPE|MANGO|FRESH FRUIT|VEGETABLE", "fruit"),
    (r"FROZEN (?:BEEF|PORK|MEAT|CHICKEN|FISH|SHRIMP|SQUID|POULTRY)|BONELESS", "frozen_meat"),
    (r"COFFEE|COCOA BEANS|SUGAR|RICE|GRANULES|\bBAGS\b|SACKS|CHARCOAL", "sacks"),
    (r"MACHINE|PUMP|VALVE|ENGINE|GENERATOR|SCRAP|STEEL", "machinery"),
    (r"WINE|BEER|WHISK|DRUMS|\bOIL\b|FLEXITANK|\bIBC\b|CHEMICAL|PAINT", "bottles_drums"),
    (r"COTTON|GARMENT|APPAREL|TEXTILE|FABRIC|T-SHIRT|TROUSERS|CLOTHING", "textiles"),
)


def _family_of_code(code: str) -> str | None:
    if not code or not code.isdigit() or not 6 <= len(code) <= 10:
        return None
    for table, width in ((_HS_SUBHEADING_FAMILY, 6), (_HS_HEADING_FAMILY, 4), (_HS_CHAPTER_FAMILY, 2)):
        fam = table.get(code[:width])
        if fam is not None:
            return fam
    return None


def _family_of_description(text: str) -> str | None:
    for pattern, fam in _DESCRIPTION_RULES:
        if re.search(pattern, text):
            return fam
    return None


def cargo_family(hs_code: pd.Series, goods_description: pd.Series | None = None) -> pd.Series:
    """Map declared HS codes (and descriptions) to cargo families.

    Returns a string Series aligned with ``hs_code`` holding one of :data:`CARGO_FAMILIES`.
    Rules, in order: a description starting with "EMPTY" (or an empty HS code when no
    description is given) means ``"empty"``; a 6-10 digit HS code (dots and spaces ignored) is
    looked up by its most specific known prefix; otherwise, when a description is given, keywords
    in it decide; anything still unknown is ``"general"``. Work is done once per distinct value,
    so millions of rows map in about a second.

    >>> cargo_family(pd.Series(["", "080390"]), pd.Series(["EMPTY CONTAINER", "BANANAS"])).tolist()
    ['empty', 'fruit']
    """
    if not isinstance(hs_code, pd.Series):
        raise TypeError(f"hs_code must be a pandas Series, got {type(hs_code).__name__}")
    if goods_description is not None and len(goods_description) != len(hs_code):
        raise ValueError(
            f"hs_code and goods_description must have the same length, got {len(hs_code)} and "
            f"{len(goods_description)}; pass the two columns of the same frame"
        )
    codes = hs_code.astype("string").str.replace(r"[.\s]", "", regex=True)
    hs_idx, hs_uniques = pd.factorize(codes, use_na_sentinel=True)
    hs_fam = np.array([_family_of_code(str(c)) for c in hs_uniques] + [None], dtype=object)
    fam = hs_fam[hs_idx]  # index -1 (missing) picks the trailing None
    if goods_description is None:
        blank = codes.fillna("").to_numpy(dtype=object) == ""
        fam[blank] = "empty"
    else:
        desc = goods_description.astype("string").str.strip().str.upper()
        d_idx, d_uniques = pd.factorize(desc, use_na_sentinel=True)
        d_fam = np.array([_family_of_description(str(d)) for d in d_uniques] + [None], dtype=object)
        by_desc = d_fam[d_idx]
        is_empty = by_desc == "empty"
        fam = np.where(is_empty, "empty", fam)
        unknown = pd.isna(fam)
        fam[unknown] = by_desc[unknown]
        blank_code = codes.fillna("").to_numpy(dtype=object) == ""
        # A blank HS code with no usable description is most likely an empty box declared tersely.
        fam[blank_code & pd.isna(fam) & pd.isna(desc).to_numpy()] = "empty"
    fam[pd.isna(fam)] = "general"
    return pd.Series(fam, index=hs_code.index, dtype="str", name="cargo_family")


def commodity_table() -> pd.DataFrame:
    """The commodity table, one row per (commodity, HS code, description) product.

    Columns: commodity, family, hs_code, goods_description, reefer, share, payload_20_kg,
    payload_40_kg, unit_kg, usd_per_kg.
    """
    rows = []
    for c in COMMODITIES:
        for hs, desc in c.products:
            rows.append({
                "commodity": c.key, "family": c.family, "hs_code": hs, "goods_description": desc,
                "reefer": c.reefer, "share": c.share / len(c.products),
                "payload_20_kg": c.payload_kg[0], "payload_40_kg": c.payload_kg[1],
                "unit_kg": c.unit_kg, "usd_per_kg": c.usd_per_kg,
            })
    return pd.DataFrame(rows)
