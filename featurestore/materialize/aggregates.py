"""Materialization of an aggregated view: stored events -> one aggregate record per
entity in the online store (layout and exactness: ``engines.aggregate.online``).

Materializing up to ``T`` reads the events every window can still need at a request
time ``r >= T``: ``event_ts`` in ``(floor(T, hop) - window, T]`` for the widest
window, or every event up to ``T`` when a window is a lifetime. ``start_us`` (the
incremental watermark) does not narrow that read: a record must summarise whole
windows, not only the events that arrived since the last run.

Records are written with ``event_ts = T`` and ``created_ts`` = the wall clock, so
compare-and-set keeps the record of the latest ``T`` and, for the same ``T``, the
latest run (which may have seen late events the previous run had not).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from featurestore._progress import progress_bar
from featurestore._time import now_us
from featurestore.compile.expr import expr_from_spec
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.aggregate.online import Slots, build_slots, check_spec, encode_records
from featurestore.engines.aggregate.spec import WindowSpec
from featurestore.errors import DefinitionError
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online.base import OnlineStore, WriteBatch
from featurestore.stores.view_specs import RECORD_COLUMN, offline_spec, online_schema

if TYPE_CHECKING:
    from featurestore.materialize.online import MaterializeReport

_ENTITY = "__fs_entity"


def window_specs(view: FeatureViewPlan) -> list[WindowSpec]:
    """The ``WindowSpec`` of each aggregation of ``view``, in declaration order."""
    specs = [WindowSpec(a["function"], a["window_us"], a["hop_us"]) for a in view.aggregations]
    for a, spec in zip(view.aggregations, specs, strict=True):
        check_spec(spec, obj=f"feature view {view.name!r} aggregation {a['name']!r}")
    return specs


def events_start(specs: list[WindowSpec], *, end_us: int) -> int | None:
    """The first ``event_ts`` any window can need at a request time ``>= end_us``."""
    starts = []
    for s in specs:
        if s.window_us is None:
            return None
        starts.append(s.query_time(end_us) - s.window_us + 1)
    return min(starts) if starts else end_us


def _values(series: pl.Series, *, obj: str) -> tuple[np.ndarray, np.ndarray]:
    """Numpy values for ``state.from_events`` and the not-null mask."""
    valid = series.is_not_null().to_numpy()
    dt = series.dtype
    if dt == pl.Boolean:
        return series.fill_null(False).to_numpy(), valid
    if dt.is_numeric() and not dt.is_decimal():
        return series.fill_null(0).to_numpy(), valid
    if dt.is_temporal():
        # Physical units (days, microseconds); the lookup converts min/max/first/last back.
        return series.to_physical().fill_null(0).cast(pl.Int64).to_numpy(), valid
    if dt == pl.String or isinstance(dt, pl.Categorical | pl.Enum):
        return np.array(series.cast(pl.String).fill_null("").to_list(), dtype=object), valid
    raise DefinitionError(
        f"cannot serve an aggregation of a {dt} column online",
        obj=obj,
        field=series.name,
        hint="Online aggregations take numbers, bools, strings, dates and datetimes",
    )


def build_records(
    view: FeatureViewPlan, events: pl.DataFrame, *, end_us: int
) -> tuple[pl.DataFrame, list[str]]:
    """(the entities' keys, one encoded record each) as of ``end_us`` from ``events``
    (keys, ``event_ts``/``created_ts`` as UTC datetimes, the aggregated columns)."""
    obj = f"feature view {view.name!r}"
    keys = list(view.join_keys)
    specs = window_specs(view)
    events = events.drop_nulls(keys)
    uniq = events.select(keys).unique(maintain_order=True).with_row_index(_ENTITY)
    coded = events.join(uniq, on=keys, how="left", maintain_order="left")
    entities = coded[_ENTITY].cast(pl.Int64).to_numpy()
    ets = coded["event_ts"].dt.epoch("us").to_numpy()
    cts = coded["created_ts"].dt.epoch("us").to_numpy()
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    slots: list[Slots] = []
    for agg, spec in zip(view.aggregations, specs, strict=True):
        column: Any = agg["column"]
        values: np.ndarray | None = None
        valid: np.ndarray | None = None
        if column is not None:
            sid = column if isinstance(column, str) else repr(column)
            if sid not in cache:
                expr = pl.col(column) if isinstance(column, str) else expr_from_spec(column["expr"])
                series = coded.select(expr.alias(agg["name"])).to_series()
                cache[sid] = _values(series, obj=f"{obj} aggregation {agg['name']!r}")
            values, valid = cache[sid]
        slots.append(
            build_slots(
                spec,
                at_us=end_us,
                entities=entities,
                n_entities=uniq.height,
                event_ts=ets,
                created_ts=cts,
                values=values,
                valid=valid,
            )
        )
    records = encode_records(at_us=end_us, slots=slots, n_entities=uniq.height)
    return uniq.drop(_ENTITY), records


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
) -> MaterializeReport:
    """Write, per entity with events in reach of ``end_us``, its aggregate record."""
    from featurestore.materialize.online import MaterializeReport

    started = time.perf_counter()
    if not offline.exists(view.name):
        return MaterializeReport(view.name, start_us, end_us, 0, 0, 0, 0.0)
    schema = online_schema(project, view)
    specs = window_specs(view)
    events = offline.read_view(
        offline_spec(view), start_us=events_start(specs, end_us=end_us), end_us=end_us + 1
    ).collect()
    keys, records = build_records(view, events, end_us=end_us)
    written = skipped = expired = 0
    stamp = now_us()
    with progress_bar(
        f"materialize {view.name}", total=keys.height, unit="entities", enabled=progress
    ) as advance:
        for offset in range(0, keys.height, chunk_rows):
            chunk = keys.slice(offset, chunk_rows)
            n = chunk.height
            batch = WriteBatch(
                keys={k: chunk[k] for k in view.join_keys},
                event_ts=np.full(n, end_us, np.int64),
                created_ts=np.full(n, stamp, np.int64),
                features={RECORD_COLUMN: records[offset : offset + n]},
            )
            stats = online.write(schema, batch)
            written += stats.written
            skipped += stats.skipped_stale
            expired += stats.skipped_expired
            advance(n)
    seconds = time.perf_counter() - started
    return MaterializeReport(
        view.name, start_us, end_us, keys.height, written, skipped, seconds, expired
    )
