"""Record keys and values, version 1. Every backend stores these same bytes.

Key::

    fs1:{<project>:<entity>}:<view>:<schema_id>

``fs1`` versions the layout. The braces are a Redis Cluster hash tag, so every
view of one entity lands in the same slot. ``<entity>`` is the typed,
self-delimiting encoding of the join key values (``keys.py``).

Value::

    byte 0        version (1)
    bytes 1..16   event_ts, created_ts as big-endian uint64 in offset binary
                  (value + 2**63): byte order equals (event_ts, created_ts) order,
                  so the Redis script compares them without decoding the rest.
                  Every future version keeps this header.
    then          null bitmap, ceil(features / 8) bytes, bit i%8 of byte i//8
    then          one big-endian slot per feature in schema order: the value for
                  fixed-width dtypes (0 when null), the payload length (uint32) for
                  strings and lists
    then          the string and list payloads, in schema order (lists: ``lists.py``)

Retention: a record is kept until ``event_ts + schema.retention_us`` (None: until
a newer record replaces it); the schema's builder resolves the setting
(``featurestore.config.OnlineRetention``, default ``2 * ttl``). The deadline is
stored with the record (Redis: ``PEXPIREAT``; SQLite and memory: a column,
filtered on read).
A write whose retention has already passed is not stored
(``WriteStats.skipped_expired``).

``codec_for(schema)`` gives the precompiled decoder and key layout of a schema;
``writes.prepare`` encodes batches with it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import numpy as np

from featurestore._dtypes import INTEGERS, is_list, list_inner
from featurestore.errors import DataError, OnlineStoreError
from featurestore.stores.online.base import OnlineViewSchema, ReadRequest, ReadResult
from featurestore.stores.online.columns import (
    FROM_PHYSICAL,
    NP_TYPES,
    STRUCT_CODES,
    object_column,
)
from featurestore.stores.online.keys import KEY_ENCODERS, key_part
from featurestore.stores.online.lists import Decoder, Encoder, list_codec

VERSION = 1
KEY_PREFIX = b"fs1:"
TS_OFFSET = 1 << 63
_READABLE = {None, VERSION}  # None: the placeholder row of a missing record


class Codec:
    """The key layout and record layout of one schema (get one with ``codec_for``)."""

    def __init__(self, schema: OnlineViewSchema) -> None:
        self.schema = schema
        self.key_prefix = KEY_PREFIX + b"{" + schema.project.encode() + b":"
        self.key_suffix = b"}:" + schema.view.encode() + b":" + schema.schema_id.encode()
        self.index = {name: i for i, name in enumerate(schema.features)}
        nf = len(schema.features)
        self.bitmap_size = (nf + 7) // 8
        self.zero_bitmap = bytes(self.bitmap_size)
        self.var: list[int] = []  # feature indices with a payload (strings, lists)
        self.list_encoders: dict[int, Encoder] = {}
        self.var_decoders: dict[int, Decoder] = {}
        self.post: dict[int, Callable[[Any], Any]] = {}
        codes: list[str] = []
        np_fields: list[tuple[str, Any]] = []
        for i, dtype in enumerate(schema.feature_dtypes):
            if dtype == "string" or is_list(dtype):
                self.var.append(i)
                if is_list(dtype):
                    self.list_encoders[i], self.var_decoders[i] = list_codec(list_inner(dtype))
                else:
                    self.var_decoders[i] = bytes.decode
                codes.append("I")
                np_fields.append((f"f{i}", ">u4"))
            else:
                codes.append(STRUCT_CODES[dtype])
                np_fields.append((f"f{i}", np.dtype(NP_TYPES[dtype]).newbyteorder(">")))
                if dtype in FROM_PHYSICAL:
                    self.post[i] = FROM_PHYSICAL[dtype]
        self.head = struct.Struct(f">BQQ{self.bitmap_size}s" + "".join(codes))
        self.np_head = np.dtype(
            [("v", "u1"), ("e", ">u8"), ("c", ">u8"), ("m", "u1", (self.bitmap_size,)), *np_fields]
        )
        if self.np_head.itemsize != self.head.size:  # both are packed; a mismatch is a bug
            raise AssertionError("numpy and struct layouts differ")
        self.missing_row: tuple[Any, ...] = (None, 0, 0, self.zero_bitmap) + (None,) * nf
        self._int_packers: dict[tuple[bytes, bytes], Callable[..., bytes]] = {}
        # struct fields holding the payload lengths that precede each payload
        self.var_before = {j: [4 + v for v in self.var[: self.var.index(j)]] for j in self.var}

    # -- reads

    def entities_for(
        self, request: ReadRequest, *, prefix: bytes = b"", suffix: bytes = b""
    ) -> list[bytes | None]:
        """The key of each requested entity (entity bytes between ``prefix`` and
        ``suffix``); None where a key value is null."""
        with naming(f"online read of {self.schema.project}/{self.schema.view}"):
            cols = self._key_columns(request)
            if len(cols) == 1:
                dtype = self.schema.key_dtypes[0]
                enc = KEY_ENCODERS[dtype]
                try:
                    if dtype in INTEGERS:  # the hot case: one int key, from JSON
                        pre, pack = prefix + b"i", self._int_key_packer(prefix, suffix)
                        return [
                            pack(pre, v, suffix)
                            if type(v) is int
                            else (None if v is None else prefix + enc(v) + suffix)
                            for v in cols[0]
                        ]
                    return [None if v is None else prefix + enc(v) + suffix for v in cols[0]]
                except (TypeError, OverflowError, struct.error):
                    pass  # the loop below names the culprit or takes the uint64 path
            out: list[bytes | None] = []
            names, dtypes = self.schema.join_keys, self.schema.key_dtypes
            for row in zip(*cols, strict=True):
                if None in row:
                    out.append(None)
                    continue
                parts = [key_part(d, v, what=k) for d, v, k in zip(dtypes, row, names, strict=True)]
                out.append(prefix + b"".join(parts) + suffix)
            return out

    def _int_key_packer(self, prefix: bytes, suffix: bytes) -> Callable[..., bytes]:
        """One struct packing a whole int key: half the cost of concatenating three
        bytes objects, which counts on the lookup path."""
        packer = self._int_packers.get((prefix, suffix))
        if packer is None:
            packer = struct.Struct(f">{len(prefix) + 1}sq{len(suffix)}s").pack
            self._int_packers[(prefix, suffix)] = packer
        return packer

    def _key_columns(self, request: ReadRequest) -> list[list[Any]]:
        schema = self.schema
        cols = []
        for name in schema.join_keys:
            if name not in request.entity_keys:
                raise DataError(
                    "join key is missing from the read request",
                    field=name,
                    hint=f"Give a column for every join key: {', '.join(schema.join_keys)}",
                )
            cols.append(object_column(request.entity_keys[name]))
        if len({len(c) for c in cols}) > 1:
            raise DataError(
                "join key columns have different lengths",
                value={n: len(c) for n, c in zip(schema.join_keys, cols, strict=True)},
            )
        return cols

    def wanted(self, request: ReadRequest) -> list[int]:
        if request.features is None:
            return list(range(len(self.schema.features)))
        try:
            return [self.index[f] for f in request.features]
        except KeyError as exc:
            raise DataError(
                "feature is not part of this view's online schema",
                obj=f"online read of {self.schema.project}/{self.schema.view}",
                field=exc.args[0],
                hint=f"Features: {', '.join(self.schema.features)}",
            ) from None

    def result(self, request: ReadRequest, blobs: Sequence[bytes | None]) -> ReadResult:
        """Decode the stored values (None: no record) into a columnar result."""
        wanted = self.wanted(request)
        unpack = self.head.unpack_from
        missing = self.missing_row
        try:
            rows: list[tuple[Any, ...]] = [missing if b is None else unpack(b) for b in blobs]
        except struct.error as exc:
            raise self._corrupt(str(exc)) from None
        if not {t[0] for t in rows} <= _READABLE:
            raise self._corrupt("unknown record version")
        off = TS_OFFSET
        ev = [t[1] - off if t[0] else None for t in rows]
        cr = [t[2] - off if t[0] else None for t in rows]
        zero = self.zero_bitmap
        nulls = [(r, t[3]) for r, t in enumerate(rows) if t[3] != zero]
        names = self.schema.features
        features: dict[str, list[Any]] = {}
        for j in wanted:
            if j in self.var_decoders:
                col = self._payloads(j, rows, blobs)
            else:
                k = 4 + j
                col = [t[k] for t in rows]
            for r, bm in nulls:
                if bm[j >> 3] >> (j & 7) & 1:
                    col[r] = None
            post = self.post.get(j)
            if post is not None:
                col = [None if v is None else post(v) for v in col]
            features[names[j]] = col
        return ReadResult(schema=self.schema, features=features, event_ts=ev, created_ts=cr)

    def _payloads(
        self, j: int, rows: list[tuple[Any, ...]], blobs: Sequence[bytes | None]
    ) -> list[Any]:
        """Decoded payloads of string/list feature ``j``; nulls are patched by the caller."""
        k = 4 + j
        size = self.head.size
        before = self.var_before[j]
        if j not in self.list_encoders and not before:
            # the common case, one string column: an empty payload decodes to "" harmlessly
            return [
                None if b is None else b[size : size + t[k]].decode()
                for t, b in zip(rows, blobs, strict=True)
            ]
        decode = self.var_decoders[j]
        out: list[Any] = []
        for t, b in zip(rows, blobs, strict=True):
            if b is None or t[3][j >> 3] >> (j & 7) & 1:
                out.append(None)
                continue
            start = size + sum(t[v] for v in before)
            out.append(decode(b[start : start + t[k]]))
        return out

    def _corrupt(self, why: str) -> OnlineStoreError:
        return OnlineStoreError(
            f"a stored record cannot be decoded ({why})",
            obj=f"online view {self.schema.project}/{self.schema.view}",
            field="schema_id",
            value=self.schema.schema_id,
            hint="Records of one schema_id must all be written by this schema; "
            "delete_view() and materialize again",
        )


@lru_cache(maxsize=1024)
def codec_for(schema: OnlineViewSchema) -> Codec:
    """The codec of ``schema``, built once per distinct schema."""
    return Codec(schema)


@contextmanager
def naming(obj: str) -> Iterator[None]:
    """Add the view to data errors raised by the column helpers (they know only the column)."""
    try:
        yield
    except DataError as exc:
        if exc.obj is not None:
            raise
        raise DataError(
            exc.message, obj=obj, field=exc.field, value=exc.value, hint=exc.hint
        ) from None
