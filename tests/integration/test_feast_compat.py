"""``POST /get-online-features`` as Feast's clients see it, on a real server process.

The quickstart repo is served by ``python -m featurestore.server`` (embedded online
store). Three drivers: 1001 is present, 5000 has only a row older than the view's
TTL (pushed here: expired, but within the store's retention), 9999 was never seen.
Each test compares the Feast-shaped answer with the native route's answer for the
same entities, so the two routes can only agree by returning the same values.
The last test drives Feast's own SDK (``FeatureStore.get_online_features`` with
``online_store: {type: remote}``) against the server.
"""

from __future__ import annotations

import http.client
import json
import os
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from featurestore.api.store import FeatureStore
from featurestore.server.feast_compat import EPOCH_TEXT, timestamp_text, timestamp_texts
from tests.integration.served import running_server, served_repo

FEAST_ROUTE = "/get-online-features"
NATIVE_ROUTE = "/v1/features/online"
VIEW = "driver_hourly_stats"
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "acceptance_gap"]
PRESENT_ID, EXPIRED_ID, MISSING_ID = 1001, 5000, 9999
DRIVERS = [PRESENT_ID, EXPIRED_ID, MISSING_ID]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = served_repo(tmp_path_factory.mktemp("feast_compat") / "repo")
    old = datetime.now(UTC) - timedelta(days=3)  # ttl is 2d, retention 4d
    store = FeatureStore(root)
    try:
        store.push(
            VIEW,
            {
                "driver_id": [EXPIRED_ID],
                "event_timestamp": [old],
                "created": [old],
                "conv_rate": [0.5],
                "acc_rate": [0.25],
                "avg_daily_trips": [7],
            },
        )
    finally:
        store.close()
    return root


