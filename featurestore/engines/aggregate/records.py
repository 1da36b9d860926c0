"""Many entities' aggregate slots at once, and their online encoding.

``Slots`` is one aggregation's partial states for many entities in CSR layout (see
``online.py`` for what a slot holds). The codec turns slots into the online record
text of each entity and back, for thousands of entities per call (the stream worker
writes a micro-batch of them at a time).

Encoding (version 2 = version 1 plus a trailer of marks;
little-endian; each record is base64 text)::

    b"FA" version:u8  T:i64  n_slots:u16
    per slot:   m:u32  dtype:(len:u8, numpy dtype.str)  pos:i64[m]
                fields in sorted name order: numeric -> count:u32 + raw bytes;
                object (strings) -> count:u32 + lengths:u32[count] + UTF-8 bytes
    trailer:    n_marks:u16, then n_marks x (partition:i32, next_offset:i64)

A field holds the entity's own states only: for ``count_distinct`` its ``offsets``
start at 0 (m + 1 of them) and its ``items`` are its own. A string that is None is
written as "" (as version 1 does), so it reads back as "". ``decode`` reads version 1
records too (they have no marks).

Both directions work on all records at once: ``encode`` lists each record's pieces
as (source array, per-entity byte start, per-entity length), copies them into one
buffer with vectorized ragged gathers and base64-encodes that buffer in one call
(records start at multiples of 3 bytes); ``decode`` base64-decodes all texts in one
call when they are canonical (else one by one) and walks the layout with one cursor
per record. Python loops run per record only to slice the base64 text and per string
for UTF-8; records that disagree on a slot's dtype are decoded group by group.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, cast

import numpy as np

from featurestore.engines.aggregate.spec import AGG_FUNCTIONS, AggFunction
from featurestore.engines.aggregate.state import States, concat, empty
from featurestore.errors import DataError, DefinitionError, FeatureStoreError

RECORD_VERSION = 2
READ_VERSIONS = (1, 2)
_MAGIC = b"FA"
_OBJ = "online aggregate record"
_HINT = "Materialize the view again"
_HEAD = np.dtype([("magic", "S2"), ("version", "u1"), ("at_us", "<i8"), ("n_slots", "<u2")])
_MARK = np.dtype([("partition", "<i4"), ("next_offset", "<i8")])
_U16_MAX = 2**16 - 1
_U32_MAX = 2**32 - 1
_PAD = 16  # zero bytes after the decode buffer: fixed-width reads never leave it


@dataclass(frozen=True)
class Slots:
    """One aggregation's slots for many entities: entity ``e`` owns the states
    ``offsets[e]:offsets[e + 1]`` of ``pos`` and ``states``."""

    offsets: np.ndarray
    pos: np.ndarray
    states: States


@dataclass(frozen=True)
class Marks:
    """Per entity, for the stream worker: partition -> next Kafka offset not yet applied (CSR).

    Entity ``e`` owns the marks ``offsets[e]:offsets[e + 1]`` of ``partition`` and
    ``next_offset``.
    """

    offsets: np.ndarray  # int64, len n_entities + 1
    partition: np.ndarray  # int32
    next_offset: np.ndarray  # int64

    @staticmethod
    def none(n_entities: int) -> Marks:
        """Marks of ``n_entities`` entities that have none."""
        return Marks(
            np.zeros(n_entities + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        )


def _error(message: str, *, value: Any = None, hint: str = _HINT) -> DataError:
    return DataError(message, obj=_OBJ, value=value, hint=hint)


def _ragged(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices ``starts[i] .. starts[i] + lengths[i] - 1`` of every ``i``, in order."""
    if not len(lengths):
        return np.zeros(0, np.int64)
    width = int(lengths[0])
    if (lengths == width).all():  # fixed width: a 2-D broadcast, no repeat needed
        return (starts[:, None] + np.arange(width, dtype=np.int64)).reshape(-1)
    total = int(lengths.sum())
    shift = starts - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(total, dtype=np.int64)


