"""Skew, drift and freshness, watched all the time: ``featurestore monitor``.

Every ``every`` (or once, for a scheduler), :func:`run_once` audits the requests of
the last ``lookback`` (a ``sample`` of them) with :func:`~featurestore.audit.run_audit`
and sets Prometheus gauges from the report; :func:`serve` exposes them at
``/metrics``. Metrics (all gauges, the state of the last audit):

- ``featurestore_skew_values{feature}``: values audited;
- ``featurestore_skew_rate{feature,cause}``: share of those values mismatching with
  that cause (``unexplained`` is the alarm);
- ``featurestore_skew_mismatch_rate{feature}``: share mismatching, any cause;
- ``featurestore_drift_psi{feature}``, ``featurestore_drift_ks{feature}``: against the
  saved training dataset, when one is given;
- ``featurestore_served_age_seconds{view,stat}`` (``p50``, ``p99``, ``max``): how old
  the served records were at request time; ``featurestore_view_ttl_seconds{view}``
  the view's TTL (plain views), so alerts can compare the two;
- ``featurestore_monitor_audit_passed``: 1 when every threshold held;
- ``featurestore_monitor_last_success_timestamp_seconds``,
  ``featurestore_monitor_audit_seconds``, ``featurestore_monitor_runs_total{result}``
  (``ok`` / ``error``: a counter of audits run).

Alert rules over these are in ``deploy/alerts/featurestore-monitor.yml``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from featurestore._time import now_us, parse_duration_us
from featurestore.audit.causes import CAUSES
from featurestore.audit.report import AuditReport, Thresholds
from featurestore.audit.run import run_audit
from featurestore.engines.stream.metrics import Counter, Gauge
from featurestore.errors import FeatureStoreError, RequestError

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from featurestore.api.store import FeatureStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSettings:
    """What one audit of the monitor looks at (see :func:`run_audit`)."""

    feature_service: str | None = None
    features: Sequence[str] | None = None
    log_table: str | None = None
    lookback: str = "1h"  # audit the requests of this long before now
    sample: float | None = None
    training_dataset: str | None = None
    edge_tolerance: str = "1s"
    thresholds: Thresholds = field(default_factory=Thresholds)

    def lookback_us(self) -> int:
        us = parse_duration_us(self.lookback)
        if us <= 0:
            raise RequestError(
                "must be a positive duration", field="lookback", value=self.lookback, hint="1h"
            )
        return us


class MonitorMetrics:
    """The gauges the monitor exports, rendered as Prometheus text."""

    def __init__(self, prefix: str = "featurestore") -> None:
        lock = threading.Lock()
        p = prefix
        self.values = Gauge(f"{p}_skew_values", "Values audited in the last audit.", lock)
        self.skew_rate = Gauge(
            f"{p}_skew_rate", "Share of audited values mismatching, by cause.", lock
        )
        self.mismatch_rate = Gauge(
            f"{p}_skew_mismatch_rate", "Share of audited values mismatching.", lock
        )
        self.psi = Gauge(f"{p}_drift_psi", "PSI of served values vs the training set.", lock)
        self.ks = Gauge(f"{p}_drift_ks", "KS statistic of served vs training values.", lock)
        self.age = Gauge(f"{p}_served_age_seconds", "Age of served records at request time.", lock)
        self.ttl = Gauge(f"{p}_view_ttl_seconds", "The view's TTL (plain views).", lock)
        self.passed = Gauge(
            f"{p}_monitor_audit_passed", "1 when the last audit held every threshold.", lock
        )
        self.last_success = Gauge(
            f"{p}_monitor_last_success_timestamp_seconds", "When an audit last finished.", lock
        )
        self.seconds = Gauge(f"{p}_monitor_audit_seconds", "How long the last audit took.", lock)
        self.runs = Counter(f"{p}_monitor_runs_total", "Audits run, by result (ok, error).", lock)

    def all(self) -> list[Gauge | Counter]:
        return [
            self.values,
            self.skew_rate,
            self.mismatch_rate,
            self.psi,
            self.ks,
            self.age,
            self.ttl,
            self.passed,
            self.last_success,
            self.seconds,
            self.runs,
        ]

    def to_prometheus(self) -> str:
        lines: list[str] = []
        for metric in self.all():
            lines += metric.render()
        return "\n".join(lines) + "\n"

    def update(self, report: AuditReport) -> None:
        """Set every gauge from ``report``; series of features or views that left the
        log are removed."""
        for gauge in (self.values, self.skew_rate, self.mismatch_rate, self.psi, self.ks):
            for labels, _ in gauge.items():
                gauge.remove(**labels)
        for gauge in (self.age, self.ttl):
            for labels, _ in gauge.items():
                gauge.remove(**labels)
        for f in report.features:
            if f.skipped is not None:
                continue
            self.values.set(f.rows, feature=f.feature)
            self.mismatch_rate.set(f.mismatch_rate, feature=f.feature)
            for cause in CAUSES:
                share = f.causes.get(cause, 0) / f.rows if f.rows else 0.0
                self.skew_rate.set(share, feature=f.feature, cause=cause)
            d = f.distribution
            if d is not None and d.psi is not None:
                self.psi.set(d.psi, feature=f.feature)
            if d is not None and d.ks is not None:
                self.ks.set(d.ks, feature=f.feature)
        for view, stats in report.served_age.items():
            for stat, value in stats.items():
                self.age.set(value, view=view, stat=stat)
        for view, ttl in report.view_ttl_seconds.items():
            if ttl is not None:
                self.ttl.set(ttl, view=view)
        self.passed.set(1.0 if report.passed else 0.0)
        self.seconds.set(report.seconds)
        self.last_success.set(time.time())


def run_once(
    store: FeatureStore,
    settings: MonitorSettings,
    metrics: MonitorMetrics,
    *,
    raise_errors: bool = False,
) -> AuditReport | None:
    """Audit the last ``lookback`` of requests and update ``metrics``. An audit that
    fails with a feature store error is counted (``runs_total{result="error"}``),
    then raised (``raise_errors``) or logged, returning None: the next round tries
    again."""
    end = now_us()
    try:
        report = run_audit(
            store,
            start=end - settings.lookback_us(),
            end=end,
            feature_service=settings.feature_service,
            features=settings.features,
            log_table=settings.log_table,
            sample=settings.sample,
            training_dataset=settings.training_dataset,
            thresholds=settings.thresholds,
            edge_tolerance=settings.edge_tolerance,
        )
    except FeatureStoreError as exc:
        metrics.runs.inc(result="error")
        if raise_errors:
            raise
        log.warning("monitor: the audit failed: %s", exc)
        return None
    metrics.update(report)
    metrics.runs.inc(result="ok")
    return report


def watch(
    store: FeatureStore,
    settings: MonitorSettings,
    metrics: MonitorMetrics,
    *,
    every: timedelta,
    stop: threading.Event,
) -> None:
    """:func:`run_once` every ``every`` until ``stop`` is set (the first at once)."""
    while not stop.is_set():
        started = time.monotonic()
        run_once(store, settings, metrics)
        stop.wait(max(0.0, every.total_seconds() - (time.monotonic() - started)))


def serve(
    metrics: MonitorMetrics, *, host: str = "127.0.0.1", port: int = 0
) -> ThreadingHTTPServer:
    """Expose ``metrics`` at ``http://host:port/metrics`` from a daemon thread; port 0
    picks a free one (``server.server_address[1]``). Stop with ``server.shutdown()``."""
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
            return None  # one line per scrape would flood the log

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="featurestore-monitor", daemon=True).start()
    return server
