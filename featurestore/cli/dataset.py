"""``featurestore dataset``: training datasets, created from a spine and rebuilt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from featurestore.cli._common import JsonOpt, RepoOpt, console, err_console, print_json
from featurestore.cli._engine import EngineOpt, PartitionsOpt, RayAddressOpt, engine_store
from featurestore.errors import DataError

if TYPE_CHECKING:
    import polars as pl

dataset_app = typer.Typer(help="Training datasets: create and rebuild.", no_args_is_help=True)

SPINE_HELP = (
    "a spine is a Parquet or CSV file with the entities' join key columns and a "
    "tz-aware timestamp column (--timestamp); one training row per spine row"
)


def read_spine(path: Path) -> pl.DataFrame:
    """The spine file as a frame, or a ``DataError`` naming the file and the fix."""
    import polars as pl

    if not path.is_file():
        raise DataError(
            "spine file not found" if not path.exists() else "spine path is not a file",
            file=str(path),
            field="--entities",
            hint=f"{SPINE_HELP}; write one, e.g. with polars DataFrame.write_parquet",
        )
    try:
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path, try_parse_dates=True)
        return pl.read_parquet(path)
    except Exception as exc:  # truncated, not Parquet, unreadable CSV
        kind = "CSV" if path.suffix.lower() == ".csv" else "Parquet"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"spine file cannot be read as {kind}: {reason}",
            file=str(path),
            field="--entities",
            hint=f"{SPINE_HELP}; files not ending in .csv are read as Parquet",
        ) from exc


def create(
    entities: Annotated[
        Path,
        typer.Option(
            "--entities", help="Spine: Parquet or CSV file of join keys and a timestamp column."
        ),
    ],
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="A feature service to join.")
    ] = None,
    features: Annotated[
        list[str] | None,
        typer.Option("--feature", "-f", help="'view:feature' to join (repeatable)."),
    ] = None,
    timestamp: Annotated[str, typer.Option(help="Spine timestamp column.")] = "event_timestamp",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the dataset here (Parquet).")
    ] = None,
    save: Annotated[
        str | None, typer.Option("--save", help="Save with lineage under NAME.")
    ] = None,
    as_of_known_time: Annotated[
        bool,
        typer.Option(
            "--as-of-known-time",
            help="Also require created_ts <= each row's time: only values known then.",
        ),
    ] = False,
    principal: Annotated[
        str | None,
        typer.Option(
            "--principal", help="Who builds it, checked against the policy (docs/governance.md)."
        ),
    ] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    partitions: PartitionsOpt = None,
) -> None:
    """Build a point-in-time correct training dataset from a spine file."""
    with engine_store(repo, engine, ray_address, partitions) as store:
        with console.status("reading the spine"):
            spine = read_spine(entities)
        with console.status(f"joining {spine.height:,} spine rows"):
            ds = store.get_training_dataset(
                spine,
                features=features or None,
                feature_service=service,
                timestamp=timestamp,
                as_of_known_time=as_of_known_time,
                principal=principal,
            )
        if out is not None:
            ds.frame.write_parquet(out)
        lineage = store.save_dataset(ds, save, entity_df=spine) if save else ds.lineage
    if as_json:
        print_json(
            {
                "rows": ds.frame.height,
                "seconds": ds.seconds,
                "lineage": json.loads(lineage.to_json()),
            }
        )
        return
    console.print(
        f"{ds.frame.height:,} rows x {ds.frame.width} columns in {ds.seconds:.2f}s "
        f"({ds.frame.height / max(ds.seconds, 1e-9):,.0f} rows/s); content hash "
        f"{lineage.content_hash}",
        highlight=False,
    )
    if out is not None:
        console.print(f"written to {out}")
    if save:
        console.print(f"saved as dataset [bold]{save}[/] with its lineage")


def rebuild(
    name: Annotated[str, typer.Argument(help="Name the dataset was saved under (--save).")],
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    partitions: PartitionsOpt = None,
) -> None:
    """Recompute a saved dataset from its pinned versions and prove it is identical."""
    with engine_store(repo, engine, ray_address, partitions) as store:
        rebuilt, lineage = store.rebuild_dataset(name)
    same = rebuilt.lineage.content_hash == lineage.content_hash
    if as_json:
        print_json(
            {
                "identical": same,
                "saved_hash": lineage.content_hash,
                "rebuilt_hash": rebuilt.lineage.content_hash,
                "registry_version": lineage.registry_version,
                "table_versions": lineage.table_versions,
            }
        )
    elif same:
        console.print(
            f"[bold green]identical[/]: dataset {name} rebuilt from registry version "
            f"{lineage.registry_version} and tables {lineage.table_versions}: "
            f"content hash {lineage.content_hash}",
            highlight=False,
        )
    else:
        err_console.print(
            f"[bold red]DIFFERENT[/]: saved {lineage.content_hash}, rebuilt "
            f"{rebuilt.lineage.content_hash}",
            highlight=False,
        )
    if not same:
        raise typer.Exit(1)
