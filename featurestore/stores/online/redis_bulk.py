"""One command per key, at a bulk price: RESP packing and reply reading for whole chunks.

Writing new keys of a view with a retention deadline takes one ``SET key value
PXAT <ms> NX`` per key (``redis_cas.py``), a thousand per chunk. Done one command
at a time, the client would cost more than Redis (measured per key: hiredis
``pack_command`` about 1.2 us, redis-py ``read_response`` 0.6-0.9 us), so:

- ``pack_set_nx`` writes the RESP of a whole chunk with one ``bytes.join``; the
  length headers come from small caches, since keys, values and deadlines of one
  view mostly share a few lengths (about 0.25 us per key);
- ``read_replies`` takes ``n`` replies from the connection's hiredis reader in one
  C-driven loop (about 0.1 us per reply), and falls back to ``read_response`` when
  the connection has no hiredis reader (redis-py without hiredis, or another parser).
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import redis

_not_enough: object | None
try:  # the value redis-py's hiredis parser makes its reader return when it needs more bytes
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _not_enough
except ImportError:  # pragma: no cover - a redis-py that moved it: use read_response
    _not_enough = None

_push: type | None
try:  # RESP3 out-of-band messages (invalidations, maintenance), hiredis >= 3.2
    from hiredis import PushNotification as _push
except ImportError:  # pragma: no cover - older hiredis: no push frames to tell apart
    _push = None


class _Heads(dict[int, bytes]):
    """RESP fragments that depend only on an argument's length, made on first use."""

    def __init__(self, template: bytes) -> None:
        super().__init__()
        self.template = template

    def __missing__(self, length: int) -> bytes:
        head = self[length] = self.template % length
        return head


_KEY_HEAD = _Heads(b"*6\r\n$3\r\nSET\r\n$%d\r\n")
_VALUE_HEAD = _Heads(b"\r\n$%d\r\n")
_PXAT_HEAD = _Heads(b"\r\n$4\r\nPXAT\r\n$%d\r\n")
_NX_TAIL = b"\r\n$2\r\nNX\r\n"


def pack_set_nx(keys: list[bytes], values: list[bytes], deadlines_ms: list[bytes]) -> bytes:
    """``SET key value PXAT deadline NX`` for each row, as one RESP byte string (the
    bytes ``hiredis.pack_command`` would give, command after command)."""
    n = len(keys)
    if not n == len(values) == len(deadlines_ms):
        raise ValueError(
            f"pack_set_nx needs one value and one deadline per key: got {n} keys, "
            f"{len(values)} values, {len(deadlines_ms)} deadlines"
        )
    parts = [_NX_TAIL] * (7 * n)
    parts[0::7] = map(_KEY_HEAD.__getitem__, map(len, keys))
    parts[1::7] = keys
    parts[2::7] = map(_VALUE_HEAD.__getitem__, map(len, values))
    parts[3::7] = values
    parts[4::7] = map(_PXAT_HEAD.__getitem__, map(len, deadlines_ms))
    parts[5::7] = deadlines_ms
    return b"".join(parts)


def read_replies(conn: Any, n: int) -> list[Any]:
    """The next ``n`` replies on ``conn``, in order. Error replies are all read before
    the first one is raised, so the connection stays in step with its commands; a
    socket failure raises as from ``read_response`` (the caller must then drop ``conn``)."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if _not_enough is None or reader is None or not hasattr(parser, "read_from_socket"):
        replies = [_one_reply(conn) for _ in range(n)]
    else:
        replies = _from_reader(parser, reader, n)
    for reply in replies:
        if isinstance(reply, redis.RedisError):
            raise reply
    return replies


def _one_reply(conn: Any) -> Any:
    try:
        return conn.read_response()
    except redis.ResponseError as exc:  # raised by read_replies once all n are read
        return exc


def _from_reader(parser: Any, reader: Any, n: int) -> list[Any]:
    replies: list[Any] = []
    while True:
        replies += islice(iter(reader.gets, _not_enough), n - len(replies))
        if _push is not None and _push in map(type, replies):
            replies = _without_pushes(parser, replies)
        if len(replies) == n:
            return replies
        try:
            parser.read_from_socket()
        except OSError as exc:  # what read_response reports for a broken socket
            raise redis.ConnectionError(f"Error while reading replies: {exc}") from exc


def _without_pushes(parser: Any, replies: list[Any]) -> list[Any]:
    """``replies`` without RESP3 push frames, each handed to the parser's handlers
    as ``read_response`` would."""
    kept = []
    for reply in replies:
        if type(reply) is _push:
            parser.handle_push_response(reply)
        else:
            kept.append(reply)
    return kept
