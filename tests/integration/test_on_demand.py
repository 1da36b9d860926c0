"""On-demand features: the same transform code online and in training."""

from datetime import timedelta

import polars as pl
import pytest

from featurestore import FeatureStore
from featurestore.errors import RequestError
from featurestore.scaffold.sample_data import current_hour
from tests.helpers import quickstart

END = current_hour()
T = END - timedelta(hours=12)  # recent: online records are kept for 2 x ttl


@pytest.fixture
def store(tmp_path):
    root = quickstart(tmp_path / "repo", data_end=END)
    s = FeatureStore(root)
    s.apply()
    s.backfill()
    s.materialize(end=T)
    yield s
    s.close()


def test_online_and_training_agree(store):
    drivers = [1001, 1005, 1010, 4242]
    distances = [2.0, 0.5, 10.0, 3.0]
    resp = store.get_online_features(
        {"driver_id": drivers},
        feature_service="driver_ranking_with_request",
        request_data={"distance_km": distances},
        request_time=T,
    )
    spine = pl.DataFrame(
        {"driver_id": drivers, "event_timestamp": [T] * 4, "distance_km": distances}
    )
    train = store.get_training_dataset(spine, feature_service="driver_ranking_with_request")
    assert resp.values["trips_per_km"] == train.frame["trips_per_km"].to_list()
    trips = train.frame["avg_daily_trips"].to_list()
    assert resp.values["trips_per_km"][:3] == [
        t / d for t, d in zip(trips[:3], distances[:3], strict=True)
    ]
    assert resp.values["trips_per_km"][3] is None
    assert resp.statuses["trips_per_km"] == ["PRESENT"] * 3 + ["MISSING"]


def test_on_demand_only_reads_its_inputs_without_exposing_them(store):
    resp = store.get_online_features(
        {"driver_id": [1001]},
        features=["trip_fit:trips_per_km"],
        request_data={"distance_km": [4.0]},
        request_time=T,
    )
    assert list(resp.values) == ["trips_per_km"]
    spine = pl.DataFrame({"driver_id": [1001], "event_timestamp": [T], "distance_km": [4.0]})
    train = store.get_training_dataset(spine, features=["trip_fit:trips_per_km"])
    assert train.frame.columns == ["driver_id", "event_timestamp", "distance_km", "trips_per_km"]
    assert train.frame["trips_per_km"].to_list() == resp.values["trips_per_km"]


def test_missing_request_data_is_a_clear_error(store):
    with pytest.raises(RequestError, match="distance_km"):
        store.get_online_features({"driver_id": [1001]}, features=["trip_fit:trips_per_km"])
