import os

import pytest

# Libraries must not try to reach a network or a display during tests.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def good_row() -> dict:
    """One valid manifest row in the native schema, as strings (as a CSV would give it)."""
    return {
        "manifest_id": "M-0001",
        "container_id": "CSQU3054383",
        "container_type": "45R1",
        "bl_number": "MAEU123456789",
        "vessel_imo": "9074729",
        "voyage": "612N",
        "carrier": "MAERSK",
        "shipper": "FRUTAS DEL PACIFICO SA",
        "consignee": "ROTTERDAM FRESH BV",
        "notify_party": "",
        "origin_country": "EC",
        "port_of_loading": "ECGYE",
        "transshipment_ports": "PAMIT",
        "port_of_discharge": "NLRTM",
        "terminal": "NLRTM-ECT",
        "hs_code": "080390",
        "goods_description": "FRESH BANANAS CAVENDISH",
        "packages": "1080",
        "gross_weight_kg": "21000",
        "vgm_kg": "25300",
        "declared_value": "16500",
        "currency": "USD",
        "freight_charges": "4200",
        "freight_payment": "prepaid",
        "seal_number": "ML1234567",
        "seal_number_gate": "ML1234567",
        "filed_at": "2026-03-01T10:00:00Z",
        "gate_in_at": "2026-02-27T08:00:00Z",
        "cut_off_at": "2026-02-28T12:00:00Z",
        "last_amended_at": "",
        "arrival_date": "2026-03-12",
    }
