"""What the command modules share: consoles, common options, and small parsers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from featurestore.cli._errors import UsageProblem, err_console
from featurestore.errors import RequestError

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore
    from featurestore.compile import PlanIndex
    from featurestore.compile.views import FeatureViewPlan

console = Console()
__all__ = ["console", "err_console"]

RepoOpt = Annotated[
    Path, typer.Option("--repo", "-r", help="Feature repo directory (holds featurestore.toml).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]

ISO_EXAMPLE = "2026-01-01T00:00:00Z"


def open_store(repo: Path) -> FeatureStore:
    from featurestore.api.store import FeatureStore

    return FeatureStore(repo)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def parse_time(value: str | None, *, option: str) -> str | None:
    """``value`` checked as an ISO 8601 instant with a zone; a usage error otherwise.

    The API takes the string itself; checking here turns a typo into one line that
    names the option, instead of a traceback from deep inside a command."""
    from datetime import datetime

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageProblem(
            "is not an ISO 8601 time",
            obj=f"option {option}",
            value=value,
            hint=f"give a time with a zone, e.g. {option} {ISO_EXAMPLE}",
        ) from None
    if parsed.tzinfo is None:
        raise UsageProblem(
            "has no time zone",
            obj=f"option {option}",
            value=value,
            hint=f"add one, e.g. {option} {value}Z for UTC",
        )
    return value


def registered_views(
    store: FeatureStore, names: list[str] | None, *, command: str
) -> tuple[PlanIndex, list[FeatureViewPlan]]:
    """The views a batch command works on; an error saying what to run when there
    are none (nothing applied yet), instead of doing nothing and exiting 0."""
    index = store.index()
    if not index.views:
        raise RequestError(
            "the registry has no feature views, so there is nothing to "
            f"{command} (registry version {store.registry.head()})",
            obj=f"project {store.project!r}",
            hint="run `featurestore apply` first",
        )
    chosen = (
        [index.view(n) for n in names]
        if names
        else sorted(index.views.values(), key=lambda v: v.name)
    )
    return index, chosen
