"""Push: an application writes a view's source rows itself (``FeatureStore.push``,
``POST /v1/push``, ``featurestore push``).

A push is one micro-batch of the stream, made by hand. The rows go through the
code the stream runs, in the order it runs it:

1. ``ViewTransform`` (the batch engine's ``transform_rows``): timestamps checked,
   row transforms applied, columns cast. Any refused row refuses the whole push
   with an error naming the row and the field; nothing has been written yet.
2. Online, the view's stream sink: ``OnlineLatestSink`` (the newest row per entity,
   compare-and-set on (``event_ts``, ``created_ts``)) or, for windowed
   aggregations, ``AggregateSink`` (the rows folded into each entity's record).
3. Offline, one Delta commit (``write_view(mode="merge")``): a plain view's rows
   are matched on (keys, ``event_ts``, ``created_ts``); an aggregated view's table
   is an event log whose rows are matched on ``_record_id`` =
   ``push/<push_id>/<row>``.

Replays. Given the same ``push_id``, a push is exactly-once, however often it is
retried after any failure: the plain view's writes are idempotent by their
timestamps; the aggregate records carry a *mark* per recent push (the stream's
per-partition marks, with a pseudo-partition hashed from the push id: negative,
so never a Kafka partition) and skip rows they already hold; the offline merge
inserts only missing record ids. Two pushes with equal rows and different ids are
two sets of events and both count. A push mark is kept for ``replay_window_s``
after the push (a replay later than that counts again) and the pseudo-partition is
31 bits of a hash: two ids of one entity that collide within the window lose the
second push online (about 1 in 4 million for 1,000 pushes per entity and window).

Online is written before offline: a batch ``materialize`` reading the table while a
push is half done then misses the rows (the next push or run brings them) rather
than folding them in twice.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import polars as pl

from featurestore._time import now_us
from featurestore.compile.views import FeatureViewPlan
from featurestore.config import OnlineRetention
from featurestore.engines.aggregate.records import Marks
from featurestore.engines.batch import view_columns
from featurestore.engines.stream.aggregates import AggregateSink
from featurestore.engines.stream.decode import INDEX, META_COLUMNS, OFFSET, PARTITION, RECORD_TS
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.engines.stream.sinks import OnlineLatestSink, ViewBatch
from featurestore.engines.stream.transform import ViewTransform
from featurestore.errors import (
    DataError,
    OnlineStoreError,
    OnlineStoreUnavailable,
    RequestError,
    StreamError,
)
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import RECORD_ID
from featurestore.stores.online.base import OnlineStore
from featurestore.stores.view_specs import offline_spec

PUSH_TOPIC = "push"
PUSH_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
DEFAULT_REPLAY_WINDOW_S = 7 * 86_400.0
_MAX_REJECTS_SHOWN = 5
_AGGREGATE_ATTEMPTS = 5  # a lost compare-and-set race is retried (the marks make it safe)

# One fold at a time per aggregated view in this process: two pushes folding into
# the same record at once would lose one update (see engines/stream/aggregates.py).
_fold_locks: dict[str, threading.Lock] = {}
_fold_locks_guard = threading.Lock()

Rows = pl.DataFrame | Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | Any


@dataclass(frozen=True)
class PushReport:
    """What one push did. ``online_written`` counts records replaced; ``online_skipped``
    counts rows or records that changed nothing (older than the stored value, or
    already folded in by an earlier push with this id)."""

    view: str
    push_id: str
    rows: int
    online_written: int
    online_skipped: int
    offline_written: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def push_partition(push_id: str) -> int:
    """The pseudo Kafka partition of a push: 31 bits of a hash of its id, negated."""
    digest = hashlib.blake2b(push_id.encode(), digest_size=4).digest()
    return -1 - (int.from_bytes(digest, "little") & 0x7FFFFFFF)


def check_push_id(push_id: str | None) -> str:
    """The push id to use: the caller's, checked, or a fresh one (not replay-safe)."""
    if push_id is None:
        return uuid.uuid4().hex
    if not isinstance(push_id, str) or not PUSH_ID.fullmatch(push_id):
        raise RequestError(
            "must be 1 to 128 characters of letters, digits and . _ : / -",
            obj="push",
            field="push_id",
            value=push_id,
            hint="use an id that names this batch of rows, e.g. a UUID or 'orders-2024-05-01-17'",
        )
    return push_id


