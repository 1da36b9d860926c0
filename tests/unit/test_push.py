"""Push with the in-memory online store and a local Delta table: validation names the
row and the field, push marks expire after the replay window, and who may push."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from featurestore.api.push import check_push_id, push, push_partition, to_frame
from featurestore.compile import PlanIndex, compile_repo
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.aggregate.records import decode
from featurestore.errors import DataError, DefinitionError, RequestError
from featurestore.server.auth import PushPermissions
from featurestore.server.errors import Forbidden
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online.base import ReadRequest
from featurestore.stores.online.memory import MemoryOnlineStore
from featurestore.stores.view_specs import RECORD_COLUMN, online_schema
from tests.helpers import write_repo

DEFS = """
import polars as pl
from featurestore import Aggregation, BatchSource, Entity, FeatureView, Field

driver = Entity(name="driver", join_keys={"driver_id": "int64"})
trips = BatchSource(name="trips", path="data/trips.parquet", timestamp_field="ts")
last = FeatureView(
    name="last", entities=[driver], source=trips, ttl="1d",
    transform={"per_km": pl.col("fare") / pl.col("km")},
    fields=[Field(name="fare", dtype=pl.Float64), Field(name="per_km", dtype=pl.Float64)],
)
counts = FeatureView(
    name="counts", entities=[driver], source=trips, ttl=None,
    aggregations=[Aggregation(name="n_1d", column=None, function="count", window="1d")],
)
"""
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def views(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FeatureViewPlan]:
    repo = write_repo(tmp_path_factory.mktemp("repo"), {"features.py": DEFS})
    (repo / "data").mkdir()
    pl.DataFrame(
        {"driver_id": [1], "ts": [NOW], "fare": [1.0], "km": [1.0]},
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    ).write_parquet(repo / "data" / "trips.parquet")
    return PlanIndex(compile_repo(repo, project="t").plan).views


def _rows(driver: int = 1, fare: object = 3.0) -> dict[str, list[object]]:
    return {"driver_id": [driver], "ts": [NOW.isoformat()], "fare": [fare], "km": [1.5]}


def _push(views, view: str, rows, tmp_path: Path, online, **kw):
    return push(
        views[view],
        rows,
        project="t",
        online=online,
        offline=DeltaOfflineStore(str(tmp_path / "offline")),
        retry_s=0.0,
        **kw,
    )


def test_json_rows_become_typed_columns(views) -> None:
    records = [
        {"driver_id": 1, "ts": "2024-05-01T14:00:00+02:00", "fare": 2.5, "km": 1.0},
        {"driver_id": 2, "ts": "2024-05-01T12:00:00Z", "fare": None, "km": 2.0},
    ]
    frame = to_frame(records, views["last"])
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert frame["ts"].to_list() == [datetime(2024, 5, 1, 12, tzinfo=UTC)] * 2
    assert frame["fare"].to_list() == [2.5, None]


@pytest.mark.parametrize(
    ("rows", "error", "field"),
    [
        ([{"driver_id": 1, "ts": "x"}, {"driver_id": 2}], RequestError, "rows[1].ts"),
        ({"driver_id": [1], "ts": ["2024-05-01T12:00:00"]}, DataError, "rows[0].ts"),
        ({"driver_id": [1, "two"], "ts": [None, None]}, DataError, "driver_id"),
        ({"driver_id": [1, 2], "ts": [None]}, RequestError, "rows"),
        ("driver_id=1", RequestError, "rows"),
        ([1, 2], RequestError, "rows[0]"),
    ],
)
def test_malformed_rows_name_the_field(views, rows, error, field) -> None:
    with pytest.raises(error) as err:
        to_frame(rows, views["last"])
    assert err.value.field == field


def test_a_value_the_transform_cannot_cast_names_the_row(views, tmp_path: Path) -> None:
    online = MemoryOnlineStore()
    rows = pl.DataFrame({**{k: v * 2 for k, v in _rows().items()}, "driver_id": ["1", "x"]})
    with pytest.raises(DataError) as err:
        _push(views, "last", rows, tmp_path, online, push_id="p")
    assert err.value.field == "rows[1]"
    assert "row 1" in err.value.message
    assert not DeltaOfflineStore(str(tmp_path / "offline")).exists("last")


def test_missing_columns_are_one_error(views, tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        _push(views, "last", {"driver_id": [1], "ts": [NOW.isoformat()]}, tmp_path, None)
    assert "missing" in err.value.message and "fare" in err.value.message


def test_columns_of_the_wrong_type_are_one_error(views, tmp_path: Path) -> None:
    rows = pl.DataFrame({**_rows(), "fare": ["1.5"]})
    with pytest.raises(DataError) as err:
        _push(views, "last", rows, tmp_path, None)
    assert err.value.field == "rows" and "String" in err.value.message


@pytest.mark.parametrize("push_id", ["", "a b", "x" * 129, "é"])
def test_push_ids_are_checked(push_id: str) -> None:
    with pytest.raises(RequestError) as err:
        check_push_id(push_id)
    assert err.value.field == "push_id"


def test_push_partitions_are_negative_and_stable() -> None:
    ids = [f"batch-{i}" for i in range(1000)]
    parts = [push_partition(i) for i in ids]
    assert all(-(2**31) <= p < 0 for p in parts)
    assert parts == [push_partition(i) for i in ids]
    assert len(set(parts)) == len(parts)


def _marks(views, online) -> np.ndarray:
    view = views["counts"]
    request = ReadRequest(online_schema("t", view), {"driver_id": [1]}, features=[RECORD_COLUMN])
    (result,) = online.read([request])
    _, _, marks = decode(result.features[RECORD_COLUMN], functions=["count"])
    return marks.partition


def test_push_marks_expire_after_the_replay_window(views, tmp_path: Path) -> None:
    online = MemoryOnlineStore()
    first = _push(views, "counts", _rows(), tmp_path, online, push_id="a", replay_window_s=60)
    assert first.online_written == 1
    again = _push(views, "counts", _rows(), tmp_path, online, push_id="a", replay_window_s=60)
    assert (again.online_written, again.online_skipped) == (0, 1)
    time.sleep(0.01)
    _push(views, "counts", _rows(), tmp_path, online, push_id="b", replay_window_s=0.005)
    # "a" is older than the window: its mark is gone; a record keeps only recent ones
    assert _marks(views, online).tolist() == [push_partition("b")]


def test_push_to_a_view_not_online_writes_offline_only(views, tmp_path: Path) -> None:
    online = MemoryOnlineStore()
    report = _push(views, "last", _rows(), tmp_path, online, push_id="q")
    assert (report.online_written, report.offline_written) == (1, 1)
    late = {**_rows(fare=9.0), "ts": [(NOW - timedelta(hours=1)).isoformat()]}
    assert _push(views, "last", late, tmp_path, online, push_id="r").online_skipped == 1


def test_only_push_keys_may_push() -> None:
    perms = PushPermissions(["r", "w", "v"], ["w", "v"], {"counts": ["w"]})
    perms.check(None, "counts")  # auth off
    perms.check(b"w", "counts")
    perms.check(b"v", "last")
    with pytest.raises(Forbidden) as err:
        perms.check(b"r", "last")
    assert err.value.field == "Authorization"
    with pytest.raises(Forbidden) as err:
        perms.check(b"v", "counts")
    assert (err.value.field, err.value.value) == ("view", "counts")
    with pytest.raises(DefinitionError):
        PushPermissions(["r"], ["w"])
    with pytest.raises(DefinitionError):
        PushPermissions(["r", "w"], ["w"], {"counts": ["r"]})
