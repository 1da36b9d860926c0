"""Numba: windowed aggregates by one pass over the events, in input order.

For a typical training spine (a few rows per entity) every event meets only a
handful of queries of its own key, so instead of sorting the events into key
groups (a random scatter of every event: the dominant cost of the sorted path),
each event is added straight into the accumulators of the queries of its key whose
window holds it. The cost is O(n + runs x keys + pairs x windows), where pairs is
sum over keys of (events of the key) x (queries of the key) and runs the number of
ascending runs of key codes in the input (the offline store's partitions are each
sorted by key); ``kernels`` picks this path only when both are small.

Accumulators are per query slot (queries grouped by key) and per distinct
(window, hop). Integer sums wrap (exact); float sums and Welford moments follow
input order, so they match the time-ordered reference within 1e-9 relative
unless the window's values cancel. first/last compare (event_ts, created_ts) and
break exact ties by value rank (``_ties``), as the sorted path does; the values
are ranked only if some window holds such a tie.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from featurestore.engines.aggregate._functions import _pick

# Columns of the ``need`` matrix: which accumulators a (window, hop) needs.
NEED_SUM, NEED_MIN, NEED_MAX, NEED_MOMENTS, NEED_FIRST, NEED_LAST = range(6)


@njit(cache=True)
def scan(
    codes: np.ndarray,
    run_starts: np.ndarray,
    ets: np.ndarray,
    cts: np.ndarray,
    x: np.ndarray,
    valid: np.ndarray,
    rank: np.ndarray,
    only: np.ndarray,
    qstart: np.ndarray,
    qts: np.ndarray,
    windows: np.ndarray,
    need: np.ndarray,
    as_of: bool,
    neutral_min: Any,
    neutral_max: Any,
) -> tuple[Any, ...]:
    """Accumulate every event into the query slots of its key.

    ``run_starts`` cuts the events into runs of ascending key codes (see
    ``run_starts``). The runs are merged by key, so each key's slots are finished
    before the next key's: accumulators stream through the cache once instead of
    once per run. Within a key, events still go in input order. With more runs
    than keys the merge would cost more than it saves: events go in input order.

    ``qstart[k + 1]..qstart[k + 2]`` are the slots of key ``k`` (bucket 0 holds
    queries that match nothing); ``qts[j, w]`` is slot j's time for window w, hop
    already applied; ``windows[w] <= 0`` is a lifetime window. ``rank`` orders the
    values where first/last tie on (event_ts, created_ts). Without it (empty) such a
    tie only flags the key in ``tied`` (bool per key), and the caller ranks the
    values of those keys and runs their first/last again, with ``only`` (bool per
    key; empty: all keys) marking them: most logs have few such ties, so most
    values are never ranked. Returns ``(n, total, low, high, mean, m2, first, last,
    tied)``, each but ``tied`` ``[slots, windows]`` (a 1x1 placeholder where no
    window needs it); first/last hold event positions.
    """
    n_slots, n_win = qts.shape
    shape = (n_slots, n_win)
    none = (1, 1)
    any_need = np.zeros(6, np.bool_)
    for w in range(n_win):
        for f in range(6):
            any_need[f] |= need[w, f]
    n = np.zeros(shape, np.int64)
    total = np.zeros(shape if any_need[NEED_SUM] else none, x.dtype)
    low = np.full(shape if any_need[NEED_MIN] else none, neutral_min)
    high = np.full(shape if any_need[NEED_MAX] else none, neutral_max)
    mean = np.zeros(shape if any_need[NEED_MOMENTS] else none)
    m2 = np.zeros(shape if any_need[NEED_MOMENTS] else none)
    first = np.full(shape if any_need[NEED_FIRST] else none, -1, np.int64)
    last = np.full(shape if any_need[NEED_LAST] else none, -1, np.int64)
    n_win = qts.shape[1]
    ranked = len(rank) > 0
    tied = np.zeros(len(qstart) - 2, np.bool_)
    for e in _visit_order(codes, run_starts, valid, qstart, only):
        te, ce, v = ets[e], cts[e], x[e]
        k = codes[e]
        for j in range(qstart[k + 1], qstart[k + 2]):
            for w in range(n_win):
                t = qts[j, w]
                if te > t or (windows[w] > 0 and te <= t - windows[w]) or (as_of and ce > t):
                    continue
                c = n[j, w] + 1
                n[j, w] = c
                if need[w, NEED_SUM]:
                    total[j, w] += v
                if need[w, NEED_MIN]:
                    low[j, w] = _pick(low[j, w], v, False)
                if need[w, NEED_MAX]:
                    high[j, w] = _pick(high[j, w], v, True)
                if need[w, NEED_MOMENTS]:
                    d = v - mean[j, w]
                    mean[j, w] += d / c
                    m2[j, w] += d * (v - mean[j, w])
                if need[w, NEED_FIRST]:
                    p = first[j, w]
                    if p < 0:
                        first[j, w] = e
                    elif te == ets[p] and ce == cts[p]:
                        if not ranked:
                            tied[k] = True
                        elif rank[e] < rank[p]:
                            first[j, w] = e
                    elif te < ets[p] or (te == ets[p] and ce < cts[p]):
                        first[j, w] = e
                if need[w, NEED_LAST]:
                    p = last[j, w]
                    if p < 0:
                        last[j, w] = e
                    elif te == ets[p] and ce == cts[p]:
                        if not ranked:
                            tied[k] = True
                        elif rank[e] > rank[p]:
                            last[j, w] = e
                    elif te > ets[p] or (te == ets[p] and ce > cts[p]):
                        last[j, w] = e
    return n, total, low, high, mean, m2, first, last, tied


@njit(cache=True)
def _visit_order(
    codes: np.ndarray,
    run_starts: np.ndarray,
    valid: np.ndarray,
    qstart: np.ndarray,
    only: np.ndarray,
) -> np.ndarray:
    """The events that meet some query (of a key in ``only``, unless it is empty),
    runs merged by key (input order within a key); with more runs than keys,
    merging costs more than it saves: input order."""
    n_keys = len(qstart) - 2
    every = len(only) == 0
    out = np.empty(len(codes), np.int64)
    m = 0
    if len(run_starts) > n_keys + 2:
        for e in range(len(codes)):
            k = codes[e]
            if (
                0 <= k < n_keys
                and valid[e]
                and qstart[k + 1] < qstart[k + 2]
                and (every or only[k])
            ):
                out[m] = e
                m += 1
        return out[:m]
    ptr = run_starts[:-1].copy()
    for k in range(n_keys):
        wanted = qstart[k + 1] < qstart[k + 2] and (every or only[k])
        for r in range(len(ptr)):
            e, end = ptr[r], run_starts[r + 1]
            while e < end:
                c = codes[e]
                if k < c < n_keys:
                    break  # the run's next key; codes out of range are dropped events
                if c == k and wanted and valid[e]:
                    out[m] = e
                    m += 1
                e += 1
            ptr[r] = e
    return out[:m]


@njit(cache=True)
def by_query(acc: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``acc[slot, window]`` as ``out[window, query]``: slot j is query ``order[j]``."""
    out = np.empty((acc.shape[1], len(order)), acc.dtype)
    for j in range(len(order)):
        q = order[j]
        for w in range(acc.shape[1]):
            out[w, q] = acc[j, w]
    return out


@njit(cache=True)
def run_starts(codes: np.ndarray, n_keys: int) -> np.ndarray:
    """Where the runs of ascending key codes start, plus the end: one run when the
    events are ordered by key, about n/2 when shuffled. Codes outside 0..n_keys-1
    (dropped events) do not break a run."""
    n_cuts = 2
    prev = -1
    for i in range(len(codes)):
        k = codes[i]
        if 0 <= k < n_keys:
            n_cuts += k < prev
            prev = k
    cuts = np.empty(n_cuts, np.int64)
    cuts[0] = 0
    cuts[-1] = len(codes)
    c = 1
    prev = -1
    for i in range(len(codes)):
        k = codes[i]
        if 0 <= k < n_keys:
            if k < prev:
                cuts[c] = i
                c += 1
            prev = k
    return cuts
