"""Training datasets on an executor: a shuffle by the stable key hash, then the
ordinary join per partition.

The spine is cut into P partitions by the hash of its join keys. Each feature view
whose join keys are those keys is read by *map* tasks, one per group of the pinned
table's date partitions (the view's time range pushed down, so every file is read
by one task), and each map task cuts its rows by the same hash into P pieces. The
*reduce* task of partition ``j`` gets spine piece ``j`` and piece ``j`` of every map,
and runs the same function the local path runs (``training._join_features``) on
them. A view keyed otherwise is read by each reduce task itself, with the task's
keys pushed down. Results are put back in the spine's order.

Why a shuffle and not "each task reads with its keys pushed down": the offline
tables are sorted by key only *within* each date partition, so file statistics
rarely exclude a key set; measured at scale 1 (benchmarks/scaleout.py), every such
task read the whole range, and P tasks cost P times the local scan.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import polars as pl

from featurestore.engines.executor import Executor, partition_ids
from featurestore.engines.executor.partition import ROW, split_with_ids
from featurestore.engines.executor.slices import date_cuts
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import OfflineTableSpec

DAY_US = 86_400_000_000
Joined = tuple[pl.DataFrame, dict[str, int | None], dict[str, str]]


@dataclass(frozen=True)
class ViewRead:
    """What the map side reads of one view: the whole spine's range of it."""

    spec: OfflineTableSpec
    version: int
    start_us: int | None
    end_us: int | None
    columns: tuple[str, ...] | None


@dataclass(frozen=True)
class _Slice:
    read: ViewRead
    start_us: int | None
    end_us: int | None
    keys: tuple[str, ...]
    partitions: int
    wanted: tuple[int, ...]


def _read_slice(item: _Slice, *, offline: DeltaOfflineStore) -> list[tuple[str, pl.DataFrame]]:
    """A map task: one slice of a view's dates, cut by key into the wanted pieces."""
    read = item.read
    rows = offline.read_view(
        read.spec,
        start_us=item.start_us,
        end_us=item.end_us,
        version=read.version,
        columns=list(read.columns) if read.columns is not None else None,
    ).collect()
    ids = partition_ids(rows, item.keys, item.partitions, obj=f"view {read.spec.name!r}")
    tagged = rows.with_columns(pl.Series("__fs_part", ids))
    groups = tagged.partition_by("__fs_part", as_dict=True, include_key=False)
    empty = rows.clear()
    return [(read.spec.name, groups.get((j,), empty)) for j in item.wanted]


def _reduce(
    spine: pl.DataFrame, pieces: list[tuple[str, pl.DataFrame]], *, join: partial[Joined]
) -> Joined:
    """A reduce task: the partition's spine joined with its pieces of every view."""
    by_view: dict[str, list[pl.DataFrame]] = {}
    for name, frame in pieces:
        by_view.setdefault(name, []).append(frame)
    rows = {name: pl.concat(frames, how="vertical") for name, frames in by_view.items()}
    return join(spine, rows=rows)


def _date_cuts(offline: DeltaOfflineStore, read: ViewRead, slices: int) -> list[int]:
    """Midnights cutting the view's dates in range into at most ``slices`` groups of
    about equal row counts (the one rule materialize's slices use too)."""
    return date_cuts(
        offline,
        read.spec,
        read.version,
        start_us=read.start_us,
        end_us=read.end_us,
        slices=slices,
    )


def join_partitioned(
    join: partial[Joined],
    spine: pl.DataFrame,
    *,
    executor: Executor,
    keys: Sequence[str],
    reads: Mapping[str, ViewRead],
    offline: DeltaOfflineStore,
) -> pl.DataFrame:
    """``join`` run per key partition of ``spine`` on ``executor`` (see the module
    docstring); ``reads`` are the views the map side reads, each keyed by ``keys``.
    The result is in the spine's order."""
    parts = executor.partitions
    pieces = split_with_ids(spine, keys, parts, obj="entity_df")
    wanted = tuple(pid for pid, _ in pieces)
    spines = [piece for _, piece in pieces]
    task = partial(join, push_keys=True)
    if not reads:
        outputs = executor.map(task, spines)
    else:
        slices: list[_Slice] = []
        for read in reads.values():
            bounds: list[Any] = [read.start_us, *_date_cuts(offline, read, parts), read.end_us]
            slices += [
                _Slice(read, lo, hi, tuple(keys), parts, wanted)
                for lo, hi in itertools.pairwise(bounds)
            ]
        outputs = executor.shuffle(
            partial(_read_slice, offline=offline), slices, partial(_reduce, join=task), spines
        )
    return pl.concat([out for out, _, _ in outputs], how="vertical").sort(ROW).drop(ROW)
