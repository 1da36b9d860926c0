"""Backfill: a view's batch source -> row transforms -> the view's Delta table.

Work is chunked by the data, not the calendar: the chunks are groups of UTC dates that
hold rows (at most ``chunk_days`` dates and about ``chunk_rows`` rows each), so a
stray timestamp in the year 9999 adds one small chunk, not eight thousand empty weeks.

A plain view is merged on (keys, event_ts, created_ts): re-runs change nothing, and a
corrected value is updated. An aggregated view's table is an event log (SEMANTICS:
events are a log), whose rows have no identity to merge on, so each chunk *replaces*
its time range with exactly the source's rows in one Delta commit: re-runs commit
nothing, overlapping ranges and corrections leave the source's rows once each, and a
killed run leaves every chunk either as it was or as the source has it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import polars as pl

from featurestore._progress import progress_bar
from featurestore._time import from_us
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.batch import EVENT_TS, read_view_rows
from featurestore.engines.executor import Executor
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import EVENT_DATE, OfflineTableSpec
from featurestore.stores.view_specs import offline_spec

DAY_US = 86_400_000_000
# Rows past now by more than this are counted as implausible (a 9999-12-31 sentinel, a
# timestamp in the wrong unit): still written, but the report warns about them.
FUTURE_SLACK_US = DAY_US


@dataclass(frozen=True)
class BackfillReport:
    """What a backfill of one view did.

    ``rows_written`` counts rows stored (new in a plain view, or written into the
    replaced ranges of an aggregated view); ``rows_replaced`` counts the rows those
    ranges held before. ``duplicates_dropped`` (plain views only) counts rows tied on
    (keys, event_ts, created_ts) with a later one. ``null_timestamps_dropped`` and
    ``null_keys_dropped`` count rows no join can use; ``future_rows`` counts rows more
    than a day after now.
    """

    view: str
    rows_read: int
    rows_written: int
    rows_updated: int
    duplicates_dropped: int
    null_keys_dropped: int
    table_version: int | None
    seconds: float
    event_log: bool = False
    rows_replaced: int = 0
    null_timestamps_dropped: int = 0
    future_rows: int = 0
    chunks: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line for people: what was read and written, and every row left out."""
        parts = [f"{self.rows_read:,} rows read"]
        if self.event_log:
            parts.append(f"{self.rows_written:,} events written")
            parts.append(f"{self.rows_replaced:,} replaced")
        else:
            parts.append(f"{self.rows_written:,} new, {self.rows_updated:,} updated")
            parts.append(f"{self.duplicates_dropped:,} duplicates dropped")
        if self.null_keys_dropped:
            parts.append(f"{self.null_keys_dropped:,} rows with a null key dropped")
        if self.null_timestamps_dropped:
            parts.append(f"{self.null_timestamps_dropped:,} rows with a null timestamp dropped")
        line = (
            f"{self.view}: {', '.join(parts)}; table version {self.table_version} "
            f"in {self.seconds:.2f}s ({self.rows_per_second:,.0f} rows/s)"
        )
        if self.future_rows:
            line += (
                f"; warning: {self.future_rows:,} rows are dated more than a day in the "
                "future (a sentinel or a wrong time unit?)"
            )
        return line


@dataclass(frozen=True)
class _Chunk:
    start_us: int
    end_us: int
    dates: list[dt.date]


