"""The Redis store against a private redis-server: contract, expiry, races, faults."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore._redact import redact_url
from featurestore.errors import OnlineStoreError, OnlineStoreUnavailable
from featurestore.stores.online import ReadRequest, open_online_store
from featurestore.stores.online.encoding import codec_for
from featurestore.stores.online.redis import RedisOnlineStore
from featurestore.stores.online.redis_cas import CAS_SHA
from tests.fixtures.services import RedisServer
from tests.unit.stores.online_contract import (
    HOUR_US,
    T0,
    WRITERS,
    OnlineStoreContract,
    batch_of,
    check_concurrent_writers,
    schema_for,
    writer_pool,
)

pytestmark = pytest.mark.redis
TIMEOUT_S = 0.5


class TestRedisContract(OnlineStoreContract):
    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[RedisOnlineStore]:
        # a small chunk size makes the contract's batches cross chunk boundaries
        store = RedisOnlineStore(redis_url, chunk_size=97, in_flight=3)
        yield store
        store.close()


def test_keys_follow_the_documented_layout_and_expiry(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url)
    ttl = HOUR_US
    schema = schema_for({"x": "int64"}, ttl_us=ttl)
    forever = schema_for({"x": "int64"}, view="forever")
    ev = T0 + 123_456  # not a whole millisecond: the expiry rounds up
    store.write(schema, batch_of(schema, [{"id": 5, "x": 1}], event_ts=ev))
    store.write(forever, batch_of(forever, [{"id": 5, "x": 1}]))
    raw = redis.Redis.from_url(redis_url)
    key = b"fs1:{proj:i" + (5).to_bytes(8, "big") + b"}:v:" + schema.schema_id.encode()
    assert raw.get(key) is not None
    assert raw.pexpiretime(key) == -(-(ev + 2 * ttl) // 1000)
    assert (
        raw.pttl(
            codec_for(forever).key_prefix
            + b"i"
            + (5).to_bytes(8, "big")
            + b"}:forever:"
            + forever.schema_id.encode()
        )
        == -1
    )
    # a newer write moves the expiry with it
    store.write(schema, batch_of(schema, [{"id": 5, "x": 2}], event_ts=ev + 10_000))
    assert raw.pexpiretime(key) == -(-(ev + 10_000 + 2 * ttl) // 1000)
    store.close()


def test_script_cache_loss_is_handled(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, chunk_size=10, in_flight=4)
    schema = schema_for({"x": "int64"})
    raw = redis.Redis.from_url(redis_url)
    ids = list(range(55))
    store.write(schema, batch_of(schema, [{"id": i, "x": 0} for i in ids]))
    for attempt in (1, 2):
        raw.script_flush()
        assert raw.script_exists(CAS_SHA) == [False]
        rows = [{"id": i, "x": attempt} for i in ids]  # several chunks all meet NOSCRIPT
        stats = store.write(schema, batch_of(schema, rows, event_ts=T0 + attempt))
        assert stats.written == 55
        assert raw.script_exists(CAS_SHA) == [True]
    got = store.read([ReadRequest(schema, {"id": ids})])[0]
    assert got.features["x"] == [2] * 55
    store.close()


def test_bulk_writes_of_new_keys_skip_the_script(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, chunk_size=100, in_flight=2)
    schema = schema_for({"x": "int64"})
    raw = redis.Redis.from_url(redis_url)

    def calls() -> dict[str, int]:
        stats = raw.info("commandstats")
        return {c: stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("msetnx", "evalsha")}

    raw.config_resetstat()
    ids = list(range(1000))
    store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids]))
    assert calls() == {"msetnx": 10, "evalsha": 0}
    # new keys, then keys that exist (some newer, some older), then new keys again
    ids2 = list(range(900, 1300))
    ev = [T0 + (1 if i % 2 else -1) if i < 1000 else T0 for i in ids2]
    rows = [{"id": i, "x": -i} for i in ids2]
    stats = store.write(schema, batch_of(schema, rows, event_ts=ev))
    assert stats.written == 350 and stats.skipped_stale == 50
    # the first chunk's MSETNX is refused; the one already in flight behind it succeeds,
    # and the last two chunks go straight to the script
    after = calls()
    assert after["msetnx"] == 12 and after["evalsha"] >= 3
    got = store.read([ReadRequest(schema, {"id": list(range(1300))})])[0].features["x"]
    assert got == [i if i < 900 or (i < 1000 and i % 2 == 0) else -i for i in range(1300)]
    # a key twice in one chunk never takes MSETNX: the newest row must win
    dup = schema_for({"x": "int64"}, view="dup")
    rows = [{"id": i % 150, "x": i} for i in range(300)]
    evs = [T0 + (300 - i) for i in range(300)]  # the earlier row of each key is newer
    store.write(dup, batch_of(dup, rows, event_ts=evs))
    got = store.read([ReadRequest(dup, {"id": list(range(150))})])[0].features["x"]
    assert got == list(range(150))
    store.close()


def test_foreign_values_raise_a_store_error(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url)
    schema = schema_for({"x": "int64"})
    store.write(schema, batch_of(schema, [{"id": 1, "x": 1}]))
    raw = redis.Redis.from_url(redis_url)
    (key,) = raw.keys("fs1:*")
    raw.set(key, b"junk")
    with pytest.raises(OnlineStoreError, match="cannot be decoded"):
        store.read([ReadRequest(schema, {"id": [1]})])
    with pytest.raises(OnlineStoreError, match="write failed"):
        store.write(schema, batch_of(schema, [{"id": 1, "x": 2}], event_ts=T0 + 1))
    # the connection that carried the error is usable again
    assert store.write(schema, batch_of(schema, [{"id": 2, "x": 2}])).written == 1
    store.close()


def test_url_password_is_redacted() -> None:
    redact = redact_url  # the one redaction the whole package uses
    assert redact("redis://:s3cret@host:1/0") == "redis://:***@host:1/0"
    assert redact("redis://user:s3cret@host:1/0") == "redis://user:***@host:1/0"
    assert redact("redis://host:1/0") == "redis://host:1/0"


def test_stopped_server_is_unavailable_fast_and_recovers(own_redis: RedisServer) -> None:
    store = open_online_store(own_redis.url + f"?timeout_s={TIMEOUT_S}")
    schema = schema_for({"x": "int64"})
    assert store.write(schema, batch_of(schema, [{"id": 1, "x": 1}])).written == 1
    own_redis.stop()
    for call in (
        store.ping,
        lambda: store.read([ReadRequest(schema, {"id": [1]})]),
        lambda: store.write(schema, batch_of(schema, [{"id": 1, "x": 2}])),
        lambda: store.delete_view(schema),
    ):
        started = time.monotonic()
        with pytest.raises(OnlineStoreUnavailable, match=f"127.0.0.1:{own_redis.port}") as info:
            call()
        assert time.monotonic() - started < TIMEOUT_S + 0.5
        assert info.value.retryable
    own_redis.start()  # same port, empty, and with an empty script cache
    store.ping()
    assert store.write(schema, batch_of(schema, [{"id": 1, "x": 3}])).written == 1
    assert store.read([ReadRequest(schema, {"id": [1]})])[0].features["x"] == [3]
    store.close()


def test_hung_server_times_out_within_the_bound(own_redis: RedisServer) -> None:
    store = RedisOnlineStore(own_redis.url, timeout_s=TIMEOUT_S)
    schema = schema_for({"x": "int64"})
    store.ping()
    assert own_redis.proc is not None
    pid = own_redis.proc.pid
    os.kill(pid, signal.SIGSTOP)  # accepts connections, never answers
    try:
        for call in (store.ping, lambda: store.read([ReadRequest(schema, {"id": [1]})])):
            started = time.monotonic()
            with pytest.raises(OnlineStoreUnavailable, match="Timeout"):
                call()
            elapsed = time.monotonic() - started
            assert TIMEOUT_S * 0.8 < elapsed < TIMEOUT_S + 0.5
    finally:
        os.kill(pid, signal.SIGCONT)
    store.ping()
    assert store.read([ReadRequest(schema, {"id": [1]})])[0].event_ts == [None]
    store.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    yield from writer_pool()


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seeds=st.lists(st.integers(0, 2**32), min_size=WRITERS, max_size=WRITERS))
def test_concurrent_processes_keep_the_newest_record(
    seeds: list[int], redis_url: str, pool: ProcessPoolExecutor
) -> None:
    # chunks of 5 keys: many script calls per process, so the writers interleave
    check_concurrent_writers(redis_url + "?chunk_size=5&in_flight=2", seeds, pool)
