"""Windowed aggregations in training datasets, through real Delta tables, checked
against a brute-force reading of SEMANTICS."""

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from featurestore import FeatureStore
from featurestore.errors import RequestError
from tests.helpers import write_repo

DEFS = """
import polars as pl
from featurestore import Aggregation, BatchSource, Entity, FeatureView

driver = Entity(name="driver", join_keys={"driver_id": "int64"})
trips = BatchSource(name="trips", path="data/trips.parquet", timestamp_field="ts",
                    created_timestamp_field="created")
driver_trips = FeatureView(
    name="driver_trips", entities=[driver], source=trips, ttl="30d",
    transform={"fare_per_km": pl.col("fare") / pl.col("km")},
    aggregations=[
        Aggregation(name="trips_1h", column=None, function="count", window="1h"),
        Aggregation(name="fare_sum_1d", column="fare", function="sum", window="1d"),
        Aggregation(name="fare_per_km_mean_1d", column="fare_per_km", function="mean",
                    window="1d", hop="1h"),
        Aggregation(name="max_fare", column="fare", function="max", window="lifetime"),
    ],
)
"""
T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = 3_600_000_000


def _events(n: int = 3000, seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ts = [T0 + timedelta(minutes=int(m)) for m in rng.integers(0, 3 * 24 * 60, n)]
    fare = rng.gamma(2.0, 10.0, n).round(2)
    fare[rng.random(n) < 0.05] = np.nan  # NaN is a value
    return pl.DataFrame(
        {
            "driver_id": rng.integers(1, 30, n),
            "ts": ts,
            "created": [
                t + timedelta(seconds=int(s))
                for t, s in zip(ts, rng.integers(1, 600, n), strict=True)
            ],
            "fare": fare,
            "km": rng.uniform(0.5, 20.0, n).round(1),
        }
    ).with_columns(
        pl.col("ts", "created").dt.cast_time_unit("us"),
        pl.when(pl.int_range(pl.len()) % 17 == 0)
        .then(None)
        .otherwise(pl.col("fare"))
        .alias("fare"),
    )  # and some nulls


def _brute(events: pl.DataFrame, spine: pl.DataFrame) -> dict[str, list]:
    out: dict[str, list] = {
        "trips_1h": [],
        "fare_sum_1d": [],
        "fare_per_km_mean_1d": [],
        "max_fare": [],
    }
    ev = events.with_columns(
        fare_per_km=pl.col("fare") / pl.col("km"), us=pl.col("ts").dt.epoch("us")
    )
    for row in spine.iter_rows(named=True):
        t = int(row["event_timestamp"].timestamp() * 1_000_000)
        mine = ev.filter(pl.col("driver_id") == row["driver_id"])

        def window(lo: int | None, hi: int, mine: pl.DataFrame = mine) -> pl.DataFrame:
            w = mine.filter(pl.col("us") <= hi)
            return w if lo is None else w.filter(pl.col("us") > lo)

        out["trips_1h"].append(window(t - H, t).height)
        fares = [f for f in window(t - 24 * H, t)["fare"].to_list() if f is not None]
        out["fare_sum_1d"].append(sum(fares) if fares else None)
        th = (t // H) * H  # hop: floor to the hour
        per = [f for f in window(th - 24 * H, th)["fare_per_km"].to_list() if f is not None]
        out["fare_per_km_mean_1d"].append(sum(per) / len(per) if per else None)
        life = [f for f in window(None, t)["fare"].to_list() if f is not None]
        non_nan = [f for f in life if not math.isnan(f)]
        out["max_fare"].append(max(non_nan) if non_nan else (math.nan if life else None))
    return out


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))


@pytest.fixture
def store(tmp_path):
    repo = write_repo(tmp_path / "repo", {"features.py": DEFS})
    (repo / "data").mkdir()
    _events().write_parquet(repo / "data" / "trips.parquet")
    s = FeatureStore(repo)
    s.apply()
    s.backfill()
    yield s
    s.close()


def test_training_aggregates_match_brute_force(store):
    rng = np.random.default_rng(9)
    spine = pl.DataFrame(
        {
            "driver_id": rng.integers(0, 32, 300),
            "event_timestamp": [
                T0 + timedelta(minutes=int(m)) for m in rng.integers(-60, 4 * 24 * 60, 300)
            ],
        }
    ).with_columns(pl.col("event_timestamp").dt.cast_time_unit("us"))
    # Exact window edges: one spine row exactly 1h after an event, one exactly on it.
    ev = pl.read_parquet(store.repo / "data" / "trips.parquet")
    first = ev.row(0, named=True)
    edges = pl.DataFrame(
        {
            "driver_id": [first["driver_id"]] * 2,
            "event_timestamp": [first["ts"], first["ts"] + timedelta(hours=1)],
        }
    )
    spine = pl.concat(
        [spine, edges.with_columns(pl.col("event_timestamp").dt.cast_time_unit("us"))]
    )
    ds = store.get_training_dataset(
        spine,
        features=[
            "driver_trips:trips_1h",
            "driver_trips:fare_sum_1d",
            "driver_trips:fare_per_km_mean_1d",
            "driver_trips:max_fare",
        ],
    )
    expected = _brute(ev, spine)
    assert ds.frame.select("driver_id", "event_timestamp").equals(spine)
    for name, values in expected.items():
        got = ds.frame[name].to_list()
        bad = [
            (i, g, e) for i, (g, e) in enumerate(zip(got, values, strict=True)) if not _close(g, e)
        ]
        assert not bad, f"{name}: {bad[:5]}"
    assert ds.lineage.table_versions == {"driver_trips": 0}


def test_aggregates_are_not_served_online_yet(store):
    with pytest.raises(RequestError, match="not served online yet"):
        store.get_online_features({"driver_id": [1]}, features=["driver_trips:trips_1h"])
