"""Push (``FeatureStore.push``, ``POST /v1/push``): real Redis, real Delta tables, a
real server process over a socket.

The claims: a push gives the online values a backfill + materialization of the same
rows gives (a plain and an aggregated view); a push replayed with its id writes
nothing twice, while equal rows under another id are more events; a late row never
replaces a newer value; a bad row refuses the whole push, naming the field, before
anything is written; only push keys may push.
"""

from __future__ import annotations

import http.client
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

from featurestore import FeatureStore
from featurestore.errors import DataError, OnlineStoreUnavailable
from featurestore.stores.view_specs import offline_spec
from tests.fixtures.services import RedisServer
from tests.helpers import write_repo
from tests.integration.served import running_server

DEFS = """
import polars as pl
from featurestore import Aggregation, BatchSource, Entity, FeatureView, Field

driver = Entity(name="driver", join_keys={"driver_id": "int64"})
trips = BatchSource(name="trips", path="data/trips.parquet", timestamp_field="ts",
                    created_timestamp_field="created")
driver_last = FeatureView(
    name="driver_last", entities=[driver], source=trips, ttl="30d",
    transform={"fare_per_km": pl.col("fare") / pl.col("km")},
    fields=[Field(name="fare", dtype=pl.Float64), Field(name="fare_per_km", dtype=pl.Float64)],
)
driver_trips = FeatureView(
    name="driver_trips", entities=[driver], source=trips, ttl=None,
    transform={"fare_per_km": pl.col("fare") / pl.col("km")},
    aggregations=[
        Aggregation(name="trips_1d", column=None, function="count", window="1d"),
        Aggregation(name="fare_sum_1d", column="fare", function="sum", window="1d"),
        Aggregation(name="per_km_mean_1d", column="fare_per_km", function="mean",
                    window="1d", hop="1h"),
        Aggregation(name="max_fare", column="fare", function="max", window="lifetime"),
    ],
)
"""
NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=20)
PLAIN = ["driver_last:fare", "driver_last:fare_per_km"]
AGG = [
    "driver_trips:trips_1d",
    "driver_trips:fare_sum_1d",
    "driver_trips:per_km_mean_1d",
    "driver_trips:max_fare",
]


