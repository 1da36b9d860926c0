"""``featurestore access-log``: who read the pii and sensitive features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from featurestore.cli._common import JsonOpt, RepoOpt, console, open_store, parse_time, print_json


def access_log(
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
    principal: Annotated[str | None, typer.Option(help="Only this principal's reads.")] = None,
    feature: Annotated[
        str | None, typer.Option(help="Only reads of this 'view:feature' (or any of a view).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only reads at or after this ISO 8601 time.")
    ] = None,
    limit: Annotated[int, typer.Option(help="Most rows shown, newest first.")] = 100,
) -> None:
    """List reads of pii and sensitive features: who, what, how many entities, when,
    from where (the _access_log Delta table)."""
    from featurestore._time import to_us
    from featurestore.api.access_log import read_access_log

    store = open_store(repo)
    when = parse_time(since, option="--since")
    frame = read_access_log(
        store.offline,
        principal=principal,
        feature=feature,
        since_us=None if when is None else to_us(when, what="--since"),
        limit=limit,
    )
    if as_json:
        print_json(frame.to_dicts())
        return
    table = Table("accessed at", "principal", "action", "entities", "features", "origin")
    for row in frame.iter_rows(named=True):
        table.add_row(
            row["accessed_at"].strftime("%Y-%m-%d %H:%M:%S"),
            row["principal"],
            row["action"],
            str(row["entities"]),
            ", ".join(row["features"]),
            row["origin"],
        )
    console.print(table)
    console.print(f"{frame.height} read(s) shown.", highlight=False)


def erase(
    entity: Annotated[
        list[str],
        typer.Option("--entity", help="KEY=VALUE of an entity to erase; repeat for more."),
    ],
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be erased; change nothing.")
    ] = False,
    vacuum: Annotated[
        int | None,
        typer.Option(
            "--vacuum",
            metavar="HOURS",
            help="Then vacuum every table touched: files no version of the last HOURS "
            "references are deleted (0: only the current version keeps files).",
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the JSON report to this file.")
    ] = None,
) -> None:
    """Erase entities from the online store, every offline view table, and the feature
    logs; list saved datasets that hold them. Safe to re-run (docs/governance.md)."""
    import json

    from featurestore.api.erase import erase as run_erase
    from featurestore.api.erase import parse_entities

    store = open_store(repo)
    try:
        done = run_erase(store, parse_entities(entity), dry_run=dry_run, vacuum_hours=vacuum)
    finally:
        store.close()
    doc = done.to_dict()
    if report is not None:
        report.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    if as_json:
        print_json(doc)
        return
    table = Table("where", "table", "would erase" if dry_run else "erased")
    for where, counts in (
        ("online", done.online),
        ("offline", done.offline),
        ("feature log", done.feature_logs),
    ):
        for name, n in sorted(counts.items()):
            table.add_row(where, name, str(n))
    console.print(table)
    for name, n in sorted(done.datasets.items()):
        console.print(
            f"saved dataset {name!r} holds {n} spine row(s) of these entities (not changed)",
            highlight=False,
        )
    console.print(
        f"{done.total} row(s)/record(s) {'would be ' if dry_run else ''}erased; "
        f"report sha256 {doc['sha256']}",
        highlight=False,
    )


def check(repo: RepoOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Governance rules over the compiled plan, for CI: every pii feature's view has
    an owner; sources lie under [policy] allowed_source_roots (when set); with a
    policy, every service holding pii features is readable by some principal.
    Exits 1 listing every finding."""
    from featurestore.api.checks import allowed_roots, check_plan
    from featurestore.errors import DefinitionError

    store = open_store(repo)
    policy = store.settings.policy
    findings = check_plan(
        store.compile().plan,
        repo=store.repo,
        policy=policy,
        allowed_source_roots=allowed_roots(policy),
    )
    if as_json:
        print_json([f.__dict__ for f in findings])
    else:
        for finding in findings:
            console.print(str(finding), highlight=False, markup=False)
    if findings:
        if as_json:
            raise typer.Exit(1)
        raise DefinitionError(
            f"{len(findings)} governance check(s) failed",
            obj="featurestore check",
            hint="fix the findings listed above",
        )
    if not as_json:
        console.print("all governance checks pass.", highlight=False)


retention_app = typer.Typer(help="Offline retention per view ([policy.offline_retention]).")


def retention_apply(
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
    view: Annotated[
        list[str] | None,
        typer.Option("--view", help="VIEW=DURATION (e.g. driver_stats=400d); overrides the file."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count; delete nothing.")] = False,
    vacuum: Annotated[
        int | None, typer.Option("--vacuum", metavar="HOURS", help="Then vacuum each table.")
    ] = None,
) -> None:
    """Delete each view's offline rows older than its retention (one commit per view)."""
    from featurestore.api.retention import apply_retention, configured
    from featurestore.errors import RequestError

    store = open_store(repo)
    settings = configured(store.settings.policy)
    for item in view or []:
        name, sep, duration = item.partition("=")
        if not sep or not name or not duration:
            raise RequestError(
                "is not VIEW=DURATION",
                obj="retention apply",
                field="--view",
                value=item,
                hint="e.g. --view driver_stats=400d",
            )
        settings[name] = duration
    if not settings:
        raise RequestError(
            "no view has an offline retention",
            obj="retention apply",
            hint='add [policy.offline_retention] VIEW = "400d" or pass --view VIEW=400d',
        )
    try:
        done = apply_retention(store, settings, dry_run=dry_run, vacuum_hours=vacuum)
    finally:
        store.close()
    if as_json:
        print_json(done.__dict__)
        return
    table = Table("view", "cutoff", "would delete" if dry_run else "deleted")
    for name in sorted(done.deleted):
        table.add_row(name, done.cutoffs[name], str(done.deleted[name]))
    console.print(table)
