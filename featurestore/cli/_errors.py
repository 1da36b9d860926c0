"""The one place where an exception becomes a message and an exit code.

Every command is registered through ``guarded`` (``main.py``), so no command maps
errors itself and none can end in a traceback. Exit codes (README, "Exit codes"):

====  =====================================================================
1     invalid definitions, data or request: the user can fix it
2     usage: a bad option value, or a confirmation the command did not get
3     a conflict or a service that may come back: a retry can help
4     internal error: a bug; ``FEATURESTORE_DEBUG=1`` prints the traceback
====  =====================================================================

Messages name the file, the object and the fix, and every URL in them has its
password masked, under ``--json`` too (JSON goes to stdout, text to stderr).
"""

from __future__ import annotations

import functools
import json
import os
import re
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import click
import typer
from rich.console import Console

from featurestore._redact import redact_text
from featurestore.errors import DataError, FeatureStoreError

EXIT_USER = 1
EXIT_USAGE = 2
EXIT_RETRY = 3
EXIT_INTERNAL = 4

err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class UsageProblem(FeatureStoreError):
    """An option value the command cannot use, or a missing confirmation (exit 2)."""


def _os_path(exc: BaseException) -> str | None:
    filename = getattr(exc, "filename", None)
    if filename:
        return str(filename)
    # Polars and deltalake put the path at the end of the message instead.
    found = re.search(r"\(os error \d+\):\s*(\S+)", str(exc))
    return found.group(1) if found else None


def as_feature_store_error(exc: BaseException) -> tuple[int, FeatureStoreError]:
    """The exit code and the typed error to show for ``exc``."""
    if isinstance(exc, UsageProblem):
        return EXIT_USAGE, exc
    if isinstance(exc, FeatureStoreError):
        return (EXIT_RETRY if exc.retryable else EXIT_USER), exc
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and _os_path(exc):
        return EXIT_USER, DataError(
            f"cannot read or write the file: {getattr(exc, 'strerror', None) or reason}",
            file=_os_path(exc),
            hint="check that the path exists and is readable; relative paths are "
            "resolved from the current directory",
        )
    if type(exc).__module__.startswith("polars") and type(exc).__name__ in (
        "ComputeError",
        "SchemaError",
        "ColumnNotFoundError",
    ):
        return EXIT_USER, DataError(
            f"data could not be read: {reason}",
            hint="a source or input file is corrupt or has other columns than declared; "
            "`featurestore plan` names unreadable source files",
        )
    return EXIT_INTERNAL, FeatureStoreError(
        f"internal error: {type(exc).__name__}: {reason}",
        hint="this is a bug in featurestore: re-run with FEATURESTORE_DEBUG=1 for the "
        "traceback and report it",
    )


def report(exc: BaseException, *, as_json: bool) -> int:
    """Print ``exc`` for a person (stderr) or a program (stdout JSON); its exit code."""
    code, error = as_feature_store_error(exc)
    if code == EXIT_INTERNAL and os.environ.get("FEATURESTORE_DEBUG"):
        text = "".join(traceback.format_exception(exc))
        err_console.print(redact_text(text), highlight=False, markup=False)
    if as_json:
        print(json.dumps({**error.to_dict(), "exit_code": code}, indent=2, default=str))
    else:
        # soft_wrap: one logical line stays one line in logs and when copied.
        err_console.print("[bold red]error:[/] ", end="", highlight=False, soft_wrap=True)
        err_console.print(redact_text(str(error)), highlight=False, markup=False, soft_wrap=True)
    return code


# Exits and usage errors the command line itself handles. Typer vendors its own copy
# of click, so both families are listed.
_PASS_THROUGH = (
    typer.Exit,
    typer.Abort,
    typer.TyperException,
    click.exceptions.Exit,
    click.ClickException,
    click.Abort,
    SystemExit,
    KeyboardInterrupt,
)


def guarded(fn: F) -> F:
    """Wrap a command so that any error it raises is reported by ``report``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _PASS_THROUGH:
            raise
        except BaseException as exc:  # the point of this wrapper: nothing escapes raw
            raise typer.Exit(report(exc, as_json=bool(kwargs.get("as_json")))) from exc

    wrapper.__featurestore_guarded__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
