"""Generic named tables (saved datasets, served-feature logs) in the Delta offline store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from featurestore.errors import DataError, OfflineStoreError
from featurestore.stores.offline import DeltaOfflineStore, OfflineStore
from tests.unit.stores.test_offline_delta import EVERY_DTYPE, T0


@pytest.fixture
def store(tmp_path: Path) -> DeltaOfflineStore:
    return DeltaOfflineStore(str(tmp_path / "offline"))


def test_store_satisfies_the_protocol(store: DeltaOfflineStore) -> None:
    assert isinstance(store, OfflineStore)


def test_every_dtype_round_trips_through_a_generic_table(store: DeltaOfflineStore) -> None:
    frame = pl.DataFrame({c: s for c, (_, s) in EVERY_DTYPE.items()})
    report = store.write_table("datasets/every_dtype", frame, mode="overwrite")
    assert (report.rows_written, report.version) == (3, 0)
    assert_frame_equal(store.read_table("datasets/every_dtype").collect(), frame)


def test_append_overwrite_versions_and_history(store: DeltaOfflineStore) -> None:
    name = "logs/served"
    day = [T0, T0 + dt.timedelta(days=1)]
    first = pl.DataFrame({"request_ts": day, "entity": ["a", "b"], "value": [1.0, 2.0]})
    store.write_table(name, first, mode="append", partition_by=["entity"])
    # A later logger adds a column: earlier rows read it as null.
    second = first.with_columns(status=pl.lit("PRESENT"))
    store.write_table(name, second, mode="append")
    back = store.read_table(name).collect().sort("entity", "status", nulls_last=True)
    assert back.height == 4 and back["status"].null_count() == 2
    assert store.read_table(name, version=0).collect().height == 2

    replaced = store.write_table(name, second.head(1), mode="overwrite")
    assert replaced.version == 2
    assert store.read_table(name).collect().height == 1
    assert [h["operation"] for h in store.history(name)][:1] == ["WRITE"]
    assert len(store.history(name)) == 3
    assert store.history(name, limit=1)[0]["version"] == 2
    assert store.exists(name) and store.version(name) == 2


def test_generic_tables_reject_naive_datetimes_and_other_frames(store: DeltaOfflineStore) -> None:
    naive = pl.DataFrame({"spine_ts": [dt.datetime(2024, 1, 1)]})
    with pytest.raises(DataError, match=r"table 'datasets/x'.*spine_ts.*naive"):
        store.write_table("datasets/x", naive, mode="overwrite")
    with pytest.raises(DataError, match="expected a polars DataFrame"):
        store.write_table("datasets/x", naive.lazy(), mode="overwrite")  # type: ignore[arg-type]
    with pytest.raises(OfflineStoreError, match="unknown write mode"):
        store.write_table("datasets/x", naive, mode="merge")  # type: ignore[arg-type]
    assert not store.exists("datasets/x")


def test_generic_compact_uses_deltalake_optimize(store: DeltaOfflineStore) -> None:
    for i in range(4):
        store.write_table("logs/l", pl.DataFrame({"i": [i]}), mode="append")
    result = store.compact("logs/l")
    assert result["numFilesRemoved"] == 4 and result["numFilesAdded"] == 1
    assert sorted(store.read_table("logs/l").collect()["i"].to_list()) == [0, 1, 2, 3]
