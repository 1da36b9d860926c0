"""Prometheus metrics without a dependency, correct across several worker processes.

Why not ``prometheus_client``: its multiprocess mode needs a directory set before
import and a lock per observation; what the server needs is a handful of
counters and histograms updated from one event-loop thread, which plain lists do
in well under a microsecond.

Several workers: each worker keeps its own numbers and, when
``FEATURESTORE_METRICS_DIR`` names a directory (``run()`` creates a fresh one per
server start), writes a snapshot ``<pid>.json`` there every ``flush_seconds``.
``/metrics`` answers from that worker's live numbers plus the other workers'
latest snapshots, so the other workers' part may lag by up to ``flush_seconds``.
Counters and histograms are summed over workers, including workers that have
exited (their counts stay, so totals never go down); gauges take the maximum.
Without the directory a worker reports only its own numbers.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

METRICS_DIR_ENV = "FEATURESTORE_METRICS_DIR"

# Seconds. Requests and reads are expected in the 0.2-10 ms range on loopback.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
# Seconds between a value's event time and the request: a minute to a month.
FRESHNESS_BUCKETS = (
    60.0,
    300.0,
    900.0,
    3600.0,
    3 * 3600.0,
    6 * 3600.0,
    12 * 3600.0,
    86400.0,
    2 * 86400.0,
    7 * 86400.0,
    30 * 86400.0,
)

Labels = tuple[str, ...]


class Counter:
    kind = "counter"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.series: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.series[labels] = self.series.get(labels, 0.0) + amount

    def snapshot(self) -> list[list[Any]]:
        return [[list(k), v] for k, v in list(self.series.items())]


class Gauge:
    kind = "gauge"

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.series: dict[Labels, float] = {}

    def set(self, value: float, labels: Labels = ()) -> None:
        self.series[labels] = value

    def snapshot(self) -> list[list[Any]]:
        return [[list(k), v] for k, v in list(self.series.items())]


class Histogram:
    """Counts per bucket (not cumulative; rendering accumulates) plus the sum.

    ``scale`` is the number of observed units per bucket unit: the freshness
    histogram is observed in microseconds (no division per value) and exposed in
    seconds.
    """

    kind = "histogram"

    def __init__(
        self,
        name: str,
        doc: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        *,
        scale: float = 1.0,
    ) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)
        self.buckets = tuple(buckets)
        self.scale = scale
        self._bounds = tuple(b * scale for b in buckets)
        # per label set: [count in bucket 0, ..., count above the last bucket, sum]
        self.series: dict[Labels, list[float]] = {}

    def _row(self, labels: Labels) -> list[float]:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.buckets) + 2)
        return row

    def observe(self, value: float, labels: Labels) -> None:
        row = self._row(labels)
        # bisect_left: a value equal to a bound belongs to that bucket (Prometheus "le")
        row[bisect_left(self._bounds, value)] += 1
        row[-1] += value

    def observe_many(self, values: list[float], labels: Labels) -> None:
        """Observe every value; sorts ``values`` in place. One bisection per bucket
        instead of one per value: 100 values cost a sort and a dozen bisections."""
        if not values:
            return
        row = self._row(labels)
        values.sort()
        below = 0
        for i, bound in enumerate(self._bounds):
            upto = bisect_right(values, bound)
            row[i] += upto - below
            below = upto
        row[-2] += len(values) - below
        row[-1] += sum(values)

    def snapshot(self) -> list[list[Any]]:
        return [[list(k), list(v)] for k, v in list(self.series.items())]


Metric = Counter | Gauge | Histogram


class ServerMetrics:
    """The metrics of one server process, and their merged Prometheus text."""

    def __init__(
        self,
        *,
        directory: str | Path | None = None,
        flush_seconds: float = 1.0,
        worker_id: str | None = None,
    ) -> None:
        self.directory = Path(directory) if directory else None
        self.flush_seconds = flush_seconds
        self.worker_id = worker_id or str(os.getpid())
        self.requests = Counter(
            "featurestore_http_requests_total",
            "HTTP requests by route and status.",
            ("route", "status"),
        )
        self.errors = Counter(
            "featurestore_errors_total",
            "Requests that ended in an error, by route and error type.",
            ("route", "error"),
        )
        self.latency = Histogram(
            "featurestore_http_request_duration_seconds",
            "Time from the first request byte handed to the app to the last response byte.",
            ("route",),
            LATENCY_BUCKETS,
        )
        self.store_latency = Histogram(
            "featurestore_online_store_read_duration_seconds",
            "Time of one online store read (all views of a request).",
            ("store",),
            LATENCY_BUCKETS,
        )
        self.freshness = Histogram(
            "featurestore_feature_freshness_seconds",
            "Request time minus the event time of each value found, per view.",
            ("view",),
            FRESHNESS_BUCKETS,
            scale=1e6,  # observed in microseconds
        )
        self.registry_version = Gauge(
            "featurestore_registry_version", "Registry version the server is serving."
        )
        self.store_up = Gauge(
            "featurestore_online_store_up", "1 when the last online store call succeeded."
        )
        self.registry_rejected_version = Gauge(
            "featurestore_registry_rejected_version",
            "A registry version the server refused to adopt (it cannot serve it); "
            "0 when none. The server keeps serving featurestore_registry_version.",
        )
        self.log_suppressed = Counter(
            "featurestore_access_log_suppressed_total",
            "Error lines left out of the access log by its rate limit, by status "
            "(every request is still counted in featurestore_http_requests_total).",
            ("status",),
        )
        self.feature_log_rows = Counter(
            "featurestore_feature_log_rows_total",
            "Feature-log rows by outcome: logged (queued), sampled_out, dropped (queue "
            "full), written, failed (given up after retries).",
            ("outcome",),
        )
        self.feature_log_write_errors = Counter(
            "featurestore_feature_log_write_errors_total",
            "Failed feature-log table writes (each may be retried).",
            (),
        )
        self.feature_log_queued = Gauge(
            "featurestore_feature_log_queued_rows", "Feature-log rows waiting to be written."
        )
        self.all: tuple[Metric, ...] = (
            self.requests,
            self.errors,
            self.latency,
            self.store_latency,
            self.freshness,
            self.registry_version,
            self.registry_rejected_version,
            self.store_up,
            self.log_suppressed,
            self.feature_log_rows,
            self.feature_log_write_errors,
            self.feature_log_queued,
        )
        # called before every snapshot: they copy counts kept elsewhere (feature log)
        self._collectors: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch_feature_log(self, stats: Callable[[], Mapping[str, int]]) -> None:
        """Export a feature logger's counters (``FeatureLogger.stats``)."""

        def collect() -> None:
            now = stats()
            for outcome, key in (
                ("logged", "logged"),
                ("sampled_out", "sampled_out"),
                ("dropped", "dropped"),
                ("written", "written_rows"),
                ("failed", "failed_rows"),
            ):
                self.feature_log_rows.series[(outcome,)] = float(now[key])
            self.feature_log_write_errors.series[()] = float(now["write_errors"])
            self.feature_log_queued.set(float(now["queued"]))

        self._collectors.append(collect)

    # -- several processes -----------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        for collect in self._collectors:
            collect()
        return {m.name: m.snapshot() for m in self.all}

    def _own_file(self) -> Path | None:
        return None if self.directory is None else self.directory / f"{self.worker_id}.json"

    def flush(self) -> None:
        """Write this process's snapshot atomically (readers never see half a file)."""
        path = self._own_file()
        if path is None:
            return
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, path)

    def start(self) -> None:
        if self.directory is None or self._thread is not None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fs-metrics-flush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            # a full or vanished directory must not kill serving; the next flush
            # tries again and /metrics still shows this worker's live numbers
            with contextlib.suppress(OSError):
                self.flush()

    def _snapshots(self) -> list[dict[str, Any]]:
        own = self.snapshot()
        if self.directory is None:
            return [own]
        out = [own]
        mine = self._own_file()
        for path in sorted(self.directory.glob("*.json")):
            if path == mine:
                continue
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # being replaced right now, or unreadable: skip this round
        return out

    # -- exposition --------------------------------------------------------------
    def render(self) -> str:
        """Prometheus text exposition format 0.0.4 of every worker's numbers."""
        snaps = self._snapshots()
        lines: list[str] = []
        for metric in self.all:
            lines.append(f"# HELP {metric.name} {metric.doc}")
            lines.append(f"# TYPE {metric.name} {metric.kind}")
            if isinstance(metric, Histogram):
                lines.extend(_render_histogram(metric, _merge_rows(metric.name, snaps)))
            else:
                merged = _merge_values(metric.name, snaps, use_max=isinstance(metric, Gauge))
                for labels, value in sorted(merged.items()):
                    lines.append(f"{metric.name}{_labels(metric.labelnames, labels)} {_num(value)}")
        return "\n".join(lines) + "\n"


