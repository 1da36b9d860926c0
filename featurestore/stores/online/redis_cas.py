"""Batched compare-and-set writes to Redis: the Lua script and the pipelined sender.

Rows go out in chunks of ``chunk_size`` keys, one call per chunk:

- ``EVALSHA`` of ``CAS_SCRIPT``: one MGET of the stored headers, keep the rows
  whose (event_ts, created_ts) is strictly newer, one MSET of those (+ one
  ``PEXPIREAT`` per key when the schema has a retention). Atomic per chunk.
- while the keys turn out to be new (a first materialization, or a new schema_id),
  bulk writes first try a command that stores only what does not exist yet, which
  is a correct CAS (anything is newer than nothing) at a fraction of the script's
  cost. Without a retention: one ``MSETNX`` per chunk, which stores the whole chunk
  or, when a key exists, nothing. With one: one ``SET key value PXAT <ms> NX`` per
  key (value and deadline set together, atomically), pipelined, the chunk's RESP
  packed and its replies read in bulk (``redis_bulk.py``); only the keys that
  existed (nil replies) are sent again through the script. Either way, once a key
  turns out to exist the rest of the batch goes straight to the script
  (``FreshHint``). A chunk holding the same key twice goes to the script whole,
  which keeps the newest of its rows in one step (MSETNX would keep the last one;
  SET NX would store the first and need a second round trip for the others).

Why one command per key for deadlines: Redis 7 has no multi-key command that sets
expiries (MSETEX, one deadline for all keys, came in 8.4), and inside a script
every command costs Redis about 2 us, while a pipelined ``SET ... PXAT ... NX`` of a
new key costs it about 2-2.7 us in all, against 3.2-3.5 us for the script
(``benchmarks/online_store.py``, 500k new keys). In the script, one ``SET ... PXAT``
per key in place of MSET + PEXPIREAT costs Redis 7-20% more, so existing keys keep
MSET + PEXPIREAT.

Up to ``in_flight`` calls are outstanding on one connection, so encoding the
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
from featurestore.stores.online.redis_bulk import pack_set_nx, read_replies
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
    # cas: EVALSHA, one reply; fresh: MSETNX, one reply; fresh_ttl: one SET ... NX
    # per row, one reply each; load: SCRIPT LOAD
    kind: Literal["cas", "fresh", "fresh_ttl", "load"]
    # the script call of a fresh call's rows: all of them when called without an
    # argument, else those at the given positions of the chunk
    cas: Callable[..., bytes] | None = None
    attempt: int = 1
    position: int = 0  # order in which it was sent, loads included


class FreshHint:
    """Whether storing only what does not exist yet (MSETNX, SET NX) is still worth
    trying in this batch."""

    def __init__(self, hopeful: bool) -> None:
        self.hopeful = hopeful


def script_call(
    pack: Pack, keys: list[bytes], values: list[bytes], deadlines_ms: list[bytes] | None
) -> bytes:
    """The packed ``EVALSHA`` of ``CAS_SCRIPT`` for these rows."""
    if deadlines_ms is None:
        return pack(("EVALSHA", CAS_SHA, len(keys), *keys, b"0", *values))
    argv: list[bytes] = [b""] * (2 * len(keys))
    argv[0::2] = values
    argv[1::2] = deadlines_ms
    return pack(("EVALSHA", CAS_SHA, len(keys), *keys, b"1", *argv))


def chunk_call(
    keys: list[bytes],
    values: list[bytes],
    deadlines_ms: list[bytes] | None,
    *,
    pack: Pack,
    fresh: FreshHint,
) -> Call:
    """The call that writes one chunk: the script, or while ``fresh`` is hopeful and
    no key repeats, MSETNX (no deadline) or one SET ... PXAT ... NX per row."""

    def cas(positions: list[int] | None = None) -> bytes:
        if positions is None:
            return script_call(pack, keys, values, deadlines_ms)
        return script_call(
            pack,
            [keys[i] for i in positions],
            [values[i] for i in positions],
            None if deadlines_ms is None else [deadlines_ms[i] for i in positions],
        )

    n = len(keys)
    if not fresh.hopeful or len(set(keys)) != n:
        return Call(cas(), n, "cas")
    if deadlines_ms is None:
        pairs: list[bytes] = [b""] * (2 * n)
        pairs[0::2] = keys
        pairs[1::2] = values
        return Call(pack(("MSETNX", *pairs)), n, "fresh", cas)
    return Call(pack_set_nx(keys, values, deadlines_ms), n, "fresh_ttl", cas)


def deadlines_ms(prepared: PreparedRows, first: int, stop: int) -> list[bytes] | None:
    """Rows ``first:stop``'s retention deadlines as PEXPIREAT arguments, or None when
    the schema keeps records for ever: whole milliseconds, rounded up so a key never
    vanishes before its deadline."""
    deadline = prepared.deadline_us
    if deadline is None:
        return None
    ms: list[bytes] = (-(-deadline[first:stop] // 1000)).astype("S20").tolist()
    return ms


def chunk_calls(
    codec: Codec, prepared: PreparedRows, *, chunk_size: int, pack: Pack, fresh: FreshHint
) -> Iterator[Call]:
    """One call per chunk, encoded a slice of chunks at a time."""
    step = chunk_size * _CHUNKS_PER_SLICE
    for first in range(0, len(prepared), step):
        keys, values = prepared.records(
            first, first + step, prefix=codec.key_prefix, suffix=codec.key_suffix
        )
        expiry = deadlines_ms(prepared, first, first + step)
        for start in range(0, len(keys), chunk_size):
            stop = start + chunk_size
            yield chunk_call(
                keys[start:stop],
                values[start:stop],
                None if expiry is None else expiry[start:stop],
                pack=pack,
                fresh=fresh,
            )


def send_calls(
    conn: Any, calls: Iterator[Call], *, in_flight: int, pack: Pack, fresh: FreshHint
) -> int:
    """Pipeline ``calls`` on ``conn``; returns the rows stored.

    A NOSCRIPT reply (first use, restart, failover, SCRIPT FLUSH) queues a SCRIPT
    LOAD behind the calls already sent, unless one is already queued after the
    failed call, and then sends that call again. Rows that a fresh call could not
    store (their key exists) are sent again through the script. The caller
    disconnects ``conn`` if this raises, since replies may still be queued on it.
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

    def settle_fresh_ttl(call: Call) -> None:
        nonlocal written
        replies = read_replies(conn, call.rows)
        if None not in replies:  # every key was new: all stored
            written += call.rows
            return
        existed = [i for i, reply in enumerate(replies) if reply is None]
        written += call.rows - len(existed)
        fresh.hopeful = False  # keys exist: the rest of the batch goes to the script
        if call.cas is None:
            raise TypeError("a fresh_ttl Call needs its script fallback (Call.cas) to resend rows")
        send(Call(call.cas(existed), len(existed), "cas"))

    def settle() -> None:
        nonlocal written, last_load
        call = pending.popleft()
        if call.kind == "fresh_ttl":
            settle_fresh_ttl(call)
            return
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
