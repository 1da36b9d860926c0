"""Entity key bytes: a typed, self-delimiting encoding of the join key values.

Each value is a tag byte and a body, so int 1 and string "1" differ and
composite keys cannot run into each other::

    int (any width)   b"i" + 8 bytes big-endian two's complement (b"u" above int64 max)
    string            b"s" + 4-byte big-endian length + UTF-8
    bool              b"b" + 1 byte;  date  b"d" + 4 bytes (days);  datetime  b"t" + 8 bytes (us)

Writes encode whole columns with numpy (``key_block``); reads encode a few values
one by one (``key_part``). Both give the same bytes (a property test checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from itertools import repeat
from typing import Any, cast

import numpy as np

from featurestore._dtypes import INTEGERS
from featurestore.errors import DataError
from featurestore.stores.online.columns import check_int, date_days, datetime_us

_INT64_MIN, _INT64_END, _UINT64_END = -(1 << 63), 1 << 63, 1 << 64
_U64_SIGN = np.uint64(1 << 63)


def _key_int(value: Any) -> bytes:
    v = check_int(value)
    if _INT64_MIN <= v < _INT64_END:
        return b"i" + v.to_bytes(8, "big", signed=True)
    if 0 <= v < _UINT64_END:
        return b"u" + v.to_bytes(8, "big")
    raise OverflowError(value)


def _key_str(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(value)
    raw = value.encode()
    return b"s" + len(raw).to_bytes(4, "big") + raw


def _key_bool(value: Any) -> bytes:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(value)
    return b"b\x01" if value else b"b\x00"


def _key_date(value: Any) -> bytes:
    return b"d" + date_days(value).to_bytes(4, "big", signed=True)


def _key_datetime(value: Any) -> bytes:
    if isinstance(value, datetime) and value.tzinfo is None:
        raise TypeError(value)  # naive: SEMANTICS rejects it
    return b"t" + datetime_us(value).to_bytes(8, "big", signed=True)


KEY_ENCODERS: dict[str, Callable[[Any], bytes]] = {
    **dict.fromkeys(INTEGERS, _key_int),
    "string": _key_str,
    "bool": _key_bool,
    "date": _key_date,
    "datetime": _key_datetime,
}


def key_part(dtype: str, value: Any, *, what: str) -> bytes:
    """The entity bytes of one join key value; ``DataError`` naming ``what`` if invalid."""
    try:
        return KEY_ENCODERS[dtype](value)
    except (TypeError, OverflowError):
        raise DataError(
            f"join key value is not a valid {dtype}",
            field=what,
            value=value,
            hint="Datetime keys must be tz-aware" if dtype == "datetime" else None,
        ) from None


def key_block(dtype: str, arr: np.ndarray) -> np.ndarray:
    """Entity bytes of a fixed-width key column as an (n, width) uint8 matrix."""
    n = len(arr)
    if dtype in INTEGERS:
        out = np.empty((n, 9), dtype=np.uint8)
        if arr.dtype == np.uint64:
            out[:, 0] = np.where(arr >= _U64_SIGN, ord("u"), ord("i"))
            body = arr.astype(">u8")
        else:
            out[:, 0] = ord("i")
            body = arr.astype(">i8")
        out[:, 1:] = body.view(np.uint8).reshape(n, 8)
        return out
    if dtype == "bool":
        out = np.empty((n, 2), dtype=np.uint8)
        out[:, 0] = ord("b")
        out[:, 1] = arr
        return out
    tag, width = (b"d", 4) if dtype == "date" else (b"t", 8)
    out = np.empty((n, 1 + width), dtype=np.uint8)
    out[:, 0] = tag[0]
    out[:, 1:] = arr.astype(f">i{width}").view(np.uint8).reshape(n, width)
    return out


def rows_of(matrix: np.ndarray) -> list[bytes]:
    """Each row of a uint8 matrix as bytes (a void view: no trailing-NUL stripping)."""
    m = np.ascontiguousarray(matrix)
    return cast(list[bytes], m.view(np.dtype((np.void, m.shape[1]))).ravel().tolist())


def join_keys(
    parts: list[np.ndarray | list[bytes]], start: int, stop: int, prefix: bytes, suffix: bytes
) -> list[bytes]:
    """Rows ``start:stop`` of the key columns, joined between ``prefix`` and ``suffix``."""
    n = stop - start
    if n <= 0:
        return []
    if all(isinstance(p, np.ndarray) for p in parts):
        pre = np.frombuffer(prefix, dtype=np.uint8)
        suf = np.frombuffer(suffix, dtype=np.uint8)
        blocks = [
            np.broadcast_to(pre, (n, len(pre))),
            *(cast(np.ndarray, p)[start:stop] for p in parts),
            np.broadcast_to(suf, (n, len(suf))),
        ]
        return rows_of(np.hstack(blocks))
    columns: list[Any] = [repeat(prefix)]
    columns += [
        rows_of(p[start:stop]) if isinstance(p, np.ndarray) else p[start:stop] for p in parts
    ]
    columns.append(repeat(suffix))
    return list(map(b"".join, zip(*columns, strict=False)))  # repeat() is endless
