"""Registers the command modules.

Each area of the product has its own module so that commands can be developed and
tested independently; a module missing here is simply not registered.
"""

from __future__ import annotations

import importlib

COMMAND_MODULES = (
    "riskengine.cli.generate_cmd",
    "riskengine.cli.indicators_cmd",
    "riskengine.cli.model_cmd",
    "riskengine.cli.scan_generate_cmd",
    "riskengine.cli.scan_cmd",
    "riskengine.cli.serve_cmd",
    "riskengine.cli.outcomes_cmd",
    "riskengine.cli.bench_cmd",
    "riskengine.cli.rescore_cmd",
    "riskengine.cli.demo_cmd",
)


def register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only tolerate the command module itself being absent, never a broken import inside it.
            if exc.name != name:
                raise
