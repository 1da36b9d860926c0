"""Where a view's rows go: one sink per destination, all driven by the same loop.

The worker hands every micro-batch of a view's rows to each of the view's sinks
(:meth:`Sink.write`). At each checkpoint it asks them for the work that makes what
they hold durable (:meth:`Sink.checkpoint`), runs it off the loop thread, and
commits offsets only after it succeeded. A plain view has two sinks:

- :class:`OnlineLatestSink` writes, per micro-batch, the newest row of each entity
  online (compare-and-set does the rest), so values are fresh within a batch;
- :class:`OfflineSink` buffers rows and appends them to the view's Delta table at
  each checkpoint (one Delta commit per checkpoint).

A view with windowed aggregations has an :class:`~.aggregates.AggregateSink`
online instead (same four methods; the loop does not change). ``replay`` tells a
sink which records may already have been made durable before a crash (see
``offsets.py``): the offline sink merges those instead of appending them; the
aggregate sink skips them by the marks its records carry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import polars as pl

from featurestore._time import now_us
from featurestore.compile.views import FeatureViewPlan
from featurestore.config import OnlineRetention
from featurestore.engines.batch import latest_per_entity
from featurestore.engines.stream.decode import META_COLUMNS, OFFSET, PARTITION, RECORD_TS
from featurestore.engines.stream.flusher import OneInFlight
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.errors import FeatureStoreError, StreamError
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import RECORD_ID
from featurestore.stores.online.base import OnlineStore, WriteBatch
from featurestore.stores.view_specs import offline_spec, online_schema

T = TypeVar("T")

# (topic, partition) -> first offset NOT possibly written before (exclusive end).
Replay = Mapping[tuple[str, int], int]


@dataclass(frozen=True)
class ViewBatch:
    """One micro-batch of a view's rows: view columns plus the ``_fs_*`` meta columns."""

    view: FeatureViewPlan
    topic: str
    rows: pl.DataFrame


class Sink(Protocol):
    """A destination for a view's rows."""

    name: str

    def write(self, batch: ViewBatch) -> None:
        """Take one micro-batch (may write through at once, or buffer)."""
        ...

    def pending(self) -> int:
        """Rows taken but not yet durable; the worker checkpoints when this grows."""
        ...

    def checkpoint(self, replay: Replay) -> Callable[[], None] | None:
        """Detach every row taken so far and return the work that makes them durable
        (or None when nothing is pending). The worker runs that work off its loop
        thread and commits offsets only after it succeeded."""
        ...

    def discard(self, topic: str, partitions: Collection[int]) -> None:
        """Drop buffered rows of partitions this worker lost (their new owner replays them)."""
        ...


def retrying(action: Callable[[], T], *, what: str, budget_s: float) -> T:
    """Run ``action``, retrying errors marked ``retryable`` with backoff for ``budget_s``.

    Anything else, or a retryable error past the budget, stops the worker with a
    ``StreamError``: offsets are not committed, so a restart replays the records.
    """
    deadline = time.monotonic() + budget_s
    delay = 0.05
    while True:
        try:
            return action()
        except FeatureStoreError as exc:
            if not exc.retryable or time.monotonic() + delay > deadline:
                err = StreamError(
                    f"{what} failed: {exc}",
                    obj="stream worker",
                    hint="Offsets were not committed; fix the store and restart the "
                    "worker, it resumes from the last commit",
                )
                err.retryable = exc.retryable  # a store that may come back: restart later
                raise err from exc
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


