"""The tie rule of ``first``/``last``: among events tied on (event_ts, created_ts),
``first`` takes the smallest value and ``last`` the largest (SEMANTICS: Windowed
aggregations).

Input order differs between paths (Delta storage order for training and
materialization, Kafka arrival for the stream, file order for a brute force), so a
tie broken by position would give each path its own answer; breaking it by value
gives every path the same one.

Values are ordered as Polars sorts them: numbers by value with NaN after every
number (and -0.0 just before 0.0, which Polars leaves tied: any fixed choice
would do), strings by code point, False before True. ``value_order`` maps a value
column to int64 keys in that order. ``tied_runs`` and ``break_ties`` reorder only
the runs of tied events of a sorted layout, so a column without ties pays one
vectorised comparison and never ranks its values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from featurestore.errors import DataError

_SIGN = np.uint64(1 << 63)
_LOW = np.int64(0x7FFF_FFFF_FFFF_FFFF)
_NAN_KEY = np.iinfo(np.int64).max


def value_order(values: Any, valid: Any = None) -> np.ndarray:
    """int64 keys that order like the values (see the module doc); nulls
    (``valid`` False) get arbitrary keys, as first/last skip them anyway."""
    v = np.asarray(values)
    kind = v.dtype.kind
    if kind == "f":
        bits = v.astype(np.float64).view(np.int64)
        # IEEE totalOrder as a signed integer: flip the magnitude of negatives.
        key = np.where(bits < 0, bits ^ _LOW, bits)
        key[np.isnan(v)] = _NAN_KEY
        return key
    if kind == "u" and v.dtype.itemsize == 8:
        return (v ^ _SIGN).view(np.int64)
    if kind in "iub":
        return v.astype(np.int64)
    if kind in "mM":
        return v.view(np.int64).copy()
    ok = np.ones(len(v), bool) if valid is None else np.asarray(valid, bool)
    key = np.full(len(v), -1, np.int64)
    try:
        # Strings: np.unique sorts Python str by code point, as Polars sorts UTF-8.
        _, key[ok] = np.unique(v[ok], return_inverse=True)
    except TypeError as exc:
        raise DataError(
            "first/last cannot order these values to break a tie",
            obj="aggregation first/last",
            field="values",
            value=str(v.dtype),
            hint="Pass numbers, bools, strings or temporal values as int64",
        ) from exc
    return key


def tied_runs(*sorted_keys: np.ndarray, cuts: np.ndarray | None = None) -> np.ndarray | None:
    """``same[i]``: position ``i + 1`` equals position ``i`` on every key (arrays
    sorted together), or None when no two neighbours tie. ``cuts`` are positions
    that start a new group whatever the keys say."""
    n = len(sorted_keys[0])
    if n < 2:
        return None
    same = np.ones(n - 1, bool)
    for k in sorted_keys:
        same &= k[1:] == k[:-1]
    if cuts is not None:
        inner = cuts[(cuts > 0) & (cuts < n)]
        same[inner - 1] = False
    return same if same.any() else None


def break_ties(same: np.ndarray, rank: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """A permutation ``p`` of ``0..n-1`` (n = len(same) + 1) that orders each run of
    tied positions by ``rank(positions)`` (stable for equal ranks), leaving every
    other position in place: position ``i`` of the new order is old ``p[i]``."""
    pairs = np.flatnonzero(same)  # i ties with i + 1
    idx = np.union1d(pairs, pairs + 1)  # every tied position, ascending
    starts = np.ones(len(idx), bool)
    starts[1:] = ~same[idx[1:] - 1]  # a run goes on while a position ties the one before
    run_of = np.cumsum(starts)
    perm = np.arange(len(same) + 1, dtype=np.int64)
    perm[idx] = idx[np.lexsort((np.asarray(rank(idx), np.int64), run_of))]
    return perm
