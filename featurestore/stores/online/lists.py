"""Values of ``list[<inner>]`` features: ``count + null bitmap + items``.

``count`` is a big-endian uint32 and the bitmap has bit ``i % 8`` of byte ``i // 8``
set for a null item. Fixed-width items are packed big-endian (0 where null);
strings and lists are each ``uint32 length + payload`` (empty where null), so
lists nest to any depth.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from featurestore._dtypes import is_list, list_inner
from featurestore.errors import DataError
from featurestore.stores.online.columns import (
    FROM_PHYSICAL,
    PY_CHECKS,
    STRUCT_CODES,
    datetime_us,
)

Encoder = Callable[[Any, str], bytes]  # (value, column name for errors) -> payload
Decoder = Callable[[bytes], Any]
_Packer = Callable[[list[Any], str], bytes]
_Unpacker = Callable[[bytes, int, int, bytes], list[Any]]


def list_codec(inner: str) -> tuple[Encoder, Decoder]:
    """Encoder and decoder of ``list[inner]`` values."""
    pack, unpack = _var_items(inner) if is_list(inner) or inner == "string" else _fixed_items(inner)

    def encode(value: Any, what: str) -> bytes:
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
            raise DataError(f"holds a value that is not a list[{inner}]", field=what, value=value)
        items = value.tolist() if isinstance(value, np.ndarray) else list(value)
        bitmap = bytearray((len(items) + 7) // 8)
        for i, x in enumerate(items):
            if x is None:
                bitmap[i >> 3] |= 1 << (i & 7)
        try:
            payload = pack(items, what)
        except (TypeError, struct.error, OverflowError) as exc:
            raise DataError(
                f"holds a list item that is not a valid {inner}", field=what, value=str(exc)
            ) from None
        return len(items).to_bytes(4, "big") + bytes(bitmap) + payload

    def decode(buf: bytes) -> list[Any]:
        n = int.from_bytes(buf[:4], "big")
        nb = (n + 7) // 8
        bitmap = buf[4 : 4 + nb]
        vals = unpack(buf, 4 + nb, n, bitmap)
        if any(bitmap):
            for i in range(n):
                if bitmap[i >> 3] >> (i & 7) & 1:
                    vals[i] = None
        return vals

    return encode, decode


def _fixed_items(inner: str) -> tuple[_Packer, _Unpacker]:
    code = STRUCT_CODES[inner]
    check = PY_CHECKS[inner]
    post = FROM_PHYSICAL.get(inner)

    def pack(items: list[Any], what: str) -> bytes:
        conv = partial(datetime_us, what=what) if inner == "datetime" else check
        return struct.pack(f">{len(items)}{code}", *[0 if x is None else conv(x) for x in items])

    def unpack(buf: bytes, pos: int, n: int, bitmap: bytes) -> list[Any]:
        vals = list(struct.unpack_from(f">{n}{code}", buf, pos))
        return [post(v) for v in vals] if post else vals

    return pack, unpack


def _var_items(inner: str) -> tuple[_Packer, _Unpacker]:
    item_enc, item_dec = list_codec(list_inner(inner)) if is_list(inner) else (_str, _unstr)

    def pack(items: list[Any], what: str) -> bytes:
        parts = [b"" if x is None else item_enc(x, what) for x in items]
        return b"".join(len(p).to_bytes(4, "big") + p for p in parts)

    def unpack(buf: bytes, pos: int, n: int, bitmap: bytes) -> list[Any]:
        out = []
        for i in range(n):
            size = int.from_bytes(buf[pos : pos + 4], "big")
            null = bitmap[i >> 3] >> (i & 7) & 1  # a null item has an empty payload
            out.append(None if null else item_dec(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        return out

    return pack, unpack


def _str(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(value)
    return value.encode()


def _unstr(raw: bytes) -> str:
    return raw.decode()
