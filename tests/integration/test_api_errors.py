"""The Python API gives the same clear errors as the CLI (no raw library exceptions)."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestore import FeatureStore
from featurestore.errors import DataError
from tests.helpers import quickstart


@pytest.fixture
def store(tmp_path: Path):
    s = FeatureStore(quickstart(tmp_path / "repo"))
    s.apply()
    yield s
    s.close()


def test_a_corrupt_source_file_names_the_source_and_path(store: FeatureStore):
    path = store.repo / "data" / "driver_stats.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read the batch source") as info:
        store.backfill(["driver_hourly_stats"])
    assert info.value.field == "path" and str(path) in str(info.value.value)


def test_a_non_iso_time_names_the_argument(store: FeatureStore):
    with pytest.raises(DataError, match="is not an ISO 8601 time") as info:
        store.backfill(["driver_hourly_stats"], start="yesterday at noon")
    assert info.value.field == "start" and info.value.value == "yesterday at noon"
