"""Backfill: a view's batch source -> row transforms -> the view's Delta table."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from featurestore._progress import progress_bar
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.batch import EVENT_TS, read_view_rows
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.view_specs import offline_spec

DAY_US = 86_400_000_000


@dataclass(frozen=True)
class BackfillReport:
    view: str
    rows_read: int
    rows_written: int
    rows_updated: int
    duplicates_dropped: int
    null_keys_dropped: int
    table_version: int | None
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0


def _chunks(start_us: int, end_us: int, chunk_us: int) -> list[tuple[int, int]]:
    out = []
    lo = start_us
    while lo < end_us:
        out.append((lo, min(lo + chunk_us, end_us)))
        lo += chunk_us
    return out


def _time_range(rows: pl.LazyFrame) -> tuple[int, int] | None:
    bounds = rows.select(
        pl.col(EVENT_TS).min().dt.epoch("us").alias("lo"),
        pl.col(EVENT_TS).max().dt.epoch("us").alias("hi"),
    ).collect()
    lo, hi = bounds.row(0)
    return None if lo is None else (int(lo), int(hi) + 1)


def backfill_view(
    view: FeatureViewPlan,
    *,
    repo: Path,
    offline: DeltaOfflineStore,
    start_us: int | None = None,
    end_us: int | None = None,
    mode: str = "merge",
    chunk_days: int = 7,
    progress: bool = False,
) -> BackfillReport:
    """Write the view's rows with ``start <= event_ts < end`` to its offline table.

    ``mode="merge"`` (default) upserts on (keys, event_ts, created_ts), so re-running
    a backfill is idempotent. Work proceeds in chunks of ``chunk_days`` of event time,
    each one atomic Delta commit: a failed run leaves whole chunks, never half of one.
    """
    started = time.perf_counter()
    spec = offline_spec(view)
    if start_us is None or end_us is None:
        found = _time_range(read_view_rows(view, repo=repo, start_us=start_us, end_us=end_us))
        if found is None:
            return BackfillReport(
                view.name, 0, 0, 0, 0, 0, offline.version(view.name), time.perf_counter() - started
            )
        start_us = found[0] if start_us is None else start_us
        end_us = found[1] if end_us is None else end_us
    chunks = _chunks(start_us, end_us, chunk_days * DAY_US)
    read = written = updated = dups = nulls = 0
    with progress_bar(
        f"backfill {view.name}", total=len(chunks), unit="chunks", enabled=progress
    ) as advance:
        for lo, hi in chunks:
            frame = read_view_rows(view, repo=repo, start_us=lo, end_us=hi).collect()
            if frame.height:
                report = offline.write_view(
                    spec, frame, mode="merge" if mode == "merge" else "append"
                )
                read += frame.height
                written += report.rows_written
                updated += report.rows_updated
                dups += report.duplicates_dropped
                nulls += report.null_keys_dropped
            advance(1)
    return BackfillReport(
        view.name,
        read,
        written,
        updated,
        dups,
        nulls,
        offline.version(view.name),
        time.perf_counter() - started,
    )
