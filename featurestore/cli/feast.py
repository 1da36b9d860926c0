"""``featurestore import-feast``: a Feast repo -> a featurestore repo and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featurestore.cli._common import JsonOpt, console, print_json


def import_feast(
    path: Annotated[Path, typer.Argument(help="The Feast repo (holds feature_store.yaml).")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the featurestore repo.")
    ] = Path("featurestore_repo"),
    as_json: JsonOpt = False,
) -> None:
    """Import a Feast repo (needs the feast extra): writes featurestore.toml,
    features.py and FEAST_IMPORT.md, the report of every object."""
    from featurestore.integrations.feast import import_feast_repo

    report = import_feast_repo(path, out)
    if as_json:
        print_json(report.to_dict())
        return
    for item in report.items:
        color = {"converted": "green", "not supported": "red"}.get(item.status, "yellow")
        console.print(f"  [{color}]{item.status}[/]: {item.kind} {item.name}", highlight=False)
        for note in item.notes:
            console.print(f"      {note}", highlight=False, markup=False)
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items())
    console.print(f"Wrote {out}/features.py, featurestore.toml and FEAST_IMPORT.md ({counts}).")
    console.print(
        f"Next: cd {out} && featurestore plan && featurestore apply && featurestore backfill"
    )
