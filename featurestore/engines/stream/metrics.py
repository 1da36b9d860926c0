"""The stream worker's metrics: an in-process registry that renders Prometheus text.

No client library: counters, gauges and bucketed histograms are a few dicts behind
one lock, so the server (or ``featurestore stream --metrics-port``) can expose
``StreamMetrics.to_prometheus()`` while the worker thread updates it. Importing this
module imports neither Kafka nor Polars.

>>> m = StreamMetrics()
>>> m.records.inc(3, topic="trips")
>>> "featurestore_stream_records_total{topic=\\"trips\\"} 3" in m.to_prometheus()
True
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

Labels = tuple[tuple[str, str], ...]


def _labels(kw: dict[str, Any]) -> Labels:
    return tuple(sorted((k, str(v)) for k, v in kw.items()))


def _fmt_labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, lock: threading.Lock) -> None:
        self.name = name
        self.help = help_text
        self._lock = lock

    def _header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A monotonically increasing count, per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, lock: threading.Lock) -> None:
        super().__init__(name, help_text, lock)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1, **labels: Any) -> None:
        key = _labels(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def value(self, **labels: Any) -> float:
        with self._lock:
            return self._values.get(_labels(labels), 0)

    def total(self) -> float:
        with self._lock:
            return sum(self._values.values())

    def render(self) -> list[str]:
        lines = self._header()
        lines += [f"{self.name}{_fmt_labels(k)} {_num(v)}" for k, v in sorted(self._values.items())]
        return lines


class Gauge(_Metric):
    """A value that goes up and down, per label set."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, lock: threading.Lock) -> None:
        super().__init__(name, help_text, lock)
        self._values: dict[Labels, float] = {}

    def set(self, value: float, **labels: Any) -> None:
        key = _labels(labels)
        with self._lock:
            self._values[key] = value

    def remove(self, **labels: Any) -> None:
        with self._lock:
            self._values.pop(_labels(labels), None)

    def value(self, **labels: Any) -> float | None:
        with self._lock:
            return self._values.get(_labels(labels))

    def items(self) -> list[tuple[dict[str, str], float]]:
        with self._lock:
            return [(dict(k), v) for k, v in sorted(self._values.items())]

    def render(self) -> list[str]:
        lines = self._header()
        lines += [f"{self.name}{_fmt_labels(k)} {_num(v)}" for k, v in sorted(self._values.items())]
        return lines


