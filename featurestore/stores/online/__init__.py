"""Online stores: one record per (project, view, entity), compare-and-set on event time.

``open_online_store(url)`` picks a backend from a URL. Redis is imported only when
a ``redis://`` or ``redis+cluster://`` URL is opened, so importing this package
stays light.

>>> store = open_online_store("memory://")
>>> sorted(store.capabilities)
['cas', 'multi_view_read', 'ttl']
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from featurestore.errors import DefinitionError
from featurestore.stores.online.base import (
    CAP_CAS,
    CAP_MULTI_PROCESS,
    CAP_MULTI_VIEW_READ,
    CAP_PERSISTENT,
    CAP_TTL,
    OnlineStore,
    OnlineViewSchema,
    ReadRequest,
    ReadResult,
    WriteBatch,
    WriteStats,
    make_schema_id,
)
from featurestore.stores.online.memory import MemoryOnlineStore
from featurestore.stores.online.sqlite import SqliteOnlineStore

# URL query options each backend accepts, with the type they are parsed to.
_OPTIONS: dict[str, dict[str, type]] = {
    "memory": {},
    "sqlite": {"timeout_s": float},
    "redis": {
        "timeout_s": float,
        "retries": int,
        "chunk_size": int,
        "in_flight": int,
        "max_connections": int,
    },
}
_OPTIONS["redis+cluster"] = _OPTIONS["redis"]
_TLS = {"rediss": "redis", "rediss+cluster": "redis+cluster"}  # same options as without TLS
_KINDS = {int: "an integer", float: "a number"}


def open_online_store(url: str) -> OnlineStore:
    """The online store a URL names.

    - ``memory://``: the in-process twin (a new empty store on each call);
    - ``sqlite:///relative/online.db``, ``sqlite:////abs/online.db``, ``sqlite://``
      (in memory): the embedded default;
    - ``redis://[:password@]host:port/db`` (or ``rediss://``);
    - ``redis+cluster://[:password@]host:port`` (or ``rediss+cluster://``): a Redis
      Cluster, found from that one node.

    Options go in the query string, e.g. ``redis://localhost:6379/0?timeout_s=0.2``.
    """
    parts = urlsplit(url)
    scheme = _TLS.get(parts.scheme, parts.scheme)
    if scheme not in _OPTIONS:
        raise DefinitionError(
            "unknown online store URL scheme",
            obj="online store",
            field="url",
            value=url,
            hint="Use memory://, sqlite:///path/online.db, redis://host:port/db "
            "or redis+cluster://host:port",
        )
    options = _parse_options(url, parts.query, _OPTIONS[scheme])
    if scheme == "memory":
        return MemoryOnlineStore()
    if scheme == "sqlite":
        # sqlite:///x.db -> "x.db", sqlite:////abs/x.db -> "/abs/x.db", as in SQLAlchemy
        path = url.split("?", 1)[0][len("sqlite://") :]
        path = path[1:] if path.startswith("/") else path
        return SqliteOnlineStore(path or ":memory:", **options)
    base = url.split("?", 1)[0]
    if scheme == "redis+cluster":
        if parts.path not in ("", "/", "/0"):
            raise DefinitionError(
                "a Redis Cluster has only database 0",
                obj="online store",
                field="url",
                value=url,
                hint="Drop the database number: redis+cluster://host:port",
            )
        from featurestore.stores.online.redis_cluster import RedisClusterOnlineStore

        return RedisClusterOnlineStore(base, **options)
    from featurestore.stores.online.redis import RedisOnlineStore

    return RedisOnlineStore(base, **options)


def _parse_options(url: str, query: str, allowed: dict[str, type]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, raw in parse_qsl(query, keep_blank_values=True):
        if name not in allowed:
            raise DefinitionError(
                f"unknown option {name!r} in the online store URL",
                obj="online store",
                field="url",
                value=url,
                hint=f"Options here: {', '.join(allowed) or 'none'}",
            )
        try:
            options[name] = allowed[name](raw)
        except ValueError:
            raise DefinitionError(
                f"option {name!r} must be {_KINDS[allowed[name]]}",
                obj="online store",
                field="url",
                value=url,
            ) from None
    return options


__all__ = [
    "CAP_CAS",
    "CAP_MULTI_PROCESS",
    "CAP_MULTI_VIEW_READ",
    "CAP_PERSISTENT",
    "CAP_TTL",
    "MemoryOnlineStore",
    "OnlineStore",
    "OnlineViewSchema",
    "ReadRequest",
    "ReadResult",
    "SqliteOnlineStore",
    "WriteBatch",
    "WriteStats",
    "make_schema_id",
    "open_online_store",
]