@pytest.fixture(scope="module")
def port(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_server(repo, tmp_path_factory.mktemp("log") / "server.log") as p:
        yield p


def import_feast() -> Any:
    """The feast package; locally a missing one skips, under CI=true it fails."""
    if os.environ.get("CI") == "true":
        import feast

        return feast
    return pytest.importorskip(
        "feast", reason="the feast extra is not installed (pip install 'featurestore[feast]')"
    )


def post(port: int, path: str, body: Any) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def native(port: int, body: dict[str, Any]) -> dict[str, Any]:
    status, doc = post(port, NATIVE_ROUTE, body)
    assert status == 200, doc
    return doc


def test_feast_request_gets_feast_shape_with_native_values(port: int) -> None:
    refs = [f"{VIEW}:{f}" for f in FEATURES]
    status, doc = post(port, FEAST_ROUTE, {"features": refs, "entities": {"driver_id": DRIVERS}})
    assert status == 200, doc
    assert set(doc) == {"metadata", "results"}
    assert doc["metadata"]["feature_names"] == ["driver_id", *FEATURES]
    keys = doc["results"][0]
    assert keys == {
        "values": DRIVERS,
        "statuses": ["PRESENT"] * 3,
        "event_timestamps": [EPOCH_TEXT] * 3,
    }
    mine = native(port, {"features": refs, "entities": {"driver_id": DRIVERS}})["features"]
    for name, result in zip(FEATURES, doc["results"][1:], strict=True):
        assert set(result) == {"values", "statuses", "event_timestamps"}
        assert result["values"] == mine[name]["values"]
        assert result["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"]
        assert mine[name]["statuses"] == ["PRESENT", "EXPIRED", "MISSING"]
        assert result["event_timestamps"] == [timestamp_text(t) for t in mine[name]["event_ts"]]
    # present: a real value at a real time; expired: null with its time; missing: epoch
    conv = doc["results"][1]
    assert conv["values"][0] is not None and conv["values"][1:] == [None, None]
    assert conv["event_timestamps"][0].endswith("Z") and conv["event_timestamps"][0] != EPOCH_TEXT
    assert conv["event_timestamps"][2] == EPOCH_TEXT


def test_many_entities_mixed_statuses_equal_the_native_route(port: int) -> None:
    # 30 entities: the event times of a column are formatted in one call (from 16 on)
    drivers = [DRIVERS[i % 3] if i % 4 else 1001 + i % 5 for i in range(30)]
    refs = [f"{VIEW}:{f}" for f in FEATURES]
    status, doc = post(port, FEAST_ROUTE, {"features": refs, "entities": {"driver_id": drivers}})
    assert status == 200, doc
    mine = native(port, {"features": refs, "entities": {"driver_id": drivers}})["features"]
    names = {"PRESENT": "PRESENT", "MISSING": "NOT_FOUND", "EXPIRED": "OUTSIDE_MAX_AGE"}
    assert doc["results"][0]["values"] == drivers
    for name, result in zip(FEATURES, doc["results"][1:], strict=True):
        assert result["values"] == mine[name]["values"]
        assert result["statuses"] == [names[s] for s in mine[name]["statuses"]]
        assert result["event_timestamps"] == [timestamp_text(t) for t in mine[name]["event_ts"]]
    assert {"PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE"} <= set(doc["results"][1]["statuses"])


def test_timestamp_texts_equal_one_by_one_in_every_range() -> None:
    """The column formatter (orjson, numpy or one by one) prints what protobuf JSON
    prints: 0, 3 or 6 fractional digits, UTC with a Z, the epoch for a missing row."""
    rng = random.Random(19)
    lo, hi = -62_135_596_800_000_000, 253_402_300_799_999_999  # years 1 to 9999
    columns: list[list[int | None]] = [
        [rng.randrange(lo, hi) for _ in range(40)],
        [rng.randrange(0, 2**41) * 1000 for _ in range(20)],  # whole milliseconds
        [rng.randrange(0, 2**31) * 1_000_000 for _ in range(20)],  # whole seconds
        [None, 1_767_225_600_000_001] * 10,
        [hi] * 16,  # beyond orjson's datetime range
        [lo, -1, 0, 1, 999, 1000] * 3,
    ]
    for column in columns:
        expected = [timestamp_text(us) for us in column]
        assert orjson.loads(orjson.dumps(timestamp_texts(column))) == expected
        assert timestamp_texts(column[:3]) == expected[:3]
    assert timestamp_text(None) == EPOCH_TEXT
    assert timestamp_text(lo) == "0001-01-01T00:00:00Z"
    assert timestamp_text(1_500_000) == "1970-01-01T00:00:01.500Z"
    assert timestamp_text(-1) == "1969-12-31T23:59:59.999999Z"


def test_feature_service_full_names_and_feast_default_fields(port: int) -> None:
    # what Feast's remote client sends for a FeatureService, plus Feast's default "features": []
    body = {
        "entities": {"driver_id": [PRESENT_ID]},
        "full_feature_names": True,
        "include_feature_view_version_metadata": False,
        "feature_service": "driver_ranking",
        "features": [],
    }
    status, doc = post(port, FEAST_ROUTE, body)
    assert status == 200, doc
    assert doc["metadata"]["feature_names"] == ["driver_id", *(f"{VIEW}__{f}" for f in FEATURES)]
    mine = native(
        port,
        {
            "entities": {"driver_id": [PRESENT_ID]},
            "feature_service": "driver_ranking",
            "full_feature_names": True,
        },
    )["features"]
    assert [r["values"] for r in doc["results"][1:]] == [
        mine[f"{VIEW}__{f}"]["values"] for f in FEATURES
    ]


def test_request_fields_ride_in_entities_as_feast_sends_them(port: int) -> None:
    status, doc = post(
        port,
        FEAST_ROUTE,
        {
            "features": ["trip_fit:trips_per_km"],
            "entities": {"driver_id": [PRESENT_ID, MISSING_ID], "distance_km": [2.0, 4.0]},
        },
    )
    assert status == 200, doc
    mine = native(
        port,
        {
            "features": ["trip_fit:trips_per_km"],
            "entities": {"driver_id": [PRESENT_ID, MISSING_ID]},
            "request_data": {"distance_km": [2.0, 4.0]},
        },
    )["features"]["trips_per_km"]
    assert doc["metadata"]["feature_names"] == ["driver_id", "trips_per_km"]
    assert doc["results"][1]["values"] == mine["values"]
    assert doc["results"][1]["values"][0] is not None
    assert doc["results"][1]["statuses"] == ["PRESENT", "NOT_FOUND"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"features": ["driver_hourly_stats:nope"], "entities": {"driver_id": [1]}}, 404, None),
        ({"entities": {"driver_id": [1]}}, 422, "feature_service"),
        ({"features": ["x:y"], "entities": {"driver_id": [1]}, "project": "p"}, 422, "project"),
        # the native route's own checks, with its messages, on the parsed body
        (
            {"features": [f"{VIEW}:conv_rate"], "entities": {"driver_id": [[1]]}},
            422,
            "entities.driver_id[0]",
        ),
        (
            {"features": [f"{VIEW}:conv_rate"], "entities": {"driver_id": []}},
            422,
            "entities.driver_id",
        ),
        (
            {
                "features": [f"{VIEW}:conv_rate"],
                "entities": {"driver_id": [1]},
                "full_feature_names": [[1]],
            },
            422,
            "full_feature_names",
        ),
        (
            {
                "features": ["driver_hourly_stats:conv_rate"],
                "entities": {"driver_id": [1]},
                "include_feature_view_version_metadata": "yes",
            },
            422,
            "include_feature_view_version_metadata",
        ),
    ],
)
def test_bad_feast_requests_name_the_culprit(
    port: int, body: dict[str, Any], status: int, field: str | None
) -> None:
    got, doc = post(port, FEAST_ROUTE, body)
    assert got == status, doc
    if field is not None:
        assert doc["field"] == field
    assert doc["message"]
    assert "[[" not in json.dumps(doc.get("value"))  # a nested value is named, never echoed


