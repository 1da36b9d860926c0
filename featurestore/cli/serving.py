"""Blue/green serving commands: ``promote`` a view to its new definition, and ``gc``
the online records no served definition reads any more (``api/serving.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featurestore.cli._common import JsonOpt, RepoOpt, console, open_store, print_json


def promote(
    view: Annotated[str, typer.Argument(help="The feature view to serve from its new definition.")],
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Serve a view online from the registry head's definition now (normally a full
    `featurestore materialize` of the view does this once the new records exist)."""
    store = open_store(repo)
    was = store.promote(view)
    if as_json:
        print_json({"view": view, "was_served_from_version": was})
    elif was is None:
        console.print(f"{view}: already served from the head's definition; nothing to do")
    else:
        console.print(
            f"{view}: now served from the head's definition (was version {was}); "
            "run `featurestore gc` later to remove the old records"
        )


def gc(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", help="Keep records replaced more recently than this duration."
        ),
    ] = "1h",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Delete online records of view definitions nothing serves any more."""
    store = open_store(repo)
    removed = store.gc(older_than=older_than, dry_run=dry_run)
    if as_json:
        print_json({"dry_run": dry_run, "schemas": removed})
        return
    if not removed:
        console.print(
            f"nothing to delete: every stored derivation is served or newer than {older_than}"
        )
    for schema_id, count in removed.items():
        if count is None:
            console.print(f"would delete the online records of derivation {schema_id}")
        else:
            console.print(f"deleted {count:,} online records of derivation {schema_id}")
