"""The embedded default: one SQLite file in WAL mode, safe for several processes.

Each record is a row keyed by (scope, entity bytes) holding the same encoded
value as Redis. A write is one ``BEGIN IMMEDIATE`` transaction of upserts whose
``DO UPDATE ... WHERE`` only fires for a strictly newer (event_ts, created_ts), so
concurrent writers (threads or processes) can never regress a record.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
from featurestore.stores.online.encoding import codec_for
from featurestore.stores.online.writes import prepare

TABLE = "fs_online_v1"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    scope      TEXT    NOT NULL,  -- project:view:schema_id
    entity     BLOB    NOT NULL,  -- typed entity key bytes (encoding.py)
    event_ts   INTEGER NOT NULL,
    created_ts INTEGER NOT NULL,
    deadline   INTEGER,           -- retention end in us; NULL = never
    value      BLOB    NOT NULL,
    PRIMARY KEY (scope, entity)
) WITHOUT ROWID
"""
# An expired row counts as absent (as an expired Redis key does), so any write replaces it.
_UPSERT = f"""
INSERT INTO {TABLE} (scope, entity, event_ts, created_ts, deadline, value)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (scope, entity) DO UPDATE SET
    event_ts = excluded.event_ts, created_ts = excluded.created_ts,
    deadline = excluded.deadline, value = excluded.value
WHERE (excluded.event_ts, excluded.created_ts) > ({TABLE}.event_ts, {TABLE}.created_ts)
   OR {TABLE}.deadline <= ?
"""
_IN_CHUNK = 500  # entities per SELECT, well under SQLite's bound-parameter limit


class SqliteOnlineStore:
    """Records in a local SQLite file (``":memory:"`` for a private in-process one).

    ``timeout_s`` bounds how long a writer waits for another process's lock before
    ``OnlineStoreUnavailable`` is raised.
    """

    capabilities = frozenset(
        {CAP_CAS, CAP_TTL, CAP_MULTI_VIEW_READ, CAP_PERSISTENT, CAP_MULTI_PROCESS}
    )

    def __init__(
        self, path: str | Path, *, timeout_s: float = 10.0, clock: Callable[[], int] = now_us
    ) -> None:
        self.path = str(path)
        self._clock = clock
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self._errors("open"):
            # autocommit mode: transactions are begun explicitly below
            self._conn = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._enable_wal(timeout_s)
            # NORMAL is durable against process crashes in WAL mode; only an OS
            # crash can lose the last commits, which materialization rewrites anyway.
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)

    def _enable_wal(self, timeout_s: float) -> None:
        """Switch the file to WAL once. Changing the journal mode needs the file to
        itself and SQLite does not wait for that with the busy handler, so several
        processes opening a new file at once retry here until ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() == "wal" or self.path == ":memory:":
                    return
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.1)

    def write(self, schema: OnlineViewSchema, rows: WriteBatch) -> WriteStats:
        now = self._clock()
        prepared = prepare(codec_for(schema), rows, now_us=now)
        n = len(prepared)
        if n == 0:
            return WriteStats(skipped_expired=prepared.skipped_expired)
        entities, values = prepared.records()
        retention = prepared.deadline_us
        params = zip(
            [schema.scope] * n,
            entities,
            prepared.event_ts.tolist(),
            prepared.created_ts.tolist(),
            [None] * n if retention is None else retention.tolist(),
            values,
            [now] * n,
            strict=True,
        )
        with self._errors("write", schema), self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(_UPSERT, params)
                written = conn.total_changes - before
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return WriteStats(
            written=written, skipped_stale=n - written, skipped_expired=prepared.skipped_expired
        )

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        now = self._clock()
        planned = [(r, codec_for(r.schema), codec_for(r.schema).entities_for(r)) for r in requests]
        found: list[dict[bytes, bytes]] = []
        with self._errors("read"), self._lock:
            conn = self._conn
            # one read transaction, so every view is read from the same snapshot
            conn.execute("BEGIN")
            try:
                for request, _, entities in planned:
                    found.append(self._select(request.schema.scope, entities, now))
            finally:
                conn.execute("COMMIT")
        return [
            codec.result(request, [None if e is None else hits.get(e) for e in entities])
            for (request, codec, entities), hits in zip(planned, found, strict=True)
        ]

    def _select(self, scope: str, entities: list[bytes | None], now: int) -> dict[bytes, bytes]:
        wanted = list({e for e in entities if e is not None})
        hits: dict[bytes, bytes] = {}
        for start in range(0, len(wanted), _IN_CHUNK):
            chunk = wanted[start : start + _IN_CHUNK]
            sql = (
                f"SELECT entity, value FROM {TABLE} WHERE scope = ? AND entity IN "
                f"({', '.join('?' * len(chunk))}) AND (deadline IS NULL OR deadline > ?)"
            )
            hits.update(self._conn.execute(sql, [scope, *chunk, now]).fetchall())
        return hits

    def delete_view(self, schema: OnlineViewSchema) -> int:
        with self._errors("delete_view", schema), self._lock:
            cur = self._conn.execute(f"DELETE FROM {TABLE} WHERE scope = ?", (schema.scope,))
            return cur.rowcount

    def delete_entities(
        self, schema: OnlineViewSchema, entity_keys: Mapping[str, Sequence[Any]]
    ) -> int:
        entities = codec_for(schema).entities_for(ReadRequest(schema, entity_keys))
        wanted = sorted({e for e in entities if e is not None})
        deleted = 0
        with self._errors("delete_entities", schema), self._lock:
            for start in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[start : start + _IN_CHUNK]
                marks = ", ".join("?" * len(chunk))
                sql = f"DELETE FROM {TABLE} WHERE scope = ? AND entity IN ({marks})"
                deleted += self._conn.execute(sql, [schema.scope, *chunk]).rowcount
        return deleted

    def ping(self) -> None:
        with self._errors("ping"), self._lock:
            self._conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _errors(self, action: str, schema: OnlineViewSchema | None = None) -> Iterator[None]:
        obj = f"SQLite online store {self.path}"
        if schema is not None:
            obj += f", view {schema.project}/{schema.view}"
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" in text or "busy" in text or "unable to open" in text:
                raise OnlineStoreUnavailable(
                    f"{action} failed: {text}",
                    obj=obj,
                    hint="Another process holds the database lock; retry, or raise timeout_s",
                ) from exc
            raise OnlineStoreError(f"{action} failed: {text}", obj=obj) from exc
        except sqlite3.Error as exc:
            raise OnlineStoreError(
                f"{action} failed: {exc}",
                obj=obj,
                hint="Check that the file is a featurestore SQLite online store",
            ) from exc
