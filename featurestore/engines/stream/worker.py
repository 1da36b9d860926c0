"""The stream worker: Kafka micro-batches -> row transforms -> online + offline, then commit.

One loop, per micro-batch:

1. ``consume()`` up to ``batch_size`` records from the partitions this worker owns
   in its consumer group (several workers share the partitions; add workers to scale);
2. decode the JSON against the source schema; refused records go to the
   dead-letter topic with the reason;
3. apply each view's row transforms (``transform_rows``, the batch engine's own);
4. hand the rows to the view's sinks: the newest row per entity goes online at
   once (compare-and-set); the offline rows are buffered.

Every ``flush_rows`` rows or ``flush_interval_s`` seconds the worker checkpoints:
the sinks' buffers are written on a background thread while the loop goes on, and
once that succeeded the dead letters are awaited and only then the offsets are
committed. Before giving up partitions in a rebalance, and at shutdown, the
checkpoint is waited for. A crash replays from the last commit and the replay
changes nothing (``offsets.py``).

The worker never stops on bad data. It stops on SIGTERM/SIGINT (after a
checkpoint), when a bounded run is over (``max_messages``, ``idle_timeout_s``,
``until_end``), or with a ``StreamError`` when a store or the broker fails for
longer than the retry budget; then nothing more is committed.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from featurestore.compile.views import FeatureViewPlan
from featurestore.config import OnlineRetention
from featurestore.engines.stream._gc import gc_paused
from featurestore.engines.stream.decode import RecordBatch
from featurestore.engines.stream.dlq import DeadLetters
from featurestore.engines.stream.flusher import Flusher
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.engines.stream.offsets import OffsetBook
from featurestore.engines.stream.routes import (
    TopicRoute,
    build_routes,
    consumer_config,
    cooperative,
    shared_client_config,
)
from featurestore.engines.stream.settings import StreamSettings
from featurestore.engines.stream.sinks import ViewBatch
from featurestore.errors import StreamError
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online.base import OnlineStore

log = logging.getLogger("featurestore.stream")


@dataclass(frozen=True)
class WorkerReport:
    """What one run did. ``stopped_by`` is ``signal``, ``max_messages``, ``idle``,
    ``end`` or ``stop`` (``StreamWorker.stop()``)."""

    records: int
    rows: int
    dead_letters: int
    before_watermark: int
    offline_rows: int
    checkpoints: int
    seconds: float
    stopped_by: str

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


class StreamWorker:
    """A consumer-group member that keeps plain feature views fresh from Kafka.

    ``watermark_us`` hands over from a backfill: the batch path owns every event with
    ``event_ts < watermark_us`` and the stream every later one (docs in
    ``deploy/kafka.md``). Construction checks the views and connects; :meth:`run`
    consumes.
    """

    def __init__(
        self,
        *,
        project: str,
        views: Sequence[FeatureViewPlan],
        offline: DeltaOfflineStore,
        online: OnlineStore,
        group_id: str,
        settings: StreamSettings | None = None,
        metrics: StreamMetrics | None = None,
        watermark_us: int | None = None,
        retention: OnlineRetention | None = None,
    ) -> None:
        from confluent_kafka import Consumer, Producer

        self.settings = settings or StreamSettings()
        self.metrics = metrics or StreamMetrics()
        self.group_id = group_id
        self.watermark_us = watermark_us
        self.routes: dict[str, TopicRoute] = build_routes(
            views,
            project=project,
            online=online,
            offline=offline,
            metrics=self.metrics,
            settings=self.settings,
            watermark_us=watermark_us,
            retention=retention,
        )
        conf = consumer_config(self.routes, group_id=group_id, settings=self.settings)
        self._cooperative = cooperative(conf)
        shared = shared_client_config(conf)
        shared["logger"] = log
        self._consumer = Consumer({**conf, "logger": log})
        self._marker = Consumer(
            {
                **shared,
                "group.id": group_id + self.settings.pending_group_suffix,
                "enable.auto.commit": False,
            }
        )
        producer = Producer({**shared, "linger.ms": 20, **self.settings.producer_options})
        dlq_topics = {t: self.settings.dead_letter_topic_for(t) for t in self.routes}
        self._dlq = DeadLetters(
            producer, topic_for=dlq_topics, group_id=group_id, metrics=self.metrics
        )
        self._producer = producer
        self._book = OffsetBook(consumer=self._consumer, marker=self._marker, metrics=self.metrics)
        self._stop = threading.Event()
        self._failed = False
        self._ran = False
        self._callback_error: BaseException | None = None
        self._last_checkpoint = time.monotonic()
        self._flusher = Flusher()
        self._check_topics([*self.routes, *dlq_topics.values()])

    # ------------------------------------------------------------------ public

    def stop(self) -> None:
        """Ask the loop to checkpoint and return (thread-safe; signal handlers call it)."""
        self._stop.set()

    def run(
        self,
        *,
        max_messages: int | None = None,
        idle_timeout_s: float | None = None,
        until_end: bool = False,
        handle_signals: bool = True,
    ) -> WorkerReport:
        """Consume until stopped; see the module docstring for when that is.

        ``until_end`` stops once every owned partition has been read to its end (tests,
        catch-up jobs). ``handle_signals`` installs SIGTERM/SIGINT handlers when
        running in the main thread.
        """
        if self._ran:
            raise StreamError(
                "run() was already called: a worker runs once",
                obj="stream worker",
                hint="Create a new StreamWorker (or call run_worker) for another run",
            )
        self._ran = True
        started = time.monotonic()
        before = self._totals()  # a metrics registry may be shared by several runs
        restore = self._install_signals() if handle_signals else {}
        stopped_by = "stop"
        try:
            self._consumer.subscribe(
                list(self.routes),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            stopped_by = self._loop(started, max_messages, idle_timeout_s, until_end)
            self._checkpoint()
        except BaseException:
            self._failed = True  # no commit on the way out: a restart replays
            raise
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            self._close()
        counts = {k: v - before[k] for k, v in self._totals().items()}
        return WorkerReport(**counts, seconds=time.monotonic() - started, stopped_by=stopped_by)

    def _totals(self) -> dict[str, int]:
        m = self.metrics
        return {
            "records": int(m.records.total()),
            "rows": int(m.rows.total()),
            "dead_letters": int(m.dead_letters.total()),
            "before_watermark": int(m.before_watermark.total()),
            "offline_rows": int(m.offline_rows.total()),
            "checkpoints": int(m.checkpoints.total()),
        }

    # ------------------------------------------------------------------ loop

    def _loop(
        self,
        started: float,
        max_messages: int | None,
        idle_timeout_s: float | None,
        until_end: bool,
    ) -> str:
        s = self.settings
        consumed = 0
        last_record = started
        last_lag = started
        lag_records = 0
        while not self._stop.is_set():
            with gc_paused():  # see _gc.py: a batch is tens of thousands of objects
                messages = self._consumer.consume(s.batch_size, s.poll_timeout_s)
                self._raise_callback_error()
                now = time.monotonic()
                n = self._process(messages) if messages else 0
                del messages
            consumed += n
            lag_records += n
            if n:
                last_record = now
            self._tick_checkpoints(now)
            if now - last_lag >= s.lag_interval_s:
                self._book.refresh_lag()
                self.metrics.events_per_second.set(lag_records / (now - last_lag))
                last_lag, lag_records = now, 0
            if max_messages is not None and consumed >= max_messages:
                return "max_messages"
            if idle_timeout_s is not None and now - last_record >= idle_timeout_s:
                return "idle"
            book = self._book
            if until_end and book.owned and all(book.at_end.get(tp) for tp in book.owned):
                return "end"
        return "signal" if self._signalled else "stop"

    def _process(self, messages: list[Any]) -> int:
        """One micro-batch; returns the number of records taken."""
        from confluent_kafka import KafkaError

        by_topic: dict[str, tuple[list[Any], list[Any], list[int], list[int], list[int]]] = {}
        book = self._book
        owned, position, at_end = book.owned, book.position, book.at_end
        taken = 0
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if (m.topic(), m.partition()) in owned:
                        at_end[(m.topic(), m.partition())] = True
                    continue
                if err.fatal():
                    raise StreamError(f"fatal consumer error: {err}", obj="stream worker")
                log.warning("consumer error: %s", err)
                continue
            topic, part, offset = m.topic(), m.partition(), m.offset()
            tp = (topic, part)
            if tp not in owned:
                continue  # revoked while in flight: its new owner reads it
            position[tp] = offset + 1
            at_end[tp] = False
            lists = by_topic.get(topic)
            if lists is None:
                lists = by_topic[topic] = ([], [], [], [], [])
            lists[0].append(m)
            lists[1].append(m.value())
            lists[2].append(m.timestamp()[1])
            lists[3].append(part)
            lists[4].append(offset)
            taken += 1
        for topic, (msgs, values, stamps, parts, offsets) in by_topic.items():
            self._count_replayed(topic, parts, offsets)
            self._apply(
                self.routes[topic], msgs, RecordBatch(topic, values, stamps, parts, offsets)
            )
        if taken:
            self.metrics.batches.inc()
        return taken

    def _apply(self, route: TopicRoute, msgs: list[Any], batch: RecordBatch) -> None:
        m = self.metrics
        m.records.inc(len(batch), topic=route.topic)
        decoded = route.decoder.decode(batch)
        for reject in decoded.rejects:
            self._dlq.send(msgs[reject.index], reject)
        for vr in route.views:
            rows = vr.transform.apply(decoded.frame)
            for reject in rows.rejects:
                self._dlq.send(msgs[reject.index], reject, view=vr.view.name)
            if rows.before_watermark:
                m.before_watermark.inc(rows.before_watermark, view=vr.view.name)
            m.rows.inc(rows.frame.height, view=vr.view.name)
            view_batch = ViewBatch(vr.view, route.topic, rows.frame)
            for sink in vr.sinks:
                sink.write(view_batch)

    def _count_replayed(self, topic: str, parts: list[int], offsets: list[int]) -> None:
        replay = self._book.replay
        if replay:
            n = sum(
                1 for p, o in zip(parts, offsets, strict=True) if o < replay.get((topic, p), -1)
            )
            if n:
                self.metrics.replayed.inc(n, topic=topic)

    # ------------------------------------------------------------------ checkpoints

    def _pending_rows(self) -> int:
        return sum(s.pending() for r in self.routes.values() for v in r.views for s in v.sinks)

    def _tick_checkpoints(self, now: float) -> None:
        """Commit a finished checkpoint; start the next one when it is due. While one is
        in flight the loop goes on, unless twice ``flush_rows`` pile up meanwhile."""
        self._finish_checkpoint(wait=False)
        pending = self._pending_rows()
        if self._flusher.busy:
            if pending >= 2 * self.settings.flush_rows:
                self._finish_checkpoint(wait=True)  # back-pressure: Delta is behind
            return
        if (
            pending >= self.settings.flush_rows
            or now - self._last_checkpoint >= self.settings.flush_interval_s
        ):
            self._start_checkpoint()

    def _start_checkpoint(self) -> None:
        """Record the pending mark, detach the sinks' buffers and write them off-thread."""
        self._last_checkpoint = time.monotonic()
        positions = self._book.dirty()
        if not positions:
            return
        if self._pending_rows():
            self._book.mark_pending(positions)
        replay = self._book.replay_ranges()
        work = []
        for route in self.routes.values():
            for vr in route.views:
                for sink in vr.sinks:
                    step = sink.checkpoint(replay)
                    if step is not None:
                        work.append(step)
        self._flusher.submit(work, positions)

    def _finish_checkpoint(self, *, wait: bool) -> None:
        """Once the sinks' work is done: dead letters acknowledged, then the commit."""
        done = self._flusher.finished(wait=wait)
        if done is None:
            return
        positions, started = done
        owned = self._book.owned
        self._dlq.flush()
        self._book.commit({tp: pos for tp, pos in positions.items() if tp in owned})
        self.metrics.checkpoints.inc()
        self.metrics.flush_seconds.observe(time.perf_counter() - started)

    def _checkpoint(self) -> None:
        """Everything taken so far made durable and committed, before returning
        (rebalances, shutdown): commit-after-write."""
        self._finish_checkpoint(wait=True)
        self._start_checkpoint()
        self._finish_checkpoint(wait=True)

    # ------------------------------------------------------------------ rebalances

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        try:
            self.metrics.rebalances.inc(len(partitions), kind="assign")
            start_ms = None
            if self.watermark_us is not None:
                skew_us = round(self.settings.max_future_skew_s * 1_000_000)
                start_ms = (self.watermark_us - skew_us) // 1000
            placed = self._book.assign(partitions, start_at_ms=start_ms)
            if self._cooperative:
                consumer.incremental_assign(placed)
            else:
                consumer.assign(placed)
            log.info("assigned %s", [f"{p.topic}[{p.partition}]@{p.offset}" for p in placed])
        except BaseException as exc:  # raised again from the loop, not inside librdkafka
            self._callback_error = exc

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        try:
            self.metrics.rebalances.inc(len(partitions), kind="revoke")
            if not self._failed:
                self._checkpoint()  # before the partitions move: nothing lost or doubled
            self._book.forget((p.topic, p.partition) for p in partitions)
            if self._cooperative:
                consumer.incremental_unassign(partitions)
        except BaseException as exc:
            self._failed = True
            self._callback_error = exc

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        try:
            self.metrics.rebalances.inc(len(partitions), kind="lost")
            # Another member may own them already: no commit; drop their unwritten rows.
            lost: dict[str, list[int]] = {}
            for p in partitions:
                lost.setdefault(p.topic, []).append(p.partition)
            self._book.forget((p.topic, p.partition) for p in partitions)
            # A checkpoint in flight completes, and commits only the partitions still
            # owned; the pending marks already cover whatever it wrote for the others.
            self._finish_checkpoint(wait=True)
            for topic, parts in lost.items():
                for vr in self.routes[topic].views:
                    for sink in vr.sinks:
                        sink.discard(topic, parts)
            log.warning("lost partitions %s", [f"{p.topic}[{p.partition}]" for p in partitions])
        except BaseException as exc:
            self._failed = True
            self._callback_error = exc

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            exc, self._callback_error = self._callback_error, None
            if isinstance(exc, StreamError):
                raise exc
            raise StreamError(f"rebalance handling failed: {exc}", obj="stream worker") from exc

    # ------------------------------------------------------------------ lifecycle

    _signalled = False

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, frame: Any) -> None:
            self._signalled = True
            self.stop()

        old: dict[int, Any] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, handler)
        return old

    def _check_topics(self, topics: list[str]) -> None:
        try:
            meta = self._consumer.list_topics(timeout=10)
        except Exception as exc:
            self._close()
            raise StreamError(
                f"cannot reach the Kafka cluster: {exc}",
                obj="stream worker",
                hint="Check bootstrap_servers and the security settings in consumer_options",
            ) from exc
        missing = [t for t in dict.fromkeys(topics) if t not in meta.topics]
        if missing:
            self._close()
            raise StreamError(
                f"topics {missing} do not exist",
                obj="stream worker",
                hint="Create them (dead-letter topics default to '<topic>.dlq'), or point "
                "dead_letter_topic at an existing topic",
            )

    def _close(self) -> None:
        for client in (self._consumer, self._marker):
            try:
                client.close()
            except Exception as exc:  # already closed, or the broker went away
                log.debug("closing a consumer: %s", exc)
        self._producer.flush(5)


def run_worker(
    *,
    project: str,
    views: Sequence[FeatureViewPlan],
    offline: DeltaOfflineStore,
    online: OnlineStore,
    group_id: str,
    settings: StreamSettings | None = None,
    metrics: StreamMetrics | None = None,
    watermark_us: int | None = None,
    retention: OnlineRetention | None = None,
    max_messages: int | None = None,
    idle_timeout_s: float | None = None,
    until_end: bool = False,
    handle_signals: bool = True,
) -> WorkerReport:
    """Run a stream worker until it is stopped; the entry point of ``featurestore stream``.

    ``views`` are compiled plain views fed by Kafka sources (``PlanIndex.views``);
    ``group_id`` names the consumer group that workers of the same job share.
    ``retention`` is the project's ``[online_store] retention`` (default 2 x ttl).
    """
    worker = StreamWorker(
        project=project,
        views=views,
        offline=offline,
        online=online,
        group_id=group_id,
        settings=settings,
        metrics=metrics,
        watermark_us=watermark_us,
        retention=retention,
    )
    return worker.run(
        max_messages=max_messages,
        idle_timeout_s=idle_timeout_s,
        until_end=until_end,
        handle_signals=handle_signals,
    )
