"""Materialization: the latest offline row per entity -> the online store.

Writes are compare-and-set on (event_ts, created_ts), so the order in which chunks
arrive does not matter and re-running is idempotent: a newer record online is never
replaced by an older one. Rows already past the online retention are not written
(``featurestore.config.OnlineRetention``; ``retention = "none"`` keeps historical
data).

Module order: ``report`` <- ``partitioned`` <- ``aggregates`` <- ``online`` (no
module imports one above).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import polars as pl

from featurestore._progress import progress_bar
from featurestore.compile.views import FeatureViewPlan
from featurestore.config import OnlineRetention
from featurestore.engines.batch import latest_per_entity
from featurestore.engines.executor import Executor
from featurestore.engines.executor.slices import gather
from featurestore.materialize.aggregates import materialize_aggregates
from featurestore.materialize.partitioned import OnlineTarget, run_partitioned
from featurestore.materialize.report import MaterializeReport, report_for
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online.base import OnlineStore, OnlineViewSchema, WriteBatch, WriteStats
from featurestore.stores.view_specs import offline_spec, online_schema

__all__ = ["MaterializeReport", "latest_per_entity", "materialize_view"]


def materialize_view(
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
    """Push, per entity, the latest row with ``start <= event_ts <= end`` online.

    An aggregated view gets its aggregate records as of ``end`` instead
    (``materialize.aggregates``). ``retention`` is the project's online retention
    (``Settings.online_retention``; default ``"2x ttl"``): rows already past it are
    not written and are counted in ``skipped_expired``; when that is every row, the
    report's ``hint`` says how to keep them.

    With an ``executor``, the entities are cut by key hash into its partitions and
    each partition is computed and written by one task (``materialize.partitioned``);
    a task not in this process opens the online store from ``online_url``."""
    if view.aggregations:
        return materialize_aggregates(
            view,
            project=project,
            offline=offline,
            online=online,
            end_us=end_us,
            start_us=start_us,
            chunk_rows=chunk_rows,
            progress=progress,
            retention=retention,
            executor=executor,
            online_url=online_url,
        )
    started = time.perf_counter()
    schema = online_schema(project, view, retention=retention)
    if not offline.exists(view.name):
        return report_for(
            view,
            retention,
            start_us=start_us,
            end_us=end_us,
            seconds=time.perf_counter() - started,
        )
    if executor is not None:
        task = partial(
            _partition_latest,
            keys=view.join_keys,
            schema=schema,
            target=OnlineTarget.for_executor(executor, online=online, url=online_url),
            chunk_rows=chunk_rows,
        )
        entities, stats = run_partitioned(
            view,
            offline=offline,
            executor=executor,
            start_us=start_us,
            end_us=end_us + 1,
            reduce_fn=task,
        )
    else:
        rows = offline.read_view(offline_spec(view), start_us=start_us, end_us=end_us + 1)
        latest = latest_per_entity(rows, view.join_keys).collect(engine="streaming")
        entities = latest.height
        with progress_bar(
            f"materialize {view.name}", total=latest.height, unit="entities", enabled=progress
        ) as advance:
            stats = _write_latest(online, schema, latest, chunk_rows=chunk_rows, advance=advance)
    return report_for(
        view,
        retention,
        start_us=start_us,
        end_us=end_us,
        entities=entities,
        stats=stats,
        seconds=time.perf_counter() - started,
    )


def _partition_latest(
    part: int,
    pieces: list[pl.DataFrame],
    *,
    keys: tuple[str, ...],
    schema: OnlineViewSchema,
    target: OnlineTarget,
    chunk_rows: int,
) -> tuple[int, WriteStats]:
    """A reduce task: the latest row of each entity of one key partition, written."""
    latest = latest_per_entity(gather(pieces).lazy(), keys).collect()
    if not latest.height:
        return 0, WriteStats()
    with target.open() as online:
        return latest.height, _write_latest(online, schema, latest, chunk_rows=chunk_rows)


def _write_latest(
    online: OnlineStore,
    schema: OnlineViewSchema,
    latest: pl.DataFrame,
    *,
    chunk_rows: int,
    advance: Callable[[int], object] | None = None,
) -> WriteStats:
    """Compare-and-set ``latest`` (one row per entity), ``chunk_rows`` at a time."""
    stats = WriteStats()
    for offset in range(0, latest.height, chunk_rows):
        chunk = latest.slice(offset, chunk_rows)
        stats = stats + online.write(schema, WriteBatch.from_frame(chunk, schema=schema))
        if advance is not None:
            advance(chunk.height)
    return stats
