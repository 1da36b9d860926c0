"""Integer join keys -> dense codes, for the point-in-time kernels.

The spine's distinct keys, sorted, get codes 0..n-1 (their rank). Ids are often
near-consecutive, so a plain array indexed by ``key - base`` is the table when the
keys are dense enough; otherwise an open-addressing hash table. Either is about one
memory access per key, cheaper than a binary search or a Polars join, and ``code_of``
lets a kernel look keys up inline instead of materialising an array of codes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit


def frozen(array: np.ndarray, dtype: type = np.int64) -> np.ndarray:
    """``array`` as a read-only contiguous array of ``dtype``, a view where possible.

    Numba compiles one specialisation per array type, and writability is part of
    the type. Arrays from Polars are often read-only views, so every kernel input
    is made read-only: one compiled (and cached) version instead of two.
    """
    out: np.ndarray = np.ascontiguousarray(array, dtype=dtype)
    if out.flags.writeable:
        out = out.view()
        out.setflags(write=False)
    return out


class KeyTable(NamedTuple):
    """Integer key -> dense code. ``direct``: ``codes[key - base]``, used when the
    keys are dense enough for a plain array; otherwise an open-addressing hash
    table (``slots`` holds keys, ``codes`` their codes, -1 = empty slot)."""

    direct: bool
    base: int
    last: int
    shift: int
    slots: np.ndarray
    codes: np.ndarray


def key_table(sorted_keys: np.ndarray) -> KeyTable:
    """A lookup table for distinct int64 keys, sorted ascending; code = rank."""
    n = int(sorted_keys.size)
    if n and int(sorted_keys[-1]) - int(sorted_keys[0]) < 4 * n + 1024:
        # Ids are often near-consecutive: an array indexed by key is the cheapest
        # table, and feature rows stored in key order then read it sequentially.
        base, last = int(sorted_keys[0]), int(sorted_keys[-1])
        codes = np.full(last - base + 1, -1, dtype=np.int64)
        codes[sorted_keys - base] = np.arange(n, dtype=np.int64)
        return KeyTable(True, base, last, 0, frozen(np.empty(0, dtype=np.int64)), frozen(codes))
    bits = 2
    while (1 << bits) < 2 * n:
        bits += 1
    slots, codes = _fill_hash(frozen(sorted_keys), bits)
    return KeyTable(False, 0, 0, 64 - bits, frozen(slots), frozen(codes))


@njit(cache=True, inline="always")
def _hash(key: int, shift: int) -> np.int64:
    # Fibonacci hashing: multiply by 2^64 / golden ratio and keep the top bits,
    # which depend on every bit of the key (ids are often consecutive).
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(shift))


@njit(cache=True)
def _fill_hash(sorted_keys: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    size = 1 << bits
    mask = size - 1
    slots = np.zeros(size, dtype=np.int64)
    codes = np.full(size, -1, dtype=np.int64)
    for code in range(sorted_keys.size):
        h = _hash(sorted_keys[code], 64 - bits)
        while codes[h] >= 0:
            h = (h + 1) & mask
        slots[h] = sorted_keys[code]
        codes[h] = code
    return slots, codes


@njit(cache=True, inline="always")
def code_of(
    key: int, direct: bool, base: int, last: int, shift: int, slots: np.ndarray, codes: np.ndarray
) -> int:
    """The code of one key in a key table (its fields one by one: Numba takes
    arrays and scalars more readily than a NamedTuple of them), or -1."""
    if direct:
        return codes[key - base] if base <= key <= last else -1
    mask = codes.size - 1
    h = _hash(key, shift)
    while codes[h] >= 0:
        if slots[h] == key:
            return codes[h]
        h = (h + 1) & mask
    return -1


@njit(cache=True)
def _lookup(
    keys: np.ndarray,
    valid: np.ndarray,
    direct: bool,
    base: int,
    last: int,
    shift: int,
    slots: np.ndarray,
    codes: np.ndarray,
) -> np.ndarray:
    """The code of each key (-1: not in the table, or ``valid[i] == 0`` when
    ``valid`` is not empty)."""
    out = np.full(keys.size, -1, dtype=np.int64)
    check_valid = valid.size > 0
    for i in range(keys.size):
        if not (check_valid and valid[i] == 0):
            out[i] = code_of(keys[i], direct, base, last, shift, slots, codes)
    return out


def lookup(keys: np.ndarray, *, valid: np.ndarray, table: KeyTable) -> np.ndarray:
    """The code of each int64 key in ``table`` (-1: absent, or ``valid[i] == 0``
    when ``valid`` is not empty)."""
    return _lookup(frozen(keys), frozen(valid, np.uint8), *table)