def _exclusive_cumsum(counts: np.ndarray) -> np.ndarray:
    """``[0, c0, c0 + c1, ...]``: len(counts) + 1 bounds of consecutive runs."""
    out = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=out[1:])
    return out


# -- encoding ------------------------------------------------------------------


@dataclass(frozen=True)
class _Piece:
    """Bytes ``src[start[e]:start[e] + length[e]]`` come next in entity ``e``'s record."""

    src: np.ndarray  # uint8
    start: np.ndarray  # int64 per entity
    length: np.ndarray  # int64 per entity


def _fixed_piece(values: np.ndarray, fmt: str) -> _Piece:
    """One little-endian scalar per entity."""
    src = np.ascontiguousarray(values, fmt).reshape(-1).view(np.uint8)
    width = np.dtype(fmt).itemsize
    n = len(values)
    return _Piece(src, np.arange(n, dtype=np.int64) * width, np.full(n, width, np.int64))


def _check_limit(counts: np.ndarray, limit: int, what: str) -> None:
    if len(counts) and int(counts.max()) > limit:
        raise _error(
            f"too many {what} for one record",
            value=int(counts.max()),
            hint=f"A record holds at most {limit} {what}",
        )


def _count_piece(counts: np.ndarray, what: str) -> _Piece:
    _check_limit(counts, _U32_MAX, what)
    return _fixed_piece(counts, "<u4")


def _string_pieces(arr: np.ndarray, start: np.ndarray, count: np.ndarray) -> list[_Piece]:
    """The lengths (u32) and UTF-8 bytes of each entity's strings ``start .. + count``."""
    raw = [("" if v is None else str(v)).encode() for v in arr.tolist()]
    lengths = np.fromiter(map(len, raw), np.int64, len(raw))
    _check_limit(lengths, _U32_MAX, "bytes in a string")
    bounds = _exclusive_cumsum(lengths)
    blob = np.frombuffer(b"".join(raw), np.uint8)
    first, stop = bounds[start], bounds[start + count]
    return [
        _Piece(lengths.astype("<u4").view(np.uint8), 4 * start, 4 * count),
        _Piece(blob, first, stop - first),
    ]


def _field_pieces(arr: np.ndarray, start: np.ndarray, count: np.ndarray) -> list[_Piece]:
    """Each entity's elements ``arr[start:start + count]`` as count + data."""
    pieces = [_count_piece(count, "values in a field")]
    if arr.dtype.kind == "O":
        return pieces + _string_pieces(arr, start, count)
    le = np.ascontiguousarray(arr, arr.dtype.newbyteorder("<"))
    width = le.dtype.itemsize
    return [*pieces, _Piece(le.view(np.uint8), start * width, count * width)]


def _distinct_pieces(states: States, first: np.ndarray, m: np.ndarray) -> list[_Piece]:
    """``items`` then ``offsets`` of count_distinct, rebased per entity."""
    off = states.fields["offsets"].astype(np.int64)
    item_start, item_stop = off[first], off[first + m]
    local = off[_ragged(first, m + 1)] - np.repeat(item_start, m + 1)
    where = _exclusive_cumsum(m + 1)[:-1]
    return _field_pieces(
        states.fields["items"], item_start, item_stop - item_start
    ) + _field_pieces(local, where, m + 1)


def _slot_pieces(slots: Slots) -> list[_Piece]:
    """The pieces of one slot (m, dtype, pos, fields) in every record."""
    first = np.asarray(slots.offsets[:-1], np.int64)
    m = np.diff(np.asarray(slots.offsets, np.int64))
    n = len(m)
    name = slots.states.dtype.str.encode()
    dtype_src = np.frombuffer(bytes([len(name)]) + name, np.uint8)
    pieces = [
        _count_piece(m, "states in a slot"),
        _Piece(dtype_src, np.zeros(n, np.int64), np.full(n, len(dtype_src), np.int64)),
        _Piece(np.ascontiguousarray(slots.pos, "<i8").view(np.uint8), 8 * first, 8 * m),
    ]
    if slots.states.function == "count_distinct":
        return pieces + _distinct_pieces(slots.states, first, m)
    for field in sorted(slots.states.fields):
        pieces += _field_pieces(slots.states.fields[field], first, m)
    return pieces


