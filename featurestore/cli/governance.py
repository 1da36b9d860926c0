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