def backfill_view(
    view: FeatureViewPlan,
    *,
    repo: Path,
    offline: DeltaOfflineStore,
    start_us: int | None = None,
    end_us: int | None = None,
    mode: str = "merge",
    chunk_days: int = 7,
    chunk_rows: int = 5_000_000,
    progress: bool = False,
    executor: Executor | None = None,
) -> BackfillReport:
    """Write the view's rows with ``start <= event_ts < end`` to its offline table.

    Without a range, the range is the source's own (first to last event). Each chunk
    is one atomic Delta commit. ``mode="append"`` adds rows without any check (for a
    first load known to be new); the default writes idempotently as described in the
    module docstring.

    With an ``executor``, reading and transforming the source runs in its tasks, one
    chunk per task and ``executor.partitions`` chunks at a time; the driver still
    writes each chunk as its own commit, in order (a MERGE or range replace is one
    Delta transaction over the chunk's partitions: splitting it across tasks would
    split its atomicity), so the table ends exactly as after a local run.
    """
    started = time.perf_counter()
    spec = offline_spec(view)
    source = read_view_rows(view, repo=repo)
    stamps = source.select(pl.col(EVENT_TS))
    if start_us is not None:
        stamps = stamps.filter((pl.col(EVENT_TS) >= from_us(start_us)) | pl.col(EVENT_TS).is_null())
    if end_us is not None:
        stamps = stamps.filter((pl.col(EVENT_TS) < from_us(end_us)) | pl.col(EVENT_TS).is_null())
    future_after = from_us(int(time.time() * 1_000_000) + FUTURE_SLACK_US)
    per_date = (
        stamps.group_by(pl.col(EVENT_TS).dt.date().alias(EVENT_DATE))
        .agg(
            pl.len().alias("rows"),
            pl.col(EVENT_TS).min().dt.epoch("us").alias("lo"),
            pl.col(EVENT_TS).max().dt.epoch("us").alias("hi"),
            (pl.col(EVENT_TS) > future_after).sum().alias("future"),
        )
        .collect()
    )
    null_ts = int(per_date.filter(pl.col(EVENT_DATE).is_null())["rows"].sum())
    per_date = per_date.drop_nulls(EVENT_DATE)
    future = int(per_date["future"].sum())
    if per_date.is_empty() and not (spec.event_log and start_us is not None and end_us is not None):
        return BackfillReport(
            view.name,
            0,
            0,
            0,
            0,
            0,
            offline.version(view.name),
            time.perf_counter() - started,
            event_log=spec.event_log,
            null_timestamps_dropped=null_ts,
        )
    lo = int(per_date["lo"].min()) if start_us is None else start_us  # type: ignore[arg-type]
    hi = int(per_date["hi"].max()) + 1 if end_us is None else end_us  # type: ignore[arg-type]
    replace = spec.event_log and mode != "append"
    if replace:
        per_date = _with_stored_dates(per_date, offline, spec, lo, hi)
    chunks = _chunks(per_date, lo, hi, chunk_days=chunk_days, chunk_rows=chunk_rows)
    read = written = updated = replaced = dups = nulls = 0
    with progress_bar(
        f"backfill {view.name}", total=len(chunks), unit="chunks", enabled=progress
    ) as advance:
        for chunk, frame in _chunk_rows(view, repo, chunks, executor):
            read += frame.height
            if frame.height or replace:
                if replace:
                    report = offline.write_view(
                        spec, frame, mode="replace", time_range=(chunk.start_us, chunk.end_us)
                    )
                else:
                    report = offline.write_view(
                        spec, frame, mode="merge" if mode == "merge" else "append"
                    )
                written += report.rows_written
                updated += report.rows_updated
                replaced += report.rows_replaced
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
        event_log=spec.event_log,
        rows_replaced=replaced,
        null_timestamps_dropped=null_ts,
        future_rows=future,
        chunks=len(chunks),
    )


def _read_chunk(chunk: _Chunk, *, view: FeatureViewPlan, repo: Path) -> pl.DataFrame:
    """One chunk's source rows, transformed (a task on an executor)."""
    return read_view_rows(view, repo=repo, start_us=chunk.start_us, end_us=chunk.end_us).collect()


def _chunk_rows(
    view: FeatureViewPlan, repo: Path, chunks: list[_Chunk], executor: Executor | None
) -> Iterator[tuple[_Chunk, pl.DataFrame]]:
    """Each chunk with its rows, in order: read here, or on ``executor`` in waves of
    ``executor.partitions`` chunks (so the driver holds at most that many)."""
    read = partial(_read_chunk, view=view, repo=repo)
    if executor is None:
        for chunk in chunks:
            yield chunk, read(chunk)
        return
    wave = max(executor.partitions, 1)
    for first in range(0, len(chunks), wave):
        batch = chunks[first : first + wave]
        yield from zip(batch, executor.map(read, batch), strict=True)


def _with_stored_dates(
    per_date: pl.DataFrame, offline: DeltaOfflineStore, spec: OfflineTableSpec, lo: int, hi: int
) -> pl.DataFrame:
    """Add the dates the table holds within [lo, hi) but the source no longer does: a
    replace must visit them too, to remove the rows the source dropped."""
    if not offline.exists(spec.name):
        return per_date
    stored = (
        offline.read_view(spec, start_us=lo, end_us=hi, columns=[EVENT_DATE])
        .unique()
        .collect()
        .filter(~pl.col(EVENT_DATE).is_in(per_date[EVENT_DATE].implode()))
    )
    if stored.is_empty():
        return per_date
    extra = stored.with_columns(
        pl.lit(0, pl.UInt32).alias("rows"),
        pl.lit(None, pl.Int64).alias("lo"),
        pl.lit(None, pl.Int64).alias("hi"),
        pl.lit(0, pl.UInt32).alias("future"),
    )
    return pl.concat([per_date, extra.select(per_date.columns)], how="vertical_relaxed")


def _chunks(
    per_date: pl.DataFrame, lo: int, hi: int, *, chunk_days: int, chunk_rows: int
) -> list[_Chunk]:
    """Cut [lo, hi) at midnights into chunks of the dates with data: each chunk has at
    most ``chunk_days`` such dates and, unless one date alone is larger, ``chunk_rows``
    rows. The chunks cover [lo, hi) whole, empty stretches included."""
    groups: list[list[dt.date]] = []
    size = 0
    for day, rows in per_date.sort(EVENT_DATE).select(EVENT_DATE, "rows").iter_rows():
        if not groups or len(groups[-1]) >= chunk_days or size + rows > chunk_rows:
            groups.append([])
            size = 0
        groups[-1].append(day)
        size += rows
    if not groups:
        return [_Chunk(lo, hi, [])]
    starts = [lo] + [max(lo, _midnight_us(g[0])) for g in groups[1:]]
    ends = [*starts[1:], hi]
    return [_Chunk(s, e, g) for s, e, g in zip(starts, ends, groups, strict=True)]


def _midnight_us(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY_US
