"""Materialization of an aggregated view: stored events -> one aggregate record per
entity in the online store (layout and exactness: ``engines.aggregate.online``).

Materializing up to ``T`` reads the events every window can still need at a request
time ``r >= T``: ``event_ts`` in ``(floor(T, hop) - window, T]`` for the widest
window, or every event up to ``T`` when a window is a lifetime. ``start_us`` (the
incremental watermark) does not narrow that read: a record must summarise whole
windows, not only the events that arrived since the last run.

Records are written with ``event_ts = T`` and ``created_ts`` = the wall clock, so
compare-and-set keeps the record of the latest ``T`` and, for the same ``T``, the
latest run (which may have seen late events the previous run had not). They are
kept for the view's online retention: by default the longest window plus its hop
past ``T`` (a record older than that counts no event at any later request time),
and forever with a lifetime window.

A record the stream worker keeps (it carries Kafka offset marks) is never replaced:
it holds events that may not have reached Delta yet, and its marks are what makes
the worker's replays exactly-once. Such entities count as skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import numpy as np
import polars as pl

from featurestore._progress import progress_bar
from featurestore._time import now_us
from featurestore.compile.views import FeatureViewPlan
from featurestore.config import OnlineRetention
from featurestore.engines.aggregate.records import decode
from featurestore.engines.aggregate.view_records import build_records, events_start, window_specs
from featurestore.engines.executor import Executor
from featurestore.engines.executor.slices import gather
from featurestore.materialize.partitioned import OnlineTarget, run_partitioned
from featurestore.materialize.report import MaterializeReport, report_for
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online.base import (
    OnlineStore,
    OnlineViewSchema,
    ReadRequest,
    WriteBatch,
    WriteStats,
)
from featurestore.stores.view_specs import RECORD_COLUMN, offline_spec, online_schema


def materialize_aggregates(
    view: FeatureViewPlan,
    *,
    project: str,
    offline: DeltaOfflineStore,
    online: OnlineStore,
    end_us: int,
    start_us: int | None = None,
    chunk_rows: int = 50_000,
    progress: bool = False,
    retention: OnlineRetention | None = None,
    executor: Executor | None = None,
    online_url: str | None = None,
) -> MaterializeReport:
    """Write, per entity with events in reach of ``end_us``, its aggregate record,
    kept online for the view's ``retention`` (default: its longest window plus hop).
    With an ``executor``, the entities are cut by key hash into its partitions and
    each partition is built and written by one task (``materialize.partitioned``)."""
    started = time.perf_counter()
    if not offline.exists(view.name):
        return report_for(view, retention, start_us=start_us, end_us=end_us)
    schema = online_schema(project, view, retention=retention)
    events_from = events_start(window_specs(view), end_us=end_us)
    stamp = now_us()
    if executor is not None:
        task = partial(
            _partition_records,
            view=view,
            schema=schema,
            target=OnlineTarget.for_executor(executor, online=online, url=online_url),
            end_us=end_us,
            stamp=stamp,
            chunk_rows=chunk_rows,
        )
        entities, stats = run_partitioned(
            view,
            offline=offline,
            executor=executor,
            start_us=events_from,
            end_us=end_us + 1,
            reduce_fn=task,
        )
    else:
        events = offline.read_view(
            offline_spec(view), start_us=events_from, end_us=end_us + 1
        ).collect()
        keys, records = build_records(view, events, end_us=end_us)
        entities = keys.height
        with progress_bar(
            f"materialize {view.name}", total=keys.height, unit="entities", enabled=progress
        ) as advance:
            stats = write_records(
                view,
                online,
                schema,
                keys,
                records,
                end_us=end_us,
                stamp=stamp,
                chunk_rows=chunk_rows,
                advance=advance,
            )
    return report_for(
        view,
        retention,
        start_us=start_us,
        end_us=end_us,
        entities=entities,
        stats=stats,
        seconds=time.perf_counter() - started,
    )


def _partition_records(
    part: int,
    pieces: list[pl.DataFrame],
    *,
    view: FeatureViewPlan,
    schema: OnlineViewSchema,
    target: OnlineTarget,
    end_us: int,
    stamp: int,
    chunk_rows: int,
) -> tuple[int, WriteStats]:
    """A reduce task: the records of one key partition's entities, written."""
    keys, records = build_records(view, gather(pieces), end_us=end_us)
    if not keys.height:
        return 0, WriteStats()
    with target.open() as online:
        stats = write_records(
            view, online, schema, keys, records, end_us=end_us, stamp=stamp, chunk_rows=chunk_rows
        )
    return keys.height, stats


def write_records(
    view: FeatureViewPlan,
    online: OnlineStore,
    schema: OnlineViewSchema,
    keys: pl.DataFrame,
    records: list[str],
    *,
    end_us: int,
    stamp: int,
    chunk_rows: int,
    advance: Callable[[int], object] | None = None,
) -> WriteStats:
    """Compare-and-set the entities' records at ``(end_us, stamp)``, ``chunk_rows`` at
    a time, leaving alone the records the stream worker keeps (counted as stale)."""
    stats = WriteStats()
    for offset in range(0, keys.height, chunk_rows):
        chunk = keys.slice(offset, chunk_rows)
        texts = records[offset : offset + chunk.height]
        if advance is not None:
            advance(chunk.height)
        if view.source.spec.get("type") == "kafka":
            owned = _stream_owned(view, online, schema, chunk)
            stats = stats + WriteStats(skipped_stale=int(owned.sum()))
            chunk, texts = (
                chunk.filter(~owned),
                [t for t, o in zip(texts, owned, strict=True) if not o],
            )
        n = chunk.height
        if not n:
            continue
        batch = WriteBatch(
            keys={k: chunk[k] for k in view.join_keys},
            event_ts=np.full(n, end_us, np.int64),
            created_ts=np.full(n, stamp, np.int64),
            features={RECORD_COLUMN: texts},
        )
        stats = stats + online.write(schema, batch)
    return stats


def _stream_owned(
    view: FeatureViewPlan, online: OnlineStore, schema: OnlineViewSchema, keys: pl.DataFrame
) -> np.ndarray:
    """Per entity of ``keys``: does its stored record carry the stream worker's marks?"""
    request = ReadRequest(
        schema, {k: keys[k].to_list() for k in view.join_keys}, features=[RECORD_COLUMN]
    )
    (result,) = online.read([request])
    texts = result.features[RECORD_COLUMN]
    have = np.array([i for i, t in enumerate(texts) if t is not None], np.int64)
    functions = [a["function"] for a in view.aggregations]
    _, _, marks = decode([texts[i] for i in have], functions=functions)
    owned = np.zeros(keys.height, bool)
    owned[have] = np.diff(marks.offsets) > 0
    return owned