def test_feast_sdk_remote_online_store_reads_our_server(port: int, tmp_path: Path) -> None:
    feast = import_feast()
    from feast import types as ft

    (tmp_path / "feature_store.yaml").write_text(
        "project: compat\n"
        "registry: registry.db\n"
        "provider: local\n"
        f"online_store:\n  type: remote\n  path: http://127.0.0.1:{port}\n"
        "entity_key_serialization_version: 3\n"
    )
    driver = feast.Entity(name="driver", join_keys=["driver_id"], value_type=feast.ValueType.INT64)
    source = feast.FileSource(
        name="driver_stats_source",
        path=str(tmp_path / "unused.parquet"),
        timestamp_field="event_timestamp",
    )
    dtypes = {
        "conv_rate": ft.Float64,
        "acc_rate": ft.Float64,
        "avg_daily_trips": ft.Int64,
        "acceptance_gap": ft.Float64,
    }
    view = feast.FeatureView(
        name=VIEW,
        entities=[driver],
        ttl=timedelta(days=2),
        source=source,
        schema=[feast.Field(name="driver_id", dtype=ft.Int64)]
        + [feast.Field(name=n, dtype=t) for n, t in dtypes.items()],
    )
    service = feast.FeatureService(name="driver_ranking", features=[view])
    fs = feast.FeatureStore(repo_path=str(tmp_path))
    fs.apply([driver, source, view, service])

    got = fs.get_online_features(
        features=[f"{VIEW}:{f}" for f in FEATURES], entity_rows=[{"driver_id": d} for d in DRIVERS]
    ).to_dict()
    mine = native(
        port, {"features": [f"{VIEW}:{f}" for f in FEATURES], "entities": {"driver_id": DRIVERS}}
    )["features"]
    assert got["driver_id"] == DRIVERS
    for f in FEATURES:
        assert got[f] == mine[f]["values"], f
    assert got["conv_rate"][0] is not None and got["conv_rate"][1:] == [None, None]

    by_service = fs.get_online_features(
        features=fs.get_feature_service("driver_ranking"),
        entity_rows=[{"driver_id": PRESENT_ID}],
        full_feature_names=True,
    ).to_dict()
    assert by_service[f"{VIEW}__avg_daily_trips"] == mine["avg_daily_trips"]["values"][:1]
