"""Materialization: the latest offline row per entity -> the online store.

Writes are compare-and-set on (event_ts, created_ts), so the order in which chunks
arrive does not matter and re-running is idempotent: a newer record online is never
replaced by an older one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from featurestore._progress import progress_bar
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.batch import latest_per_entity
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online.base import OnlineStore, WriteBatch
from featurestore.stores.view_specs import offline_spec, online_schema


@dataclass(frozen=True)
class MaterializeReport:
    view: str
    start_us: int | None
    end_us: int
    entities: int
    written: int
    skipped_stale: int
    seconds: float
    skipped_expired: int = 0

    @property
    def rows_per_second(self) -> float:
        return self.entities / self.seconds if self.seconds > 0 else 0.0


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
) -> MaterializeReport:
    """Push, per entity, the latest row with ``start <= event_ts <= end`` online.

    An aggregated view gets its aggregate records as of ``end`` instead
    (``materialize.aggregates``)."""
    if view.aggregations:
        from featurestore.materialize.aggregates import materialize_aggregates

        return materialize_aggregates(
            view,
            project=project,
            offline=offline,
            online=online,
            end_us=end_us,
            start_us=start_us,
            chunk_rows=chunk_rows,
            progress=progress,
        )
    started = time.perf_counter()
    schema = online_schema(project, view)
    if not offline.exists(view.name):
        return MaterializeReport(
            view.name, start_us, end_us, 0, 0, 0, time.perf_counter() - started
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
    seconds = time.perf_counter() - started
    return MaterializeReport(
        view.name, start_us, end_us, latest.height, written, skipped, seconds, expired
    )
