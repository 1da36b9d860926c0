"""The server's parts in-process: request checks, error mapping, auth, metrics, docs.

The app tests run the real ASGI app (middleware, FastAPI routes, lifespan) in a
uvicorn thread on a free loopback port, against a quickstart repo with an
embedded SQLite store.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from featurestore.api.feature_log import log_table_name
from featurestore.api.store import FeatureStore
from featurestore.errors import (
    DataError,
    DefinitionError,
    OnlineStoreError,
    OnlineStoreUnavailable,
    RegistryConflictError,
    RequestError,
    UnknownFeatureError,
    UnknownServiceError,
)
from featurestore.server import ServerOptions, create_app
from featurestore.server.accesslog import AccessLog, JsonLineFormatter
from featurestore.server.auth import Authenticator
from featurestore.server.errors import (
    Forbidden,
    HttpProblem,
    PayloadTooLarge,
    Unauthorized,
    error_response,
    status_for,
)
from featurestore.server.lookup import parse_request
from featurestore.server.metrics import ServerMetrics
from featurestore.server.models import OnlineFeaturesRequest
from featurestore.server.state import GuardedStore
from featurestore.stores.online import MemoryOnlineStore, OnlineViewSchema, ReadRequest
from tests.fixtures.services import free_port
from tests.helpers import quickstart

SERVICE = {"feature_service": "driver_ranking"}


# -- parse_request -------------------------------------------------------------------------
def _raises(body: Any, field: str, kind: Any = RequestError, max_entities: int = 10):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(kind) as info:
        parse_request(raw, max_entities=max_entities)
    assert getattr(info.value, "field", None) == field, info.value
    return info.value


def test_parse_request_accepts_the_documented_shapes():
    req = parse_request(
        b'{"entities": {"driver_id": [1, 2]}, "features": ["v:a", "v:b"]}', max_entities=2
    )
    assert (req.entities, req.features, req.feature_service, req.size) == (
        {"driver_id": [1, 2]},
        ("v:a", "v:b"),
        None,
        2,
    )
    req = parse_request(
        b'{"entities": {"k": ["x"], "j": [null]}, "feature_service": "s",'
        b' "full_feature_names": true, "request_time": "2026-01-01T00:00:00Z"}',
        max_entities=1,
    )
    assert req.feature_service == "s" and req.full_feature_names is True
    assert req.request_time_us == int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000
    assert (
        parse_request(
            b'{"entities": {"k": [1]}, "features": ["v:a"], "request_time": 5}', max_entities=1
        ).request_time_us
        == 5
    )


def test_parse_request_names_what_is_wrong():
    ok = {"entities": {"k": [1]}, **SERVICE}
    err = _raises(b"{nope", "body")
    assert "not valid JSON" in err.message and "entities" in (err.hint or "")
    _raises(b'"text"', "body")
    _raises({**ok, "extra": 1}, "extra")
    _raises({"features": ["v:a"]}, "entities")
    _raises({"entities": [1], **SERVICE}, "entities")
    _raises({"entities": {}, **SERVICE}, "entities")
    _raises({"entities": {"k": 1}, **SERVICE}, "entities.k")
    _raises({"entities": {"k": []}, **SERVICE}, "entities.k")
    err = _raises({"entities": {"k": [1], "j": [1, 2]}, **SERVICE}, "entities")
    assert err.value == {"k": 1, "j": 2}
    _raises({"entities": {"k": [1]}}, "feature_service")
    _raises({**ok, "features": ["v:a"]}, "features")
    _raises({"entities": {"k": [1]}, "features": []}, "features")
    _raises({"entities": {"k": [1]}, "features": "v:a"}, "features")
    _raises({"entities": {"k": [1]}, "features": ["v:a", "a"]}, "features[1]")
    _raises({"entities": {"k": [1]}, "features": ["v:"]}, "features[0]")
    _raises({"entities": {"k": [1]}, "features": [3]}, "features[0]")
    _raises({"entities": {"k": [1]}, "feature_service": ""}, "feature_service")
    _raises({**ok, "full_feature_names": 1}, "full_feature_names")
    _raises({**ok, "request_time": True}, "request_time")
    _raises({**ok, "request_time": "yesterday"}, "request_time", (RequestError, DataError))
    _raises({**ok, "request_time": "2026-01-01T00:00:00"}, "request_time", DataError)
    _raises({**ok, "request_data": [1]}, "request_data")
    _raises({**ok, "request_data": {"x": 1}}, "request_data.x")
    err = _raises({"entities": {"k": list(range(11))}, **SERVICE}, "entities", PayloadTooLarge)
    assert "at most 10" in err.message and err.value == 11


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=3))
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
    ),
    max_leaves=6,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "entities": st.one_of(
            json_value,
            st.dictionaries(
                st.sampled_from(["k", "j"]), st.lists(json_leaf, max_size=3), max_size=2
            ),
        ),
        "features": st.one_of(
            json_value, st.lists(st.sampled_from(["v:a", "v:b", "a", ":a", "v:"]), max_size=3)
        ),
        "feature_service": st.one_of(json_value, st.sampled_from(["s", ""])),
        "full_feature_names": json_value,
        "request_time": st.one_of(json_value, st.just("2026-01-01T00:00:00Z")),
        "request_data": st.one_of(
            json_value, st.dictionaries(st.sampled_from(["x", "y"]), st.lists(json_leaf))
        ),
    },
)


@settings(max_examples=150, deadline=None)
@given(bodies)
def test_the_documented_model_accepts_whatever_the_parser_accepts(doc):
    raw = json.dumps(doc).encode()
    try:
        parse_request(raw, max_entities=3)
    except (RequestError, DataError):
        return
    # the docs are never narrower than the server: what it serves, they describe
    OnlineFeaturesRequest.model_validate_json(raw)


def test_the_model_rejects_what_the_parser_rejects_by_shape():
    for doc in (
        {"entities": {"k": [1]}, **SERVICE, "extra": 1},
        {"entities": {}, **SERVICE},
        {"entities": {"k": [1.5]}, **SERVICE},
        {"entities": {"k": [1]}, "features": []},
        {"entities": {"k": [1]}, **SERVICE, "full_feature_names": "yes"},
    ):
        with pytest.raises(ValidationError):
            OnlineFeaturesRequest.model_validate_json(json.dumps(doc))


# -- errors -> HTTP ------------------------------------------------------------------------------
def test_status_codes_follow_the_error_tree():
    cases = [
        (UnknownFeatureError("x"), 404),
        (UnknownServiceError("x"), 404),
        (RequestError("x"), 422),
        (DataError("x"), 422),
        (OnlineStoreUnavailable("x"), 503),
        (RegistryConflictError("x"), 503),
        (OnlineStoreError("corrupt record"), 500),
        (DefinitionError("x"), 500),
        (Unauthorized("x", hint="h"), 401),
        (Forbidden("x", field="f", value="v", hint="h"), 403),
        (PayloadTooLarge("x", field="f", value=1, hint="h"), 413),
        (ZeroDivisionError(), 500),
    ]
    for exc, status in cases:
        assert status_for(exc) == status, exc
    status, body, headers = error_response(OnlineStoreUnavailable("down", obj="Redis x"))
    assert status == 503 and (b"retry-after", b"1") in headers
    assert json.loads(body)["retryable"] is True and json.loads(body)["object"] == "Redis x"
    status, body, headers = error_response(Unauthorized("no key", hint="send one"))
    assert status == 401 and (b"www-authenticate", b"Bearer") in headers
    status, body, _ = error_response(KeyError("secret internals"))
    assert status == 500 and b"secret" not in body and json.loads(body)["error"] == "InternalError"
    assert issubclass(Unauthorized, HttpProblem)


# -- auth ------------------------------------------------------------------------------------
def test_bearer_keys_and_service_restrictions():
    assert Authenticator([]).check(None) is None
    auth = Authenticator(["alpha", "beta"], {"private": ["beta"]})
    assert auth.check(b"Bearer alpha") == b"alpha"
    assert auth.check(b"bearer  beta ") == b"beta"
    for header in (None, b"Bearer", b"Bearer alph", b"Bearer alphaa", b"Basic alpha", b"alpha"):
        with pytest.raises(Unauthorized):
            auth.check(header)
    auth.check_service(b"beta", "private")
    auth.check_service(b"alpha", "public")
    auth.check_service(b"alpha", None)
    with pytest.raises(Forbidden) as info:
        auth.check_service(b"alpha", "private")
    assert info.value.value == "private"
    with pytest.raises(DefinitionError) as err:
        Authenticator(["alpha"], {"private": ["gamma"]})
    assert "gamma" not in str(err.value)  # a key is a secret, even a wrong one
    with pytest.raises(DefinitionError):
        Authenticator([], {"private": []})


# -- access log -------------------------------------------------------------------------------
def test_access_log_keeps_every_error_and_one_success_in_n():
    log = AccessLog(sample=0.25)
    assert [log.wants(200) for _ in range(8)] == [False, False, False, True] * 2
    assert all(log.wants(s) for s in (401, 404, 422, 503))
    assert not AccessLog(sample=0).wants(200)
    record = logging.LogRecord("x", logging.INFO, "", 0, "request", None, None)
    record.access = {"status": 503, "path": "/v1/features/online", "error": "E"}
    line = json.loads(JsonLineFormatter().format(record))
    assert line["status"] == 503 and line["error"] == "E" and line["ts"].endswith("Z")


# -- metrics ----------------------------------------------------------------------------------
def _series(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_histograms_count_each_value_in_the_first_bucket_that_holds_it():
    m = ServerMetrics()
    for v in (0.0001, 0.0002, 0.001, 20.0):
        m.latency.observe(v, ("/x",))
    m.requests.inc(("/x", "200"), 3)
    m.registry_version.set(7)
    text = m.render()
    got = _series(text)
    bucket = 'featurestore_http_request_duration_seconds_bucket{route="/x",le="%s"}'
    assert got[bucket % "0.0001"] == 1  # le is inclusive
    assert got[bucket % "0.00025"] == 2
    assert got[bucket % "0.001"] == 3
    assert got[bucket % "10"] == 3
    assert got[bucket % "+Inf"] == 4
    assert got['featurestore_http_request_duration_seconds_count{route="/x"}'] == 4
    assert got['featurestore_http_request_duration_seconds_sum{route="/x"}'] == pytest.approx(
        20.0013
    )
    assert got['featurestore_http_requests_total{route="/x",status="200"}'] == 3
    assert got["featurestore_registry_version"] == 7
    assert "# TYPE featurestore_http_request_duration_seconds histogram" in text
    m.requests.inc(('a"b\\c\n', "200"))
    assert 'route="a\\"b\\\\c\\n"' in m.render()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([0.0, 0.0001, 0.001, 0.5, 10.0]),  # on the bounds
            st.floats(0, 20, allow_nan=False),
        ),
        max_size=40,
    )
)
def test_observe_many_counts_as_observe_does(values):
    one, many = ServerMetrics(), ServerMetrics()
    for v in values:
        one.latency.observe(v, ("r",))
    many.latency.observe_many(list(values), ("r",))
    if not values:
        assert many.latency.series == {}
        return
    a, b = one.latency.series[("r",)], many.latency.series[("r",)]
    assert a[:-1] == b[:-1]
    assert a[-1] == pytest.approx(b[-1])


def test_metrics_add_up_over_worker_processes(tmp_path):
    one = ServerMetrics(directory=tmp_path, worker_id="1")
    two = ServerMetrics(directory=tmp_path, worker_id="2")
    one.requests.inc(("/v", "200"), 5)
    two.requests.inc(("/v", "200"), 2)
    two.requests.inc(("/v", "503"))
    one.freshness.observe(100e6, ("view",))  # observed in microseconds
    two.freshness.observe_many([5000e6], ("view",))
    one.registry_version.set(3)
    two.registry_version.set(4)
    two.flush()
    got = _series(one.render())  # worker 1: its live numbers + worker 2's snapshot
    assert got['featurestore_http_requests_total{route="/v",status="200"}'] == 7
    assert got['featurestore_http_requests_total{route="/v",status="503"}'] == 1
    assert got['featurestore_feature_freshness_seconds_count{view="view"}'] == 2
    assert got['featurestore_feature_freshness_seconds_bucket{view="view",le="300"}'] == 1
    assert got['featurestore_feature_freshness_seconds_sum{view="view"}'] == 5100.0
    assert got["featurestore_registry_version"] == 4
    # a snapshot being replaced (or garbage) is skipped, not fatal
    (tmp_path / "3.json").write_text("{half")
    assert _series(one.render())['featurestore_http_requests_total{route="/v",status="200"}'] == 7
    one.start()
    one.stop()  # stop() flushes: another worker now sees worker 1 too
    got = _series(ServerMetrics(directory=tmp_path, worker_id="9").render())
    assert got['featurestore_http_requests_total{route="/v",status="200"}'] == 7


# -- the store guard ---------------------------------------------------------------------------
class FlakyStore(MemoryOnlineStore):
    """The in-memory store with an outage switch (fault injection), counting calls."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.reads = self.pings = 0

    def read(self, requests):
        self.reads += 1
        if self.down:
            raise OnlineStoreUnavailable("connection refused", obj="flaky store")
        return super().read(requests)

    def ping(self):
        self.pings += 1
        if self.down:
            raise OnlineStoreUnavailable("connection refused", obj="flaky store")


