"""Which partitions a worker owns, how far it got, and what a restart may replay.

Commit-after-write: offsets are committed only after every sink flushed. A crash
between a flush and the commit replays records that are already durable. Online
writes are compare-and-set, so a replay changes nothing there; the offline table
must not receive the rows twice. Before each flush the worker therefore records
the end of what it is about to write, as a commit in a side consumer group
(``<group>.fs-pending``) that nobody subscribes to. After a crash, the next owner
of a partition reads both groups: records between the main commit and the pending
mark may already be in Delta, so the offline sink merges them instead of
appending. (Kafka's commit metadata would be the natural place for the mark, but
not every Kafka-protocol broker stores it; a second group works everywhere.)

Handover from a backfill: with ``start_at_ms``, a partition the group never
committed starts at the first record whose timestamp is >= ``start_at_ms``
(``offsets_for_times``), or at the beginning when the broker cannot say.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.errors import StreamError

TP = tuple[str, int]


class OffsetBook:
    """Positions, commits and replay ranges of the partitions this worker owns."""

    def __init__(
        self, *, consumer: Any, marker: Any, metrics: StreamMetrics, timeout_s: float = 10.0
    ) -> None:
        self._consumer = consumer
        self._marker = marker
        self._metrics = metrics
        self._timeout = timeout_s
        self.owned: set[TP] = set()
        self.position: dict[TP, int] = {}  # next offset to process
        self.committed: dict[TP, int] = {}  # next offset committed in the main group
        self.replay: dict[TP, int] = {}  # records below this may already be durable
        self.at_end: dict[TP, bool] = {}

    # ------------------------------------------------------------------ assignment

    def assign(self, partitions: list[Any], *, start_at_ms: int | None) -> list[Any]:
        """Take ``partitions`` (``TopicPartition``s); returns them with start offsets set."""
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

        if not partitions:
            return []
        fresh = [TopicPartition(p.topic, p.partition) for p in partitions]
        timeout = self._timeout
        committed = self._call(
            "read committed offsets", self._consumer.committed, fresh, timeout=timeout
        )
        marks = self._call("read the pending marks", self._marker.committed, fresh, timeout=timeout)
        out = []
        unknown = []
        for c, m in zip(committed, marks, strict=True):
            tp = (c.topic, c.partition)
            self.owned.add(tp)
            self.at_end[tp] = False
            if c.offset >= 0:
                self.committed[tp] = self.position[tp] = c.offset
                out.append(TopicPartition(c.topic, c.partition, c.offset))
            else:
                unknown.append(TopicPartition(c.topic, c.partition, start_at_ms or 0))
            if m.offset >= 0 and m.offset > self.committed.get(tp, -1):
                self.replay[tp] = m.offset
        if unknown and start_at_ms is not None:
            try:
                found = self._consumer.offsets_for_times(unknown, timeout=self._timeout)
            except Exception:  # broker cannot look up by time: the watermark filter copes
                found = [TopicPartition(p.topic, p.partition, OFFSET_BEGINNING) for p in unknown]
            for p in found:
                # -1: every record is older than the instant, so start at the end.
                offset = OFFSET_END if p.offset == -1 else p.offset
                out.append(TopicPartition(p.topic, p.partition, offset))
        else:
            # No commit and no handover: auto.offset.reset decides (default earliest).
            out += [TopicPartition(p.topic, p.partition) for p in unknown]
        return out

    def forget(self, partitions: Iterable[TP]) -> None:
        for tp in partitions:
            self.owned.discard(tp)
            for book in (self.position, self.committed, self.replay, self.at_end):
                book.pop(tp, None)
            self._metrics.lag.remove(topic=tp[0], partition=tp[1])

    # ------------------------------------------------------------------ commits

    def dirty(self) -> dict[TP, int]:
        """Positions that moved past the last commit."""
        return {
            tp: pos
            for tp, pos in self.position.items()
            if tp in self.owned and pos != self.committed.get(tp)
        }

    def mark_pending(self, positions: dict[TP, int]) -> None:
        """Record, before a flush, how far the flush will reach."""
        self._commit(self._marker, positions, "record the pending mark")

    def commit(self, positions: dict[TP, int]) -> None:
        self._commit(self._consumer, positions, "commit offsets")
        self.committed.update(positions)
        for tp, end in list(self.replay.items()):
            if self.committed.get(tp, -1) >= end:
                del self.replay[tp]

    def replay_ranges(self) -> dict[TP, int]:
        return dict(self.replay)

    def _commit(self, client: Any, positions: dict[TP, int], what: str) -> None:
        from confluent_kafka import TopicPartition

        if not positions:
            return
        offsets = [TopicPartition(t, p, off) for (t, p), off in sorted(positions.items())]
        self._call(what, client.commit, offsets=offsets, asynchronous=False)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from confluent_kafka import KafkaException

        try:
            result = fn(*args, **kwargs)
        except KafkaException as exc:
            err = StreamError(
                f"could not {what}: {exc.args[0] if exc.args else exc}",
                obj="stream worker",
                hint="The broker or the group coordinator is unreachable, or the group is "
                "rebalancing; the worker stops without committing and resumes on restart",
            )
            err.retryable = True
            raise err from exc
        for tp in result or []:
            if getattr(tp, "error", None):
                raise StreamError(
                    f"could not {what} for {tp.topic}[{tp.partition}]: {tp.error}",
                    obj="stream worker",
                    hint="Check the group's ACLs (it needs Read on the group and the "
                    "'<group>.fs-pending' group) and the topic's partitions",
                )
        return result

    # ------------------------------------------------------------------ lag

    def refresh_lag(self) -> None:
        from confluent_kafka import TopicPartition

        for tp in self.owned:
            pos = self.position.get(tp)
            if pos is None:
                continue
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp[0], tp[1]), cached=True
                )
            except Exception:  # no fetch yet for this partition: nothing cached
                continue
            if high is not None and high >= 0:
                self._metrics.lag.set(max(0, high - pos), topic=tp[0], partition=tp[1])