def to_frame(rows: Rows, view: FeatureViewPlan) -> pl.DataFrame:
    """The pushed rows as a Polars frame: a DataFrame (Polars or pandas), columns
    (name -> values) or records (a list of objects). Values from JSON are typed here:
    the event and created timestamps are ISO-8601 strings with a zone."""
    if type(rows).__module__.startswith("pandas"):
        rows = pl.from_pandas(rows)
    if isinstance(rows, pl.DataFrame):
        source = view.source
        stamps = {source.timestamp_field, source.created_timestamp_field} - {None}
        text = [c for c in rows.columns if c in stamps and rows.schema[c] == pl.String]
        return rows.with_columns(_timestamps(c, rows[c].to_list(), view) for c in text)
    if isinstance(rows, Mapping):
        columns = dict(rows)
    elif isinstance(rows, Sequence) and not isinstance(rows, str | bytes):
        columns = _records_to_columns(rows)
    else:
        raise RequestError(
            "rows must be columns (an object of lists) or records (a list of objects)",
            obj=f"push to feature view {view.name!r}",
            field="rows",
            value=type(rows).__name__,
            hint='send {"rows": {"col": [v1, v2]}} or {"rows": [{"col": v1}, {"col": v2}]}',
        )
    return _typed(columns, view)


def _records_to_columns(records: Sequence[Any]) -> dict[str, list[Any]]:
    if not records:
        return {}
    if not all(isinstance(r, Mapping) for r in records):
        bad = next(i for i, r in enumerate(records) if not isinstance(r, Mapping))
        raise RequestError(
            "every row must be an object",
            obj="push",
            field=f"rows[{bad}]",
            value=records[bad],
            hint='send {"rows": [{"col": v1}, {"col": v2}]}',
        )
    names = list(records[0])
    for i, record in enumerate(records):
        if set(record) != set(names):
            missing = sorted(set(names) - set(record)) or sorted(set(record) - set(names))
            raise RequestError(
                "every row must have the same fields",
                obj="push",
                field=f"rows[{i}].{missing[0]}",
                value=sorted(record),
                hint=f"row 0 has the fields {sorted(names)}; send null for a missing value",
            )
    return {n: [r[n] for r in records] for n in names}


def _typed(columns: Mapping[str, Sequence[Any]], view: FeatureViewPlan) -> pl.DataFrame:
    lengths = {len(v) for v in columns.values() if isinstance(v, Sequence)}
    if len(lengths) > 1 or any(not isinstance(v, Sequence) for v in columns.values()):
        raise RequestError(
            "every column must be a list, all of the same length",
            obj=f"push to feature view {view.name!r}",
            field="rows",
            value={
                k: len(v) if isinstance(v, Sequence) else type(v).__name__
                for k, v in columns.items()
            },
        )
    source = view.source
    stamps = {source.timestamp_field, source.created_timestamp_field} - {None}
    series = []
    for name, values in columns.items():
        if name in stamps:
            series.append(_timestamps(name, values, view))
            continue
        try:
            series.append(pl.Series(name, list(values), strict=True))
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            kinds = sorted({type(v).__name__ for v in values if v is not None})
            raise DataError(
                "the values have different types",
                obj=f"push to feature view {view.name!r}",
                field=name,
                value=kinds,
                hint="send one JSON type per column (null for a missing value)",
            ) from None
    return pl.DataFrame(series)


def _timestamps(name: str, values: Sequence[Any], view: FeatureViewPlan) -> pl.Series:
    out: list[datetime | None] = []
    for i, value in enumerate(values):
        try:
            if value is None:
                out.append(None)
                continue
            stamp = value if isinstance(value, datetime) else datetime.fromisoformat(value)
            if stamp.tzinfo is None:
                raise ValueError("naive")
            out.append(stamp.astimezone(UTC))
        except (TypeError, ValueError):
            raise DataError(
                "a timestamp must be an ISO-8601 string with a time zone",
                obj=f"push to feature view {view.name!r}",
                field=f"rows[{i}].{name}",
                value=value,
                hint="e.g. '2024-05-01T12:00:00Z' or '2024-05-01T14:00:00+02:00'",
            ) from None
    return pl.Series(name, out, dtype=pl.Datetime("us", "UTC"))


