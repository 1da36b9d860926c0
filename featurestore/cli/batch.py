"""Batch commands: ``backfill`` (sources -> offline tables) and ``materialize``
(offline tables -> online store).

Neither may do nothing silently: with no views applied, or a view without an
offline table to materialize, they stop with the command to run first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from featurestore.cli._common import (
    ISO_EXAMPLE,
    JsonOpt,
    RepoOpt,
    console,
    err_console,
    parse_time,
    print_json,
    registered_views,
)
from featurestore.cli._engine import EngineOpt, PartitionsOpt, RayAddressOpt, engine_store
from featurestore.errors import RequestError

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore
    from featurestore.materialize import MaterializeReport

StartOpt = Annotated[
    str | None,
    typer.Option(
        "--start", help=f"Only events at or after this ISO time with zone, e.g. {ISO_EXAMPLE}."
    ),
]


def backfill(
    views: Annotated[
        list[str] | None, typer.Argument(help="Feature views to backfill; default: all.")
    ] = None,
    start: StartOpt = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--end", help="Only events before this ISO time with zone; default: all the data."
        ),
    ] = None,
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    partitions: PartitionsOpt = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Read batch sources, apply row transforms, write the offline Delta tables.

    With --engine ray the sources are read and transformed by Ray tasks, one chunk of
    dates each; every chunk is still committed by this process, in order."""
    from featurestore.compile.sources import read_source_schema

    start, end = parse_time(start, option="--start"), parse_time(end, option="--end")
    with engine_store(repo, engine, ray_address, partitions) as store:
        _, chosen = registered_views(store, views, command="backfill")
        for view in chosen:  # a missing or corrupt source: one error naming it, before any work
            read_source_schema(view.source.batch, repo=store.repo)
        reports = store.backfill(
            [v.name for v in chosen], start=start, end=end, progress=not as_json
        )
    # -- output -----------------------------------------------------------------
    if as_json:
        print_json([r.__dict__ for r in reports])
        return
    for r in reports:
        console.print(r.summary(), highlight=False, markup=False)


def materialize(
    views: Annotated[
        list[str] | None,
        typer.Option(
            "--view", "-v", help="A feature view (repeatable); default: every online view."
        ),
    ] = None,
    start: StartOpt = None,
    end: Annotated[
        str | None,
        typer.Option("--end", help="Only events up to this ISO time with zone; default: now."),
    ] = None,
    incremental: Annotated[
        bool,
        typer.Option("--incremental", help="From each view's watermark (its last run's end)."),
    ] = False,
    lookback: Annotated[
        str, typer.Option(help="With --incremental: re-read this much before the watermark.")
    ] = "1h",
    engine: EngineOpt = None,
    ray_address: RayAddressOpt = None,
    partitions: PartitionsOpt = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Load the latest offline values per entity into the online store."""
    start, end = parse_time(start, option="--start"), parse_time(end, option="--end")
    with engine_store(repo, engine, ray_address, partitions) as store:
        reports = _materialize(store, views, start, end, incremental, lookback, as_json)
    _print_materialized(reports, as_json=as_json)


def _materialize(
    store: FeatureStore,
    views: list[str] | None,
    start: str | None,
    end: str | None,
    incremental: bool,
    lookback: str,
    as_json: bool,
) -> list[MaterializeReport]:
    from featurestore._time import now_us

    _, chosen = registered_views(store, views, command="materialize")
    online = [v for v in chosen if v.online]
    if not online:
        raise RequestError(
            "none of these feature views is online, so there is nothing to materialize",
            obj=", ".join(f"feature view {v.name!r}" for v in chosen),
            hint="set online=True on the FeatureView and run `featurestore apply`",
        )
    # Checked before any view runs, so that no watermark moves over data never read.
    missing = [v.name for v in online if not store.offline.exists(v.name)]
    if missing:
        raise RequestError(
            "has no offline table yet, so there is nothing to load online",
            obj=", ".join(f"feature view {n!r}" for n in missing),
            hint=f"run `featurestore backfill {' '.join(missing)}` first",
        )
    names = [v.name for v in online]
    if incremental:
        return store.materialize_incremental(
            names, end=end, lookback=lookback, progress=not as_json
        )
    return store.materialize(
        names, start=start, end=end if end is not None else now_us(), progress=not as_json
    )


def _print_materialized(reports: list[MaterializeReport], *, as_json: bool) -> None:
    if as_json:
        print_json([{**r.__dict__, "hint": r.hint} for r in reports])
        return
    for r in reports:
        console.print(
            f"[bold]{r.view}[/]: {r.entities:,} entities, {r.written:,} written, "
            f"{r.skipped_stale:,} already newer online, {r.skipped_expired:,} past retention, "
            f"in {r.seconds:.2f}s "
            f"([bold]{r.rows_per_second:,.0f} rows/s[/])",
            highlight=False,
        )
        if r.hint:
            err_console.print(f"[yellow]hint:[/] {r.hint}", highlight=False)
        elif r.entities == 0:
            err_console.print(
                f"[yellow]note:[/] {r.view}: no offline rows in the time range; widen "
                "--start/--end, or run `featurestore backfill` if the source has newer data",
                highlight=False,
            )
