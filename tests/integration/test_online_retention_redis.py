"""Online retention against a private redis-server: the setting decides each key's
``PEXPIREAT`` (or none), and a record kept with ``"none"`` reads back. The same
2024 data set as tests/unit/stores/test_online_retention.py."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import redis

from featurestore._time import now_us
from featurestore.config import OnlineRetention
from featurestore.stores.online import OnlineViewSchema, ReadRequest, WriteBatch
from featurestore.stores.online.encoding import codec_for
from featurestore.stores.online.redis import RedisOnlineStore
from featurestore.stores.view_specs import RECORD_COLUMN, online_schema
from tests.unit.stores.test_online_retention import DAY, DRIVERS, END_US, KEEP, H, Repo

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(tmp_path_factory.mktemp("retention"))


@pytest.fixture
def store(redis_url: str) -> Iterator[RedisOnlineStore]:
    s = RedisOnlineStore(redis_url, chunk_size=7)  # batches cross chunk boundaries
    yield s
    s.close()


def _keys(raw: redis.Redis, schema: OnlineViewSchema) -> list[bytes]:
    codec = codec_for(schema)
    return sorted(raw.scan_iter(match=codec.key_prefix + b"*" + codec.key_suffix))


def test_default_drops_historical_rows_and_none_keeps_them_without_expiry(
    repo: Repo, store: RedisOnlineStore, redis_url: str
) -> None:
    raw = redis.Redis.from_url(redis_url)
    schema = online_schema("p", repo.index.view("stats"))
    dropped = repo.materialize("stats", store, None)
    assert dropped.written == 0 and dropped.all_past_retention and dropped.hint is not None
    assert _keys(raw, schema) == []
    kept = repo.materialize("stats", store, KEEP)
    assert kept.written == len(DRIVERS) and kept.hint is None
    keys = _keys(raw, schema)
    assert len(keys) == len(DRIVERS)
    assert {raw.pttl(k) for k in keys} == {-1}  # no expiry at all
    assert None not in repo.read("stats", store)


def test_a_per_view_setting_on_redis(repo: Repo, store: RedisOnlineStore) -> None:
    policy = OnlineRetention.of(per_view={"stats_kept": "none", "trips_1d": "none"})
    assert repo.materialize("stats_kept", store, policy).written == len(DRIVERS)
    assert repo.materialize("stats", store, policy).written == 0
    assert repo.materialize("trips_1d", store, policy).written == len(DRIVERS)
    assert None not in repo.read("stats_kept", store)
    assert repo.read("stats", store) == [None] * len(DRIVERS)
    assert repo.read("trips_1d", store) == [END_US] * len(DRIVERS)


def test_an_aggregate_key_expires_at_window_plus_hop(
    repo: Repo, store: RedisOnlineStore, redis_url: str
) -> None:
    schema = online_schema("p", repo.index.view("trips_1d"))
    assert schema.retention_us == DAY + H
    t = now_us() - H + 123  # not a whole millisecond: the expiry rounds up
    batch = WriteBatch(
        keys={"driver_id": [1]},
        event_ts=np.array([t]),
        created_ts=np.array([t]),
        features={RECORD_COLUMN: ["opaque to the store"]},
    )
    assert store.write(schema, batch).written == 1
    (key,) = _keys(redis.Redis.from_url(redis_url), schema)
    assert redis.Redis.from_url(redis_url).pexpiretime(key) == -(-(t + DAY + H) // 1000)


def test_a_newer_record_written_with_none_clears_an_older_deadline(
    store: RedisOnlineStore, redis_url: str
) -> None:
    """Switching a view to "none": the next newer record drops the key's expiry."""
    ttl = H
    timed = OnlineViewSchema.build(
        project="p", view="v", keys={"id": "int64"}, features={"x": "int64"}, ttl_us=ttl
    )
    kept = OnlineViewSchema.build(
        project="p",
        view="v",
        keys={"id": "int64"},
        features={"x": "int64"},
        ttl_us=ttl,
        retention_us=None,
    )
    assert kept.scope == timed.scope  # the same records
    t = now_us()

    def row(ev: int, x: int) -> WriteBatch:
        return WriteBatch(keys={"id": [1]}, event_ts=[ev], created_ts=[ev], features={"x": [x]})

    raw = redis.Redis.from_url(redis_url)
    store.write(timed, row(t, 1))
    (key,) = _keys(raw, timed)
    # the deadline in microseconds is rounded up to Redis' milliseconds: +1 ms at most
    assert 0 < raw.pttl(key) <= 2 * ttl // 1000 + 1
    assert store.write(kept, row(t + 1, 2)).written == 1
    assert raw.pttl(key) == -1
    (got,) = store.read([ReadRequest(kept, {"id": [1]})])
    assert got.features["x"] == [2]