class OnlineLatestSink:
    """Per micro-batch, the latest row of each entity -> the online store (CAS).

    The store write runs on a helper thread while the loop decodes the next batch
    (one write in flight at most): the store's own work (Redis running the CAS
    script) then overlaps with ours. Order does not matter under compare-and-set.
    A checkpoint waits for the write in flight before offsets are committed.
    """

    def __init__(
        self,
        view: FeatureViewPlan,
        *,
        project: str,
        online: OnlineStore,
        metrics: StreamMetrics,
        retry_s: float = 30.0,
        retention: OnlineRetention | None = None,
    ) -> None:
        self.name = f"online:{view.name}"
        self.view = view
        self.schema = online_schema(project, view, retention=retention)
        self.online = online
        self.metrics = metrics
        self.retry_s = retry_s
        self._inflight = OneInFlight(f"featurestore-online-{view.name}")

    def write(self, batch: ViewBatch) -> None:
        if batch.rows.height == 0:
            return
        latest = latest_per_entity(batch.rows.lazy(), self.view.join_keys).collect()
        rows = WriteBatch.from_frame(latest, schema=self.schema)
        record_us = batch.rows[RECORD_TS].dt.epoch("us").to_numpy()
        self._inflight.submit(lambda: self._write(rows, record_us))

    def _write(self, rows: WriteBatch, record_us: Any) -> None:
        started = time.perf_counter()
        stats = retrying(
            lambda: self.online.write(self.schema, rows),
            what=f"online write of view {self.view.name!r}",
            budget_s=self.retry_s,
        )
        self.metrics.online_write_seconds.observe(time.perf_counter() - started)
        self.metrics.online_written.inc(stats.written, view=self.view.name)
        self.metrics.online_stale.inc(stats.skipped_stale, view=self.view.name)
        self.metrics.freshness_seconds.observe_many((now_us() - record_us) / 1e6)

    def pending(self) -> int:
        return 0

    def checkpoint(self, replay: Replay) -> Callable[[], None] | None:
        self._inflight.wait()  # raises the write's error, if any: then nothing is committed
        return None

    def discard(self, topic: str, partitions: Collection[int]) -> None:
        return None


def record_ids(topic: str) -> pl.Expr:
    """The ``RECORD_ID`` of rows decoded from ``topic``: "topic/partition/offset"."""
    return pl.format(f"{topic}/{{}}/{{}}", pl.col(PARTITION), pl.col(OFFSET)).alias(RECORD_ID)


class OfflineSink:
    """Buffers a view's rows and writes them to its Delta table at each checkpoint.

    Appending is the fast path. Rows that may already be in the table (records
    re-read after a crash between a Delta commit and the offset commit) are merged
    instead, which inserts only the missing ones: the table holds each record once
    either way. A plain view's rows are matched on (keys, event_ts, created_ts); an
    aggregated view's table is an event log, whose rows carry their Kafka record
    (``RECORD_ID`` = "topic/partition/offset"), so a replayed record is matched while
    two records with equal contents (a producer retry) both stay, as they both count
    online.
    """

    def __init__(
        self,
        view: FeatureViewPlan,
        *,
        offline: DeltaOfflineStore,
        metrics: StreamMetrics,
        retry_s: float = 30.0,
        always_merge: bool = False,
    ) -> None:
        self.name = f"offline:{view.name}"
        self.always_merge = always_merge
        self.view = view
        self.spec = offline_spec(view)
        self.offline = offline
        self.metrics = metrics
        self.retry_s = retry_s
        self._frames: list[tuple[str, pl.DataFrame]] = []
        self._rows = 0

    def write(self, batch: ViewBatch) -> None:
        if batch.rows.height:
            self._frames.append((batch.topic, batch.rows))
            self._rows += batch.rows.height

    def pending(self) -> int:
        return self._rows

    def checkpoint(self, replay: Replay) -> Callable[[], None] | None:
        if not self._frames:
            return None
        frames, self._frames, self._rows = self._frames, [], 0
        merge = self.always_merge or any(self._replayed(t, f, replay) for t, f in frames)
        mode: Literal["append", "merge"] = "merge" if merge else "append"
        if self.spec.event_log:
            frames = [(t, f.with_columns(record_ids(t))) for t, f in frames]

        def write() -> None:
            rows = pl.concat([f for _, f in frames]).drop(META_COLUMNS)
            report = retrying(
                lambda: self.offline.write_view(self.spec, rows, mode=mode),
                what=f"offline {mode} of view {self.view.name!r}",
                budget_s=self.retry_s,
            )
            self.metrics.offline_rows.inc(report.rows_written, view=self.view.name)

        return write

    @staticmethod
    def _replayed(topic: str, frame: pl.DataFrame, replay: Replay) -> bool:
        ends = {p: end for (t, p), end in replay.items() if t == topic}
        if not ends:
            return False
        end = pl.col(PARTITION).replace_strict(ends, default=-1, return_dtype=pl.Int64)
        return bool(frame.select((pl.col(OFFSET) < end).any()).item())

    def discard(self, topic: str, partitions: Collection[int]) -> None:
        lost = pl.Series(list(partitions), dtype=pl.Int32)
        kept = []
        for t, frame in self._frames:
            if t == topic:
                frame = frame.filter(~pl.col(PARTITION).is_in(lost.implode()))
            if frame.height:
                kept.append((t, frame))
        self._frames = kept
        self._rows = sum(f.height for _, f in kept)
