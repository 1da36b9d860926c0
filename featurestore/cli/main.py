"""The ``featurestore`` command. Thin: every command calls the Python API.

Exit codes: 0 success; 1 invalid definitions, data or request; 2 usage error;
3 conflict or a service that may come back (retry can help); 4 internal error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from featurestore.errors import FeatureStoreError

app = typer.Typer(
    help="featurestore: declare features once; train and serve the same values.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
registry_app = typer.Typer(help="Registry versions: history, show, rollback.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

console = Console()
err_console = Console(stderr=True)

RepoOpt = Annotated[Path, typer.Option("--repo", "-r", help="Feature repo directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(exc: FeatureStoreError, as_json: bool) -> None:
    code = 3 if exc.retryable else 1
    if as_json:
        print(json.dumps(exc.to_dict(), indent=2))
    else:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
    raise typer.Exit(code)


def _store(repo: Path) -> Any:
    from featurestore.api.store import FeatureStore

    return FeatureStore(repo)


def _print_diff(diff: Any) -> None:
    if diff.empty:
        console.print(
            f"No changes: the registry (version {diff.base_version}) matches the definitions."
        )
        return
    colors = {"added": "green", "removed": "red", "changed": "yellow"}
    signs = {"added": "+", "removed": "-", "changed": "~"}
    console.print(f"Changes against registry version {diff.base_version}:")
    for obj in diff.objects:
        c = colors[obj.action]
        console.print(
            f"  [{c}]{signs[obj.action]} {obj.kind} {obj.name}[/] ({obj.action})", highlight=False
        )
        for ch in obj.changes:
            console.print(
                f"      {ch.path}: {ch.old!r} -> {ch.new!r}", highlight=False, markup=False
            )
        for impact in obj.impacts:
            console.print(f"      [bold magenta]! {impact}[/]", highlight=False)


@app.command()
def version() -> None:
    """Print the featurestore version."""
    from featurestore import __version__

    print(__version__)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the repo.")],
    project: Annotated[str | None, typer.Option(help="Project name.")] = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty directory.")] = False,
) -> None:
    """Create a runnable example feature repo with sample data."""
    from featurestore.scaffold import init_repo

    try:
        root = init_repo(directory, project=project, force=force)
    except FeatureStoreError as exc:
        _fail(exc, False)
    console.print(
        f"Created feature repo [bold]{root}[/]. Next:\n"
        f"  cd {directory}\n  featurestore plan\n  featurestore apply",
        highlight=False,
    )


@app.command()
def plan(repo: RepoOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Show what `apply` would change in the registry, field by field."""
    try:
        store = _store(repo)
        result = store.plan()
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(
            json.dumps(
                {
                    "project": store.project,
                    "plan_hash": result.plan.hash,
                    "diff": result.diff.to_dict(),
                    "warnings": result.warnings,
                },
                indent=2,
                default=str,
            )
        )
        return
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    _print_diff(result.diff)


@app.command()
def apply(
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
) -> None:
    """Compile the definitions and record them as a new registry version."""
    try:
        store = _store(repo)
        planned = store.plan()
        result = store.registry.apply(
            planned.plan, expected_version=planned.diff.base_version, message=message
        )
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(
            json.dumps(
                {
                    "version": result.version,
                    "created": result.created,
                    "diff": result.diff.to_dict(),
                },
                indent=2,
                default=str,
            )
        )
        return
    for w in planned.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    _print_diff(result.diff)
    if result.created:
        console.print(f"[bold green]Applied:[/] registry version {result.version}.")
    else:
        console.print(f"Nothing to apply; the registry stays at version {result.version}.")


@registry_app.command("history")
def registry_history(repo: RepoOpt = Path("."), as_json: JsonOpt = False) -> None:
    """List registry versions."""
    try:
        rows = _store(repo).registry.history()
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
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


@registry_app.command("show")
def registry_show(
    version: Annotated[int, typer.Argument()], repo: RepoOpt = Path("."), as_json: JsonOpt = False
) -> None:
    """Print the plan recorded at a registry version."""
    try:
        snap = _store(repo).registry.snapshot(version)
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(snap.plan.to_json())
        return
    table = Table("kind", "name", "hash", title=f"registry version {version}")
    for o in snap.plan:
        table.add_row(o.kind, o.name, o.hash)
    console.print(table)


@registry_app.command("rollback")
def registry_rollback(
    to: Annotated[int, typer.Option("--to", help="Version to restore.")],
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Restore the objects of an earlier version, as a new version."""
    try:
        reg = _store(repo).registry
        result = reg.rollback(to_version=to, expected_version=reg.head(fresh=True))
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(
            json.dumps(
                {
                    "version": result.version,
                    "created": result.created,
                    "diff": result.diff.to_dict(),
                },
                indent=2,
                default=str,
            )
        )
        return
    _print_diff(result.diff)
    if result.created:
        console.print(
            f"[bold green]Rolled back:[/] version {result.version} restores version {to}."
        )
    else:
        console.print(f"Version {to} already matches the head; nothing changed.")


def main() -> None:
    try:
        app()
    except FeatureStoreError as exc:  # an error a command did not catch itself
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(3 if exc.retryable else 1)
