"""Commands over the definitions: version, init, plan, apply."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from featurestore.cli._common import JsonOpt, RepoOpt, console, err_console, open_store, print_json


def print_diff(diff: Any) -> None:
    """A registry diff, object by object, field by field, with its impacts."""
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
    for reason in getattr(diff, "high_impact", ()):
        console.print(f"  [bold red]needs an approver:[/] {reason}", highlight=False)


def print_apply_json(result: Any) -> None:
    print_json(
        {"version": result.version, "created": result.created, "diff": result.diff.to_dict()}
    )


def version() -> None:
    """Print the featurestore version."""
    from featurestore import __version__

    print(__version__)


def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the repo.")],
    project: Annotated[
        str | None, typer.Option(help="Project name; default: the directory's name.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty directory.")] = False,
) -> None:
    """Create a runnable example feature repo with sample data."""
    from featurestore.scaffold import init_repo

    root = init_repo(directory, project=project, force=force)
    console.print(
        f"Created feature repo [bold]{root}[/]. Next:\n"
        f"  cd {directory}\n  featurestore plan\n  featurestore apply",
        highlight=False,
    )


def plan(repo: RepoOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Show what `apply` would change in the registry, field by field."""
    store = open_store(repo)
    result = store.plan()
    if as_json:
        print_json(
            {
                "project": store.project,
                "plan_hash": result.plan.hash,
                "diff": result.diff.to_dict(),
                "warnings": result.warnings,
            }
        )
        return
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    print_diff(result.diff)


def apply(
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
    message: Annotated[
        str, typer.Option("--message", "-m", help="Why: recorded with the new registry version.")
    ] = "",
    approved_by: Annotated[
        str | None,
        typer.Option(
            "--approved-by",
            help="Approver of a high-impact change (one of the policy's approvers); recorded "
            "in the registry history.",
        ),
    ] = None,
) -> None:
    """Compile the definitions and record them as a new registry version.

    With a [policy], a change that `plan` marks high-impact (a class lowered, a served
    feature removed or retyped, a TTL or window of a served view or a source changed)
    needs --approved-by NAME; nothing is written without it."""
    from featurestore.api.serving import keep_serving

    store = open_store(repo)
    planned = store.plan()
    policy = store.settings.policy
    if policy is not None and (planned.diff.high_impact or approved_by):
        policy.check_approver(approved_by, reasons=planned.diff.high_impact)
    if approved_by:
        message = f"{message} [approved by {approved_by}]".strip()
    result = store.registry.apply(
        planned.plan,
        expected_version=planned.diff.base_version,
        message=message,
        keep_serving=keep_serving,  # blue/green, as FeatureStore.apply does
    )
    if as_json:
        print_apply_json(result)
        return
    for w in planned.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    print_diff(result.diff)
    if result.created:
        console.print(f"[bold green]Applied:[/] registry version {result.version}.")
        for view, version in sorted(store.registry.serving_pins().items()):
            console.print(
                f"{view}: still served online from version {version} until `featurestore "
                f"materialize` fills its new records (or `featurestore promote {view}`)",
                highlight=False,
            )
    else:
        console.print(f"Nothing to apply; the registry stays at version {result.version}.")
