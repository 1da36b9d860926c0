"""The lookup server as a client sees it: a real process, real sockets, real stores.

One quickstart repo is built per module (sample data shifted so that its last
hour is the current hour: the online store drops rows older than twice the TTL).
Each test copies it, points it at its own online store, materializes, starts
``python -m featurestore.server`` on a free port and talks to it with
``http.client``. Expected values are computed here, independently, with Polars
from the sample Parquet file.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from featurestore.api.store import FeatureStore
from tests.fixtures.services import free_port
from tests.helpers import quickstart

pytestmark = pytest.mark.redis

LOOKUP = "/v1/features/online"
SERVICE = {"feature_service": "driver_ranking"}
VIEW = "driver_hourly_stats"
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "acceptance_gap"]
DRIVERS = list(range(1001, 1021))
NOW_HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
# materialize up to 3 hours ago: the last rows are then out, which tests "<= end"
END = NOW_HOUR - timedelta(hours=3)


# -- a repo and its expected online values -----------------------------------------------------
@pytest.fixture(scope="module")
def base_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = quickstart(tmp_path_factory.mktemp("server") / "repo")
    data = root / "data" / "driver_stats.parquet"
    frame = pl.read_parquet(data)
    shift = NOW_HOUR - frame["event_timestamp"].max()
    frame.with_columns(pl.col("event_timestamp") + shift, pl.col("created") + shift).write_parquet(
        data
    )
    store = FeatureStore(root)
    assert store.apply().version == 1
    store.backfill()
    store.close()
    return root


@pytest.fixture(scope="module")
def expected(base_repo: Path) -> dict[int, dict[str, Any]]:
    """Per driver: the row with the largest event time, then created time, <= END."""
    end = pl.lit(END).dt.cast_time_unit("us")
    rows = (
        pl.read_parquet(base_repo / "data" / "driver_stats.parquet")
        .filter(pl.col("event_timestamp") <= end)
        .sort("driver_id", "event_timestamp", "created")
        .group_by("driver_id", maintain_order=True)
        .last()
        .with_columns(
            acceptance_gap=pl.col("conv_rate") - pl.col("acc_rate"),
            event_us=pl.col("event_timestamp").dt.epoch("us"),
        )
    )
    assert rows.height == len(DRIVERS)
    return {r["driver_id"]: r for r in rows.iter_rows(named=True)}


def make_repo(base: Path, dest: Path, *, online_url: str | None, server: str = "") -> Path:
    repo = shutil.copytree(base, dest)
    config = repo / "featurestore.toml"
    text = config.read_text()
    if online_url:
        text += f'\n[online_store]\nurl = "{online_url}"\n'
    text += "\n[server]\nmax_entities = 100\n" + server
    config.write_text(text)
    return repo


def materialize(repo: Path) -> None:
    store = FeatureStore(repo)
    [report] = store.materialize(["driver_hourly_stats"], end=END)
    store.close()
    assert report.written == len(DRIVERS)


# -- a server process and a keep-alive client ------------------------------------------------------
class Server:
    def __init__(
        self, repo: Path, log: Path, *, workers: int = 1, env: dict[str, str] | None = None
    ):
        self.port = free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "featurestore.server",
                "--repo",
                str(repo),
                "--port",
                str(self.port),
                "--workers",
                str(workers),
            ],
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        self.conn: http.client.HTTPConnection | None = None
        # up when every worker has answered /health (it names the process)
        self.pids: set[int] = set()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited {self.proc.returncode}:\n{self.log_text()}")
            try:
                self.pids.add(self.request("GET", "/health", fresh=True)[2]["pid"])
                if len(self.pids) == workers:
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"server did not come up:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        fresh: bool = False,
    ) -> tuple[int, dict[str, str], Any]:
        """Status, lower-cased headers and decoded JSON (text when it is not JSON)."""
        if fresh or self.conn is None:
            if self.conn is not None:
                self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        raw = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if raw is not None else {}
        try:
            self.conn.request(method, path, body=raw, headers={**sent, **(headers or {})})
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = None
            raise
        out = {k.lower(): v for k, v in resp.getheaders()}
        if out.get("connection") == "close":
            self.conn.close()
            self.conn = None
        try:
            return resp.status, out, json.loads(data)
        except ValueError:
            return resp.status, out, data.decode()

    def lookup(self, body: Any, **kw: Any) -> tuple[int, dict[str, str], Any]:
        return self.request("POST", LOOKUP, body, **kw)

    def stop(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def assert_matches(doc: dict[str, Any], drivers: list[int], expected: dict[int, dict[str, Any]]):
    assert doc["entities"] == {"driver_id": drivers}
    assert set(doc["features"]) == set(FEATURES)
    for name in FEATURES:
        col = doc["features"][name]
        for i, driver in enumerate(drivers):
            row = expected.get(driver)
            if row is None:
                assert (col["statuses"][i], col["values"][i], col["event_ts"][i]) == (
                    "MISSING",
                    None,
                    None,
                )
            else:
                assert col["statuses"][i] == "PRESENT", (name, driver)
                assert col["values"][i] == row[name], (name, driver)
                assert col["event_ts"][i] == row["event_us"], (name, driver)


def metric_value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- tests ---------------------------------------------------------------------------------------
def test_redis_end_to_end_with_auth(base_repo, expected, redis_url, tmp_path):
    repo = make_repo(
        base_repo,
        tmp_path / "repo",
        online_url=redis_url,
        server='api_keys = ["k-model", "k-other"]\n',
    )
    materialize(repo)
    server = Server(
        repo,
        tmp_path / "server.log",
        env={"FEATURESTORE_SERVICE_KEYS": json.dumps({"driver_ranking": ["k-model"]})},
    )
    try:
        auth = {"Authorization": "Bearer k-model"}
        drivers = [*DRIVERS, 4242]
        status, _, doc = server.lookup(
            {"entities": {"driver_id": drivers}, "features": [f"{VIEW}:{f}" for f in FEATURES]},
            headers=auth,
        )
        assert status == 200, doc
        assert doc["registry_version"] == 1
        assert_matches(doc, drivers, expected)

        status, _, doc = server.lookup(
            {"entities": {"driver_id": drivers[::-1]}, "feature_service": "driver_ranking"},
            headers=auth,
        )
        assert status == 200
        assert_matches(doc, drivers[::-1], expected)

        status, _, doc = server.lookup(
            {
                "entities": {"driver_id": [1001]},
                "features": [f"{VIEW}:conv_rate"],
                "full_feature_names": True,
                "request_time": int((NOW_HOUR + timedelta(days=30)).timestamp() * 1e6),
            },
            headers=auth,
        )
        assert status == 200
        col = doc["features"][f"{VIEW}__conv_rate"]
        assert (col["statuses"], col["values"]) == (["EXPIRED"], [None])

        # auth: no key, a wrong key, a key not allowed for the restricted service
        body = {"entities": {"driver_id": [1001]}, "feature_service": "driver_ranking"}
        status, headers, doc = server.lookup(body)
        assert status == 401 and headers["www-authenticate"] == "Bearer"
        assert doc["field"] == "Authorization"
        status, _, doc = server.lookup(body, headers={"Authorization": "Bearer k-modeX"})
        assert status == 401 and "not valid" in doc["message"]
        status, _, doc = server.lookup(body, headers={"Authorization": "Basic k-model"})
        assert status == 401
        status, _, doc = server.lookup(body, headers={"Authorization": "Bearer k-other"})
        assert status == 403 and doc["value"] == "'driver_ranking'"
        status, _, doc = server.lookup(
            {"entities": {"driver_id": [1001]}, "features": [f"{VIEW}:conv_rate"]},
            headers={"Authorization": "Bearer k-other"},
        )
        assert status == 200 and doc["features"]["conv_rate"]["values"] == [
            expected[1001]["conv_rate"]
        ]
        # probes stay open
        assert server.request("GET", "/health")[0] == 200
        assert server.request("GET", "/ready")[0] == 200
    finally:
        server.stop()


def test_bad_requests_and_redis_outage(base_repo, expected, own_redis, tmp_path):
    repo = make_repo(base_repo, tmp_path / "repo", online_url=own_redis.url)
    materialize(repo)
    server = Server(
        repo, tmp_path / "server.log", env={"FEATURESTORE_MAX_BODY_BYTES": str(64 * 1024)}
    )
    good = {"entities": {"driver_id": [1001, 1002]}, "feature_service": "driver_ranking"}
    try:
        bad: list[tuple[Any, int, str]] = [
            (b'{"entities": {"driver_id": [1001', 422, "body"),
            (b"[1, 2]", 422, "body"),
            (
                {"entities": {"driver_id": "1001"}, "feature_service": "driver_ranking"},
                422,
                "entities.driver_id",
            ),
            (
                {"entities": {"driver_id": ["x"]}, "feature_service": "driver_ranking"},
                422,
                "driver_id",
            ),
            (
                {"entities": {"driver_id": [1.5]}, "feature_service": "driver_ranking"},
                422,
                "driver_id",
            ),
            (
                {"entities": {"driver_id": []}, "feature_service": "driver_ranking"},
                422,
                "entities.driver_id",
            ),
            ({"entities": {}, "feature_service": "driver_ranking"}, 422, "entities"),
            (
                {"entities": {"driver_id": [1], "rider_id": [1, 2]}, "feature_service": "x"},
                422,
                "entities",
            ),
            (
                {"entities": {"driver_id": [1], "rider": [2]}, "feature_service": "driver_ranking"},
                422,
                "entities.rider",
            ),
            ({**good, "full_feature_names": "yes"}, 422, "full_feature_names"),
            ({**good, "feature": ["x"]}, 422, "feature"),
            ({**good, "features": [f"{VIEW}:conv_rate"]}, 422, "features"),
            ({"entities": {"driver_id": [1]}, "features": ["conv_rate"]}, 422, "features[0]"),
            ({"entities": {"driver_id": [1]}, "features": [f"{VIEW}:nope"]}, 404, "nope"),
            ({"entities": {"driver_id": [1]}, "features": ["ghost:conv_rate"]}, 404, "ghost"),
            ({"entities": {"driver_id": [1]}, "feature_service": "ghost"}, 404, "ghost"),
            (
                {"entities": {"driver_id": list(range(1000))}, "feature_service": "driver_ranking"},
                413,
                "at most 100",
            ),
            (b'{"entities": {"driver_id": [' + b"1," * 320_000 + b"1]}}", 413, "65536"),
        ]
        for body, want, named in bad:
            status, headers, doc = server.lookup(body)
            assert status == want, (body if isinstance(body, dict) else body[:60], doc)
            assert named in json.dumps(doc), (named, doc)
            assert doc["hint"] or doc["message"], doc
            # the server stays up and answers the next valid request
            status, _, doc = server.lookup(good)
            assert status == 200, doc
            assert doc["features"]["conv_rate"]["values"] == [
                expected[1001]["conv_rate"],
                expected[1002]["conv_rate"],
            ]

        # Redis dies: 503 within the store timeout (0.5 s), with Retry-After; no restart
        own_redis.stop()
        for _ in range(3):
            started = time.monotonic()
            status, headers, doc = server.lookup(good)
            elapsed = time.monotonic() - started
            assert status == 503, doc
            assert elapsed < 1.0, elapsed
            assert headers["retry-after"] == "1" and doc["retryable"] is True
            assert "Redis" in doc["object"] or "Redis" in str(doc["value"])
        status, _, doc = server.request("GET", "/ready")
        assert status == 503 and doc["online_store"].startswith("unavailable")
        assert server.request("GET", "/health")[0] == 200

        # Redis returns, empty: 200 again with MISSING values, then PRESENT once re-materialized
        own_redis.start()
        deadline = time.monotonic() + 10
        while (status := server.lookup(good)[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        status, _, doc = server.lookup(good)
        assert status == 200
        assert doc["features"]["conv_rate"]["statuses"] == ["MISSING", "MISSING"]
        materialize(repo)
        status, _, doc = server.lookup(good)
        assert status == 200 and doc["features"]["conv_rate"]["statuses"] == ["PRESENT"] * 2
        assert server.request("GET", "/ready")[0] == 200

        # Redis hangs (SIGSTOP): the first request waits at most the timeout, then 503 at once
        assert own_redis.proc is not None
        os.kill(own_redis.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            status, _, doc = server.lookup(good)
            first = time.monotonic() - started
            started = time.monotonic()
            status2, _, _ = server.lookup(good)
            second = time.monotonic() - started
            assert (status, status2) == (503, 503)
            assert 0.3 < first < 1.5, first
            assert second < 0.3, second
            assert server.request("GET", "/health")[0] == 200
        finally:
            os.kill(own_redis.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while (status := server.lookup(good)[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status == 200
    finally:
        server.stop()
    log = (tmp_path / "server.log").read_text()
    assert '"status":503' in log and '"error":"OnlineStoreUnavailable"' in log


def test_sqlite_two_workers_metrics_and_registry_refresh(base_repo, expected, tmp_path):
    repo = make_repo(
        base_repo, tmp_path / "repo", online_url=None, server="registry_refresh_seconds = 0.5\n"
    )
    materialize(repo)
    server = Server(repo, tmp_path / "server.log", workers=2)
    try:
        status, _, doc = server.lookup(
            {"entities": {"driver_id": DRIVERS}, "feature_service": "driver_ranking"}
        )
        assert status == 200
        assert_matches(doc, DRIVERS, expected)

        # new connections spread requests over both workers; /metrics must add them up.
        # /health on the same connection tells which worker served each lookup.
        served: dict[int, int] = {}
        ok = missing = 0
        while ok < 40 or (len(served) < 2 and ok < 400):
            body = {"entities": {"driver_id": [1001 + ok % 20, 99]}, **SERVICE}
            assert server.lookup(body, fresh=True)[0] == 200
            pid = server.request("GET", "/health")[2]["pid"]
            served[pid] = served.get(pid, 0) + 1
            ok += 1
        assert len(served) == 2, served
        for _ in range(7):
            body = {"entities": {"driver_id": [1]}, "feature_service": "nope"}
            assert server.lookup(body, fresh=True)[0] == 404
            missing += 1
        route = f'route="{LOOKUP}"'
        want = {
            f'featurestore_http_requests_total{{{route},status="200"}}': ok + 1,
            f'featurestore_http_requests_total{{{route},status="404"}}': missing,
            f'featurestore_errors_total{{{route},error="UnknownServiceError"}}': missing,
            f"featurestore_http_request_duration_seconds_count{{{route}}}": ok + 1 + missing,
            'featurestore_online_store_read_duration_seconds_count{store="sqlite"}': ok + 1,
            f'featurestore_feature_freshness_seconds_count{{view="{VIEW}"}}': ok + len(DRIVERS),
            "featurestore_registry_version": 1,
        }
        deadline = time.monotonic() + 10
        while True:
            status, headers, text = server.request("GET", "/metrics", fresh=True)
            got = {k: metric_value(text, k) for k in want}
            if got == want or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert status == 200 and headers["content-type"].startswith("text/plain")
        assert got == want
        assert f'featurestore_http_request_duration_seconds_bucket{{{route},le="+Inf"}}' in text
        freshness = 'featurestore_feature_freshness_seconds_bucket{view="%s",le="%s"}'
        # every value is 3 to 4 hours old: none within 1 h, all within 6 h
        assert metric_value(text, freshness % (VIEW, "3600")) == 0
        assert metric_value(text, freshness % (VIEW, "21600")) == ok + len(DRIVERS)

        # a new registry version is served within the refresh interval (0.5 s), no restart
        features = repo / "features.py"
        features.write_text(features.read_text().replace('ttl="2d"', 'ttl="3d"'))
        store = FeatureStore(repo)
        assert store.apply().version == 2
        store.close()
        applied = time.monotonic()
        seen: set[int] = set()
        while time.monotonic() - applied < 10:
            # fresh connections: both workers must move to the new version
            status, _, doc = server.lookup(
                {"entities": {"driver_id": [1001]}, "feature_service": "driver_ranking"},
                fresh=True,
            )
            assert status == 200
            seen.add(doc["registry_version"])
            if doc["registry_version"] == 2 and len(seen) == 2:
                break
        took = time.monotonic() - applied
        assert seen == {1, 2} or seen == {2}
        assert took < 3.0, took
        time.sleep(1.0)
        versions = {
            server.lookup(
                {"entities": {"driver_id": [1001]}, "feature_service": "driver_ranking"},
                fresh=True,
            )[2]["registry_version"]
            for _ in range(10)
        }
        assert versions == {2}
        assert server.request("GET", "/health")[2]["registry_version"] == 2
    finally:
        server.stop()
