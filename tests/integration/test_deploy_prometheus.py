"""deploy/prometheus, deploy/alerts and deploy/grafana read only series the code
exports (names taken from the code's metric registries) or that the recording rules
define; promtool accepts them; and a real Prometheus scraping a real server records
the SLO series from what the server exposes."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import yaml

from tests.fixtures.services import free_port
from tests.integration.deploy_checks import (
    DEPLOY,
    exported_metrics,
    promql_names,
    rules,
    tool,
)
from tests.integration.served import running_server, served_repo

RECORDING = DEPLOY / "prometheus" / "featurestore-recording.yml"
ALERTS = sorted(p for p in (DEPLOY / "alerts").glob("*.yml") if not p.name.endswith(".test.yml"))
DASHBOARD = DEPLOY / "grafana" / "featurestore.json"


def _recorded() -> set[str]:
    return {r["record"] for r in rules([RECORDING])}


def _panel_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        out += [(panel["title"], t["expr"]) for t in panel["targets"]]
    return out


def test_the_name_check_catches_a_misspelt_metric():
    exported = exported_metrics()
    assert "featurestore_http_requests_total" in exported
    assert "featurestore_stream_lag_records" in exported  # the stream worker's
    assert "featurestore_skew_mismatch_rate" in exported  # the monitor's
    assert "featurestore_feature_freshness_seconds_bucket" in exported
    names = promql_names('rate(featurestore_http_request_total{route="featurestore_x"}[5m])')
    assert names == {"featurestore_http_request_total"}
    assert not names <= exported


def test_rules_and_dashboard_read_only_exported_or_recorded_series():
    exported = exported_metrics()
    recorded = _recorded()
    known = exported | recorded
    for rule in rules([RECORDING]):
        names = promql_names(rule["expr"])
        assert names and names <= known, (rule["record"], names - known)
        assert rule["record"].startswith("featurestore:")
    used: set[str] = set()
    for rule in rules(ALERTS):
        names = promql_names(rule["expr"])
        assert names and names <= known, (rule["alert"], names - known)
        used |= names
    panels = _panel_exprs()
    assert len(panels) >= 15
    for title, expr in panels:
        names = promql_names(expr)
        assert names and names <= known, (title, names - known)
        used |= names
    assert not recorded - used, f"recorded but never read: {recorded - used}"
    # every SLO has an alert and a panel
    alerted = set().union(*(promql_names(r["expr"]) for r in rules(ALERTS)))
    assert {
        "featurestore:lookup_latency_seconds:p99_5m",
        "featurestore:lookup_errors:ratio_rate5m",
        "featurestore:feature_freshness_ttl:ratio",
        "featurestore:stream_lag_records:sum",
        "featurestore:stream_dead_letters:ratio_rate15m",
        "featurestore:feature_log_lost_rows:rate15m",
        "featurestore_skew_mismatch_rate",
    } <= alerted
    shown = set().union(*(promql_names(expr) for _, expr in panels))
    assert {
        "featurestore:lookup_latency_seconds:p99_5m",
        "featurestore:lookup_errors:ratio_rate5m",
        "featurestore:feature_freshness_ttl:ratio",
        "featurestore:stream_lag_records:sum",
        "featurestore:stream_dead_letters:rate5m",
        "featurestore:feature_log_lost_rows:rate15m",
        "featurestore:skew_mismatch_rate:max",
    } <= shown


def test_dashboard_panels_have_unique_ids_and_fit_the_grid():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
    assert dashboard["templating"]["list"][0]["query"] == "prometheus"


def test_recording_and_slo_rules_pass_promtool():
    promtool = tool("promtool", "apt-get install prometheus")
    check = subprocess.run(
        [promtool, "check", "rules", str(RECORDING), *map(str, ALERTS)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [promtool, "test", "rules", "featurestore-slo.test.yml"],
        capture_output=True,
        text=True,
        cwd=DEPLOY / "alerts",
    )
    assert run.returncode == 0 and "SUCCESS" in run.stdout, run.stdout + run.stderr


# ---- a real Prometheus scraping a real server ------------------------------------------


def _get(port: int, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    status, body = _get(port, "/api/v1/query?query=" + urllib.parse.quote(promql))
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def test_prometheus_scrapes_the_server_and_records_the_slo_series(tmp_path: Path):
    binary = tool("prometheus", "apt-get install prometheus")
    repo = served_repo(tmp_path / "repo")
    with running_server(repo, tmp_path / "server.log") as server_port:
        for _ in range(5):
            status, _ = _get(
                server_port,
                "/v1/features/online",
                b'{"entities": {"driver_id": [1001, 1002]}, "feature_service": "driver_ranking"}',
            )
            assert status == 200
        port = free_port()
        # the recording rules as written, but evaluated every second (not every 30 s)
        recording = yaml.safe_load(RECORDING.read_text())
        for group in recording["groups"]:
            group.pop("interval", None)
        (tmp_path / "recording.yml").write_text(yaml.safe_dump(recording))
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{tmp_path / 'recording.yml'}]\n"
            "scrape_configs:\n"
            "  - job_name: featurestore-server\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{server_port}']}}]\n"
        )
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "prometheus.log").open("wb"),
        )
        try:
            wanted = [
                'featurestore_http_requests_total{route="/v1/features/online",status="200"}',
                "featurestore_http_request_duration_seconds_bucket",
                "featurestore_online_store_read_duration_seconds_bucket",
                'featurestore_feature_freshness_seconds_bucket{view="driver_hourly_stats"}',
                "featurestore_registry_version",
                "featurestore_online_store_up",
                # recorded from the scraped series by featurestore-recording.yml
                'featurestore:lookup_requests:rate5m{job="featurestore-server"}',
                'featurestore:lookup_errors:ratio_rate5m{job="featurestore-server"}',
            ]
            missing = list(wanted)
            deadline = time.monotonic() + 25
            while missing and time.monotonic() < deadline:
                # keep traffic flowing so that rates over the last scrapes are non-empty
                _get(
                    server_port,
                    "/v1/features/online",
                    b'{"entities": {"driver_id": [1001]}, "feature_service": "driver_ranking"}',
                )
                with contextlib.suppress(OSError):  # Prometheus still starting
                    missing = [q for q in missing if not _query(port, q)]
                time.sleep(0.5)
            log = (tmp_path / "prometheus.log").read_text()[-2000:]
            assert not missing, (missing, log)
            (up,) = _query(port, "featurestore_online_store_up")
            assert up["value"][1] == "1"
            (ratio,) = _query(port, "featurestore:lookup_errors:ratio_rate5m")
            assert float(ratio["value"][1]) == 0.0
        finally:
            proc.terminate()
            proc.wait(timeout=15)
