"""Shared CLI helpers: error handling, consoles, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


class UserError(click.ClickException):
    """An error caused by input the user can fix; printed as `ErrorType: message`."""

    def __init__(self, message: str, error_type: str = "Error") -> None:
        super().__init__(message)
        self.error_type = error_type

    def format_message(self) -> str:
        return f"{self.error_type}: {self.message}"

    def show(self, file: Any = None) -> None:
        err_console.print(f"[bold red]{self.error_type}[/]: {self.message}", highlight=False)


# Errors raised by the library for bad input; anything else is a bug and keeps its traceback.
_USER_ERRORS = (ValueError, FileNotFoundError, KeyError, PermissionError, IsADirectoryError)


class ExitOnError(click.Group):
    """A click group that turns library input errors into `ErrorType: message` and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except _USER_ERRORS as exc:
            msg = exc.args[0] if (isinstance(exc, KeyError) and exc.args) else str(exc)
            raise UserError(str(msg), type(exc).__name__) from exc


def print_json(obj: Any) -> None:
    """Print one JSON object on one line to stdout (for scripts)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
