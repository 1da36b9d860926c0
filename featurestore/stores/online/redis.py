"""Redis backend: batched atomic compare-and-set writes, reads in one MGET.

Writes go out a chunk of keys per call (``redis_cas.py``: a Lua script, or while
the keys are new MSETNX, or one SET ... PXAT ... NX per key for a view with a
retention), pipelined on one connection. A write interrupted by a failure may be
retried as a whole, since CAS makes it idempotent.

Timeouts are short and bounded (``timeout_s``, default 0.5 s); every connection
failure becomes ``OnlineStoreUnavailable`` naming the URL. Nothing needs a
restart when Redis comes back: the pool reconnects on the next call and the
script is reloaded after a ``NOSCRIPT`` reply.

Keys are written in batches that span many hash slots, so this backend targets a
single Redis (or a proxy), not Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from featurestore._redact import redact_url
from featurestore._time import now_us
from featurestore.errors import OnlineStoreError, OnlineStoreUnavailable
from featurestore.stores.online.base import (
    CAP_CAS,
    CAP_MULTI_PROCESS,
    CAP_MULTI_VIEW_READ,
    CAP_PERSISTENT,
    CAP_TTL,
    OnlineViewSchema,
    ReadRequest,
    ReadResult,
    WriteBatch,
    WriteStats,
)
from featurestore.stores.online.encoding import Codec, codec_for
from featurestore.stores.online.redis_cas import FreshHint, Pack, chunk_calls, send_calls
from featurestore.stores.online.writes import PreparedRows, prepare

_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError)

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # hiredis packs a command in C; redis-py's own packer loops over the args in Python
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    _hiredis_pack = None


def write_prepared(
    schema: OnlineViewSchema,
    rows: WriteBatch,
    send: Callable[[Codec, PreparedRows], int],
) -> WriteStats:
    """Check and encode ``rows``, hand what is within retention to ``send`` (the
    store's compare-and-set, returning how many it stored) and count the rest. Shared
    by the single-node and the cluster store."""
    codec = codec_for(schema)
    prepared = prepare(codec, rows, now_us=now_us())
    n = len(prepared)
    if n == 0:
        return WriteStats(skipped_expired=prepared.skipped_expired)
    written = send(codec, prepared)
    return WriteStats(
        written=written, skipped_stale=n - written, skipped_expired=prepared.skipped_expired
    )


def read_by_key(
    requests: Sequence[ReadRequest], fetch: Callable[[list[bytes]], list[bytes | None]]
) -> list[ReadResult]:
    """Every request's record keys fetched in one ``fetch`` (an MGET, or one per slot on
    a cluster), then decoded per request in its entity order; a null key reads as
    missing without being fetched. Shared by the single-node and the cluster store."""
    planned = []
    keys: list[bytes] = []
    for request in requests:
        codec = codec_for(request.schema)
        entities = codec.entities_for(request, prefix=codec.key_prefix, suffix=codec.key_suffix)
        planned.append((request, codec, entities, len(keys)))
        keys += [e for e in entities if e is not None]
    values = fetch(keys) if keys else []
    out = []
    for request, codec, entities, start in planned:
        if None in entities:
            it = iter(values[start:])
            blobs = [None if e is None else next(it) for e in entities]
        else:
            blobs = values[start : start + len(entities)]
        out.append(codec.result(request, blobs))
    return out


def unlink_entities(
    schema: OnlineViewSchema,
    entity_keys: Mapping[str, Sequence[Any]],
    unlink: Callable[..., Any],
) -> int:
    """UNLINK the records of these entities, 1000 keys per call (``unlink``: the
    client's, or the cluster client's, which splits by slot); returns how many
    existed. Shared by the single-node and the cluster store."""
    codec = codec_for(schema)
    found = codec.entities_for(
        ReadRequest(schema, entity_keys), prefix=codec.key_prefix, suffix=codec.key_suffix
    )
    keys = sorted({k for k in found if k is not None})
    return sum(int(unlink(*keys[a : a + 1000])) for a in range(0, len(keys), 1000))


class RedisOnlineStore:
    """Records in Redis at ``url`` (``redis://[:password@]host:port/db``).

    ``timeout_s`` bounds connecting and every reply; ``retries`` re-sends a
    command after a connection error (0 keeps a failed lookup within one timeout;
    the pool already replaces connections the server closed). ``chunk_size`` keys
    go into one script call and up to ``in_flight`` calls are outstanding.
    """

    capabilities = frozenset(
        {CAP_CAS, CAP_TTL, CAP_MULTI_VIEW_READ, CAP_PERSISTENT, CAP_MULTI_PROCESS}
    )

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.5,
        retries: int = 0,
        chunk_size: int = 1000,
        in_flight: int = 8,
        max_connections: int | None = None,
    ) -> None:
        self.url = url
        self._where = f"Redis online store {redact_url(url)}"
        self.chunk_size = chunk_size
        self.in_flight = in_flight
        self._retries = retries
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), retries),
            health_check_interval=0,
            max_connections=max_connections,
        )

    # -- writes

    def write(self, schema: OnlineViewSchema, rows: WriteBatch) -> WriteStats:
        def send(codec: Codec, prepared: PreparedRows) -> int:
            with self._errors("write", schema):
                return self._send(codec, prepared)

        return write_prepared(schema, rows, send)

    def _send(self, codec: Codec, prepared: PreparedRows) -> int:
        pool = self._client.connection_pool
        conn = pool.get_connection()
        pack: Pack = partial(_pack, conn)
        # MSETNX / SET NX are worth a try for bulk writes only: a small write to existing
        # keys (the stream engine's) would pay a second round trip for nothing
        fresh = FreshHint(len(prepared) >= self.chunk_size)
        calls = chunk_calls(codec, prepared, chunk_size=self.chunk_size, pack=pack, fresh=fresh)
        try:
            return send_calls(conn, calls, in_flight=self.in_flight, pack=pack, fresh=fresh)
        except BaseException:
            # replies may still be queued on this socket: never hand it out again as is
            conn.disconnect()
            raise
        finally:
            pool.release(conn)

    # -- reads

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        return read_by_key(requests, self._fetch)

    def _fetch(self, keys: list[bytes]) -> list[bytes | None]:
        with self._errors("read"):
            return self._mget(keys)

    def _mget(self, keys: list[bytes]) -> list[bytes | None]:
        """MGET on a pooled connection, packed by hiredis: redis-py's own command path
        costs more than the decoding of 200 records. Retries as the client would."""
        pool = self._client.connection_pool
        for attempt in range(self._retries + 1):
            conn = pool.get_connection()
            try:
                conn.send_packed_command([_pack(conn, ("MGET", *keys))], check_health=False)
                return cast(list[bytes | None], conn.read_response())
            except _DOWN:
                conn.disconnect()
                if attempt == self._retries:
                    raise
            except BaseException:
                conn.disconnect()
                raise
            finally:
                pool.release(conn)
        raise AssertionError("unreachable")

    # -- admin

    def delete_view(self, schema: OnlineViewSchema) -> int:
        codec = codec_for(schema)
        pattern = _glob_escape(codec.key_prefix) + b"*" + _glob_escape(codec.key_suffix)
        deleted = 0
        with self._errors("delete_view", schema):
            batch: list[bytes] = []
            for key in self._client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += self._client.unlink(*batch)
                    batch = []
            if batch:
                deleted += self._client.unlink(*batch)
        return deleted

    def delete_entities(
        self, schema: OnlineViewSchema, entity_keys: Mapping[str, Sequence[Any]]
    ) -> int:
        with self._errors("delete_entities", schema):
            return unlink_entities(schema, entity_keys, self._client.unlink)

    def ping(self) -> None:
        with self._errors("ping"):
            self._client.ping()

    def close(self) -> None:
        self._client.close()
        self._client.connection_pool.disconnect()

    @contextmanager
    def _errors(self, action: str, schema: OnlineViewSchema | None = None) -> Iterator[None]:
        obj = self._where
        if schema is not None:
            obj += f", view {schema.project}/{schema.view}"
        try:
            yield
        except _DOWN as exc:
            raise OnlineStoreUnavailable(
                f"{action} failed: Redis is unreachable ({exc})",
                obj=obj,
                hint="Check that Redis is running and reachable; retrying is safe",
            ) from exc
        except redis.RedisError as exc:
            raise OnlineStoreError(f"{action} failed: {exc}", obj=obj) from exc


def _pack(conn: Any, args: tuple[Any, ...]) -> bytes:
    if _hiredis_pack is not None:
        return _hiredis_pack(args)
    return b"".join(conn.pack_command(*args))  # pragma: no cover - without hiredis


def _glob_escape(raw: bytes) -> bytes:
    """``raw`` with Redis glob metacharacters escaped, for SCAN MATCH."""
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\":
            out.append(0x5C)
        out.append(byte)
    return bytes(out)
