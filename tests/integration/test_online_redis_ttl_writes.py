"""Writes to a view with a retention deadline, against a private redis-server.

New keys take one ``SET key value PXAT <ms> NX`` each (``redis_cas.py``); keys that
exist go through the compare-and-set script. Command counts come from INFO
commandstats, so each test also shows which path its rows took.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis

from featurestore.errors import OnlineStoreError, OnlineStoreUnavailable
from featurestore.stores.online import (
    OnlineViewSchema,
    ReadRequest,
    WriteStats,
    redis_bulk,
    redis_cas,
)
from featurestore.stores.online import redis as redis_store
from featurestore.stores.online.encoding import codec_for
from featurestore.stores.online.redis import RedisOnlineStore
from featurestore.stores.online.redis_bulk import pack_set_nx
from featurestore.stores.online.redis_cas import CAS_SCRIPT
from tests.fixtures.services import free_port, service_unavailable, wait_for_port
from tests.unit.stores.online_contract import HOUR_US, T0, batch_of, schema_for

pytestmark = pytest.mark.redis
RETENTION_US = 2 * HOUR_US  # schema_for's default retention: twice the TTL


def ttl_view(view: str = "v") -> OnlineViewSchema:
    return schema_for({"x": "int64"}, ttl_us=HOUR_US, view=view)


def key_of(schema: OnlineViewSchema, entity: int) -> bytes:
    codec = codec_for(schema)
    return codec.key_prefix + b"i" + entity.to_bytes(8, "big", signed=True) + codec.key_suffix


def deadline_ms(event_ts: int) -> int:
    """The expiry Redis must hold: the retention deadline in ms, rounded up."""
    return -(-(event_ts + RETENTION_US) // 1000)


def commands(raw: redis.Redis) -> dict[str, int]:
    stats = raw.info("commandstats")
    names = ("set", "evalsha", "msetnx")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in names}


def expiries(raw: redis.Redis, schema: OnlineViewSchema, ids: list[int]) -> list[int]:
    pipe = raw.pipeline(transaction=False)
    for i in ids:
        pipe.execute_command("PEXPIRETIME", key_of(schema, i))
    return [int(ms) for ms in pipe.execute()]


def read_x(store: RedisOnlineStore, schema: OnlineViewSchema, ids: list[int]) -> list[Any]:
    return list(store.read([ReadRequest(schema, {"id": ids})])[0].features["x"])


@pytest.mark.parametrize("protocol", [2, 3])
def test_new_keys_are_stored_with_their_deadline_by_one_set_each(
    redis_url: str, protocol: int
) -> None:
    store = RedisOnlineStore(f"{redis_url}?protocol={protocol}", chunk_size=50, in_flight=3)
    schema = ttl_view()
    raw = redis.Redis.from_url(redis_url)
    raw.config_resetstat()
    ids = list(range(230))  # four full chunks and a short one
    events = [T0 + 1000 * i + 1 + i % 997 for i in ids]  # not whole milliseconds
    rows = [{"id": i, "x": 3 * i} for i in ids]
    stats = store.write(schema, batch_of(schema, rows, event_ts=events))
    assert stats == WriteStats(written=230)
    assert commands(raw) == {"set": 230, "evalsha": 0, "msetnx": 0}
    assert expiries(raw, schema, ids) == [deadline_ms(ev) for ev in events]
    got = store.read([ReadRequest(schema, {"id": ids})])[0]
    assert got.features["x"] == [3 * i for i in ids]
    assert list(got.event_ts) == events
    store.close()


def test_existing_keys_keep_a_newer_record_and_lose_an_older_one(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, chunk_size=50, in_flight=3)
    schema = ttl_view()
    raw = redis.Redis.from_url(redis_url)
    # ids 100..139 exist: even ones hold a record newer than the batch, odd ones older
    old = list(range(100, 140))
    old_events = [T0 + 10 if i % 2 == 0 else T0 - 10 for i in old]
    store.write(schema, batch_of(schema, [{"id": i, "x": -1} for i in old], event_ts=old_events))
    raw.config_resetstat()
    ids = list(range(300))
    stats = store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids]))
    assert (stats.written, stats.skipped_stale) == (280, 20)
    # chunks 0-2 and the two sent while chunk 2 was in flight take SET NX; chunk 2's
    # 40 existing keys then go to the script, and so does the last chunk
    assert commands(raw) == {"set": 250, "evalsha": 2, "msetnx": 0}
    kept = {i for i in old if i % 2 == 0}
    assert read_x(store, schema, ids) == [-1 if i in kept else i for i in ids]
    want = [deadline_ms(T0 + 10 if i in kept else T0) for i in ids]
    assert expiries(raw, schema, ids) == want
    # the same rows again: every key exists and nothing is newer
    again = store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids]))
    assert (again.written, again.skipped_stale) == (0, 300)
    store.close()


@pytest.mark.parametrize("newest_first", [True, False])
def test_a_key_twice_in_one_fresh_chunk_keeps_its_newest_row(
    redis_url: str, newest_first: bool
) -> None:
    store = RedisOnlineStore(redis_url, chunk_size=50, in_flight=3)
    schema = ttl_view()
    raw = redis.Redis.from_url(redis_url)
    raw.config_resetstat()
    rows = [{"id": i, "x": i} for i in range(200)]
    events = [T0] * 200
    # id 7 again at position 30, in the first chunk too, with another value
    rows.insert(30, {"id": 7, "x": 700})
    events.insert(30, T0 - 5 if newest_first else T0 + 5)
    stats = store.write(schema, batch_of(schema, rows, event_ts=events))
    # the row that comes second is stored too when it is the newer one
    assert stats.written == (200 if newest_first else 201)
    assert read_x(store, schema, [7])[0] == (7 if newest_first else 700)
    assert expiries(raw, schema, [7]) == [deadline_ms(T0 if newest_first else T0 + 5)]
    # the chunk holding the key twice went to the script whole, the others took SET NX
    assert commands(raw) == {"set": 151, "evalsha": 1, "msetnx": 0}
    assert read_x(store, schema, list(range(200)))[8:] == list(range(8, 200))
    store.close()


@pytest.mark.parametrize("newest_first", [True, False])
def test_a_key_in_two_fresh_chunks_keeps_its_newest_row(redis_url: str, newest_first: bool) -> None:
    store = RedisOnlineStore(redis_url, chunk_size=50, in_flight=2)
    schema = ttl_view()
    raw = redis.Redis.from_url(redis_url)
    rows = [{"id": i, "x": i} for i in range(200)]
    events = [T0] * 200
    rows[180] = {"id": 20, "x": 2000}  # id 20 again, three chunks later
    events[180] = T0 - 5 if newest_first else T0 + 5
    stats = store.write(schema, batch_of(schema, rows, event_ts=events))
    assert stats.written == (199 if newest_first else 200)
    assert read_x(store, schema, [20])[0] == (20 if newest_first else 2000)
    assert expiries(raw, schema, [20]) == [deadline_ms(T0 if newest_first else T0 + 5)]
    store.close()


def test_script_cache_flushed_in_the_middle_of_a_batch(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisOnlineStore(redis_url, chunk_size=50, in_flight=3)
    schema = ttl_view()
    raw = redis.Redis.from_url(redis_url)
    ids = list(range(400))
    # every even key exists with an older record: each chunk needs the script
    evens = [{"id": i, "x": -1} for i in ids if i % 2 == 0]
    store.write(schema, batch_of(schema, evens, event_ts=T0 - 10))
    raw.script_load(CAS_SCRIPT)
    raw.config_resetstat()
    real = redis_store.chunk_calls

    def flushing(*args: Any, **kwargs: Any) -> Iterator[redis_cas.Call]:
        for n, call in enumerate(real(*args, **kwargs)):
            if n == 3:  # three SET NX chunks and a script call are out: later calls meet NOSCRIPT
                raw.script_flush()
            yield call

    monkeypatch.setattr(redis_store, "chunk_calls", flushing)
    stats = store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids]))
    assert (stats.written, stats.skipped_stale) == (400, 0)
    assert raw.info("errorstats").get("errorstat_NOSCRIPT", {}).get("count", 0) >= 1
    assert raw.script_exists(redis_cas.CAS_SHA) == [True]
    assert read_x(store, schema, ids) == ids
    assert expiries(raw, schema, ids) == [deadline_ms(T0)] * 400
    store.close()


def test_views_without_retention_still_take_msetnx(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, chunk_size=50, in_flight=3)
    schema = schema_for({"x": "int64"}, view="forever")
    raw = redis.Redis.from_url(redis_url)
    raw.config_resetstat()
    ids = list(range(230))
    stats = store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids]))
    assert stats == WriteStats(written=230)
    assert commands(raw) == {"set": 0, "evalsha": 0, "msetnx": 5}
    assert set(expiries(raw, schema, ids)) == {-1}  # no deadline
    assert read_x(store, schema, ids) == ids
    store.close()


def test_replies_are_read_one_by_one_without_a_hiredis_reader(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_bulk, "_not_enough", None)  # as if redis-py had no hiredis
    store = RedisOnlineStore(redis_url, chunk_size=50, in_flight=3)
    schema = ttl_view()
    store.write(schema, batch_of(schema, [{"id": 60, "x": -1}], event_ts=T0 + 1))
    ids = list(range(120))
    stats = store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids]))
    assert (stats.written, stats.skipped_stale) == (119, 1)
    assert read_x(store, schema, ids) == [-1 if i == 60 else i for i in ids]
    store.close()


def test_error_replies_to_set_fail_the_write_and_leave_the_store_usable(redis_url: str) -> None:
    store = RedisOnlineStore(redis_url, chunk_size=50, in_flight=3)
    schema = ttl_view()
    raw = redis.Redis.from_url(redis_url)
    ids = list(range(120))
    raw.config_set("maxmemory", "1")  # noeviction: every SET is refused with OOM
    try:
        with pytest.raises(
            OnlineStoreError, match="write failed: command not allowed when used memory"
        ):
            store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids]))
    finally:
        raw.config_set("maxmemory", "0")
    assert store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids])).written == 120
    assert read_x(store, schema, ids) == ids
    store.close()


def test_a_connection_error_mid_batch_drops_the_connection(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisOnlineStore(redis_url, chunk_size=50, in_flight=3)
    schema = ttl_view()
    used: list[Any] = []
    real = redis_cas.read_replies

    def failing(conn: Any, n: int) -> list[Any]:
        used.append(conn)
        if len(used) == 2:  # replies of later chunks are still queued on the socket
            raise redis.ConnectionError("connection reset (injected)")
        return real(conn, n)

    monkeypatch.setattr(redis_cas, "read_replies", failing)
    ids = list(range(300))
    with pytest.raises(OnlineStoreUnavailable, match="injected"):
        store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids]))
    assert used[0]._sock is None  # disconnected, not handed out again with replies queued
    monkeypatch.setattr(redis_cas, "read_replies", real)
    stats = store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids], event_ts=T0 + 1))
    assert stats.written == 300
    assert read_x(store, schema, ids) == ids
    store.close()


def test_pack_set_nx_matches_hiredis_command_by_command() -> None:
    keys = [b"k", b"a-longer-key:{x}", b"", b"\r\n$3"]
    values = [b"v" * 200, b"", b"\x00\xff", b"*1\r\n"]
    deadlines = [b"1", b"1796601669693", b"99999999999999", b"0"]
    pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command
    want = b"".join(
        pack((b"SET", k, v, b"PXAT", d, b"NX"))
        for k, v, d in zip(keys, values, deadlines, strict=True)
    )
    assert pack_set_nx(keys, values, deadlines) == want
    assert pack_set_nx([], [], []) == b""
    with pytest.raises(ValueError, match="one value and one deadline per key: got 2 keys"):
        pack_set_nx([b"a", b"b"], [b"1"], [b"2", b"3"])


def _start(tmp: Path, *args: str) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        service_unavailable("redis-server is not on PATH (apt-get install redis-server)")
    assert binary is not None
    return subprocess.Popen(
        [binary, "--save", "", "--appendonly", "no", "--dir", str(tmp), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def unix_redis() -> Iterator[str]:
    """A private redis-server on a unix socket only; yields its URL."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:  # socket paths must be short
        path = Path(tmp) / "redis.sock"
        proc = _start(Path(tmp), "--port", "0", "--unixsocket", str(path))
        try:
            deadline = time.monotonic() + 10
            while not path.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            yield f"unix://{path}"
        finally:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def tls_redis() -> Iterator[str]:
    """A private redis-server on TLS only, with a self-signed certificate; yields its URL."""
    openssl = shutil.which("openssl")
    if openssl is None:
        service_unavailable("openssl is not on PATH: cannot make a test certificate")
    assert openssl is not None
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        subprocess.run(
            [
                *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
        )
        port = free_port()
        proc = _start(
            Path(tmp),
            *("--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port)),
            *("--tls-cert-file", str(cert), "--tls-key-file", str(key)),
            *("--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"),
        )
        try:
            if not wait_for_port(port):
                service_unavailable(
                    "redis-server did not listen on its TLS port (built without TLS?)"
                )
            yield f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=none"
        finally:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.parametrize("server", ["unix_redis", "tls_redis"])
def test_fresh_and_existing_keys_over_unix_sockets_and_tls(
    server: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(server)
    store = RedisOnlineStore(url, chunk_size=50, in_flight=3, timeout_s=5.0)
    schema = ttl_view()
    store.write(schema, batch_of(schema, [{"id": 70, "x": -1}], event_ts=T0 + 1))
    ids = list(range(150))
    stats = store.write(schema, batch_of(schema, [{"id": i, "x": i} for i in ids]))
    assert (stats.written, stats.skipped_stale) == (149, 1)
    assert read_x(store, schema, ids) == [-1 if i == 70 else i for i in ids]
    store.close()
