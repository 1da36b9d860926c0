"""The in-memory twin passes the online store contract."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from featurestore.stores.online import MemoryOnlineStore, ReadRequest, WriteBatch
from tests.unit.stores.online_contract import HOUR_US, OnlineStoreContract, batch_of, schema_for


class TestMemoryContract(OnlineStoreContract):
    @pytest.fixture
    def store(self) -> Iterator[MemoryOnlineStore]:
        store = MemoryOnlineStore()
        yield store
        store.close()


def test_pinned_clock_decides_retention() -> None:
    now = [10 * HOUR_US]
    store = MemoryOnlineStore(clock=lambda: now[0])
    schema = schema_for({"x": "int64"}, ttl_us=HOUR_US)
    assert store.write(schema, batch_of(schema, [{"id": 1, "x": 1}], event_ts=now[0])).written == 1
    now[0] += 2 * HOUR_US - 1
    assert store.read([ReadRequest(schema, {"id": [1]})])[0].features["x"] == [1]
    now[0] += 1  # event_ts + 2 * ttl: gone, as a Redis key with PEXPIREAT would be
    assert store.read([ReadRequest(schema, {"id": [1]})])[0].features["x"] == [None]
    # an expired record is absent, so even an older (but still retained) write lands
    older = batch_of(schema, [{"id": 1, "x": 2}], event_ts=now[0] - HOUR_US)
    assert store.write(schema, older).written == 1


def test_arrow_table_input() -> None:
    import pyarrow as pa

    schema = schema_for({"x": "float64", "s": "string"})
    when = datetime(2024, 1, 1, tzinfo=UTC)
    table = pa.table(
        {
            "id": [1, 2],
            "x": [0.5, None],
            "s": ["a", None],
            "event_ts": pa.array([when, when], pa.timestamp("us", tz="UTC")),
            "created_ts": [5, 6],
        }
    )
    store = MemoryOnlineStore()
    assert store.write(schema, WriteBatch.from_frame(table, schema=schema)).written == 2
    got = store.read([ReadRequest(schema, {"id": [2, 1]})])[0]
    assert got.features == {"x": [None, 0.5], "s": [None, "a"]}
    assert got.created_ts == [6, 5] and got.event_ts == [int(when.timestamp()) * 10**6] * 2
