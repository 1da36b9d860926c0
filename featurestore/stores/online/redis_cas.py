"""Batched compare-and-set writes to Redis: the Lua script and the pipelined sender.

Rows go out in chunks of ``chunk_size`` keys, one atomic command per chunk:

- ``EVALSHA`` of ``CAS_SCRIPT``: one MGET of the stored headers, keep the rows
  whose (event_ts, created_ts) is strictly newer, one MSET of those (+ one
  ``PEXPIREAT`` per key when the schema has a retention).
- ``MSETNX`` for bulk writes to a schema without retention, tried first while the keys
  turn out to be new (a first materialization, or a new schema_id): it stores the
  whole chunk only when none of its keys exists, which is a correct CAS (anything
  is newer than nothing) at a fraction of the script's cost. When a key exists it
  stores nothing and the chunk is sent again through the script, and the rest of
  the batch goes straight to the script. A chunk holding the same key twice never
  takes this path, since MSETNX would keep the last row rather than the newest.

Up to ``in_flight`` commands are outstanding on one connection, so encoding the
next chunk overlaps with Redis running the last ones.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import redis

from featurestore.stores.online.encoding import Codec
from featurestore.stores.online.writes import PreparedRows

# KEYS: record keys. ARGV[1]: "1" when each value is followed by its PEXPIREAT
# milliseconds (the record's retention deadline), else "0". MSET clears any
# deadline a replaced key had, so a record written without one is kept.
# Returns how many rows were stored.
# Header bytes 2..17 (1-based) hold event_ts, created_ts in offset binary; they
# are compared as four uint32 (exact in Lua's doubles) rather than as strings,
# because Lua's string "<" follows the server's locale collation.
CAS_SCRIPT = """
local has_ttl = ARGV[1] == '1'
local step = has_ttl and 2 or 1
local unpack_header = struct.unpack
local function newer(new, old)
  local a1, a2, a3, a4 = unpack_header('>I4I4I4I4', new, 2)
  local b1, b2, b3, b4 = unpack_header('>I4I4I4I4', old, 2)
  if a1 ~= b1 then return a1 > b1 end
  if a2 ~= b2 then return a2 > b2 end
  if a3 ~= b3 then return a3 > b3 end
  return a4 > b4
end
local stored = redis.call('MGET', unpack(KEYS))
local latest = {}
local sets, expires = {}, {}
local n = 0
for i = 1, #KEYS do
  local key = KEYS[i]
  local value = ARGV[2 + (i - 1) * step]
  -- a key repeated within the chunk is compared with its latest winner
  local old = latest[key] or stored[i]
  if (not old) or newer(value, old) then
    latest[key] = value
    n = n + 1
    sets[2 * n - 1] = key
    sets[2 * n] = value
    if has_ttl then expires[n] = ARGV[3 + (i - 1) * step] end
  end
end
if n > 0 then
  redis.call('MSET', unpack(sets))
  if has_ttl then
    for j = 1, n do redis.call('PEXPIREAT', sets[2 * j - 1], expires[j]) end
  end
end
return n
"""
CAS_SHA = hashlib.sha1(CAS_SCRIPT.encode()).hexdigest()
MAX_ATTEMPTS = 3  # sends of one script call that may meet NOSCRIPT before giving up
_CHUNKS_PER_SLICE = 8  # chunks encoded together: numpy work in bulk, still overlapping I/O

Pack = Callable[[tuple[Any, ...]], bytes]


@dataclass
class Call:
    packed: bytes
    rows: int
    kind: Literal["cas", "fresh", "load"]  # fresh: MSETNX; load: SCRIPT LOAD
    cas: Callable[[], bytes] | None = None  # a "fresh" call's script fallback
    attempt: int = 1
    position: int = 0  # order in which it was sent, loads included


class FreshHint:
    """Whether MSETNX is still worth trying in this batch."""

    def __init__(self, hopeful: bool) -> None:
        self.hopeful = hopeful


def chunk_calls(
    codec: Codec, prepared: PreparedRows, *, chunk_size: int, pack: Pack, fresh: FreshHint
) -> Iterator[Call]:
    """One call per chunk, encoded a slice of chunks at a time."""
    deadline = prepared.deadline_us
    flag = b"0" if deadline is None else b"1"
    step = chunk_size * _CHUNKS_PER_SLICE
    for first in range(0, len(prepared), step):
        keys, values = prepared.records(
            first, first + step, prefix=codec.key_prefix, suffix=codec.key_suffix
        )
        expiry = None
        if deadline is not None:
            # whole milliseconds, rounded up so a key never vanishes before its deadline
            expiry = (-(-deadline[first : first + step] // 1000)).astype("S20").tolist()
        for start in range(0, len(keys), chunk_size):
            ks = keys[start : start + chunk_size]
            vs = values[start : start + chunk_size]
            if expiry is None:
                argv = vs
            else:
                argv = [b""] * (2 * len(ks))
                argv[0::2] = vs
                argv[1::2] = expiry[start : start + chunk_size]

            def cas(ks: list[bytes] = ks, argv: list[bytes] = argv) -> bytes:
                return pack(("EVALSHA", CAS_SHA, len(ks), *ks, flag, *argv))

            if fresh.hopeful and expiry is None and len(set(ks)) == len(ks):
                pairs: list[bytes] = [b""] * (2 * len(ks))
                pairs[0::2] = ks
                pairs[1::2] = vs
                yield Call(pack(("MSETNX", *pairs)), len(ks), "fresh", cas)
            else:
                yield Call(cas(), len(ks), "cas")


def send_calls(
    conn: Any, calls: Iterator[Call], *, in_flight: int, pack: Pack, fresh: FreshHint
) -> int:
    """Pipeline ``calls`` on ``conn``; returns the rows stored.

    A NOSCRIPT reply (first use, restart, failover, SCRIPT FLUSH) queues a SCRIPT
    LOAD behind the calls already sent, unless one is already queued after the
    failed call, and then sends that call again. The caller disconnects ``conn``
    if this raises, since replies may still be queued on it.
    """
    written = 0
    sent = 0
    last_load = -1  # position of the latest SCRIPT LOAD sent
    pending: deque[Call] = deque()

    def send(call: Call) -> None:
        nonlocal sent
        call.position = sent
        conn.send_packed_command([call.packed], check_health=False)
        pending.append(call)
        sent += 1

    def settle() -> None:
        nonlocal written, last_load
        call = pending.popleft()
        try:
            reply = conn.read_response()
        except redis.exceptions.NoScriptError:
            if call.kind != "cas" or call.attempt >= MAX_ATTEMPTS:
                raise
            if last_load < call.position:
                last_load = sent
                send(Call(pack(("SCRIPT", "LOAD", CAS_SCRIPT)), 0, "load"))
            send(Call(call.packed, call.rows, "cas", attempt=call.attempt + 1))
            return
        if call.kind == "cas":
            written += int(reply)
        elif call.kind == "fresh":
            if int(reply) == 1:
                written += call.rows
            else:  # a key exists: compare through the script, and stop hoping
                fresh.hopeful = False
                send(Call(call.cas() if call.cas else call.packed, call.rows, "cas"))

    for call in calls:
        send(call)
        while len(pending) >= in_flight:
            settle()
    while pending:
        settle()
    return written
