"""The embedded SQLite store: the contract, persistence, and racing processes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.errors import OnlineStoreError, OnlineStoreUnavailable
from featurestore.stores.online import ReadRequest, SqliteOnlineStore, open_online_store
from tests.unit.stores.online_contract import (
    HOUR_US,
    WRITERS,
    OnlineStoreContract,
    batch_of,
    check_concurrent_writers,
    schema_for,
    writer_pool,
)


class TestSqliteContract(OnlineStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SqliteOnlineStore]:
        store = SqliteOnlineStore(tmp_path / "online.db")
        yield store
        store.close()


def test_records_survive_reopening_and_the_file_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "online.db"
    schema = schema_for({"x": "string"})
    first = open_online_store(f"sqlite:///{path}")
    first.write(schema, batch_of(schema, [{"id": 1, "x": "kept"}]))
    first.close()
    second = open_online_store(f"sqlite:///{path}")
    assert second.read([ReadRequest(schema, {"id": [1]})])[0].features["x"] == ["kept"]
    second.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_retention_follows_the_clock(tmp_path: Path) -> None:
    now = [100 * HOUR_US]
    store = SqliteOnlineStore(tmp_path / "o.db", clock=lambda: now[0])
    schema = schema_for({"x": "int64"}, ttl_us=HOUR_US)
    store.write(schema, batch_of(schema, [{"id": 1, "x": 1}], event_ts=now[0]))
    now[0] += 2 * HOUR_US
    assert store.read([ReadRequest(schema, {"id": [1]})])[0].features["x"] == [None]
    older = batch_of(schema, [{"id": 1, "x": 2}], event_ts=now[0] - HOUR_US)
    assert store.write(schema, older).written == 1  # the expired row counts as absent
    assert store.read([ReadRequest(schema, {"id": [1]})])[0].features["x"] == [2]
    store.close()


def test_a_held_lock_is_unavailable_not_a_hang(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    store = SqliteOnlineStore(path, timeout_s=0.2)
    schema = schema_for({"x": "int64"})
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OnlineStoreUnavailable, match=r"o\.db") as info:
            store.write(schema, batch_of(schema, [{"id": 1, "x": 1}]))
        assert info.value.retryable
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.write(schema, batch_of(schema, [{"id": 1, "x": 1}])).written == 1
    store.close()


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OnlineStoreError, match=r"junk\.db"):
        SqliteOnlineStore(path)


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    yield from writer_pool()


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seeds=st.lists(st.integers(0, 2**32), min_size=WRITERS, max_size=WRITERS))
def test_concurrent_processes_keep_the_newest_record(
    seeds: list[int], tmp_path: Path, pool: ProcessPoolExecutor
) -> None:
    check_concurrent_writers(f"sqlite:///{tmp_path / 'race.db'}", seeds, pool)
