"""The Redis Cluster store against a real 3-master cluster: contract, routing, races,
materialize and serve, and one master going down and coming back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.api.store import FeatureStore
from featurestore.errors import DefinitionError, OnlineStoreUnavailable
from featurestore.stores.online import ReadRequest, WriteBatch, open_online_store
from featurestore.stores.online.encoding import codec_for
from featurestore.stores.online.redis import RedisOnlineStore
from featurestore.stores.online.redis_cas import CAS_SHA
from featurestore.stores.online.redis_cluster import RedisClusterOnlineStore
from featurestore.stores.online.redis_slots import slots_of
from featurestore.stores.online.writes import prepare
from featurestore.stores.view_specs import online_schema
from tests.fixtures.redis_cluster import ClusterNode, RedisClusterServers
from tests.integration.test_server import DRIVERS, END, FEATURES, NOW_HOUR, VIEW, Server
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


class TestRedisClusterContract(OnlineStoreContract):
    @pytest.fixture
    def store(self, redis_cluster_url: str) -> Iterator[RedisClusterOnlineStore]:
        # a small chunk size makes the contract's batches cross chunk boundaries in a slot
        store = RedisClusterOnlineStore(redis_cluster_url, chunk_size=3, in_flight=3)
        yield store
        store.close()


def _raw(cluster: RedisClusterServers) -> redis.RedisCluster:
    return redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)


def test_slots_are_the_servers(redis_cluster: RedisClusterServers) -> None:
    """The vectorised CRC and the per-key path give the slot the cluster computes,
    also for entities whose bytes hold '}' (which ends a hash tag early)."""
    raw = redis.Redis(port=redis_cluster.nodes[0].port)
    ints = np.array([0, 1, -1, 125, 0x7D7D, 2**63 - 1, -(2**63), *range(1000, 1400)])
    cases: list[tuple[dict[str, str], dict[str, Any]]] = [
        ({"id": "int64"}, {"id": ints}),
        ({"u": "uint64"}, {"u": np.array([0, 2**63, 2**64 - 1, 0x7D << 56], dtype=np.uint64)}),
        (
            {"d": "date", "n": "int32"},
            {
                "d": [date(2024, 1, 1) + timedelta(days=i) for i in range(200)],
                "n": list(range(200)),
            },
        ),
        ({"s": "string", "n": "int64"}, {"s": ["a}b", "", "{x}", "plain"], "n": [1, 2, 3, 125]}),
    ]
    for keys, columns in cases:
        schema = schema_for({"x": "int64"}, keys=keys, project="p-1")
        n = len(next(iter(columns.values())))
        batch = WriteBatch(
            keys=columns, event_ts=[T0] * n, created_ts=[T0] * n, features={"x": [0] * n}
        )
        codec = codec_for(schema)
        prepared = prepare(codec, batch, now_us=T0)
        got = slots_of(codec, prepared.keys).tolist()
        record_keys, _ = prepared.records(prefix=codec.key_prefix, suffix=codec.key_suffix)
        want = [int(raw.execute_command("CLUSTER", "KEYSLOT", k)) for k in record_keys]
        assert got == want, keys
    raw.close()


def test_records_are_the_single_node_records_and_an_entity_is_one_slot(
    redis_cluster_url: str, redis_cluster: RedisClusterServers, redis_url: str
) -> None:
    views = [schema_for({"x": "int64", "s": "string"}, view=v) for v in ("a", "b", "c")]
    rows = [{"id": i, "x": i * 3, "s": f"e{i}"} for i in range(300)]
    cluster = RedisClusterOnlineStore(redis_cluster_url)
    single = RedisOnlineStore(redis_url)
    for schema in views:
        assert cluster.write(schema, batch_of(schema, rows)).written == 300
        single.write(schema, batch_of(schema, rows))
    raw_cluster, raw_single = _raw(redis_cluster), redis.Redis.from_url(redis_url)
    keys = sorted(raw_single.keys("fs1:*"))
    assert len(keys) == 900
    # the same keys and byte-identical values as the single node writes
    assert [raw_cluster.get(k) for k in keys] == raw_single.mget(keys)
    # every view of one entity in one slot; the entities spread over every master
    for i in range(300):
        entity = [codec_for(s).entities_for(ReadRequest(s, {"id": [i]})) for s in views]
        prefixed = [
            codec_for(s).key_prefix + e[0] + codec_for(s).key_suffix
            for s, e in zip(views, entity, strict=True)
        ]  # type: ignore[operator]
        assert len({raw_cluster.keyslot(k) for k in prefixed}) == 1
    assert all(node.client().dbsize() > 100 for node in redis_cluster.nodes)  # type: ignore[attr-defined]
    # a lookup of many views and entities comes back in the request's order
    ids = [299, 7, 1000, 150, 7]
    got = cluster.read(
        [ReadRequest(views[2], {"id": ids}), ReadRequest(views[0], {"id": ids[::-1]})]
    )
    assert got[0].features["s"] == ["e299", "e7", None, "e150", "e7"]
    assert got[1].features["x"] == [21, 450, None, 21, 897]
    cluster.close()
    single.close()


def test_bulk_writes_go_per_slot_to_every_master(
    redis_cluster_url: str, redis_cluster: RedisClusterServers
) -> None:
    store = RedisClusterOnlineStore(redis_cluster_url, chunk_size=50)
    schema = schema_for({"x": "int64"})
    clients = [redis.Redis(port=n.port) for n in redis_cluster.nodes]
    for c in clients:
        c.config_resetstat()
    n = 20_000
    ids = np.arange(n, dtype=np.int64)
    batch = WriteBatch(
        keys={"id": ids}, event_ts=ids + T0, created_ts=ids + T0, features={"x": ids}
    )
    assert store.write(schema, batch).written == n
    stats = [c.info("commandstats") for c in clients]
    # new keys: MSETNX, one slot per call, on every master; never a cross-slot error
    assert all(s.get("cmdstat_msetnx", {}).get("calls", 0) > 1000 for s in stats)
    assert all(s.get("cmdstat_msetnx", {}).get("failed_calls", 0) == 0 for s in stats)
    # the script cache of every node is lost: each node reloads it, the CAS still holds
    for c in clients:
        c.script_flush()
    newer = WriteBatch(
        keys={"id": ids}, event_ts=ids + T0 + (ids % 2), created_ts=ids + T0, features={"x": -ids}
    )
    stats2 = store.write(schema, newer)
    assert (stats2.written, stats2.skipped_stale) == (n // 2, n // 2)
    assert all(c.script_exists(CAS_SHA) == [True] for c in clients)
    probe = list(range(0, n, 37))
    got = store.read([ReadRequest(schema, {"id": probe})])[0].features["x"]
    assert got == [-i if i % 2 else i for i in probe]
    for c in clients:
        c.close()
    store.close()


def test_ttl_views_take_one_set_nx_per_new_key_on_every_master(
    redis_cluster_url: str, redis_cluster: RedisClusterServers
) -> None:
    """A view with a retention: new keys go out as SET ... PXAT ... NX (no script, no
    cross-slot call), each with its deadline; existing keys then go through the CAS."""
    store = RedisClusterOnlineStore(redis_cluster_url, chunk_size=50)
    schema = schema_for({"x": "int64"}, ttl_us=HOUR_US)
    assert schema.retention_us is not None
    clients = [redis.Redis(port=n.port) for n in redis_cluster.nodes]
    for c in clients:
        c.config_resetstat()
    n = 6_000
    ids = np.arange(n, dtype=np.int64)
    events = ids * 1_000 + T0 + 1  # not whole milliseconds
    batch = WriteBatch(keys={"id": ids}, event_ts=events, created_ts=events, features={"x": ids})
    assert store.write(schema, batch).written == n
    stats = [c.info("commandstats") for c in clients]
    assert sum(s.get("cmdstat_set", {}).get("calls", 0) for s in stats) == n
    assert all(s.get("cmdstat_set", {}).get("calls", 0) > 1000 for s in stats)
    assert all("cmdstat_evalsha" not in s for s in stats)
    # every key's deadline: its retention end in whole milliseconds, rounded up
    codec = codec_for(schema)
    probe = list(range(0, n, 97))
    cluster = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    for i in probe:
        key = codec.key_prefix + b"i" + int(i).to_bytes(8, "big", signed=True) + codec.key_suffix
        ms = int(cluster.execute_command("PEXPIRETIME", key))
        assert ms == -(-(int(events[i]) + schema.retention_us) // 1000)
    cluster.close()
    older = WriteBatch(
        keys={"id": ids}, event_ts=events - (ids % 2), created_ts=events, features={"x": -ids}
    )
    assert store.write(schema, older).written == 0  # all stale: the script said no
    assert sum(c.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0) for c in clients)
    got = store.read([ReadRequest(schema, {"id": probe})])[0].features["x"]
    assert got == probe
    for c in clients:
        c.close()
    store.close()


def _node_id(node: ClusterNode) -> str:
    return str(node.client().execute_command("CLUSTER", "MYID").decode())  # type: ignore[attr-defined]


def test_a_moved_slot_is_followed_without_a_restart(
    redis_cluster_url: str, redis_cluster: RedisClusterServers
) -> None:
    """A slot moved to another master after the store learnt the topology: MOVED
    replies make it refresh the slot map and send those rows again."""
    store = RedisClusterOnlineStore(redis_cluster_url)
    schema = schema_for({"x": "int64"})
    store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in range(50)]))
    key = (
        codec_for(schema).key_prefix
        + codec_for(schema).entities_for(ReadRequest(schema, {"id": [7]}))[0]
        + codec_for(schema).key_suffix
    )  # type: ignore[operator]
    source = redis_cluster.node_of(key)
    target = next(n for n in redis_cluster.nodes if n is not source)
    slot = int(source.client().execute_command("CLUSTER", "KEYSLOT", key))  # type: ignore[attr-defined]
    src, dst = source.client(), target.client()
    dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", _node_id(source))  # type: ignore[attr-defined]
    src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", _node_id(target))  # type: ignore[attr-defined]
    for k in src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000):  # type: ignore[attr-defined]
        src.execute_command("MIGRATE", "127.0.0.1", target.port, k, 0, 5000)  # type: ignore[attr-defined]
    for node in redis_cluster.nodes:
        node.client().execute_command("CLUSTER", "SETSLOT", slot, "NODE", _node_id(target))  # type: ignore[attr-defined]
    assert redis_cluster.node_of(key) is target
    assert store.read([ReadRequest(schema, {"id": [7, 8]})])[0].features["x"] == [7, 8]
    assert store.write(schema, batch_of(schema, [{"id": 7, "x": 70}], event_ts=T0 + 1)).written == 1
    assert dst.get(key) is not None  # type: ignore[attr-defined]
    assert store.read([ReadRequest(schema, {"id": [7]})])[0].features["x"] == [70]
    store.close()


def test_url_dispatch_and_options(redis_cluster_url: str) -> None:
    store = open_online_store(redis_cluster_url + "?timeout_s=0.25&chunk_size=10")
    assert isinstance(store, RedisClusterOnlineStore) and store.chunk_size == 10
    store.ping()
    store.close()
    with pytest.raises(DefinitionError, match="only database 0"):
        open_online_store(redis_cluster_url + "/3")
    with pytest.raises(DefinitionError, match="unknown option 'nope'"):
        open_online_store(redis_cluster_url + "?nope=1")


def test_unreachable_cluster_is_unavailable_at_first_use() -> None:
    store = open_online_store("redis+cluster://127.0.0.1:1?timeout_s=0.2")  # opening succeeds
    schema = schema_for({"x": "int64"})
    with pytest.raises(OnlineStoreUnavailable) as info:
        store.read([ReadRequest(schema, {"id": [1]})])
    assert info.value.retryable and "127.0.0.1:1" in str(info.value)
    store.close()


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    yield from writer_pool()


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seeds=st.lists(st.integers(0, 2**32), min_size=WRITERS, max_size=WRITERS))
def test_concurrent_processes_keep_the_newest_record(
    seeds: list[int], redis_cluster_url: str, pool: ProcessPoolExecutor
) -> None:
    # chunks of 2 keys: many script calls per process and slot, so the writers interleave
    check_concurrent_writers(redis_cluster_url + "?chunk_size=2&in_flight=2", seeds, pool)


# -- materialize and serve; one master down and back -------------------------------------------
def _repo(tmp_path: Path, url: str) -> Path:
    from tests.helpers import quickstart

    root = quickstart(tmp_path / "repo")
    data = root / "data" / "driver_stats.parquet"
    frame = pl.read_parquet(data)
    shift = NOW_HOUR - frame["event_timestamp"].max()
    frame.with_columns(pl.col("event_timestamp") + shift, pl.col("created") + shift).write_parquet(
        data
    )
    config = root / "featurestore.toml"
    config.write_text(config.read_text() + f'\n[online_store]\nurl = "{url}"\n')
    store = FeatureStore(root)
    store.apply()
    store.backfill()
    [report] = store.materialize([VIEW], end=END)
    assert report.written == len(DRIVERS)
    store.close()
    return root


def _drivers_by_node(cluster: RedisClusterServers) -> dict[int, list[int]]:
    """Per node port, the drivers whose record it holds."""
    prefix = b"fs1:{quickstart:i"
    out: dict[int, list[int]] = {}
    for node in cluster.nodes:
        for key in node.client().scan_iter(match=b"fs1:{quickstart:i*"):  # type: ignore[attr-defined]
            out.setdefault(node.port, []).append(
                int.from_bytes(key[len(prefix) : len(prefix) + 8], "big", signed=True)
            )
    return out


def test_materialize_serve_and_one_master_down_then_back(
    own_redis_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    cluster = own_redis_cluster
    repo = _repo(tmp_path, cluster.url + f"?timeout_s={TIMEOUT_S}")
    by_node = _drivers_by_node(cluster)
    assert sorted(d for ds in by_node.values() for d in ds) == DRIVERS
    assert len(by_node) == 3  # 20 drivers over 3 masters
    store = FeatureStore(repo)
    local = store.get_online_features(
        {"driver_id": DRIVERS}, features=[f"{VIEW}:{f}" for f in FEATURES]
    )
    server = Server(repo, tmp_path / "server.log")
    try:
        status, _, doc = server.lookup(
            {"entities": {"driver_id": DRIVERS}, "feature_service": "driver_ranking"}
        )
        assert status == 200, doc
        assert doc["features"] == local.to_dict()["features"]
        # the newest row per driver up to END, computed here from the sample data
        end = pl.lit(END).dt.cast_time_unit("us")
        want = (
            pl.read_parquet(repo / "data" / "driver_stats.parquet")
            .filter(pl.col("event_timestamp") <= end)
            .sort("driver_id", "event_timestamp", "created")
            .group_by("driver_id", maintain_order=True)
            .last()
        )
        assert doc["features"]["conv_rate"]["values"] == want["conv_rate"].to_list()
        assert doc["features"]["conv_rate"]["statuses"] == ["PRESENT"] * len(DRIVERS)

        down = cluster.nodes[1]
        lost = sorted(by_node[down.port])
        kept = sorted(d for port, ds in by_node.items() if port != down.port for d in ds)
        direct = open_online_store(cluster.url + f"?timeout_s={TIMEOUT_S}")
        client = store.online  # the client FeatureStore opened, kept across the outage
        schema = online_schema(store.project, store.index(store.registry.head()).view(VIEW))
        down.stop()
        for _ in range(2):  # before and after the others mark the master as failed
            started = time.monotonic()
            status, headers, doc = server.lookup(
                {"entities": {"driver_id": lost}, "feature_service": "driver_ranking"}
            )
            assert status == 503, doc
            assert doc["retryable"] is True and headers["retry-after"] == "1"
            assert time.monotonic() - started < TIMEOUT_S + 1.0
            # the other masters' entities are still served, by the server and the store
            status, _, doc = server.lookup(
                {"entities": {"driver_id": kept}, "feature_service": "driver_ranking"}
            )
            assert status == 200, doc
            assert doc["features"]["conv_rate"]["statuses"] == ["PRESENT"] * len(kept)
            got = direct.read([ReadRequest(schema, {"driver_id": kept})])[0]
            assert None not in got.event_ts
            started = time.monotonic()
            with pytest.raises(OnlineStoreUnavailable, match=f"127.0.0.1:{down.port}") as info:
                direct.read([ReadRequest(schema, {"driver_id": [kept[0], lost[0]]})])
            assert info.value.retryable and time.monotonic() - started < TIMEOUT_S + 0.5
            with pytest.raises(OnlineStoreUnavailable, match=f"127.0.0.1:{down.port}") as info:
                direct.ping()
            assert info.value.retryable
            time.sleep(1.5)
        with pytest.raises(OnlineStoreUnavailable, match=f"127.0.0.1:{down.port}"):
            store.materialize([VIEW], end=END)

        down.start()  # same ports and nodes.conf: it rejoins with its slots, empty
        cluster.wait_ok()
        deadline = time.monotonic() + 15
        body = {"entities": {"driver_id": lost}, "feature_service": "driver_ranking"}
        while (status := server.lookup(body)[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        status, _, doc = server.lookup(body)
        assert status == 200 and doc["features"]["conv_rate"]["statuses"] == ["MISSING"] * len(lost)
        direct.ping()
        [report] = store.materialize([VIEW], end=END)  # the same FeatureStore and client
        assert report.written == len(lost)
        status, _, doc = server.lookup(body)
        assert doc["features"]["conv_rate"]["statuses"] == ["PRESENT"] * len(lost)
        assert client is store.online
        direct.close()
    finally:
        server.stop()
        store.close()
