"""The map side of a shuffle over one Delta view table: slices of its dates, each
read by one task from the pinned version and cut by the stable key hash.

A job that needs every row of a key in one task (materialize: latest per entity,
aggregate records) reads the table in *slices* of its date partitions, so every
file is read by exactly one map task; each map task returns one piece per key
partition, and reduce task ``j`` gets piece ``j`` of every slice. Reading by key
instead (``is_in`` pushed down) would read every file in every task: the tables are
sorted by key only within each date, so file statistics rarely exclude a key.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

from featurestore.engines.executor.partition import partition_ids
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import EVENT_DATE, OfflineTableSpec

DAY_US = 86_400_000_000


@dataclass(frozen=True)
class KeySlice:
    """One map task's work: the rows of ``spec`` at ``version`` with ``start_us <=
    event_ts < end_us``, cut by the hash of ``keys`` into ``partitions`` pieces."""

    spec: OfflineTableSpec
    version: int
    start_us: int | None
    end_us: int | None
    keys: tuple[str, ...]
    partitions: int
    columns: tuple[str, ...] | None = None


def date_cuts(
    offline: DeltaOfflineStore,
    spec: OfflineTableSpec,
    version: int,
    *,
    start_us: int | None,
    end_us: int | None,
    slices: int,
) -> list[int]:
    """Midnights (UTC microseconds) cutting the table's dates in ``[start_us, end_us)``
    into at most ``slices`` groups of about equal row counts, from the version's log
    (no data file is read)."""
    if slices < 2:
        return []
    table = DeltaTable(
        offline.table_uri(spec.name), version=version, storage_options=offline.storage_options
    )
    actions = pl.DataFrame(pa.table(table.get_add_actions(flatten=True)))
    if actions.is_empty():
        return []
    per_date = (
        actions.select(
            pl.col(f"partition.{EVENT_DATE}").cast(pl.Date).alias("d"),
            pl.col("num_records").cast(pl.Int64).fill_null(1).alias("n"),
        )
        .group_by("d")
        .agg(pl.col("n").sum())
        .drop_nulls("d")
        .sort("d")
    )
    epoch = dt.date(1970, 1, 1)
    midnight = [(d - epoch).days * DAY_US for d in per_date["d"].to_list()]
    counts = per_date["n"].to_list()
    keep = [
        i
        for i, m in enumerate(midnight)
        if (end_us is None or m < end_us) and (start_us is None or m + DAY_US > start_us)
    ]
    if len(keep) < 2:
        return []
    total = sum(counts[i] for i in keep)
    cuts: list[int] = []
    seen = 0
    for i in keep[:-1]:
        seen += counts[i]
        if seen >= total * (len(cuts) + 1) / slices and len(cuts) < slices - 1:
            cuts.append(midnight[i] + DAY_US)
    return cuts


def plan_slices(
    offline: DeltaOfflineStore,
    spec: OfflineTableSpec,
    version: int,
    *,
    start_us: int | None,
    end_us: int | None,
    keys: tuple[str, ...],
    partitions: int,
    columns: tuple[str, ...] | None = None,
) -> list[KeySlice]:
    """The map tasks reading ``[start_us, end_us)`` of the table: about one slice of
    dates per partition (never more than the dates in range)."""
    cuts = date_cuts(offline, spec, version, start_us=start_us, end_us=end_us, slices=partitions)
    bounds: list[int | None] = [start_us, *cuts, end_us]
    return [
        KeySlice(spec, version, lo, hi, keys, partitions, columns)
        for lo, hi in itertools.pairwise(bounds)
    ]


def read_and_cut(item: KeySlice, *, offline: DeltaOfflineStore) -> list[pl.DataFrame]:
    """A map task: the slice's rows cut into ``item.partitions`` pieces by key hash
    (piece ``j`` holds the rows of partition ``j``, possibly none), each in read order."""
    rows = offline.read_view(
        item.spec,
        start_us=item.start_us,
        end_us=item.end_us,
        version=item.version,
        columns=list(item.columns) if item.columns is not None else None,
    ).collect()
    ids = partition_ids(rows, item.keys, item.partitions, obj=f"view {item.spec.name!r}")
    groups = rows.with_columns(pl.Series("__fs_part", ids)).partition_by(
        "__fs_part", as_dict=True, include_key=False, maintain_order=True
    )
    empty = rows.clear()
    return [groups.get((j,), empty) for j in range(item.partitions)]


def gather(pieces: list[pl.DataFrame]) -> pl.DataFrame:
    """A reduce task's input: its pieces of every slice, in slice order."""
    return pl.concat(pieces, how="vertical") if pieces else pl.DataFrame()
