"""Windowed aggregations in training datasets and online (materialized records in the
SQLite online store), through real Delta tables, checked against a brute-force
reading of SEMANTICS."""

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from featurestore import FeatureStore
from tests.helpers import write_repo

DEFS = """
import polars as pl
from featurestore import Aggregation, BatchSource, Entity, FeatureView

driver = Entity(name="driver", join_keys={"driver_id": "int64"})
trips = BatchSource(name="trips", path="data/trips.parquet", timestamp_field="ts",
                    created_timestamp_field="created")
driver_trips = FeatureView(
    name="driver_trips", entities=[driver], source=trips, ttl=None,
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
# Recent, so records stay within the online store's retention (the longest window + hop).
T0 = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=10)
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


def _brute(events: pl.DataFrame, spine: pl.DataFrame, *, known_until=None) -> dict[str, list]:
    out: dict[str, list] = {
        "trips_1h": [],
        "fare_sum_1d": [],
        "fare_per_km_mean_1d": [],
        "max_fare": [],
    }
    ev = events.with_columns(
        fare_per_km=pl.col("fare") / pl.col("km"), us=pl.col("ts").dt.epoch("us")
    )
    if known_until is not None:  # online: only the events materialized
        ev = ev.filter(pl.col("us") <= known_until)
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
    assert ds.lineage.table_versions == {"driver_trips": 1}  # 0: the table created empty


def test_a_hopped_window_alone_reads_every_event_it_needs(store):
    """Only the hopped feature, and every spine row half an hour past a hop edge: the
    window is (edge - 1d, edge], which starts before ``earliest request - 1d``."""
    at = T0 + timedelta(days=2, minutes=30)
    spine = pl.DataFrame(
        {"driver_id": list(range(1, 30)), "event_timestamp": [at] * 29}
    ).with_columns(pl.col("event_timestamp").dt.cast_time_unit("us"))
    ds = store.get_training_dataset(spine, features=["driver_trips:fare_per_km_mean_1d"])
    ev = pl.read_parquet(store.repo / "data" / "trips.parquet")
    edge_us = int((at - timedelta(minutes=30)).timestamp() * 1_000_000)
    early = ev.filter(
        pl.col("ts").dt.epoch("us").is_between(edge_us - 24 * H + 1, edge_us - 23 * H - H // 2)
    )
    assert early.height > 0  # events the read must not cut off
    want = _brute(ev, spine)["fare_per_km_mean_1d"]
    got = ds.frame["fare_per_km_mean_1d"].to_list()
    bad = [(i, g, e) for i, (g, e) in enumerate(zip(got, want, strict=True)) if not _close(g, e)]
    assert not bad, bad[:5]


def _view(store):
    return store.index().view("driver_trips")


def _materialize(store, end: datetime):
    from featurestore._time import to_us
    from featurestore.materialize import materialize_view

    return materialize_view(
        _view(store),
        project=store.project,
        offline=store.offline,
        online=store.online,
        end_us=to_us(end),
    )


FEATURES = ["trips_1h", "fare_sum_1d", "fare_per_km_mean_1d", "max_fare"]


def test_online_values_match_brute_force_at_and_after_materialization(store):
    end = T0 + timedelta(days=2, hours=5, minutes=17, microseconds=3)
    report = _materialize(store, end)
    assert report.entities == report.written == 29
    ev = pl.read_parquet(store.repo / "data" / "trips.parquet")
    ids = list(range(0, 32))  # 0, 30 and 31 have no events
    t_end = int(end.timestamp()) * 1_000_000 + 3
    for delta in (timedelta(0), timedelta(minutes=43), timedelta(hours=7), timedelta(days=2)):
        r = end + delta
        resp = store.get_online_features(
            {"driver_id": ids},
            features=[f"driver_trips:{f}" for f in FEATURES],
            request_time=r,
        )
        spine = pl.DataFrame({"driver_id": ids, "event_timestamp": [r] * len(ids)})
        expected = _brute(ev, spine, known_until=t_end)
        for name in FEATURES:
            got = resp.values[name]
            bad = [
                (i, g, e)
                for i, (g, e) in zip(ids, zip(got, expected[name], strict=True), strict=True)
                if not _close(g, e)
            ]
            assert not bad, f"{name} at {delta}: {bad[:5]}"
        status = resp.statuses["trips_1h"]
        assert status[0] == "MISSING" and status[5] == "PRESENT"
        assert resp.values["trips_1h"][0] == 0 and resp.values["max_fare"][0] is None
        assert resp.event_ts["trips_1h"][5] == t_end


def test_online_equals_training_at_the_materialization_time(store):
    end = T0 + timedelta(days=1, hours=23)
    _materialize(store, end)
    ids = list(range(1, 30))
    resp = store.get_online_features(
        {"driver_id": ids}, features=[f"driver_trips:{f}" for f in FEATURES], request_time=end
    )
    spine = pl.DataFrame({"driver_id": ids, "event_timestamp": [end] * len(ids)}).with_columns(
        pl.col("event_timestamp").dt.cast_time_unit("us")
    )
    ds = store.get_training_dataset(spine, features=[f"driver_trips:{f}" for f in FEATURES])
    for name in FEATURES:
        pairs = zip(resp.values[name], ds.frame[name].to_list(), strict=True)
        assert all(_close(a, b) for a, b in pairs), name


def test_later_materialization_replaces_earlier_and_values_never_expire(store):
    late, early = T0 + timedelta(days=2), T0 + timedelta(days=1)
    _materialize(store, late)
    again = _materialize(store, early)  # an older T never replaces a newer record
    assert again.written == 0 and again.skipped_stale == again.entities
    resp = store.get_online_features(
        {"driver_id": [5]}, features=["driver_trips:max_fare"], request_time=late
    )
    assert resp.event_ts["max_fare"] == [int(late.timestamp() * 1_000_000)]
    # SEMANTICS: the TTL does not apply to windowed aggregations. Long after the last
    # event a lookup gives what training gives at that time: the lifetime max still,
    # count 0 for an empty window; an entity with no record is MISSING with count 0.
    far = late + timedelta(days=30)
    resp = store.get_online_features(
        {"driver_id": [5, 0]},
        features=["driver_trips:max_fare", "driver_trips:trips_1h"],
        request_time=far,
    )
    assert resp.statuses["max_fare"] == ["PRESENT", "MISSING"]
    spine = pl.DataFrame({"driver_id": [5, 0], "event_timestamp": [far, far]}).with_columns(
        pl.col("event_timestamp").dt.cast_time_unit("us")
    )
    ev = pl.read_parquet(store.repo / "data" / "trips.parquet")
    want = _brute(ev.filter(pl.col("ts") <= late), spine)
    assert _close(resp.values["max_fare"][0], want["max_fare"][0])
    assert resp.values["max_fare"][1] is None
    assert resp.values["trips_1h"] == [0, 0]


def test_a_request_before_materialization_time_is_answered_as_of_it(store):
    end = T0 + timedelta(days=2)
    _materialize(store, end)
    features = [f"driver_trips:{f}" for f in FEATURES]
    at_end = store.get_online_features({"driver_id": [3]}, features=features, request_time=end)
    before = store.get_online_features(
        {"driver_id": [3]}, features=features, request_time=end - timedelta(hours=5)
    )
    for name in FEATURES:
        assert _close(before.values[name][0], at_end.values[name][0]), name


def test_hop_must_divide_window(tmp_path):
    from featurestore.errors import DefinitionError

    bad = DEFS.replace('window="1d", hop="1h"', 'window="1d", hop="7h"')
    repo = write_repo(tmp_path / "repo", {"features.py": bad})
    (repo / "data").mkdir()
    _events(50).write_parquet(repo / "data" / "trips.parquet")
    s = FeatureStore(repo)
    with pytest.raises(DefinitionError, match="hop must divide the window"):
        s.apply()
    s.close()


def test_a_ttl_on_an_aggregated_view_is_a_definition_error(tmp_path):
    """SEMANTICS: the TTL does not apply to windowed aggregations (online would expire
    values that training still gives); apply refuses it, naming the view and field."""
    from featurestore.errors import DefinitionError

    bad = DEFS.replace("source=trips, ttl=None,", 'source=trips, ttl="30d",')
    repo = write_repo(tmp_path / "repo", {"features.py": bad})
    (repo / "data").mkdir()
    _events(50).write_parquet(repo / "data" / "trips.parquet")
    s = FeatureStore(repo)
    with pytest.raises(DefinitionError, match="a TTL does not apply to windowed aggregations"):
        s.apply()
    s.close()


def test_an_on_demand_feature_over_aggregations_is_the_same_in_training_and_online(tmp_path):
    """An on-demand view may read windowed aggregations: training computes its inputs
    with the aggregation engine (it used to refuse: "aggregated views are not
    supported in training"), online from the records, through the same function."""
    defs = DEFS + '''
from featurestore import OnDemandFeatureView
fare_share = OnDemandFeatureView(
    name="fare_share", inputs=[driver_trips],
    outputs={"fare_per_trip_1d": "float64"},
    transform={"fare_per_trip_1d": pl.col("fare_sum_1d") / (pl.col("trips_1h") + 1)},
)
'''
    repo = write_repo(tmp_path / "repo", {"features.py": defs})
    (repo / "data").mkdir()
    events = _events()
    events.write_parquet(repo / "data" / "trips.parquet")
    s = FeatureStore(repo)
    try:
        s.apply()
        s.backfill()
        end = T0 + timedelta(days=2, hours=3)
        ids = list(range(1, 30))
        spine = pl.DataFrame({"driver_id": ids, "event_timestamp": [end] * len(ids)}).with_columns(
            pl.col("event_timestamp").dt.cast_time_unit("us")
        )
        ds = s.get_training_dataset(spine, features=["fare_share:fare_per_trip_1d"])
        assert ds.frame.columns == ["driver_id", "event_timestamp", "fare_per_trip_1d"]
        want = _brute(events, spine)
        expected = [
            None if f is None else f / (n + 1)
            for f, n in zip(want["fare_sum_1d"], want["trips_1h"], strict=True)
        ]
        got = ds.frame["fare_per_trip_1d"].to_list()
        assert all(_close(g, e) for g, e in zip(got, expected, strict=True)), (got, expected)
        _materialize(s, end)
        online = s.get_online_features(
            {"driver_id": ids}, features=["fare_share:fare_per_trip_1d"], request_time=end
        )
        pairs = zip(online.values["fare_per_trip_1d"], got, strict=True)
        assert all(_close(a, b) for a, b in pairs)
    finally:
        s.close()