def _marks_pieces(marks: Marks) -> list[_Piece]:
    offsets = np.asarray(marks.offsets, np.int64)
    counts = np.diff(offsets)
    _check_limit(counts, _U16_MAX, "marks")
    table = np.empty(len(marks.partition), _MARK)
    table["partition"] = marks.partition
    table["next_offset"] = marks.next_offset
    src = table.view(np.uint8)
    return [_fixed_piece(counts, "<u2"), _Piece(src, 12 * offsets[:-1], 12 * counts)]


def _assemble(pieces: Sequence[_Piece], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All records in one zero-padded buffer, each starting at a multiple of 3 bytes
    (so base64 can run over the whole buffer); returns it, the n + 1 padded bounds
    and the n unpadded sizes."""
    sizes = np.zeros(n, np.int64)
    for p in pieces:
        sizes += p.length
    bounds = _exclusive_cumsum(-(-sizes // 3) * 3)
    out = np.zeros(int(bounds[-1]), np.uint8)
    at = bounds[:-1].copy()
    for p in pieces:
        out[_ragged(at, p.length)] = p.src[_ragged(p.start, p.length)]
        at += p.length
    return out, bounds, sizes


def _to_base64(buf: np.ndarray, bounds: np.ndarray, sizes: np.ndarray) -> list[str]:
    """The base64 text of each record ``buf[bounds[i]:bounds[i] + sizes[i]]``.

    Each record starts at a multiple of 3 bytes, so the base64 of the whole buffer
    is the base64 of each zero-padded record, one after the other; the characters
    that only encode padding become "=", as b64encode of the record alone writes.
    """
    text = np.frombuffer(binascii.b2a_base64(buf.data, newline=False), np.uint8).copy()
    char_bounds = bounds // 3 * 4
    ends, pad = char_bounds[1:], (bounds[1:] - bounds[:-1]) - sizes
    text[ends[pad >= 1] - 1] = ord("=")
    text[ends[pad == 2] - 2] = ord("=")
    joined = text.tobytes().decode("ascii")
    return [joined[a:b] for a, b in pairwise(char_bounds.tolist())]


def _fits(offsets: np.ndarray, n: int, size: int) -> bool:
    """Whether ``offsets`` are n + 1 non-decreasing bounds inside ``0..size``."""
    off = np.asarray(offsets, np.int64)
    if len(off) != n + 1:
        return False
    return not n or (off[0] >= 0 and off[-1] <= size and bool((np.diff(off) >= 0).all()))


def _check_shapes(n: int, slots: Sequence[Slots], marks: Marks) -> None:
    if len(slots) > _U16_MAX:
        raise _error("too many aggregations for one record", value=len(slots))
    for j, s in enumerate(slots):
        if len(s.pos) != len(s.states) or not _fits(s.offsets, n, len(s.states)):
            raise _error(
                f"slots of aggregation {j} do not fit {n} entities",
                value={"offsets": len(s.offsets), "pos": len(s.pos), "states": len(s.states)},
                hint="Pass offsets of len n_entities + 1 and one pos per state",
            )
    n_marks = len(marks.partition)
    if n_marks != len(marks.next_offset) or not _fits(marks.offsets, n, n_marks):
        raise _error(
            f"marks do not fit {n} entities",
            value={"offsets": len(marks.offsets), "partition": len(marks.partition)},
            hint="Pass offsets of len n_entities + 1 and one next_offset per partition",
        )


def encode(*, at_us: np.ndarray, slots: Sequence[Slots], marks: Marks | None = None) -> list[str]:
    """One record (base64 text, version 2) per entity; ``at_us[e]`` is entity ``e``'s T.

    ``slots`` holds every aggregation of the view in record order; ``marks=None``
    writes no marks.
    """
    at = np.asarray(at_us, np.int64).reshape(-1)
    n = len(at)
    marks = Marks.none(n) if marks is None else marks
    _check_shapes(n, slots, marks)
    head = np.zeros(n, _HEAD)
    head["magic"], head["version"], head["at_us"] = _MAGIC, RECORD_VERSION, at
    head["n_slots"] = len(slots)
    width = _HEAD.itemsize
    pieces = [_Piece(head.view(np.uint8), width * np.arange(n), np.full(n, width, np.int64))]
    for s in slots:
        pieces += _slot_pieces(s)
    pieces += _marks_pieces(marks)
    return _to_base64(*_assemble(pieces, n))


# -- decoding ------------------------------------------------------------------


def _from_base64_joined(texts: Sequence[str]) -> tuple[bytes, np.ndarray, np.ndarray] | None:
    """All records decoded at once, as ``(buffer, starts, ends)``; None unless every
    text is canonical base64 (ASCII, a multiple of 4 characters, "=" only at the end).

    With "=" turned into "A", the texts joined are one base64 text whose bytes are
    the records' (each with 0-2 padding bytes after it).
    """
    lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    if (lengths % 4).any():
        return None
    try:
        chars = np.frombuffer("".join(texts).encode("ascii"), np.uint8).copy()
    except (UnicodeEncodeError, TypeError):
        return None
    ends = _exclusive_cumsum(lengths)[1:][lengths > 0]
    pad = np.zeros(len(texts), np.int64)
    last = chars[ends - 1] == ord("=")
    second = last & (chars[ends - 2] == ord("="))
    pad[lengths > 0] = last.astype(np.int64) + second
    chars[ends[last] - 1] = chars[ends[second] - 2] = ord("A")
    try:
        raw = binascii.a2b_base64(chars.data, strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    starts = _exclusive_cumsum(lengths)[:-1] // 4 * 3
    return raw, starts, starts + lengths // 4 * 3 - pad


def _from_base64_each(texts: Sequence[str]) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Like ``_from_base64_joined``, one text at a time and lenient like b64decode."""
    try:
        raw = [binascii.a2b_base64(t) for t in texts]
    except (binascii.Error, ValueError, TypeError) as exc:
        raise _error("an aggregate record is not base64 text") from exc
    bounds = _exclusive_cumsum(np.fromiter(map(len, raw), np.int64, len(raw)))
    return b"".join(raw), bounds[:-1], bounds[1:]


class _Cursor:
    """All records in one buffer, with one read position per record."""

    def __init__(self, texts: Sequence[str]) -> None:
        raw, starts, ends = _from_base64_joined(texts) or _from_base64_each(texts)
        self.buf = np.frombuffer(raw + bytes(_PAD), np.uint8)
        self.at = starts.copy()
        self.end = ends

    def require(self, rows: np.ndarray, nbytes: np.ndarray | int) -> None:
        """Refuse to read past the end of a record."""
        short = self.at[rows] + nbytes > self.end[rows]
        if short.any():
            raise _error("truncated aggregate record", value={"record": int(rows[short][0])})

    def scalars(self, rows: np.ndarray, fmt: str) -> np.ndarray:
        """One little-endian scalar of each record in ``rows``, as int64."""
        width = np.dtype(fmt).itemsize
        self.require(rows, width)
        raw = self.buf[self.at[rows][:, None] + np.arange(width)]
        self.at[rows] += width
        return raw.view(fmt).reshape(-1).astype(np.int64)

    def chunks(self, rows: np.ndarray, nbytes: np.ndarray) -> np.ndarray:
        """The next ``nbytes[i]`` bytes of each record ``rows[i]``, one after the other."""
        self.require(rows, nbytes)
        out = self.buf[_ragged(self.at[rows], nbytes)]
        self.at[rows] += nbytes
        return out

    def finish(self) -> None:
        """Refuse bytes after the end of a record's layout."""
        extra = self.end - self.at
        if extra.any():
            i = int(np.flatnonzero(extra)[0])
            raise _error(
                "trailing bytes after an aggregate record",
                value={"record": i, "bytes": int(extra[i])},
            )


def _read_head(cur: _Cursor, n_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """``(T, version)`` of every record, after checking magic, version and slot count."""
    rows = np.arange(len(cur.at))
    head = cur.chunks(rows, np.full(len(rows), _HEAD.itemsize)).view(_HEAD)
    bad = (head["magic"] != _MAGIC) | ~np.isin(head["version"], READ_VERSIONS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _error(
            "unsupported online aggregate record",
            value={
                "record": i,
                "magic": bytes(head["magic"][i]),
                "version": int(head["version"][i]),
            },
            hint=f"This featurestore reads versions {READ_VERSIONS}; materialize the view again",
        )
    wrong = head["n_slots"] != n_slots
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise _error(
            f"record has {int(head['n_slots'][i])} aggregations, the view {n_slots}",
            value={"record": i},
        )
    return head["at_us"].astype(np.int64), head["version"].astype(np.int64)


def _parse_dtype(name: bytes) -> np.dtype[Any]:
    try:
        dt = np.dtype(name.decode("ascii"))
    except (UnicodeDecodeError, TypeError, ValueError) as exc:
        raise _error("bad dtype in aggregate record", value=name) from exc
    if dt.str != name.decode("ascii"):
        raise _error("bad dtype in aggregate record", value=name)
    return dt


def _dtype_groups(cur: _Cursor, rows: np.ndarray) -> list[tuple[np.dtype[Any], np.ndarray]]:
    """Read each record's dtype of a slot; group the records that share one."""
    lengths = cur.scalars(rows, "<u1")
    blob = cur.chunks(rows, lengths)
    if not len(rows):
        return []
    width = int(lengths[0])
    if (lengths == width).all():
        table = blob.reshape(len(rows), width)
        if (table == table[0]).all():
            return [(_parse_dtype(table[0].tobytes()), rows)]
    # Records disagree (written before and after a schema change): one group each.
    raw, edges = blob.tobytes(), _exclusive_cumsum(lengths).tolist()
    groups: dict[bytes, list[int]] = {}
    for i in range(len(rows)):
        groups.setdefault(raw[edges[i] : edges[i + 1]], []).append(i)
    return [(_parse_dtype(k), rows[np.array(v)]) for k, v in groups.items()]


def _template(function: AggFunction, dt: np.dtype[Any]) -> States:
    try:
        return empty(function, dtype=dt)
    except FeatureStoreError as exc:
        raise _error(f"dtype {dt} does not fit aggregation {function}", value=str(dt)) from exc


def _read_strings(cur: _Cursor, rows: np.ndarray, count: np.ndarray) -> np.ndarray:
    lengths = cur.chunks(rows, 4 * count).view("<u4").astype(np.int64)
    bounds = _exclusive_cumsum(lengths)
    per_row = bounds[_exclusive_cumsum(count)]
    blob = cur.chunks(rows, np.diff(per_row)).tobytes()
    edges = bounds.tolist()
    out = np.empty(len(lengths), object)
    try:
        out[:] = [blob[a:b].decode() for a, b in pairwise(edges)]
    except UnicodeDecodeError as exc:
        raise _error("a string in an aggregate record is not UTF-8") from exc
    return out


def _read_values(
    cur: _Cursor, rows: np.ndarray, count: np.ndarray, dt: np.dtype[Any]
) -> np.ndarray:
    if dt.kind == "O":
        return _read_strings(cur, rows, count)
    le = dt.newbyteorder("<")
    return cur.chunks(rows, count * le.itemsize).view(le).astype(dt, copy=False)


def _global_offsets(local: np.ndarray, m: np.ndarray, n_items: np.ndarray) -> np.ndarray:
    """Join per-record count_distinct offsets (each from 0, m + 1 of them) into one CSR."""
    first = _exclusive_cumsum(m + 1)[:-1]
    inner = np.ones(len(local), bool)
    inner[first] = False
    rising = np.diff(local)[inner[1:]] >= 0
    if (local[first] != 0).any() or (local[first + m] != n_items).any() or not rising.all():
        raise _error("inconsistent count_distinct offsets in aggregate record")
    base = _exclusive_cumsum(n_items)[:-1]
    return np.concatenate(([0], local[inner] + np.repeat(base, m))).astype(np.int64)


def _read_states(
    cur: _Cursor, rows: np.ndarray, m: np.ndarray, function: AggFunction, dt: np.dtype[Any]
) -> tuple[np.ndarray, States]:
    """``pos`` and states of one slot of the records ``rows`` (``m`` states each)."""
    template = _template(function, dt)
    pos = cur.chunks(rows, 8 * m).view("<i8").astype(np.int64)
    distinct = function == "count_distinct"
    fields: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for name in sorted(template.fields):
        count = counts[name] = cur.scalars(rows, "<u4")
        if not (distinct and name == "items"):
            expected = m + 1 if distinct else m
            if (count != expected).any():
                raise _error(f"field {name!r} does not have one value per state", value=name)
        fields[name] = _read_values(cur, rows, count, template.fields[name].dtype)
    if distinct:
        fields["offsets"] = _global_offsets(fields["offsets"], m, counts["items"])
    return pos, States(template.function, dt, fields)


def _join_groups(
    function: AggFunction,
    parts: Sequence[tuple[np.ndarray, np.ndarray, States]],
    m: np.ndarray,
) -> tuple[np.ndarray, States]:
    """One slot from groups of records with different dtypes (cast to a common one)."""
    dts = [states.dtype for _, _, states in parts]
    if len({dt.kind == "O" for dt in dts}) > 1:
        raise _error(
            f"records disagree on the dtype of aggregation {function}",
            value=sorted({dt.str for dt in dts}),
        )
    common = np.result_type(*dts)
    template = _template(function, common)
    cast_parts = [
        States(
            template.function,
            common,
            {k: v.astype(template.fields[k].dtype, copy=False) for k, v in s.fields.items()},
        )
        for _, _, s in parts
    ]
    rows = np.concatenate([r for r, _, _ in parts])
    order = np.argsort(np.repeat(rows, m[rows]), kind="stable")  # back to record order
    pos = np.concatenate([p for _, p, _ in parts])
    return pos[order], concat(cast_parts).take(order)


def _read_slot(cur: _Cursor, function: AggFunction) -> Slots:
    rows = np.arange(len(cur.at))
    m = cur.scalars(rows, "<u4")
    groups = _dtype_groups(cur, rows)
    offsets = _exclusive_cumsum(m)
    if not groups:
        return Slots(offsets, np.zeros(0, np.int64), empty(function))
    parts = [(r, *_read_states(cur, r, m[r], function, dt)) for dt, r in groups]
    if len(parts) == 1:
        return Slots(offsets, parts[0][1], parts[0][2])
    pos, states = _join_groups(function, parts, m)
    return Slots(offsets, pos, states)


def _read_marks(cur: _Cursor, version: np.ndarray) -> Marks:
    rows = np.flatnonzero(version >= 2)  # version 1 has no trailer
    counts = np.zeros(len(version), np.int64)
    counts[rows] = cur.scalars(rows, "<u2")
    table = cur.chunks(rows, _MARK.itemsize * counts[rows]).view(_MARK)
    return Marks(
        _exclusive_cumsum(counts),
        table["partition"].astype(np.int32),
        table["next_offset"].astype(np.int64),
    )


def _functions(functions: Sequence[str]) -> list[AggFunction]:
    for f in functions:
        if f not in AGG_FUNCTIONS:
            raise DefinitionError(
                "unknown aggregation function",
                obj=_OBJ,
                value=f,
                hint=f"Use one of {', '.join(AGG_FUNCTIONS)}",
            )
    return [cast(AggFunction, f) for f in functions]


def decode(
    texts: Sequence[str], *, functions: Sequence[str]
) -> tuple[np.ndarray, list[Slots], Marks]:
    """``(T per record, slots per aggregation, marks)`` of records written by ``encode``
    (version 2) or by ``online.encode_records`` (version 1: no marks).

    ``functions[j]`` is the aggregation function of slot ``j``. Raises ``DataError``
    for a record that is not one (magic, version), was cut short, has bytes after its
    end or another number of aggregations. With no records at all, each slot's dtype
    is float64 (nothing tells it).
    """
    funcs = _functions(functions)
    cur = _Cursor(texts)
    at_us, version = _read_head(cur, len(funcs))
    slots = [_read_slot(cur, f) for f in funcs]
    marks = _read_marks(cur, version)
    cur.finish()
    return at_us, slots, marks


# -- one record at a time (online lookups) --------------------------------------------
#
# ``decode`` costs a few hundred numpy calls whatever the number of records: right for
# a micro-batch of 20,000, about 1 ms for one. A lookup reads a handful of records, so
# it takes this plain reader (tens of microseconds per record). The tests check that
# both read every record alike.

_HEAD_S = struct.Struct("<2sBqH")
_U16_S = struct.Struct("<H")
_U32_S = struct.Struct("<I")


class _Reader:
    def __init__(self, raw: bytes) -> None:
        self.raw, self.at = raw, 0

    def take(self, n: int) -> bytes:
        chunk = self.raw[self.at : self.at + n]
        if len(chunk) != n:
            raise _error("truncated aggregate record")
        self.at += n
        return chunk

    def u32(self) -> int:
        (n,) = _U32_S.unpack(self.take(4))
        return int(n)

    def array(self, dtype: np.dtype[Any]) -> np.ndarray:
        n = self.u32()
        if dtype.kind == "O":
            lengths = np.frombuffer(self.take(4 * n), "<u4").tolist()
            blob = self.take(sum(lengths))
            items, at = [], 0
            try:
                for length in lengths:
                    items.append(blob[at : at + length].decode())
                    at += length
            except UnicodeDecodeError as exc:
                raise _error("a string is not valid UTF-8") from exc
            return np.array(items, dtype=object) if items else np.empty(0, object)
        le = dtype.newbyteorder("<")
        return np.frombuffer(self.take(n * le.itemsize), le).astype(dtype, copy=False)


def decode_one(
    text: str, *, functions: Sequence[str]
) -> tuple[int, list[tuple[np.ndarray, States]]]:
    """``(T, [(pos, states) per aggregation])`` of one record (version 1 or 2; the
    marks are skipped)."""
    try:
        r = _Reader(base64.b64decode(text))
    except (binascii.Error, ValueError) as exc:
        raise _error("not base64 text") from exc
    magic, version, at_us, n_slots = _HEAD_S.unpack(r.take(_HEAD_S.size))
    if magic != _MAGIC or version not in READ_VERSIONS:
        raise _error(
            "unsupported online aggregate record", value={"magic": magic, "version": version}
        )
    if n_slots != len(functions):
        raise _error(f"record has {n_slots} aggregations, the view {len(functions)}")
    slots = []
    for function in _functions(functions):
        m = r.u32()
        try:
            dt = np.dtype(r.take(r.take(1)[0]).decode())
        except (TypeError, ValueError, UnicodeDecodeError) as exc:
            raise _error("unreadable dtype") from exc
        pos = np.frombuffer(r.take(8 * m), "<i8").astype(np.int64)
        template = _template(function, dt)
        fields = {name: r.array(template.fields[name].dtype) for name in sorted(template.fields)}
        states = States(template.function, dt, fields)
        if len(states) != m:
            raise _error("a field does not hold one value per state", value=m)
        slots.append((pos, states))
    if version >= 2:
        (n_marks,) = _U16_S.unpack(r.take(2))
        r.take(n_marks * _MARK.itemsize)
    if r.at != len(r.raw):
        raise _error("trailing bytes after the record", value=len(r.raw) - r.at)
    return int(at_us), slots