def test_the_guard_fails_fast_while_down_and_recovers_by_itself():
    inner = FlakyStore()
    metrics = ServerMetrics()
    guard = GuardedStore(inner, metrics=metrics, probe_seconds=0.02)
    schema = OnlineViewSchema.build(
        project="p", view="v", keys={"k": "int64"}, features={"x": "float64"}
    )
    request = ReadRequest(schema, {"k": [1]})
    assert guard.read([request])[0].event_ts == [None]
    inner.down = True
    with pytest.raises(OnlineStoreUnavailable):
        guard.read([request])
    assert guard.down and metrics.store_up.series[()] == 0.0
    reads = inner.reads
    for _ in range(20):
        with pytest.raises(OnlineStoreUnavailable) as info:
            guard.read([request])
        assert info.value.obj == "flaky store"
    assert inner.reads == reads  # failed fast: the store was not asked again
    time.sleep(0.1)
    assert inner.pings >= 2 and guard.down  # the prober keeps asking
    inner.down = False
    deadline = time.monotonic() + 5
    while guard.down and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not guard.down and metrics.store_up.series[()] == 1.0
    assert guard.read([request])[0].event_ts == [None]
    # down again: a new prober takes over (the first one has exited)
    inner.down = True
    with pytest.raises(OnlineStoreUnavailable):
        guard.read([request])
    inner.down = False
    deadline = time.monotonic() + 5
    while guard.down and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not guard.down
    assert metrics.store_latency.series[(guard.kind,)][-1] > 0  # successful reads were timed
    guard.close()


