"""Redis Cluster backend: the single-node store's records and CAS, routed by hash slot.

The keys, values and Lua compare-and-set script are those of ``redis.py`` and
``redis_cas.py``: a record written here reads the same from a single Redis. What
changes is routing (``redis_slots.py``): the key's hash tag puts every view of an
entity in one slot, a write is sorted by (node, slot) and each node gets its rows
as script calls that never span a slot, pipelined on one connection per node, the
nodes in parallel (one thread each: the work is the servers', the client waits).
A lookup sends one MGET per slot to every node it needs before reading any reply,
so the nodes answer at the same time, and puts the values back in request order.

redis-py's ``RedisCluster`` discovers the topology and holds one connection pool
per node; the hot paths use those pools directly, as ``redis.py`` does, because
its per-command path costs more than the work. Errors:

- a node that cannot be reached, a ``CLUSTERDOWN``/``TRYAGAIN`` reply, or a slot
  with no owner: ``OnlineStoreUnavailable`` (retryable) naming the node; only the
  requests touching that node's slots fail. After a connection error the topology
  is fetched again (at most once a second), so a replica promoted in its place is
  found without restarting the client;
- ``MOVED``/``ASK`` (a failover or a resharding): the topology is refreshed and
  the affected rows are sent again, up to twice (CAS makes that idempotent; a row
  a failed call had stored counts as stale on the second send). A slot still
  migrating after that is reported unavailable: retrying later is safe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any, cast

import numpy as np
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry

from featurestore._redact import redact_url
from featurestore.errors import OnlineStoreError, OnlineStoreUnavailable
from featurestore.stores.online.base import (
    CAP_CAS,
    CAP_MULTI_PROCESS,
    CAP_MULTI_VIEW_READ,
    CAP_PARTIAL,
    CAP_PERSISTENT,
    CAP_TTL,
    OnlineViewSchema,
    ReadRequest,
    ReadResult,
    WriteBatch,
    WriteStats,
)
from featurestore.stores.online.encoding import Codec, codec_for
from featurestore.stores.online.redis import (
    _DOWN,
    _glob_escape,
    _pack,
    read_by_key,
    unlink_entities,
    write_prepared,
)
from featurestore.stores.online.redis_cas import FreshHint, send_calls
from featurestore.stores.online.redis_slots import owners, permuted, route, slot_calls, slots_of
from featurestore.stores.online.writes import PreparedRows

# replies that say "this slot is elsewhere now": refresh the topology, send again
_MOVED = (AskError, TryAgainError)
# replies and client errors that a retry later may cure
_UNAVAILABLE = (ClusterDownError, TryAgainError, AskError, RedisClusterException)
_REDIRECTS = 2  # re-sends after a MOVED/ASK before reporting the slots unavailable
_REFRESH_EVERY_S = 1.0  # topology refreshes after connection errors, at most this often


class _NodeError(Exception):
    """A failure on one node, carrying its address for the message."""

    def __init__(self, node: str, exc: BaseException) -> None:
        super().__init__(node, exc)
        self.node = node
        self.exc = exc


class RedisClusterOnlineStore:
    """Records in the Redis Cluster a seed node names (``redis+cluster://host:port``).

    Options as for ``RedisOnlineStore``: ``timeout_s`` bounds connecting and every
    reply, ``retries`` re-sends a lookup after a connection error, ``chunk_size``
    keys at most go into one script call and up to ``in_flight`` calls are
    outstanding per node (calls are small here: one slot's rows each).
    """

    capabilities = frozenset(
        {
            CAP_CAS,
            CAP_TTL,
            CAP_MULTI_VIEW_READ,
            CAP_PERSISTENT,
            CAP_MULTI_PROCESS,
            CAP_PARTIAL,
        }
    )

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 0.5,
        retries: int = 0,
        chunk_size: int = 1000,
        in_flight: int = 32,
        max_connections: int | None = None,
    ) -> None:
        self.url = url
        self._where = f"Redis Cluster online store {redact_url(url)}"
        scheme, rest = url.split("://", 1)
        self._seed = scheme.replace("+cluster", "") + "://" + rest
        self.chunk_size = chunk_size
        self.in_flight = in_flight
        self._retries = retries
        self._options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), retries),
            "require_full_coverage": False,
        }
        if max_connections is not None:
            self._options["max_connections"] = max_connections
        self._client: RedisCluster | None = None
        self._routes: tuple[object, np.ndarray, list[Any]] | None = None
        self._suspect = False  # a node failed: the topology may have changed
        self._next_refresh = 0.0
        self._lock = threading.Lock()
        self._threads: ThreadPoolExecutor | None = None

    # -- writes

    def write(self, schema: OnlineViewSchema, rows: WriteBatch) -> WriteStats:
        def send(codec: Codec, prepared: PreparedRows) -> int:
            with self._errors("write", schema):
                return self._write(codec, prepared)

        return write_prepared(schema, rows, send)

    def _write(self, codec: Codec, prepared: PreparedRows) -> int:
        # MSETNX is worth a try for bulk writes only, as in redis.py
        fresh = FreshHint(len(prepared) >= self.chunk_size)
        pending, slots = prepared, slots_of(codec, prepared.keys)
        written = 0
        for attempt in range(_REDIRECTS + 1):
            owner, nodes = self._topology()
            _check_covered(owner, slots)
            order, ranges = route(slots, owner)
            rows, sorted_slots = permuted(pending, order), slots[order]

            def job(
                node: Any,
                a: int,
                b: int,
                rows: PreparedRows = rows,
                slots: np.ndarray = sorted_slots,
            ) -> int:
                def send(conn: Any) -> int:
                    pack = partial(_pack, conn)
                    calls = slot_calls(
                        codec,
                        rows,
                        slots,
                        a,
                        b,
                        chunk_size=self.chunk_size,
                        pack=pack,
                        fresh=fresh,
                    )
                    return send_calls(conn, calls, in_flight=self.in_flight, pack=pack, fresh=fresh)

                return self._pipeline(node, send)

            results = self._each([(nodes[i], a, b) for i, a, b in ranges], job)
            moved: list[int] = []
            for (_, a, b), result in zip(ranges, results, strict=True):
                if isinstance(result, int):
                    written += result
                elif isinstance(result.exc, _MOVED) and attempt < _REDIRECTS:
                    moved.extend(order[a:b].tolist())
                else:
                    raise result
            if not moved:
                return written
            self._refresh()
            keep = np.array(sorted(moved), dtype=np.int64)
            pending, slots = permuted(pending, keep), slots[keep]
        raise AssertionError("unreachable")

    # -- reads

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        return read_by_key(requests, self._fetch)

    def _fetch(self, keys: list[bytes]) -> list[bytes | None]:
        with self._errors("read"):
            return self._mget(keys)

    def _mget(self, keys: list[bytes]) -> list[bytes | None]:
        slots = [key_slot(k) for k in keys]
        attempts = max(self._retries, _REDIRECTS)
        for attempt in range(attempts + 1):
            try:
                return self._mget_once(keys, slots)
            except _NodeError as exc:
                redirected = isinstance(exc.exc, _MOVED) and attempt < _REDIRECTS
                down = isinstance(exc.exc, _DOWN) and attempt < self._retries
                if not (redirected or down):
                    raise
                if redirected:
                    self._refresh()
        raise AssertionError("unreachable")

    def _mget_once(self, keys: list[bytes], slots: list[int]) -> list[bytes | None]:
        """One MGET per slot, sent to every node before any reply is read."""
        owner, nodes = self._topology()
        groups: dict[int, dict[int, list[int]]] = {}
        for i, slot in enumerate(slots):
            groups.setdefault(int(owner[slot]), {}).setdefault(slot, []).append(i)
        if -1 in groups:
            _check_covered(owner, np.array(slots, dtype=np.int64))
        out: list[bytes | None] = [None] * len(keys)
        taken: list[tuple[Any, Any, Any, list[list[int]]]] = []
        try:
            for index, by_slot in groups.items():
                node = nodes[index]
                pool = self._node_client(node).connection_pool
                conn = pool.get_connection()
                taken.append((node, pool, conn, list(by_slot.values())))
                packed = b"".join(
                    _pack(conn, ("MGET", *[keys[i] for i in idx])) for idx in by_slot.values()
                )
                try:
                    conn.send_packed_command([packed], check_health=False)
                except BaseException as exc:
                    raise self._node_error(node, exc) from exc
            for node, _, conn, runs in taken:
                for idx in runs:
                    try:
                        reply = conn.read_response()
                    except BaseException as exc:
                        raise self._node_error(node, exc) from exc
                    for i, value in zip(idx, reply, strict=True):
                        out[i] = value
        except BaseException:
            # replies may still be queued on these sockets: never hand them out again as is
            for _, _, conn, _ in taken:
                conn.disconnect()
            raise
        finally:
            for _, pool, conn, _ in taken:
                pool.release(conn)
        return out

    # -- admin

    def delete_view(self, schema: OnlineViewSchema) -> int:
        codec = codec_for(schema)
        pattern = _glob_escape(codec.key_prefix) + b"*" + _glob_escape(codec.key_suffix)
        deleted = 0
        with self._errors("delete_view", schema):
            _, nodes = self._topology()
            for node in nodes:
                client = self._node_client(node)
                try:
                    batch: list[bytes] = []
                    for key in client.scan_iter(match=pattern, count=1000):
                        batch.append(key)
                        if len(batch) >= 1000:
                            deleted += _unlink(client, batch)
                            batch = []
                    deleted += _unlink(client, batch)
                except BaseException as exc:
                    raise self._node_error(node, exc) from exc
        return deleted

    def delete_entities(
        self, schema: OnlineViewSchema, entity_keys: Mapping[str, Sequence[Any]]
    ) -> int:
        with self._errors("delete_entities", schema):
            return unlink_entities(schema, entity_keys, self._cluster().unlink)

    def ping(self) -> None:
        with self._errors("ping"):
            _, nodes = self._topology()
            for result in self._each(
                [(node, 0, 0) for node in nodes],
                lambda node, a, b: self._pipeline(node, _ping),
            ):
                if not isinstance(result, int):
                    raise result

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
        if self._client is not None:
            self._client.close()
            self._client = None
        self._routes = None

    # -- plumbing

    def _cluster(self) -> RedisCluster:
        """The redis-py client, made on first use: it connects at once, and a cluster
        that is down when the store is opened should fail the first call, not the open."""
        with self._lock:
            if self._client is None:
                self._client = RedisCluster.from_url(self._seed, **self._options)
            return self._client

    def _topology(self) -> tuple[np.ndarray, list[Any]]:
        """Per slot the index of its primary, and the primaries."""
        client = self._cluster()
        if self._suspect and time.monotonic() >= self._next_refresh:
            self._refresh()
        cache = client.nodes_manager.slots_cache
        routes = self._routes
        if routes is None or routes[0] is not cache:
            owner, nodes = owners(cache)
            routes = self._routes = (cache, owner, nodes)
        return routes[1], routes[2]

    def _refresh(self) -> None:
        """Ask the cluster for its slot map again (the next call routes by it)."""
        self._suspect = False
        self._next_refresh = time.monotonic() + _REFRESH_EVERY_S
        # no node answers: the call itself then reports which one it needed
        with suppress(redis.RedisError, RedisClusterException):
            self._cluster().nodes_manager.initialize()

    def _node_client(self, node: Any) -> redis.Redis:
        return cast(redis.Redis, self._cluster().get_redis_connection(node))

    def _node_error(self, node: Any, exc: BaseException) -> BaseException:
        if isinstance(exc, _NodeError | OnlineStoreError):
            return exc
        if not isinstance(exc, Exception):
            return exc  # KeyboardInterrupt and the like pass through untouched
        if isinstance(exc, _DOWN):
            self._suspect = True
        return _NodeError(node.name, exc)

    def _pipeline(self, node: Any, work: Callable[[Any], int]) -> int:
        """``work`` on a pooled connection to ``node``; the connection is dropped if it
        fails, since replies may still be queued on it."""
        try:
            pool = self._node_client(node).connection_pool
            conn = pool.get_connection()
        except BaseException as exc:
            raise self._node_error(node, exc) from exc
        try:
            return work(conn)
        except BaseException as exc:
            conn.disconnect()
            raise self._node_error(node, exc) from exc
        finally:
            pool.release(conn)

    def _each(
        self, jobs: list[tuple[Any, int, int]], job: Callable[[Any, int, int], int]
    ) -> list[int | _NodeError]:
        """``job`` per node, in parallel, every one run to its end; a node's failure is
        returned in its place."""

        def run(node: Any, a: int, b: int) -> int | _NodeError:
            try:
                return job(node, a, b)
            except _NodeError as exc:
                return exc

        if len(jobs) <= 1:
            return [run(*j) for j in jobs]
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(8, thread_name_prefix="featurestore-cluster")
            threads = self._threads
        futures = [threads.submit(run, *j) for j in jobs]
        return [f.result() for f in futures]

    @contextmanager
    def _errors(self, action: str, schema: OnlineViewSchema | None = None) -> Iterator[None]:
        obj = self._where
        if schema is not None:
            obj += f", view {schema.project}/{schema.view}"
        try:
            yield
        except _NodeError as failure:
            exc, node = failure.exc, failure.node
            if isinstance(exc, _DOWN):
                raise OnlineStoreUnavailable(
                    f"{action} failed: Redis Cluster node {node} is unreachable ({exc})",
                    obj=obj,
                    hint="Check that every node of the cluster is up; retrying is safe",
                ) from exc
            if isinstance(exc, _UNAVAILABLE):
                raise OnlineStoreUnavailable(
                    f"{action} failed: Redis Cluster node {node} cannot serve it now ({exc})",
                    obj=obj,
                    hint="The cluster is failing over or resharding; retrying is safe",
                ) from exc
            if isinstance(exc, OnlineStoreError):
                raise exc from None
            raise OnlineStoreError(f"{action} failed on node {node}: {exc}", obj=obj) from exc
        except _DOWN as exc:
            raise OnlineStoreUnavailable(
                f"{action} failed: Redis Cluster is unreachable ({exc})",
                obj=obj,
                hint="Check that the cluster is running and reachable; retrying is safe",
            ) from exc
        except _UNAVAILABLE as exc:
            raise OnlineStoreUnavailable(
                f"{action} failed: Redis Cluster cannot serve it now ({exc})",
                obj=obj,
                hint="Check that every slot has a running master; retrying is safe",
            ) from exc
        except redis.RedisError as exc:
            raise OnlineStoreError(f"{action} failed: {exc}", obj=obj) from exc


def _check_covered(owner: np.ndarray, slots: np.ndarray) -> None:
    uncovered = owner[slots] < 0
    if uncovered.any():
        slot = int(slots[np.argmax(uncovered)])
        raise redis.exceptions.SlotNotCoveredError(f"slot {slot} has no master in the cluster")


def _ping(conn: Any) -> int:
    conn.send_command("PING", check_health=False)
    conn.read_response()
    return 0


def _unlink(client: redis.Redis, keys: list[bytes]) -> int:
    """UNLINK ``keys`` (all on ``client``'s node), one command per slot, pipelined."""
    if not keys:
        return 0
    by_slot: dict[int, list[bytes]] = {}
    for key in keys:
        by_slot.setdefault(key_slot(key), []).append(key)
    pipe = client.pipeline(transaction=False)
    for group in by_slot.values():
        pipe.unlink(*group)
    return sum(int(n) for n in pipe.execute())
