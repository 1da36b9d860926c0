"""``featurestore monitor``: the injected-fault log of ``test_skew_audit_faults``
audited by the monitor, its metrics scraped over a real HTTP socket, the loop run a
few rounds, and the ``--once`` command for schedulers."""

from __future__ import annotations

import http.client
import re
import threading
from datetime import timedelta

import polars as pl
import typer
from typer.testing import CliRunner

from featurestore.audit.monitor import MonitorMetrics, MonitorSettings, run_once, serve, watch
from featurestore.cli.monitor import monitor
from tests.integration.test_skew_audit_faults import SERVICE, audited  # noqa: F401 (fixture)

_LINE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def _scrape(port: int) -> dict[tuple[str, frozenset], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/plain")
    out = {}
    for line in response.read().decode().splitlines():
        if line.startswith("#") or not line:
            continue
        m = _LINE.match(line)
        assert m, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    conn.close()
    return out


def _key(name: str, **labels: str) -> tuple[str, frozenset]:
    return name, frozenset(labels.items())


def test_monitor_exports_skew_drift_and_freshness(audited):  # noqa: F811
    store, _, _ = audited
    log = store.offline.read_table(f"_feature_logs/{SERVICE}").collect()
    spine = log.select("user_id", pl.col("request_time").alias("event_timestamp"))
    training = store.get_training_dataset(spine, feature_service=SERVICE)
    store.save_dataset(training, "train", entity_df=spine)

    metrics = MonitorMetrics()
    server = serve(metrics, port=0)
    try:
        port = server.server_address[1]
        settings = MonitorSettings(feature_service=SERVICE, lookback="2d", training_dataset="train")
        report = run_once(store, settings, metrics)
        assert report is not None and report.cause_totals()["unexplained"] == 10
        got = _scrape(port)
        rows = 240
        assert got[_key("featurestore_skew_values", feature="user_windows:n_1d")] == rows
        # the corrupted record and the other user's record: unexplained, the alarm
        unexplained = _key("featurestore_skew_rate", feature="user_windows:n_1d",
                           cause="unexplained")  # fmt: skip
        assert got[unexplained] == 2 / rows
        edge = _key("featurestore_skew_rate", feature="user_windows:n_1d", cause="window_edge")
        assert got[edge] == 40 / rows
        stale = _key("featurestore_skew_rate", feature="user_spend:amount", cause="stale_online")
        assert got[stale] == 1 / rows
        assert got[_key("featurestore_monitor_audit_passed")] == 0
        assert got[_key("featurestore_monitor_runs_total", result="ok")] == 1
        # drift against the saved dataset, per feature
        psi = _key("featurestore_drift_psi", feature="user_windows:sum_1d")
        assert psi in got and got[psi] >= 0
        # freshness: the plain view's records vs its 1h TTL; the aggregated view's
        # records are as of the materialization (20 minutes and 1 hour before)
        assert got[_key("featurestore_view_ttl_seconds", view="user_spend")] == 3600
        assert _key("featurestore_view_ttl_seconds", view="user_windows") not in got
        age = got[_key("featurestore_served_age_seconds", view="user_windows", stat="max")]
        assert age == timedelta(hours=1).total_seconds()
        assert got[_key("featurestore_served_age_seconds", view="user_spend", stat="p50")] > 0

        # The loop: a few rounds, then stopped.
        stop = threading.Event()
        every = timedelta(milliseconds=50)
        loop = threading.Thread(target=watch, args=(store, settings, metrics),
                                kwargs={"every": every, "stop": stop})  # fmt: skip
        loop.start()
        deadline = threading.Event()
        for _ in range(200):
            if metrics.runs.value(result="ok") >= 3:
                break
            deadline.wait(0.05)
        stop.set()
        loop.join(timeout=30)
        assert not loop.is_alive()
        assert _scrape(port)[_key("featurestore_monitor_runs_total", result="ok")] >= 3

        # A broken audit (no such log) is counted, and the loop would go on.
        broken = MonitorSettings(log_table="_feature_logs/nope")
        assert run_once(store, broken, metrics) is None
        assert _scrape(port)[_key("featurestore_monitor_runs_total", result="error")] == 1
    finally:
        server.shutdown()


def test_monitor_once_for_a_scheduler(audited, tmp_path):  # noqa: F811
    store, _, _ = audited
    app = typer.Typer()
    app.command()(monitor)
    textfile = tmp_path / "featurestore.prom"
    result = CliRunner().invoke(
        app,
        ["--repo", str(store.repo), "--feature-service", SERVICE, "--lookback", "2d",
         "--once", "--textfile", str(textfile)],
    )  # fmt: skip
    assert result.exit_code == 5, result.output  # unexplained values: the threshold breaks
    assert "unexplained 10" in result.output
    text = textfile.read_text()
    assert 'featurestore_skew_rate{cause="unexplained",feature="user_spend:amount"}' in text
    assert "featurestore_monitor_audit_passed 0" in text
