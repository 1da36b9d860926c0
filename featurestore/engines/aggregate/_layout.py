"""Numba: lay events out by key and time, and find each query's window in that layout.

After ``group_and_sort`` the events of key ``k`` sit at positions
``starts[k]..starts[k+1]`` of ``order``, sorted by (event_ts, created_ts, input
position). Every window is then a contiguous run of positions found by binary
search, and every per-function kernel works on runs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

INT64_MIN = np.iinfo(np.int64).min
# Unsorted groups up to this size get an insertion sort; it is also the run length
# the merge sort starts from.
_SMALL = 24


@njit(cache=True)
def _before(e1: int, c1: int, p1: int, e2: int, c2: int, p2: int) -> bool:
    """(e1, c1, p1) strictly precedes (e2, c2, p2): event_ts, created_ts, position."""
    if e1 != e2:
        return e1 < e2
    if c1 != c2:
        return c1 < c2
    return p1 < p2


@njit(cache=True)
def _insertion_sort(ev: np.ndarray, cr: np.ndarray, pos: np.ndarray, s: int, e: int) -> None:
    for i in range(s + 1, e):
        te, tc, tp = ev[i], cr[i], pos[i]
        j = i - 1
        while j >= s and _before(te, tc, tp, ev[j], cr[j], pos[j]):
            ev[j + 1] = ev[j]
            cr[j + 1] = cr[j]
            pos[j + 1] = pos[j]
            j -= 1
        ev[j + 1] = te
        cr[j + 1] = tc
        pos[j + 1] = tp


@njit(cache=True)
def _merge_sort(
    ev: np.ndarray, cr: np.ndarray, pos: np.ndarray, s: int, e: int, tmp: np.ndarray
) -> None:
    # Bottom-up: insertion-sorted runs, then merges through a scratch buffer
    # (``tmp``: 3 rows, at least e - s columns). Our own sort because Numba's
    # np.sort/argsort take seconds to compile and sort one key, not three.
    for a in range(s, e, _SMALL):
        _insertion_sort(ev, cr, pos, a, min(a + _SMALL, e))
    width = _SMALL
    while width < e - s:
        for a in range(s, e, 2 * width):
            m = min(a + width, e)
            b = min(a + 2 * width, e)
            if m >= b or not _before(ev[m], cr[m], pos[m], ev[m - 1], cr[m - 1], pos[m - 1]):
                continue  # already in order across the seam
            i, j, k = a, m, 0
            while i < m and j < b:
                if _before(ev[j], cr[j], pos[j], ev[i], cr[i], pos[i]):
                    tmp[0, k], tmp[1, k], tmp[2, k] = ev[j], cr[j], pos[j]
                    j += 1
                else:
                    tmp[0, k], tmp[1, k], tmp[2, k] = ev[i], cr[i], pos[i]
                    i += 1
                k += 1
            while i < m:
                tmp[0, k], tmp[1, k], tmp[2, k] = ev[i], cr[i], pos[i]
                i += 1
                k += 1
            # Whatever is left of the right run is already in place.
            for t in range(k):
                ev[a + t], cr[a + t], pos[a + t] = tmp[0, t], tmp[1, t], tmp[2, t]
        width *= 2


@njit(cache=True)
def group_and_sort(
    keys: np.ndarray, ets: np.ndarray, cts: np.ndarray, n_keys: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Stable counting sort of the events by key (keys outside 0..n_keys-1 are
    dropped), then a sort of each key group that is not already in time order.

    Returns ``(order, starts, sorted_event_ts, sorted_created_ts, n_sorted_groups)``:
    ``order[i]`` is the input position of the event at sorted position ``i``.
    """
    starts = np.zeros(n_keys + 1, np.int64)
    for i in range(len(keys)):
        k = keys[i]
        if 0 <= k < n_keys:
            starts[k + 1] += 1
    for k in range(n_keys):
        starts[k + 1] += starts[k]
    fill = starts[:-1].copy()
    n = starts[n_keys]
    order = np.empty(n, np.int64)
    s_ets = np.empty(n, np.int64)
    s_cts = np.empty(n, np.int64)
    # Scatter the times with the positions: the sort below then reads contiguous
    # memory instead of chasing positions back into the input.
    for i in range(len(keys)):
        k = keys[i]
        if 0 <= k < n_keys:
            f = fill[k]
            order[f] = i
            s_ets[f] = ets[i]
            s_cts[f] = cts[i]
            fill[k] = f + 1
    tmp = np.empty((3, 0), np.int64)
    n_sorted = 0
    for k in range(n_keys):
        s, e = starts[k], starts[k + 1]
        in_order = True
        for i in range(s + 1, e):
            if _before(s_ets[i], s_cts[i], order[i], s_ets[i - 1], s_cts[i - 1], order[i - 1]):
                in_order = False
                break
        if in_order:
            continue
        n_sorted += 1
        if e - s <= _SMALL:
            _insertion_sort(s_ets, s_cts, order, s, e)
        else:
            if tmp.shape[1] < e - s:
                tmp = np.empty((3, e - s), np.int64)
            _merge_sort(s_ets, s_cts, order, s, e, tmp)
    return order, starts, s_ets, s_cts, n_sorted


