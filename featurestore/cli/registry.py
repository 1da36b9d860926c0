"""``featurestore registry``: history, show, rollback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from featurestore.cli._common import JsonOpt, RepoOpt, console, open_store, print_json
from featurestore.cli._errors import UsageProblem
from featurestore.cli.definitions import print_apply_json, print_diff

registry_app = typer.Typer(help="Registry versions: history, show, rollback.", no_args_is_help=True)


def history(repo: RepoOpt = Path("."), as_json: JsonOpt = False) -> None:
    """List registry versions."""
    rows = open_store(repo).registry.history()
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    table = Table("version", "created", "operation", "author", "message", "plan hash")
    for r in rows:
        table.add_row(
            str(r.version),
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.operation,
            r.author,
            r.message,
            r.plan_hash,
        )
    console.print(table)


def show(
    version: Annotated[int, typer.Argument(help="Registry version (see `registry history`).")],
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Print the plan recorded at a registry version."""
    snap = open_store(repo).registry.snapshot(version)
    if as_json:
        print(snap.plan.to_json())
        return
    table = Table("kind", "name", "hash", title=f"registry version {version}")
    for o in snap.plan:
        table.add_row(o.kind, o.name, o.hash)
    console.print(table)


def rollback(
    to: Annotated[int, typer.Option("--to", help="Version to restore (0: an empty registry).")],
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Remove objects without asking (scripts, CI)."),
    ] = False,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Restore the objects of an earlier version, as a new version.

    A rollback that removes objects asks first; without a terminal it needs --yes.
    """
    reg = open_store(repo).registry
    head = reg.head(fresh=True)
    target = reg.snapshot(to).plan
    diff = reg.diff(target, base_version=head)
    first = ("feature_view", "on_demand_feature_view", "feature_service")  # what serves
    removed = [
        f"{o.kind} {o.name}"
        for o in sorted(
            diff.objects, key=lambda o: (first.index(o.kind) if o.kind in first else 9, o.name)
        )
        if o.action == "removed"
    ]
    if removed and not yes:
        what = (
            f"rolling back to version {to} removes {len(removed)} object(s) that serve "
            f"now: {', '.join(removed[:5])}{', ...' if len(removed) > 5 else ''}"
        )
        if as_json or not sys.stdin.isatty():
            raise UsageProblem(
                what,
                obj=f"registry version {head}",
                hint=f"to confirm, re-run: featurestore registry rollback --to {to} --yes",
            )
        print_diff(diff)
        if not typer.confirm(f"{what[0].upper()}{what[1:]}. Continue?", default=False):
            console.print("Nothing changed.")
            raise typer.Exit(1)
    result = reg.rollback(to_version=to, expected_version=head)
    if as_json:
        print_apply_json(result)
        return
    print_diff(result.diff)
    if result.created:
        console.print(
            f"[bold green]Rolled back:[/] version {result.version} restores version {to}."
        )
    else:
        console.print(f"Version {to} already matches the head; nothing changed.")