def view_rows(view: FeatureViewPlan, raw: pl.DataFrame, *, push_id: str) -> pl.DataFrame:
    """The view's rows of a push (with the stream's meta columns), or a ``DataError``
    naming the first refused rows: the whole push is refused."""
    obj = f"push to feature view {view.name!r}"
    if raw.height == 0:
        raise RequestError("no rows to push", obj=obj, field="rows", value=0)
    source = view.source
    transform = ViewTransform(
        view,
        timestamp_field=source.timestamp_field,
        # no created column: created_ts = event_ts, as in the backfill (deterministic,
        # so a replay writes the same rows)
        created_timestamp_field=source.created_timestamp_field or source.timestamp_field,
    )
    meta = raw.with_columns(
        pl.lit(now_us()).cast(pl.Datetime("us", "UTC")).alias(RECORD_TS),
        pl.lit(push_partition(push_id), pl.Int32).alias(PARTITION),
        pl.int_range(raw.height, dtype=pl.Int64).alias(OFFSET),
        pl.int_range(raw.height, dtype=pl.Int32).alias(INDEX),
    )
    missing = [c for c in _needed(view) if c not in raw.columns]
    if missing:
        raise DataError(
            f"columns {missing} are missing from the pushed rows",
            obj=obj,
            field=missing[0],
            value=raw.columns,
            hint="send every column of the view's source that its features read",
        )
    try:
        transform.check(meta.clear())  # a missing column: one error, not one per row
    except pl.exceptions.PolarsError as exc:
        raise DataError(
            f"the rows do not fit the view's transforms: {str(exc).splitlines()[0]}",
            obj=obj,
            field="rows",
            value={c: str(t) for c, t in raw.schema.items()},
            hint="send the columns of the view's source with their types",
        ) from None
    for column in {source.timestamp_field, source.created_timestamp_field} - {None}:
        nulls = meta.select(pl.arg_where(pl.col(str(column)).is_null())).to_series()
        if nulls.len():
            raise DataError(
                "the timestamp is null",
                obj=obj,
                field=f"rows[{nulls[0]}].{column}",
                value=f"{nulls.len()} row(s) with a null {column}",
                hint="every pushed row needs its event (and created) time",
            )
    result = transform.apply(meta)
    if result.rejects:
        shown = "; ".join(f"row {r.index}: {r.detail}" for r in result.rejects[:_MAX_REJECTS_SHOWN])
        first = result.rejects[0]
        raise DataError(
            f"{len(result.rejects)} of {raw.height} row(s) refused ({shown})",
            obj=obj,
            field=f"rows[{first.index}]",
            value=first.reason,
            hint="fix these rows and push again with the same push_id; nothing was written",
        )
    return result.frame


def _needed(view: FeatureViewPlan) -> list[str]:
    """The source columns a view reads: keys and features not made by a transform,
    the columns the transforms read, and the timestamps."""
    made = view.transform_exprs
    source = view.source
    needed = dict.fromkeys(c for c in view_columns(view) if c not in made)
    for expr in made.values():
        needed.update(dict.fromkeys(n for n in expr.meta.root_names() if n not in made))
    needed.update(dict.fromkeys([source.timestamp_field]))
    if source.created_timestamp_field:
        needed.update(dict.fromkeys([source.created_timestamp_field]))
    return list(needed)