@njit(cache=True)
def sort_queries(keys: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable counting sort of query positions by key, so the kernels walk the
    event layout in order instead of jumping around it.

    Returns ``(order, starts)``: the queries of key ``k`` are
    ``order[starts[k + 1]:starts[k + 2]]``; bucket 0 holds the unmatched ones.
    """
    starts = np.zeros(n_keys + 2, np.int64)
    for q in range(len(keys)):
        k = keys[q]
        starts[(k + 1 if 0 <= k < n_keys else 0) + 1] += 1
    for b in range(n_keys + 1):
        starts[b + 1] += starts[b]
    fill = starts.copy()
    order = np.empty(len(keys), np.int64)
    for q in range(len(keys)):
        k = keys[q]
        b = k + 1 if 0 <= k < n_keys else 0
        order[fill[b]] = q
        fill[b] += 1
    return order, starts


@njit(cache=True)
def group_prefix_max(starts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Running max of ``values`` restarted at each group (non-decreasing per group)."""
    out = np.empty_like(values)
    for k in range(len(starts) - 1):
        m = INT64_MIN
        for i in range(starts[k], starts[k + 1]):
            if values[i] > m:
                m = values[i]
            out[i] = m
    return out


@njit(cache=True)
def _upper(arr: np.ndarray, lo: int, hi: int, t: int) -> int:
    """First position in [lo, hi) with ``arr[pos] > t`` (``arr`` non-decreasing), else hi."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if arr[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True)
def window_bounds(
    query_keys: np.ndarray,
    query_ts: np.ndarray,
    starts: np.ndarray,
    s_ets: np.ndarray,
    s_pmx: np.ndarray,
    window: int,
    hop: int,
    as_of: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per query, the window's positions in the sorted layout and its effective time.

    Give the queries grouped by key (slot order): the searches then read the
    layout front to back, and the bounds come out in that same order.

    Returns ``(lo, mid, hi, t)``: events ``lo..hi-1`` have ``t - window < event_ts
    <= t`` (``window <= 0``: lifetime; ``hop > 0`` floors t first). With ``as_of``,
    every event in ``lo..mid-1`` is known by ``t`` (created_ts <= t) and the events in
    ``mid..hi-1`` must be checked one by one; without it ``mid == hi``. ``s_pmx`` is
    the per-group running max of created_ts, which is what makes ``mid`` a binary
    search: before the first position where it passes ``t``, nothing is late.
    """
    nq = len(query_keys)
    lo = np.zeros(nq, np.int64)
    mid = np.zeros(nq, np.int64)
    hi = np.zeros(nq, np.int64)
    teff = np.empty(nq, np.int64)
    n_keys = len(starts) - 1
    for q in range(nq):
        t = query_ts[q]
        if hop > 0:
            t = (t // hop) * hop  # floor division, also for instants before 1970
        teff[q] = t
        k = query_keys[q]
        if k < 0 or k >= n_keys:
            continue
        s, e = starts[k], starts[k + 1]
        h = _upper(s_ets, s, e, t)
        lw = s if window <= 0 else _upper(s_ets, s, h, t - window)
        m = h
        if as_of:
            m = min(max(_upper(s_pmx, s, h, t), lw), h)
        lo[q] = lw
        mid[q] = m
        hi[q] = h
    return lo, mid, hi, teff