def _events(n: int = 400, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ts = [T0 + timedelta(seconds=int(s)) for s in rng.integers(0, 19 * 3600, n)]
    return pl.DataFrame(
        {
            "driver_id": rng.integers(1, 25, n),
            "ts": ts,
            "created": [
                t + timedelta(seconds=int(d))
                for t, d in zip(ts, rng.integers(1, 60, n), strict=True)
            ],
            "fare": rng.gamma(2.0, 10.0, n).round(2),
            "km": rng.uniform(0.5, 20.0, n).round(1),
        }
    ).with_columns(pl.col("ts", "created").dt.cast_time_unit("us").dt.replace_time_zone("UTC"))


def _repo(root: Path, redis_url: str, *, project: str, server: str = "") -> Path:
    repo = write_repo(root, {"features.py": DEFS}, project=project)
    with (repo / "featurestore.toml").open("a") as f:
        f.write(f'[online_store]\nurl = "{redis_url}"\n{server}')
    (repo / "data").mkdir()
    _events().write_parquet(repo / "data" / "trips.parquet")  # the schema the compiler reads
    return repo


@pytest.fixture
def pushed(tmp_path: Path, redis_url: str) -> Iterator[FeatureStore]:
    store = FeatureStore(_repo(tmp_path / "push", redis_url, project="pushed"))
    store.apply()
    yield store
    store.close()


def _values(store: FeatureStore, features: list[str], ids: list[int]) -> dict[str, list[Any]]:
    frame = store.get_online_features(
        {"driver_id": ids}, features=features, request_time=NOW
    ).to_polars()
    return {c: frame[c].to_list() for c in frame.columns}


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return bool(a == b)


def _offline_rows(store: FeatureStore, view: str) -> pl.DataFrame:
    spec = offline_spec(store.index().view(view))
    frame = store.offline.read_view(spec).collect()
    cols = [c for c in frame.columns if not c.startswith("_")]
    return frame.select(cols).sort(cols)


def test_push_equals_backfill_and_materialize(tmp_path: Path, redis_url: str, pushed) -> None:
    batch = FeatureStore(_repo(tmp_path / "batch", redis_url, project="batch"))
    try:
        batch.apply()
        batch.backfill()
        batch.materialize(end=NOW)
        events = _events()
        # in three pushes, as an application would send them
        for i, part in enumerate(events.iter_slices(150)):
            report = pushed.push("driver_last", part, push_id=f"plain-{i}")
            assert report.rows == part.height
            pushed.push("driver_trips", part, push_id=f"agg-{i}")
        ids = list(range(0, 26))  # 0 and 25 have no events
        for features in (PLAIN, AGG):
            want, got = _values(batch, features, ids), _values(pushed, features, ids)
            assert want.keys() == got.keys()
            for col in want:
                bad = [
                    (ids[i], w, g)
                    for i, (w, g) in enumerate(zip(want[col], got[col], strict=True))
                    if not _close(w, g)
                ]
                assert not bad, f"{col}: {bad[:5]}"
        assert _values(pushed, ["driver_trips:trips_1d"], [0])["trips_1d"] == [0]
        for view in ("driver_last", "driver_trips"):
            assert _offline_rows(pushed, view).equals(_offline_rows(batch, view))
    finally:
        batch.close()


def _one(driver: int, at: datetime, fare: float) -> pl.DataFrame:
    return pl.DataFrame(
        {"driver_id": [driver], "ts": [at], "created": [at], "fare": [fare], "km": [2.0]}
    ).with_columns(pl.col("ts", "created").dt.cast_time_unit("us"))


def test_a_replayed_push_writes_nothing_twice(pushed) -> None:
    rows = pl.concat([_one(7, NOW - timedelta(hours=1), 10.0), _one(7, NOW, 30.0)])
    first = pushed.push("driver_trips", rows, push_id="orders-17")
    again = pushed.push("driver_trips", rows, push_id="orders-17")
    assert (first.online_written, first.offline_written) == (1, 2)
    assert (again.online_written, again.offline_written) == (0, 0)
    assert again.online_skipped == 2  # both rows recognised as already folded in
    got = _values(pushed, ["driver_trips:trips_1d", "driver_trips:fare_sum_1d"], [7])
    assert (got["trips_1d"], got["fare_sum_1d"]) == ([2], [40.0])
    assert _offline_rows(pushed, "driver_trips").height == 2
    pushed.push("driver_last", rows, push_id="orders-17")
    replay = pushed.push("driver_last", rows, push_id="orders-17")
    assert (replay.online_written, replay.offline_written) == (0, 0)
    assert _offline_rows(pushed, "driver_last").height == 2


def test_equal_rows_under_another_id_are_more_events(pushed) -> None:
    rows = _one(3, NOW - timedelta(minutes=5), 12.5)
    pushed.push("driver_trips", rows, push_id="a")
    pushed.push("driver_trips", rows, push_id="b")
    got = _values(pushed, ["driver_trips:trips_1d", "driver_trips:fare_sum_1d"], [3])
    assert (got["trips_1d"], got["fare_sum_1d"]) == ([2], [25.0])
    assert _offline_rows(pushed, "driver_trips").height == 2  # two events, one each


def test_a_late_row_never_replaces_a_newer_value(pushed) -> None:
    pushed.push("driver_last", _one(5, NOW - timedelta(minutes=1), 99.0), push_id="new")
    late = pushed.push("driver_last", _one(5, NOW - timedelta(hours=3), 1.0), push_id="old")
    assert (late.online_written, late.online_skipped) == (0, 1)
    assert _values(pushed, ["driver_last:fare"], [5])["fare"] == [99.0]
    assert _offline_rows(pushed, "driver_last").height == 2  # offline keeps both


def test_a_bad_row_refuses_the_push_before_anything_is_written(pushed) -> None:
    rows = pl.concat([_one(8, NOW, 1.0), _one(9, NOW, 2.0)]).with_columns(
        pl.Series("driver_id", [8, None], dtype=pl.Int64)
    )
    with pytest.raises(DataError) as err:
        pushed.push("driver_last", rows, push_id="bad")
    assert err.value.field == "rows[1]"
    assert not pushed.offline.exists("driver_last")
    assert _values(pushed, ["driver_last:fare"], [8])["fare"] == [None]


def test_a_push_to_a_store_that_is_down_can_be_retried(tmp_path: Path, own_redis: RedisServer):
    store = FeatureStore(_repo(tmp_path / "r", own_redis.url, project="down"))
    try:
        store.apply()
        rows = _one(4, NOW, 5.0)
        own_redis.stop()
        with pytest.raises(OnlineStoreUnavailable):
            store.push("driver_trips", rows, push_id="p1")
        assert not store.offline.exists("driver_trips")  # online first, then offline
        own_redis.start()
        store.push("driver_trips", rows, push_id="p1")
        store.push("driver_trips", rows, push_id="p1")
        assert _values(store, ["driver_trips:trips_1d"], [4])["trips_1d"] == [1]
    finally:
        store.close()


# -- over HTTP -------------------------------------------------------------------------

SERVER = """[server]
api_keys = ["reader", "writer", "plain-only"]
push_keys = ["writer", "plain-only"]
push_view_keys = { driver_trips = ["writer"] }
"""


def _post(port: int, body: Any, key: str | None) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    conn.request("POST", "/v1/push", body=json.dumps(body), headers=headers)
    response = conn.getresponse()
    doc = json.loads(response.read())
    conn.close()
    return response.status, doc


def test_push_over_http(tmp_path: Path, redis_url: str) -> None:
    repo = _repo(tmp_path / "http", redis_url, project="http", server=SERVER)
    store = FeatureStore(repo)
    store.apply()
    at = NOW.isoformat()
    good = {
        "view": "driver_trips",
        "push_id": "h-1",
        "rows": [
            {"driver_id": 11, "ts": at, "created": at, "fare": 4.0, "km": 1.0},
            {"driver_id": 11, "ts": at, "created": at, "fare": 6.0, "km": 2.0},
        ],
    }
    bad = {
        "view": "driver_last",
        "rows": {
            "driver_id": [12, 13],
            "ts": [at, "2024-05-01T12:00:00"],  # naive
            "created": [at, at],
            "fare": [1.0, 2.0],
            "km": [1.0, 1.0],
        },
    }
    try:
        with running_server(repo, tmp_path / "server.log") as port:
            assert _post(port, good, None)[0] == 401
            status, doc = _post(port, good, "reader")
            assert (status, doc["field"]) == (403, "Authorization")
            status, doc = _post(port, good, "plain-only")
            assert (status, doc["field"], doc["value"]) == (403, "view", "'driver_trips'")
            status, doc = _post(port, bad, "writer")
            assert status == 422 and doc["field"] == "rows[1].ts", doc
            assert not store.offline.exists("driver_last")
            status, doc = _post(port, {**good, "rows": {"driver_id": [1]}}, "writer")
            assert status == 422 and "missing" in doc["message"], doc
            # the lookup routes' JSON check: the same words, naming the push request
            status, doc = _post(port, [good], "writer")
            assert status == 422 and doc["field"] == "body" and doc["value"] == "'list'", doc
            assert "must be a JSON object" in doc["message"] and "push_id" in doc["hint"]
            status, doc = _post(port, good, "writer")
            assert status == 200 and (doc["rows"], doc["offline_written"]) == (2, 2), doc
            status, doc = _post(port, good, "writer")  # the client's retry
            assert status == 200 and (doc["online_written"], doc["offline_written"]) == (0, 0)
        got = _values(store, ["driver_trips:trips_1d", "driver_trips:fare_sum_1d"], [11])
        assert (got["trips_1d"], got["fare_sum_1d"]) == ([2], [10.0])
    finally:
        store.close()


def test_push_command(tmp_path: Path, redis_url: str) -> None:
    from typer.testing import CliRunner

    from featurestore.cli.main import app

    repo = _repo(tmp_path / "cli", redis_url, project="cli")
    store = FeatureStore(repo)
    store.apply()
    rows = _one(21, NOW, 8.0).with_columns(pl.col("ts", "created").dt.strftime("%+"))
    rows.write_csv(tmp_path / "rows.csv")
    args = ["push", "driver_trips", str(tmp_path / "rows.csv"), "--repo", str(repo), "--json"]
    runner = CliRunner()
    first = runner.invoke(app, [*args, "--push-id", "file-1"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["offline_written"] == 1
    again = runner.invoke(app, [*args, "--push-id", "file-1"])
    assert json.loads(again.output)["offline_written"] == 0
    assert _values(store, ["driver_trips:trips_1d"], [21])["trips_1d"] == [1]
    (tmp_path / "rows.txt").write_text("x")
    bad = runner.invoke(
        app, ["push", "driver_trips", str(tmp_path / "rows.txt"), "--repo", str(repo)]
    )
    assert bad.exit_code == 1 and ".parquet" in bad.output
    store.close()
