"""Registers the command modules.

Each area of the product has its own command module; importing one attaches its commands to
the groups in :mod:`riskengine.cli`. Modules import their heavy dependencies inside the
commands, so `riskengine --help` stays fast.
"""

from __future__ import annotations

import importlib

COMMAND_MODULES = (
    "riskengine.cli.generate_cmd",
    "riskengine.cli.indicators_cmd",
    "riskengine.cli.model_cmd",
    "riskengine.cli.scan_generate_cmd",
    "riskengine.cli.scan_cmd",
    "riskengine.cli.scanner_cmd",
    "riskengine.cli.serve_cmd",
    "riskengine.cli.outcomes_cmd",
    "riskengine.cli.bench_cmd",
    "riskengine.cli.rescore_cmd",
    "riskengine.cli.demo_cmd",
    "riskengine.cli.tokens_cmd",
    "riskengine.cli.ingest_cmd",
)


def register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name)
