"""The dead-letter topic: every refused record, with why, where it came from and its bytes.

A dead letter carries the original key and value untouched, the original headers,
and these headers (all UTF-8 text):

- ``fs.reason``: a short code (``undecodable``, ``missing_field``, ``wrong_type``,
  ``out_of_range``, ``bad_timestamp``, ``naive_timestamp``, ``null_timestamp``,
  ``future_timestamp``, ``null_key``, ``transform_error``);
- ``fs.error``: the message naming the field and the value;
- ``fs.topic``, ``fs.partition``, ``fs.offset``, ``fs.timestamp_ms``: the record's origin;
- ``fs.view`` (for per-view reasons) and ``fs.group``: who refused it.

Delivery is at least once: dead letters are flushed before offsets are committed,
so a crash in between sends some again. (topic, partition, offset) identifies a
record, so a reader of the dead-letter topic can drop repeats.
"""

from __future__ import annotations

from typing import Any

from featurestore.engines.stream.decode import Reject
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.errors import StreamError

FLUSH_TIMEOUT_S = 30.0


class DeadLetters:
    """Produces dead letters; :meth:`flush` waits until every one is acknowledged."""

    def __init__(
        self,
        producer: Any,
        *,
        topic_for: dict[str, str],
        group_id: str,
        metrics: StreamMetrics,
    ) -> None:
        self._producer = producer
        self._topic_for = topic_for
        self._group = group_id.encode()
        self._metrics = metrics
        self._failures: list[str] = []
        self.sent = 0
        self.unflushed = 0

    def send(self, message: Any, reject: Reject, *, view: str | None = None) -> None:
        """Dead-letter a confluent-kafka ``Message`` for ``reject``'s reason."""
        topic = message.topic()
        _, ts_ms = message.timestamp()
        headers: list[tuple[str, bytes]] = list(message.headers() or [])
        headers += [
            ("fs.reason", reject.reason.encode()),
            ("fs.error", reject.detail.encode()),
            ("fs.topic", topic.encode()),
            ("fs.partition", str(message.partition()).encode()),
            ("fs.offset", str(message.offset()).encode()),
            ("fs.timestamp_ms", str(ts_ms).encode()),
            ("fs.group", self._group),
        ]
        if view is not None:
            headers.append(("fs.view", view.encode()))
        kwargs: dict[str, Any] = {
            "value": message.value(),
            "key": message.key(),
            "headers": headers,
            "on_delivery": self._delivered,
        }
        if ts_ms >= 0:
            kwargs["timestamp"] = ts_ms
        dlq = self._topic_for[topic]
        while True:
            try:
                self._producer.produce(dlq, **kwargs)
                break
            except BufferError:
                # The local queue is full: let deliveries drain, then try again.
                self._producer.poll(0.1)
        self._producer.poll(0)
        self.sent += 1
        self.unflushed += 1
        self._metrics.dead_letters.inc(topic=topic, reason=reject.reason)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err}")

    def flush(self) -> None:
        """Wait for every dead letter to be acknowledged; raise ``StreamError`` if any was
        not (offsets must then not be committed, or the records would be lost)."""
        if self.unflushed:
            left = self._producer.flush(FLUSH_TIMEOUT_S)
            if left:
                raise StreamError(
                    f"{left} dead letters were not acknowledged within {FLUSH_TIMEOUT_S:g}s",
                    obj="dead-letter producer",
                    hint="Check that the dead-letter topics exist and the brokers are reachable",
                )
            self.unflushed = 0
        if self._failures:
            first, count = self._failures[0], len(self._failures)
            self._failures.clear()
            raise StreamError(
                f"{count} dead letters could not be delivered, e.g. {first}",
                obj="dead-letter producer",
                hint="Create the dead-letter topic (default '<topic>.dlq') or set "
                "dead_letter_topic; the worker stops without committing, so nothing is lost",
            )