class Histogram(_Metric):
    """Counts of observations per bucket (upper bounds, cumulative when rendered)."""

    kind = "histogram"

    def __init__(
        self, name: str, help_text: str, lock: threading.Lock, buckets: Sequence[float]
    ) -> None:
        super().__init__(name, help_text, lock)
        self.bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._count = 0

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        """Observe many values at once (a numpy array is fastest)."""
        import numpy as np

        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return
        idx = np.searchsorted(np.asarray(self.bounds), arr, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            for i, c in enumerate(counts.tolist()):
                self._counts[i] += c
            self._sum += float(arr.sum())
            self._count += int(arr.size)

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q`` quantile (linear within the bucket holding it)."""
        with self._lock:
            counts, total = list(self._counts), self._count
        if total == 0:
            return None
        rank = q * total
        seen = 0
        lower = 0.0
        for i, c in enumerate(counts):
            upper = self.bounds[i] if i < len(self.bounds) else math.inf
            if c and seen + c >= rank:
                if math.isinf(upper):
                    return lower
                return lower + (upper - lower) * (rank - seen) / c
            seen += c
            lower = upper
        return lower

    def render(self) -> list[str]:
        lines = self._header()
        cumulative = 0
        for bound, c in zip((*self.bounds, math.inf), self._counts, strict=True):
            cumulative += c
            le = _fmt_labels((), 'le="' + _num(bound) + '"')
            lines.append(f"{self.name}_bucket{le} {cumulative}")
        lines.append(f"{self.name}_sum {_num(self._sum)}")
        lines.append(f"{self.name}_count {self._count}")
        return lines


_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip
_FRESHNESS_BUCKETS = (
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
    1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip


class StreamMetrics:
    """Every metric a stream worker keeps. One instance per worker (or shared by the
    workers of one process: the label sets keep them apart)."""

    def __init__(self, prefix: str = "featurestore_stream") -> None:
        lock = threading.Lock()
        self._lock = lock
        p = prefix
        self.records = Counter(f"{p}_records_total", "Kafka records consumed.", lock)
        self.rows = Counter(f"{p}_rows_total", "Valid rows applied to a view.", lock)
        self.dead_letters = Counter(
            f"{p}_dead_letters_total", "Records sent to the dead-letter topic.", lock
        )
        self.before_watermark = Counter(
            f"{p}_before_watermark_total",
            "Rows older than the backfill watermark, left to the batch path.",
            lock,
        )
        self.online_written = Counter(
            f"{p}_online_written_total", "Online records replaced (newer values).", lock
        )
        self.online_stale = Counter(
            f"{p}_online_stale_total", "Online writes skipped: the stored record was newer.", lock
        )
        self.offline_rows = Counter(f"{p}_offline_rows_total", "Rows written to Delta.", lock)
        self.batches = Counter(f"{p}_batches_total", "Micro-batches processed.", lock)
        self.checkpoints = Counter(
            f"{p}_checkpoints_total", "Flushes followed by an offset commit.", lock
        )
        self.rebalances = Counter(
            f"{p}_rebalances_total", "Partition assignments, revocations and losses.", lock
        )
        self.replayed = Counter(
            f"{p}_replayed_records_total",
            "Records re-read after a crash or a lost partition (written idempotently).",
            lock,
        )
        self.aggregate_skipped = Counter(
            f"{p}_aggregate_skipped_total",
            "Events already folded into an entity's aggregate record (replays), skipped.",
            lock,
        )
        self.aggregate_conflicts = Counter(
            f"{p}_aggregate_conflicts_total",
            "Aggregate records another writer replaced between our read and our write.",
            lock,
        )
        self.lag = Gauge(f"{p}_lag_records", "Records behind the partition's end.", lock)
        self.events_per_second = Gauge(
            f"{p}_events_per_second", "Records consumed per second, recent average.", lock
        )
        self.flush_seconds = Histogram(
            f"{p}_flush_seconds", "A checkpoint: flush + commit.", lock, _LATENCY_BUCKETS
        )
        self.online_write_seconds = Histogram(
            f"{p}_online_write_seconds", "Duration of one online write.", lock, _LATENCY_BUCKETS
        )
        self.freshness_seconds = Histogram(
            f"{p}_freshness_seconds",
            "Kafka record timestamp to the value being visible online, per record.",
            lock,
            _FRESHNESS_BUCKETS,
        )

    @property
    def all(self) -> list[Counter | Gauge | Histogram]:
        return [v for v in vars(self).values() if isinstance(v, Counter | Gauge | Histogram)]

    def to_prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        with self._lock:
            lines = [line for metric in self.all for line in metric.render()]
        return "\n".join(lines) + "\n"

    def summary(self) -> dict[str, Any]:
        """A small dict for logs and the CLI."""
        return {
            "records": self.records.total(),
            "rows": self.rows.total(),
            "dead_letters": self.dead_letters.total(),
            "before_watermark": self.before_watermark.total(),
            "offline_rows": self.offline_rows.total(),
            "checkpoints": self.checkpoints.total(),
            "freshness_p50_s": self.freshness_seconds.quantile(0.5),
            "freshness_p99_s": self.freshness_seconds.quantile(0.99),
            "lag": {
                f"{labels['topic']}[{labels['partition']}]": value
                for labels, value in self.lag.items()
            },
        }


def serve_metrics(
    metrics: StreamMetrics, *, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    """Expose ``metrics`` at ``http://host:port/metrics`` from a daemon thread (for
    ``featurestore stream --metrics-port``). Port 0 picks a free port:
    ``server.server_address[1]``. Stop it with ``server.shutdown()``."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            body = metrics.to_prometheus().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # scrapes every few seconds would flood the worker's log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="featurestore-metrics", daemon=True).start()
    return server