def _merge_values(name: str, snaps: list[dict[str, Any]], *, use_max: bool) -> dict[Labels, float]:
    out: dict[Labels, float] = {}
    for snap in snaps:
        for labels, value in snap.get(name, ()):
            key = tuple(labels)
            if key in out:
                out[key] = max(out[key], value) if use_max else out[key] + value
            else:
                out[key] = value
    return out


def _merge_rows(name: str, snaps: list[dict[str, Any]]) -> dict[Labels, list[float]]:
    out: dict[Labels, list[float]] = {}
    for snap in snaps:
        for labels, row in snap.get(name, ()):
            key = tuple(labels)
            have = out.get(key)
            if have is None:
                out[key] = list(row)
            elif len(have) == len(row):
                out[key] = [a + b for a, b in zip(have, row, strict=True)]
    return out


def _render_histogram(metric: Histogram, rows: dict[Labels, list[float]]) -> list[str]:
    lines = []
    for labels, row in sorted(rows.items()):
        running = 0.0
        for bound, count in zip((*metric.buckets, math.inf), row[:-1], strict=True):
            running += count
            le = "+Inf" if bound == math.inf else _num(bound)
            lines.append(
                f"{metric.name}_bucket{_labels((*metric.labelnames, 'le'), (*labels, le))} "
                f"{_num(running)}"
            )
        lines.append(f"{metric.name}_count{_labels(metric.labelnames, labels)} {_num(running)}")
        total = row[-1] / metric.scale
        lines.append(f"{metric.name}_sum{_labels(metric.labelnames, labels)} {total!r}")
    return lines


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    body = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
