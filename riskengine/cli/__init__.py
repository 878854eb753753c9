"""The `riskengine` console script.

The top-level group only assembles command modules; each module owns one area
(validation, generation, indicators, models, scans). Library code never prints;
only these modules talk to the terminal.
"""

from __future__ import annotations

import click

from riskengine.cli._common import ExitOnError


@click.group(cls=ExitOnError, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.version_option(package_name="riskengine")
def main(verbose: int) -> None:
    """Risk engine for customs at container ports.

    Scores container manifests, triages X-ray scans and builds inspection queues.
    """
    import logging

    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _RepeatFilter) for f in handler.filters):
            handler.addFilter(_RepeatFilter())


class _RepeatFilter:
    """Drops a log record identical to the one just before it (same logger, level, text).

    A batch validated twice on its way (the command, then the scorer) would otherwise print the
    same warning twice in a row.
    """

    def __init__(self) -> None:
        self._last: tuple[str, int, str] | None = None

    def filter(self, record: object) -> bool:
        import logging

        assert isinstance(record, logging.LogRecord)
        key = (record.name, record.levelno, record.getMessage())
        repeat = key == self._last
        self._last = key
        return not repeat


@main.group(cls=ExitOnError)
def generate() -> None:
    """Generate synthetic data (manifests, scans) for demos, tests and training."""


@main.group(cls=ExitOnError, invoke_without_command=True)
@click.option(
    "--data", "data", multiple=True, type=click.Path(dir_okay=False),
    help="Training data (CSV or Parquet); repeat for several files.",
)
@click.option(
    "--schema", "schema", type=click.Path(exists=True, dir_okay=False), default=None,
    help="Schema mapping YAML for a foreign declaration table (default: native manifest schema).",
)
@click.option("--out", "out", type=click.Path(file_okay=False), help="Model directory to write.")
@click.option("--seed", default=7, show_default=True, help="Random seed.")
@click.option("--json", "json_out", is_flag=True, help="Print a JSON summary.")
@click.pass_context
def train(ctx: click.Context, data: tuple[str, ...], schema: str | None, out: str | None,
          seed: int, json_out: bool) -> None:
    """Train the manifest risk model (or `train scans` for the scan CNN).

    \b
    riskengine train --data year.parquet --out models/manifest
    riskengine train --data train.csv --schema datasets/kcs/mapping.yaml --out kcs_model
    """
    if ctx.invoked_subcommand is not None:
        return
    if not data or not out:
        raise click.UsageError("train needs --data PATH (one or more) and --out MODEL_DIR.")
    from riskengine.cli.model_cmd import run_train

    run_train(data=list(data), schema=schema, out=out, seed=seed, json_out=json_out)


# Command modules register themselves on `main` / `generate` when imported.
from riskengine.cli import _optional  # noqa: E402
from riskengine.cli import validate_cmd as _validate_cmd  # noqa: E402,F401

_optional.register_all()