# -- the app, in-process ------------------------------------------------------------------------
class Response:
    def __init__(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.status_code = status
        self.headers = headers
        self.text = raw.decode()

    def json(self) -> Any:
        return json.loads(self.text)


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        raw = body if isinstance(body, bytes | None) else json.dumps(body).encode()
        sent = {"Content-Type": "application/json"} if raw is not None else {}
        self.conn.request(method, path, body=raw, headers={**sent, **(headers or {})})
        resp = self.conn.getresponse()
        data = resp.read()
        headers = {k.lower(): v for k, v in resp.getheaders()}
        if headers.get("connection") == "close":
            self.conn.close()
        return Response(resp.status, headers, data)

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, *, json: Any, headers: dict[str, str] | None = None) -> Response:
        return self.request("POST", path, json, headers)


@contextmanager
def serve(app: Any) -> Iterator[Client]:
    """``app`` under uvicorn in a thread (lifespan included), and a client for it."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    client = Client(port)
    try:
        yield client
    finally:
        client.conn.close()
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = quickstart(tmp_path_factory.mktemp("app") / "repo")
    data = root / "data" / "driver_stats.parquet"
    frame = pl.read_parquet(data)
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    shift = now - frame["event_timestamp"].max()
    frame.with_columns(pl.col("event_timestamp") + shift, pl.col("created") + shift).write_parquet(
        data
    )
    store = FeatureStore(root)
    store.apply()
    store.backfill()
    store.materialize(end=now)
    store.close()
    return root


def test_lookup_docs_health_and_ready_in_process(repo):
    app = create_app(repo, options=ServerOptions(max_entities=5))
    with serve(app) as client:
        resp = client.post(
            "/v1/features/online",
            json={
                "entities": {"driver_id": [1001, 7]},
                "features": ["driver_hourly_stats:conv_rate"],
            },
        )
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
        doc = resp.json()
        assert doc["features"]["conv_rate"]["statuses"] == ["PRESENT", "MISSING"]
        assert isinstance(doc["features"]["conv_rate"]["values"][0], float)
        resp = client.post(
            "/v1/features/online",
            json={"entities": {"driver_id": list(range(6))}, **SERVICE},
        )
        assert resp.status_code == 413 and "at most 5" in resp.json()["message"]
        assert client.get("/v1/features/online").status_code == 405
        health = client.get("/health").json()
        assert health == {"status": "ok", "registry_version": 1, "pid": os.getpid()}
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["online_store"] == "ok"
        assert 'route="other"' not in client.get("/metrics").text
        assert client.get("/nowhere").status_code == 404
        assert 'featurestore_http_requests_total{route="other",status="404"} 1' in (
            client.get("/metrics").text
        )

        spec = client.get("/openapi.json").json()
        op = spec["paths"]["/v1/features/online"]["post"]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert set(body["properties"]) == {
            "entities",
            "features",
            "feature_service",
            "full_feature_names",
            "request_time",
            "request_data",
        }
        assert body["additionalProperties"] is False
        for status in ("200", "401", "403", "404", "413", "422", "503"):
            assert status in op["responses"], status
        ref = op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorResponse")
        assert set(spec["components"]["schemas"]["OnlineFeaturesResponse"]["properties"]) == {
            "entities",
            "features",
            "registry_version",
            "request_time_us",
        }
        assert client.get("/docs").status_code == 200


def test_the_documented_route_serves_lookups_when_mounted_under_a_prefix(repo):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    inner = create_app(repo, options=ServerOptions(max_body_bytes=2000))
    outer = Starlette(routes=[Mount("/fs", app=inner)])
    body = {"entities": {"driver_id": [1001]}, **SERVICE}
    with serve(outer) as client:
        resp = client.post("/fs/v1/features/online", json=body)
        assert resp.status_code == 200
        assert resp.json()["features"]["conv_rate"]["statuses"] == ["PRESENT"]
        resp = client.post("/fs/v1/features/online", json={**body, "feature_service": "x" * 3000})
        assert resp.status_code == 413
    counted = inner.state.metrics.requests.series
    assert counted == {("/v1/features/online", "200"): 1, ("/v1/features/online", "413"): 1}


def test_a_pinned_version_is_served_after_the_head_moves(repo, tmp_path):
    copy = Path(shutil.copytree(repo, tmp_path / "repo"))
    features = copy / "features.py"
    features.write_text(features.read_text().replace('ttl="2d"', 'ttl="1d"'))
    store = FeatureStore(copy)
    assert store.apply().version == 2
    store.close()
    body = {"entities": {"driver_id": [1001]}, **SERVICE}
    with serve(create_app(copy, registry_version=1)) as client:
        assert client.post("/v1/features/online", json=body).json()["registry_version"] == 1
    with serve(create_app(copy)) as client:
        assert client.post("/v1/features/online", json=body).json()["registry_version"] == 2


def test_ready_is_503_before_anything_is_applied(tmp_path):
    root = quickstart(tmp_path / "empty")
    with serve(create_app(root)) as client:
        resp = client.get("/ready")
        assert resp.status_code == 503
        assert "featurestore apply" in resp.json()["registry"]
        resp = client.post("/v1/features/online", json={"entities": {"driver_id": [1]}, **SERVICE})
        assert resp.status_code == 404 and "driver_ranking" in resp.json()["object"]


def test_on_demand_features_read_request_data(repo):
    body = {
        "entities": {"driver_id": [1001, 7]},
        "features": ["driver_hourly_stats:avg_daily_trips", "trip_fit:trips_per_km"],
        "request_data": {"distance_km": [4.0, 2.0]},
    }
    with serve(create_app(repo)) as client:
        doc = client.post("/v1/features/online", json=body).json()
        trips = doc["features"]["avg_daily_trips"]["values"][0]
        fit = doc["features"]["trips_per_km"]
        assert fit["values"][0] == pytest.approx(trips / 4.0)
        assert fit["statuses"] == ["PRESENT", "MISSING"]
        resp = client.post("/v1/features/online", json={**body, "request_data": {}})
        assert resp.status_code == 422 and "distance_km" in resp.text


def test_served_rows_go_to_the_feature_log(repo, tmp_path):
    copy = Path(shutil.copytree(repo, tmp_path / "repo"))
    app = create_app(copy, options=ServerOptions(feature_logging=True))
    with serve(app) as client:
        for rid, ids in (("req-a", [1001, 1002]), ("req-b", [1003])):
            resp = client.post(
                "/v1/features/online",
                json={"entities": {"driver_id": ids}, **SERVICE},
                headers={"X-Request-ID": rid},
            )
            assert resp.status_code == 200
    # the lifespan's end flushed the log
    store = FeatureStore(copy)
    rows = (
        store.offline.read_table(log_table_name(feature_service="driver_ranking"))
        .collect()
        .sort("request_id", "entity_index")
    )
    store.close()
    assert rows["request_id"].to_list() == ["req-a", "req-a", "req-b"]
    assert rows["driver_id"].to_list() == [1001, 1002, 1003]
    assert rows["registry_version"].to_list() == [1, 1, 1]
    assert set(rows["driver_hourly_stats__conv_rate__status"]) == {"PRESENT"}


def test_request_time_decides_expiry(repo):
    later = datetime.now(UTC) + timedelta(days=3)
    with serve(create_app(repo)) as client:
        doc = client.post(
            "/v1/features/online",
            json={
                "entities": {"driver_id": [1001]},
                **SERVICE,
                "request_time": later.isoformat(),
            },
        ).json()
    assert doc["features"]["conv_rate"]["statuses"] == ["EXPIRED"]
    assert doc["features"]["conv_rate"]["values"] == [None]
    assert doc["request_time_us"] == int(later.timestamp() * 1_000_000)


# -- issue 15: hostile values, limits, adoption, readiness, media types, log sampling -------
def test_nested_and_out_of_range_values_are_refused_naming_the_field_before_any_work():
    ok = {"entities": {"k": [1]}, **SERVICE}
    deep = b"[" * 1000 + b"1" + b"]" * 1000  # too deep for json.dumps, fine for orjson
    started = time.perf_counter()
    err = _raises(
        b'{"entities": {"k": [1]}, "feature_service": "s", "request_data": {"x": [' + deep + b"]}}",
        "request_data.x[0][0]",
    )
    assert "a list of 1" in str(err.value)
    assert parse_request(  # a flat list is one value of a list-typed request field
        json.dumps({**ok, "request_data": {"x": [[1, None]]}}).encode(), max_entities=1
    ).request_data == {"x": [[1, None]]}
    _raises({**ok, "request_data": {"x": [{"a": 1}]}}, "request_data.x[0]")
    _raises({**ok, "request_data": {"x": [2**63]}}, "request_data.x[0]")
    _raises(b'{"entities": {"k": [' + deep + b']}, "feature_service": "s"}', "entities.k[0]")
    _raises({"entities": {"k": [1, [1]]}, **SERVICE}, "entities.k[1]")
    _raises({"entities": {"k": [{"a": 1}]}, **SERVICE}, "entities.k[0]")
    assert time.perf_counter() - started < 1.0
    # ranges: 2^63 is an int to orjson, 2^64 a float; both are refused alike
    for raw in (b"9223372036854775808", b"18446744073709551616", b"-9223372036854775809"):
        body = b'{"entities": {"k": [' + raw + b']}, "feature_service": "s"}'
        _raises(body, "entities.k[0]")
    assert (
        parse_request(
            b'{"entities": {"k": [9223372036854775807, -9223372036854775808]},'
            b' "feature_service": "s"}',
            max_entities=2,
        ).size
        == 2
    )
    _raises({**ok, "request_time": 2**63}, "request_time")
    _raises({**ok, "request_time": -(2**62)}, "request_time")
    _raises({**ok, "request_time": 2**64}, "request_time")
    _raises(b'{"entities": {"k": [NaN]}, "feature_service": "s"}', "body")
    _raises(b'{"entities": {"k": [Infinity]}, "feature_service": "s"}', "body")


def test_feature_references_are_bounded_and_deduplicated():
    refs = [f"v:f{i}" for i in range(11)]
    raw = json.dumps({"entities": {"k": [1]}, "features": refs}).encode()
    with pytest.raises(PayloadTooLarge) as info:
        parse_request(raw, max_entities=1, max_features=10)
    err = info.value
    assert err.field == "features" and err.value == 11 and "at most 10" in err.message
    raw = json.dumps({"entities": {"k": [1]}, "features": refs[:10]}).encode()
    assert len(parse_request(raw, max_entities=1, max_features=10).features or ()) == 10
    raw = json.dumps({"entities": {"k": [1]}, "features": ["v:a", "v:b", "v:a"]}).encode()
    assert parse_request(raw, max_entities=1).features == ("v:a", "v:b")


def test_the_plan_cache_is_an_lru_bounded_by_entries_and_references(repo, monkeypatch):
    from itertools import permutations

    from featurestore.server import state as state_module

    monkeypatch.setattr(state_module, "MAX_PLANS", 8)
    monkeypatch.setattr(state_module, "MAX_PLAN_REFS", 20)
    store = FeatureStore(repo)
    try:
        serving = state_module.Serving(store, metrics=ServerMetrics())
        names = [f"driver_hourly_stats:{f}" for f in ("conv_rate", "acc_rate", "avg_daily_trips")]
        lists = [p for k in (1, 2, 3) for p in permutations(names, k)]
        hot = lists[0]
        for features in lists:
            serving.plan(features, None, False)
            serving.plan(hot, None, False)  # used all the time: never evicted
            plans = serving.state.plans
            assert len(plans) <= 8 and serving.state.plan_refs <= 20
            assert serving.state.plan_refs == sum(len(k[0] or ()) for k in plans)
        assert (hot, None, False) in serving.state.plans
        assert (lists[1], None, False) not in serving.state.plans  # least recently used
    finally:
        store.close()


def _apply_unservable(repo: Path) -> int:
    """Fault injection: put a version in the registry whose view has a feature named like
    its join key (a plan the compiler may let through but the online layout refuses)."""
    from featurestore.compile.plan import ObjectPlan, RepoPlan

    store = FeatureStore(repo)
    try:
        snap = store.registry.snapshot()
        objects = []
        for o in snap.plan.objects:
            if o.kind == "feature_view" and o.name == "driver_hourly_stats":
                spec = dict(o.spec)
                spec["features"] = [*spec["features"], {"name": "driver_id", "dtype": "int64"}]
                o = ObjectPlan(o.kind, o.name, spec)
            objects.append(o)
        return store.registry.apply(RepoPlan(snap.plan.project, tuple(objects))).version
    finally:
        store.close()


def test_a_version_that_cannot_be_served_is_not_adopted(repo, tmp_path):
    copy = Path(shutil.copytree(repo, tmp_path / "repo"))
    body = {"entities": {"driver_id": [1001]}, **SERVICE}
    app = create_app(copy, options=ServerOptions(registry_refresh_seconds=0.05))
    with serve(app) as client:
        bad = _apply_unservable(copy)
        assert bad == 2
        deadline = time.monotonic() + 10
        while app.state.serving.rejected is None and time.monotonic() < deadline:
            time.sleep(0.05)
        resp = client.post("/v1/features/online", json=body)
        assert resp.status_code == 200 and resp.json()["registry_version"] == 1
        ready = client.get("/ready").json()
        assert ready["registry_version"] == 1 and ready["rejected_version"] == 2
        assert "driver_id" in ready["rejected_reason"]
        assert "featurestore_registry_rejected_version 2" in client.get("/metrics").text
    # a server started on the bad head serves the newest good version
    app = create_app(copy)
    with serve(app) as client:
        assert client.post("/v1/features/online", json=body).json()["registry_version"] == 1
        assert client.get("/ready").json()["rejected_version"] == 2


def test_ready_fails_when_the_head_serves_nothing(repo, tmp_path):
    copy = Path(shutil.copytree(repo, tmp_path / "repo"))
    store = FeatureStore(copy)
    assert store.registry.rollback(to_version=0).version == 2
    store.close()
    with serve(create_app(copy)) as client:
        resp = client.get("/ready")
        assert resp.status_code == 503 and "serves nothing" in resp.json()["registry"]
        assert resp.json()["registry_version"] == 2


def test_lookups_need_json_and_health_answers_head(repo):
    body = {"entities": {"driver_id": [1001]}, **SERVICE}
    with serve(create_app(repo)) as client:
        for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
            resp = client.post("/v1/features/online", json=body, headers={"Content-Type": ctype})
            assert resp.status_code == 415, ctype
            assert resp.json()["field"] == "Content-Type" and resp.headers["connection"] == "close"
        client.conn.close()
        client.conn.request("POST", "/v1/features/online", body=json.dumps(body).encode())
        resp = client.conn.getresponse()
        assert resp.status == 415 and b"(none)" in resp.read()
        client.conn.close()
        resp = client.post(
            "/v1/features/online",
            json=body,
            headers={"Content-Type": "Application/JSON; charset=utf-8"},
        )
        assert resp.status_code == 200
        head = client.request("HEAD", "/health")
        assert head.status_code == 200 and head.text == ""


def test_the_openapi_schema_says_features_or_service_one_of():
    import jsonschema_rs  # comes with schemathesis

    from featurestore.server.models import request_schema

    validator = jsonschema_rs.validator_for(request_schema())
    entities = {"driver_id": [1]}
    for doc, valid in (
        ({"entities": entities, "features": ["v:a"]}, True),
        ({"entities": entities, "feature_service": "s"}, True),
        ({"entities": entities, "feature_service": "s", "features": None}, True),
        ({"entities": entities, "feature_service": "s", "features": ["v:a"]}, False),
        ({"entities": entities}, False),
        ({"entities": entities, "features": None, "feature_service": None}, False),
        ({"entities": {"driver_id": [2**63]}, "feature_service": "s"}, False),
        ({"entities": entities, "feature_service": "s", "request_time": 2**63}, False),
        ({"entities": entities, "feature_service": "s", "request_data": {"x": [[[1]]]}}, False),
    ):
        assert validator.is_valid(doc) is valid, doc
        try:
            parse_request(json.dumps(doc).encode(), max_entities=5)
            accepted = True
        except (RequestError, DataError):
            accepted = False
        assert accepted is valid, doc


def test_request_data_is_checked_against_declared_dtypes_and_health_keeps_answering(repo):
    base = {"entities": {"driver_id": [1001]}, "features": ["trip_fit:trips_per_km"]}
    deep = (b"[" * 1000 + b"4.0" + b"]" * 1000).decode()
    with serve(create_app(repo)) as client:
        for data, field in (
            ('{"distance_km": ["far"]}', "request_data.distance_km[0]"),
            ('{"distance_km": [true]}', "request_data.distance_km[0]"),
            ('{"distance_km": [[1.0]]}', "request_data.distance_km[0]"),
            ('{"distance_km": [' + deep + "]}", "request_data.distance_km[0][0]"),
        ):
            started = time.perf_counter()
            raw = json.dumps(base)[:-1] + ', "request_data": ' + data + "}"
            resp = client.post("/v1/features/online", json=raw.encode())
            assert resp.status_code == 422 and resp.json()["field"] == field, resp.text
            assert time.perf_counter() - started < 1.0
            assert client.get("/health").status_code == 200
        resp = client.post(
            "/v1/features/online", json={**base, "request_data": {"distance_km": [2]}}
        )
        assert resp.status_code == 200 and resp.json()["features"]["trips_per_km"]["values"][0]


def test_a_stalled_body_is_cut_after_the_body_timeout(repo):
    import socket

    app = create_app(repo, options=ServerOptions(body_timeout_seconds=0.5))
    with serve(app) as client:
        port = client.conn.port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/features/online HTTP/1.1\r\nHost: x\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"entities"'
            )
            started = time.perf_counter()
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
            took = time.perf_counter() - started
        assert reply.startswith(b"HTTP/1.1 408") and b"11 bytes received" in reply
        assert 0.4 < took < 3.0


def test_repeated_errors_are_sampled_in_the_log_and_counted_in_metrics():
    metrics = ServerMetrics()
    log = AccessLog(sample=0, error_lines_per_second=3, metrics=metrics)
    assert [log.wants(503) for _ in range(10)] == [True] * 3 + [False] * 7
    assert log.wants(404)  # another status has its own budget
    assert metrics.log_suppressed.series == {("503",): 7.0}
    log._errors[503][0] -= 1.0  # a second later
    assert log.wants(503)
    seen: list[dict[str, Any]] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.access)  # type: ignore[attr-defined]

    log.logger = logging.getLogger("tests.access_capture")
    log.logger.setLevel(logging.INFO)
    log.logger.addHandler(Capture())
    log.write(503, {"path": "/x"})
    log.write(503, {"path": "/x"})
    assert seen[0]["suppressed"] == 7 and "suppressed" not in seen[1]
