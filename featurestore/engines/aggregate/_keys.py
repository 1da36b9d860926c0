"""Dense codes for a single integer key column, by a hash join done in Numba.

The spine's distinct keys get codes 0..K-1 **in key order**; each event gets its
key's code, or -1 when the spine never asks for that key (the event then drops
out). Null keys (``valid`` False) get -1 on both sides. Key order matters: the
offline store writes each partition sorted by key, and codes that follow the keys
keep such events in code order, so the kernels then walk memory front to back.

Keys in a compact range use a lookup array; others an open-addressing table of
about 2K slots. Either is several times cheaper than a general DataFrame join. The
events' lookups (the large side) run on all threads (``_parallel``) into an array
from Arrow's pool (``_memory``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from featurestore.engines import _memory, _parallel

_MUL1 = np.uint64(0xFF51AFD7ED558CCD)
_MUL2 = np.uint64(0xC4CEB9FE1A85EC53)


def code_int_keys(
    *,
    spine_keys: np.ndarray,
    spine_valid: np.ndarray,
    event_keys: np.ndarray,
    event_valid: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Returns ``(spine_codes, event_codes, n_codes)``; keys are int64 arrays,
    ``valid`` bool arrays, or empty when no key is null."""
    lo, hi = _valid_range(spine_keys, spine_valid)
    # hi - lo wraps negative when the range spans more than 2**63: hash those.
    if hi >= lo and 0 <= hi - lo < 4 * len(spine_keys) + 1024:
        table = _memory.empty(hi - lo + 1, np.int64)
        n_codes = _dense_table(spine_keys, spine_valid, lo, table)

        def dense(keys: np.ndarray, valid: np.ndarray, out: np.ndarray, a: int, b: int) -> None:
            _dense_lookup(keys, valid, table, lo, out, a, b)

        return (
            _lookup(dense, spine_keys, spine_valid),
            _lookup(dense, event_keys, event_valid),
            n_codes,
        )
    slot_key, slot_id, keys_by_id = _hash_build(spine_keys, spine_valid)
    # Ids are in order of first appearance; renumber them in key order.
    code_of_id = np.empty(len(keys_by_id), np.int64)
    code_of_id[np.argsort(keys_by_id, kind="stable")] = np.arange(len(keys_by_id))
    slot_code = np.where(slot_id >= 0, code_of_id[np.maximum(slot_id, 0)], -1)

    def hashed(keys: np.ndarray, valid: np.ndarray, out: np.ndarray, a: int, b: int) -> None:
        _hash_lookup(keys, valid, slot_key, slot_code, out, a, b)

    return (
        _lookup(hashed, spine_keys, spine_valid),
        _lookup(hashed, event_keys, event_valid),
        len(keys_by_id),
    )


def _lookup(kernel: Any, keys: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The codes of ``keys``: ``kernel(keys, valid, out, a, b)`` over all threads."""
    out = _memory.empty(len(keys), np.int64)
    _parallel.run(lambda a, b: kernel(keys, valid, out, a, b), _parallel.cuts(len(keys)))
    return out


@njit(cache=True)
def _valid_range(keys: np.ndarray, valid: np.ndarray) -> tuple[int, int]:
    lo, hi = 0, -1
    every = len(valid) == 0
    for i in range(len(keys)):
        if every or valid[i]:
            if hi < lo:
                lo = hi = keys[i]
            elif keys[i] < lo:
                lo = keys[i]
            elif keys[i] > hi:
                hi = keys[i]
    return lo, hi


@njit(cache=True)
def _dense_table(keys: np.ndarray, valid: np.ndarray, lo: int, table: np.ndarray) -> int:
    """Fill ``table`` (one entry per key from lo) with the codes; returns how many.
    Ids in a compact range (auto-increment ids, mostly): a plain lookup array
    indexed by key - lo; walking it in order numbers the keys in key order."""
    table[:] = -1
    every = len(valid) == 0
    for i in range(len(keys)):
        if every or valid[i]:
            table[keys[i] - lo] = 0
    n_codes = 0
    for j in range(len(table)):
        if table[j] == 0:
            table[j] = n_codes
            n_codes += 1
    return n_codes


@njit(nogil=True, cache=True)
def _dense_lookup(
    keys: np.ndarray,
    valid: np.ndarray,
    table: np.ndarray,
    lo: int,
    out: np.ndarray,
    a: int,
    b: int,
) -> None:
    """Codes of ``keys[a:b]`` into ``out[a:b]`` (-1: null or not in the table)."""
    size = len(table)
    every = len(valid) == 0
    for i in range(a, b):
        # k - lo wraps for keys far below lo: the unsigned compare rejects those too.
        k = keys[i] - lo
        c = table[k] if np.uint64(k) < np.uint64(size) else -1
        out[i] = c if every or valid[i] else -1


@njit(cache=True)
def _slot(key: int, mask: int) -> np.int64:
    # The MurmurHash3 finalizer: sequential ids would otherwise cluster in the table.
    x = np.uint64(key)
    x ^= x >> np.uint64(33)
    x *= _MUL1
    x ^= x >> np.uint64(33)
    x *= _MUL2
    x ^= x >> np.uint64(33)
    return np.int64(x & np.uint64(mask))


@njit(cache=True)
def _hash_build(keys: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-addressing table of the distinct keys: ``(slot_key, slot_id, keys_by_id)``."""
    every = len(valid) == 0
    cap = 2
    while cap < 2 * len(keys):
        cap *= 2
    mask = cap - 1
    slot_key = np.zeros(cap, np.int64)
    slot_id = np.full(cap, -1, np.int64)
    keys_by_id = np.empty(len(keys), np.int64)
    n = 0
    for i in range(len(keys)):
        if not (every or valid[i]):
            continue
        k = keys[i]
        h = _slot(k, mask)
        while slot_id[h] >= 0 and slot_key[h] != k:
            h = (h + 1) & mask
        if slot_id[h] < 0:
            slot_key[h] = k
            slot_id[h] = n
            keys_by_id[n] = k
            n += 1
    return slot_key, slot_id, keys_by_id[:n]


@njit(nogil=True, cache=True)
def _hash_lookup(
    keys: np.ndarray,
    valid: np.ndarray,
    slot_key: np.ndarray,
    slot_code: np.ndarray,
    out: np.ndarray,
    a: int,
    b: int,
) -> None:
    """Codes of ``keys[a:b]`` into ``out[a:b]`` (-1: null or not in the table)."""
    mask = len(slot_key) - 1
    every = len(valid) == 0
    for i in range(a, b):
        out[i] = -1
        if not (every or valid[i]):
            continue
        k = keys[i]
        h = _slot(k, mask)
        while slot_code[h] >= 0:
            if slot_key[h] == k:
                out[i] = slot_code[h]
                break
            h = (h + 1) & mask
