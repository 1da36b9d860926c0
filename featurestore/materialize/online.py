"""Materialization: the latest offline row per entity -> the online store.

Writes are compare-and-set on (event_ts, created_ts), so the order in which chunks
arrive does not matter and re-running is idempotent: a newer record online is never
replaced by an older one. Rows already past the online retention are not written
(``featurestore.config.OnlineRetention``; ``retention = "none"`` keeps historical
data).

Module order: ``report`` <- ``aggregates`` <- ``online`` (no module imports one above).
"""

from __future__ import annotations

import time

from featurestore._progress import progress_bar
from featurestore.compile.views import FeatureViewPlan
from featurestore.config import OnlineRetention
from featurestore.engines.batch import latest_per_entity
from featurestore.materialize.aggregates import materialize_aggregates
from featurestore.materialize.report import MaterializeReport, report_for
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online.base import OnlineStore, WriteBatch
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
) -> MaterializeReport:
    """Push, per entity, the latest row with ``start <= event_ts <= end`` online.

    An aggregated view gets its aggregate records as of ``end`` instead
    (``materialize.aggregates``). ``retention`` is the project's online retention
    (``Settings.online_retention``; default ``"2x ttl"``): rows already past it are
    not written and are counted in ``skipped_expired``; when that is every row, the
    report's ``hint`` says how to keep them."""
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
    rows = offline.read_view(offline_spec(view), start_us=start_us, end_us=end_us + 1)
    latest = latest_per_entity(rows, view.join_keys).collect(engine="streaming")
    written = skipped = expired = 0
    with progress_bar(
        f"materialize {view.name}", total=latest.height, unit="entities", enabled=progress
    ) as advance:
        for offset in range(0, latest.height, chunk_rows):
            chunk = latest.slice(offset, chunk_rows)
            stats = online.write(schema, WriteBatch.from_frame(chunk, schema=schema))
            written += stats.written
            skipped += stats.skipped_stale
            expired += stats.skipped_expired
            advance(chunk.height)
    return report_for(
        view,
        retention,
        start_us=start_us,
        end_us=end_us,
        entities=latest.height,
        written=written,
        skipped_stale=skipped,
        skipped_expired=expired,
        seconds=time.perf_counter() - started,
    )
