"""Redis Cluster routing: rows grouped by hash slot, slots by the node that owns them.

A record key ``fs1:{<project>:<entity>}:<view>:<schema_id>`` carries a hash tag
(``encoding.py``), so its slot depends on the project and the entity only: every
view of one entity lives in one slot, and a multi-view lookup of one entity is one
MGET. Redis Cluster refuses a multi-key command (MGET, MSETNX, a script's KEYS)
whose keys span slots, so the batched compare-and-set of ``redis_cas.py`` is cut
at slot boundaries here: rows are sorted by (node, slot), each node gets the
contiguous run of its rows, and each run is chunked within its slots.

Cost: a slot is CRC16 of the tag. ``redis.crc.key_slot`` takes about 1.1 us per
key (measured on 100k keys), a second per million rows, so fixed-width keys
(integers, dates, ...) get a vectorised CRC over the key matrix instead; strings
use ``key_slot``. A tag ends at the first ``}``, which an entity's bytes may hold:
the vectorised CRC stops there per row, so both paths give the server's slot
exactly (a test compares them with ``CLUSTER KEYSLOT``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from itertools import pairwise
from typing import Any, cast

import numpy as np
from redis.crc import key_slot

from featurestore.stores.online.encoding import Codec
from featurestore.stores.online.keys import join_keys
from featurestore.stores.online.redis_cas import Call, FreshHint, Pack, chunk_call, deadlines_ms
from featurestore.stores.online.writes import PreparedRows

SLOTS = 16384
_CLOSE = ord("}")
_ROWS_PER_SLICE = 8192  # rows encoded together: numpy work in bulk, still overlapping I/O


def _crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint16)
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table[byte] = crc & 0xFFFF
    return table


_CRC = _crc_table()


def slots_of(codec: Codec, parts: list[np.ndarray | list[bytes]]) -> np.ndarray:
    """The hash slot of every row's key (``parts``: the key columns of ``PreparedRows``)."""
    n = len(parts[0]) if parts else 0
    if not all(isinstance(p, np.ndarray) for p in parts):
        keys = join_keys(parts, 0, n, codec.key_prefix, codec.key_suffix)
        return np.fromiter(map(key_slot, keys), dtype=np.int64, count=n)
    tag_start = codec.key_prefix[codec.key_prefix.index(b"{") + 1 :]
    crc = 0
    for byte in tag_start:  # the project part of the tag: the same for every row
        crc = ((crc << 8) & 0xFFFF) ^ int(_CRC[((crc >> 8) ^ byte) & 0xFF])
    body = np.hstack([cast(np.ndarray, p) for p in parts]) if n else np.empty((0, 0), np.uint8)
    acc = np.full(n, crc, dtype=np.uint32)
    ended = np.zeros(n, dtype=bool)
    for j in range(body.shape[1]):
        column = body[:, j]
        ended |= column == _CLOSE
        step = ((acc << 8) & 0xFFFF) ^ _CRC[((acc >> 8) ^ column) & 0xFF]
        acc = np.where(ended, acc, step)
    return (acc & (SLOTS - 1)).astype(np.int64)


def route(slots: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Rows ordered by (node, slot), stably, and each node's ``(node, start, stop)`` range
    in that order. ``owner`` maps a slot to its node's index (-1: not served)."""
    nodes = owner[slots]
    order = np.lexsort((slots, nodes))
    sorted_nodes = nodes[order]
    cuts = np.flatnonzero(np.diff(sorted_nodes)) + 1
    bounds = [0, *cuts.tolist(), len(order)]
    ranges = [(int(sorted_nodes[a]), a, b) for a, b in pairwise(bounds) if b > a]
    return order, ranges


def permuted(prepared: PreparedRows, order: np.ndarray) -> PreparedRows:
    """``prepared`` with its rows in ``order``."""
    rows = order.tolist()

    def take(column: Any) -> Any:
        return column[order] if isinstance(column, np.ndarray) else [column[i] for i in rows]

    return replace(
        prepared,
        keys=[take(p) for p in prepared.keys],
        event_ts=prepared.event_ts[order],
        created_ts=prepared.created_ts[order],
        deadline_us=None if prepared.deadline_us is None else prepared.deadline_us[order],
        fields={name: column[order] for name, column in prepared.fields.items()},
        payloads=[take(p) for p in prepared.payloads],
    )


def slot_calls(
    codec: Codec,
    prepared: PreparedRows,
    slots: np.ndarray,
    start: int,
    stop: int,
    *,
    chunk_size: int,
    pack: Pack,
    fresh: FreshHint,
) -> Iterator[Call]:
    """Calls (as ``redis_cas.chunk_calls`` builds them) for rows ``start:stop`` of
    ``prepared``, whose rows are sorted by slot (``slots``); no call spans two slots."""
    for first in range(start, stop, _ROWS_PER_SLICE):
        last = min(first + _ROWS_PER_SLICE, stop)
        keys, values = prepared.records(
            first, last, prefix=codec.key_prefix, suffix=codec.key_suffix
        )
        expiry = deadlines_ms(prepared, first, last)
        cuts = np.flatnonzero(np.diff(slots[first:last])) + 1
        bounds = [0, *cuts.tolist(), last - first]
        for run_start, run_stop in pairwise(bounds):
            for a in range(run_start, run_stop, chunk_size):
                b = min(a + chunk_size, run_stop)
                yield chunk_call(
                    keys[a:b],
                    values[a:b],
                    None if expiry is None else expiry[a:b],
                    pack=pack,
                    fresh=fresh,
                )


def owners(slots_cache: dict[int, list[Any]]) -> tuple[np.ndarray, list[Any]]:
    """Per slot, the index of its primary in the returned node list (-1: no owner)."""
    owner = np.full(SLOTS, -1, dtype=np.int64)
    nodes: list[Any] = []
    index: dict[str, int] = {}
    for slot, holders in slots_cache.items():
        if not holders:
            continue
        primary = holders[0]
        i = index.get(primary.name)
        if i is None:
            i = index[primary.name] = len(nodes)
            nodes.append(primary)
        owner[slot] = i
    return owner, nodes