class _PushAggregateSink(AggregateSink):
    """The stream's aggregate sink, whose push marks hold the time of the push (so that
    any row index of a replay is below them) and are dropped after the replay window."""

    def __init__(self, *args: Any, partition: int, replay_window_s: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.partition = partition
        self.replay_window_us = int(replay_window_s * 1_000_000)

    def _marks(  # type: ignore[override]
        self, ev: Any, fresh: np.ndarray, mark_entity: np.ndarray, old: Marks, n: int
    ) -> Marks:
        merged = AggregateSink._marks(ev, fresh, mark_entity, old, n)
        now = now_us()
        entity = np.repeat(np.arange(n), np.diff(merged.offsets))
        nxt = merged.next_offset.copy()
        mine = merged.partition == self.partition
        nxt[mine] = np.maximum(nxt[mine], now)
        keep = (merged.partition >= 0) | mine | (nxt >= now - self.replay_window_us)
        counts = np.bincount(entity[keep], minlength=n)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        return Marks(offsets=offsets, partition=merged.partition[keep], next_offset=nxt[keep])


def _fold_lock(key: str) -> threading.Lock:
    with _fold_locks_guard:
        return _fold_locks.setdefault(key, threading.Lock())


def push_online(
    view: FeatureViewPlan,
    rows: pl.DataFrame,
    *,
    project: str,
    online: OnlineStore,
    push_id: str,
    retention: OnlineRetention | None,
    retry_s: float,
    replay_window_s: float,
) -> tuple[int, int]:
    """Write a push's view rows online as the stream would; (written, skipped)."""
    metrics = StreamMetrics()
    batch = ViewBatch(view, PUSH_TOPIC, rows)
    common: dict[str, Any] = {
        "project": project,
        "online": online,
        "metrics": metrics,
        "retry_s": retry_s,
        "retention": retention,
    }
    try:
        if not view.aggregations:
            sink = OnlineLatestSink(view, **common)
            sink.write(batch)
            sink.checkpoint({})
            return int(metrics.online_written.total()), int(metrics.online_stale.total())
        agg = _PushAggregateSink(
            view, partition=push_partition(push_id), replay_window_s=replay_window_s, **common
        )
        with _fold_lock(f"{project}/{agg.schema.schema_id}"):
            for _ in range(_AGGREGATE_ATTEMPTS):
                before = metrics.aggregate_conflicts.total()
                agg.write(batch)
                agg.checkpoint({})
                if metrics.aggregate_conflicts.total() == before:
                    break  # else another writer won some records: fold those again
        return int(metrics.online_written.total()), int(metrics.aggregate_skipped.total())
    except StreamError as exc:
        cause = exc.__cause__
        if exc.retryable:
            raise OnlineStoreUnavailable(
                f"the online write failed: {cause or exc}",
                obj=f"push to feature view {view.name!r}",
                hint="push again with the same push_id when the store is back: "
                "rows already written are not written twice",
            ) from exc
        raise OnlineStoreError(
            f"the online write failed: {cause or exc}",
            obj=f"push to feature view {view.name!r}",
            hint=exc.hint,
        ) from exc


def push_offline(
    view: FeatureViewPlan, rows: pl.DataFrame, *, offline: DeltaOfflineStore, push_id: str
) -> int:
    """Merge a push's view rows into the view's Delta table (one commit); rows written."""
    spec = offline_spec(view)
    if spec.event_log:
        rows = rows.with_columns(
            pl.format(f"{PUSH_TOPIC}/{push_id}/{{}}", pl.col(INDEX)).alias(RECORD_ID)
        )
    report = offline.write_view(spec, rows.drop(META_COLUMNS), mode="merge")
    return report.rows_written


def push(
    view: FeatureViewPlan,
    rows: Rows,
    *,
    project: str,
    online: OnlineStore,
    offline: DeltaOfflineStore,
    push_id: str | None = None,
    online_views: Sequence[FeatureViewPlan] = (),
    retention: OnlineRetention | None = None,
    retry_s: float = 2.0,
    replay_window_s: float = DEFAULT_REPLAY_WINDOW_S,
) -> PushReport:
    """Push ``rows`` (the view's source columns) to ``view``: online, then offline.

    ``online_views`` are further definitions of the view whose online records are
    served (blue/green: the old derivation until the new one is promoted); the rows
    go through each one's transforms into its records too.
    """
    started = time.perf_counter()
    push_id = check_push_id(push_id)
    raw = to_frame(rows, view)
    targets = [view, *(v for v in online_views if v.hash != view.hash)]
    prepared = [(v, view_rows(v, raw, push_id=push_id)) for v in targets]
    written = skipped = 0
    for target, frame in prepared:
        if target.online:
            w, s = push_online(
                target,
                frame,
                project=project,
                online=online,
                push_id=push_id,
                retention=retention,
                retry_s=retry_s,
                replay_window_s=replay_window_s,
            )
            if target is view:
                written, skipped = w, s
    offline_written = push_offline(view, prepared[0][1], offline=offline, push_id=push_id)
    return PushReport(
        view=view.name,
        push_id=push_id,
        rows=raw.height,
        online_written=written,
        online_skipped=skipped,
        offline_written=offline_written,
        seconds=time.perf_counter() - started,
    )
