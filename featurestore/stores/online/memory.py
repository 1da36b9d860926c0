"""The in-memory twin: a dict, for fast unit tests of everything above the store.

It stores the same encoded bytes as Redis and SQLite and follows the same rules
(compare-and-set, retention), so a test passing against it says something about
the real backends. Not shared between processes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from featurestore._time import now_us
from featurestore.stores.online.base import (
    CAP_CAS,
    CAP_MULTI_VIEW_READ,
    CAP_TTL,
    OnlineViewSchema,
    ReadRequest,
    ReadResult,
    WriteBatch,
    WriteStats,
)
from featurestore.stores.online.encoding import codec_for
from featurestore.stores.online.writes import prepare

# (event_ts, created_ts, retention deadline or None, encoded value)
_Record = tuple[int, int, int | None, bytes]


class MemoryOnlineStore:
    """A thread-safe dict of records keyed by (scope, entity bytes).

    ``clock`` returns "now" in microseconds; tests may pin it to make retention
    deterministic.
    """

    capabilities = frozenset({CAP_CAS, CAP_TTL, CAP_MULTI_VIEW_READ})

    def __init__(self, *, clock: Callable[[], int] = now_us) -> None:
        self._clock = clock
        self._records: dict[tuple[str, bytes], _Record] = {}
        self._lock = threading.Lock()

    def write(self, schema: OnlineViewSchema, rows: WriteBatch) -> WriteStats:
        now = self._clock()
        prepared = prepare(codec_for(schema), rows, now_us=now)
        entities, values = prepared.records()
        retention = prepared.deadline_us
        deadlines = [None] * len(values) if retention is None else retention.tolist()
        scope = schema.scope
        written = 0
        with self._lock:
            records = self._records
            for entity, value, ev, cr, dl in zip(
                entities,
                values,
                prepared.event_ts.tolist(),
                prepared.created_ts.tolist(),
                deadlines,
                strict=True,
            ):
                old = records.get((scope, entity))
                # An expired record counts as absent, as an expired Redis key does.
                if old is None or (ev, cr) > old[:2] or (old[2] is not None and old[2] <= now):
                    records[(scope, entity)] = (ev, cr, dl, value)
                    written += 1
        return WriteStats(
            written=written,
            skipped_stale=len(values) - written,
            skipped_expired=prepared.skipped_expired,
        )

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        now = self._clock()
        planned = [(r, codec_for(r.schema)) for r in requests]
        keys = [(r.schema.scope, codec.entities_for(r)) for r, codec in planned]
        with self._lock:
            get = self._records.get
            found = [[None if e is None else get((scope, e)) for e in ents] for scope, ents in keys]
        return [
            codec.result(r, [_live_value(rec, now) for rec in recs])
            for (r, codec), recs in zip(planned, found, strict=True)
        ]

    def delete_view(self, schema: OnlineViewSchema) -> int:
        scope = schema.scope
        with self._lock:
            doomed = [k for k in self._records if k[0] == scope]
            for k in doomed:
                del self._records[k]
        return len(doomed)

    def delete_entities(
        self, schema: OnlineViewSchema, entity_keys: Mapping[str, Sequence[Any]]
    ) -> int:
        entities = codec_for(schema).entities_for(ReadRequest(schema, entity_keys))
        scope = schema.scope
        deleted = 0
        with self._lock:
            for entity in set(entities):
                if entity is not None and self._records.pop((scope, entity), None) is not None:
                    deleted += 1
        return deleted

    def ping(self) -> None:
        return None

    def close(self) -> None:
        with self._lock:
            self._records.clear()


def _live_value(rec: _Record | None, now: int) -> bytes | None:
    if rec is None or (rec[2] is not None and rec[2] <= now):
        return None
    return rec[3]
