"""Numba: lay events out by key and time, and find each query's window in that layout.

In the sorted layout the events of key ``k`` sit at positions ``gs[k]..ge[k]``,
sorted by (event_ts, created_ts, input position). Every window is then a
contiguous run of positions found by binary search, and every per-function kernel
works on runs. ``_workload.EventIndex`` builds the layout from these kernels: when
``check_grouped`` finds the input already grouped and in order (a table sorted by
key and time), the input is the layout; otherwise ``count_keys`` counts the events
per key, ``scatter`` counting-sorts their positions by key, and ``gather_groups``
fetches their times and sorts the groups that are not in time order.

The kernels that take ``a, b`` (or ``k0, k1``) work on that range only and write
only its part of their outputs, so ``_parallel`` runs them on several threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

INT64_MIN = np.iinfo(np.int64).min
INT64_MAX = np.iinfo(np.int64).max
# The run length the merge sort starts from (each run sorted by insertion).
_SMALL = 24
# Spare counters and slots that left-out events take turns on (``count_keys``,
# ``scatter``).
SPARE = 8
# Unsorted key groups up to this size are sorted by ranking (``sort_groups``).
_RANKED = 32


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


@njit(nogil=True, cache=True)
def last_known_before(codes: np.ndarray, n_keys: int, a: int) -> int:
    """The last position before ``a`` whose code is in 0..n_keys-1, or -1."""
    for i in range(a - 1, -1, -1):
        if 0 <= codes[i] < n_keys:
            return i
    return -1


@njit(nogil=True, cache=True)
def count_keys(
    codes: np.ndarray,
    n_keys: int,
    prev: int,
    hist: np.ndarray,
    cuts: np.ndarray,
    a: int,
    b: int,
) -> int:
    """Events ``a..b`` per key: ``hist[k + SPARE]`` counts code k; dropped events
    (codes outside 0..n_keys-1) land in ``hist[0..SPARE-1]``. Returns how often
    the kept codes drop, ``prev`` being the last kept code before ``a`` (-1: none),
    and notes where in ``cuts`` (as far as it has room: one entry is scratch).

    No branch depends on the data (in a shuffled input a third of the events may
    be dropped at random), and the spare counters take turns: one shared counter
    would chain each dropped event's increment to the previous one's."""
    descents = 0
    room = len(cuts) - 1
    for i in range(a, b):
        k = codes[i]
        kept = (k >= 0) & (k < n_keys)
        hist[k + SPARE if kept else i & (SPARE - 1)] += 1
        drop = kept & (k < prev)
        cuts[min(descents, room)] = i
        descents += drop
        prev = k if kept else prev
    return descents


@njit(nogil=True, cache=True)
def check_grouped(
    codes: np.ndarray,
    ets: np.ndarray,
    cts: np.ndarray,
    n_keys: int,
    before: int,
    first: np.ndarray,
    end: np.ndarray,
    a: int,
    b: int,
) -> bool:
    """For codes that never drop (``count_keys``): whether every key's events in
    ``a..b`` follow one another, with no dropped event between them, in (event_ts,
    created_ts) order; this part's events of key k then sit at ``first[k]..end[k]``
    (``first == end``: none; each part has its own arrays, zeroed). ``before`` is
    the last kept event ahead of ``a`` (-1: none), so that parts of one input
    agree at their seams. If so for the whole input, it is the sorted layout as it
    stands."""
    prev, pos, pe, pc = -1, -2, 0, 0
    if before >= 0:
        prev, pos, pe, pc = codes[before], before, ets[before], cts[before]
    for i in range(a, b):
        k = codes[i]
        if not (0 <= k < n_keys):
            continue
        e, c = ets[i], cts[i]
        if k < prev or (k == prev and (i != pos + 1 or e < pe or (e == pe and c < pc))):
            return False
        if first[k] == end[k]:
            first[k] = i
        end[k] = i + 1
        prev, pos, pe, pc = k, i, e, c
    return True


@njit(nogil=True, cache=True)
def scatter(codes: np.ndarray, k0: int, k1: int, fill: np.ndarray, order: np.ndarray) -> None:
    """Counting-sort the input positions of the events of codes ``k0..k1`` into
    their key groups, in input order: ``fill[k + SPARE]`` is the next free
    position of key k, ``fill[0..SPARE-1]`` spare slots past the groups that the
    other events overwrite, taking turns (no branch on the key: in a shuffled
    input that branch is a coin toss). ``gather_groups`` then fetches the times.

    Threads split the keys, not the events: each reads every event but writes
    only its own stretch of the layout. Split by events, two threads would write
    the two halves of every key group, a few bytes apart, and the cache lines
    would bounce between the cores on every event.
    """
    for i in range(len(codes)):
        _place(codes, i, k0, k1, fill, order)


@njit(nogil=True, cache=True, inline="always")
def _place(
    codes: np.ndarray, i: int, k0: int, k1: int, fill: np.ndarray, order: np.ndarray
) -> None:
    """Event ``i`` into its key's next place when its code is in ``k0..k1``; other
    events go to one of ``SPARE`` scratch slots (written, never read), which keeps
    the loop free of a data-dependent branch."""
    k = codes[i]
    mine = (k >= k0) & (k < k1)
    slot = k + SPARE if mine else i & (SPARE - 1)
    f = fill[slot]
    order[f] = i
    fill[slot] = f + mine


@njit(nogil=True, cache=True)
def scatter_runs(
    codes: np.ndarray, runs: np.ndarray, k0: int, k1: int, fill: np.ndarray, order: np.ndarray
) -> None:
    """``scatter`` for an input in a few runs of ascending codes (``runs``: their
    starts, then the end; daily partitions each sorted by key): in each run the
    events of codes ``k0..k1`` lie between two binary searches, so each thread
    reads only its own share of the input instead of all of it."""
    n_keys = len(fill) - SPARE
    for r in range(len(runs) - 1):
        lo = _first_code_at_least(codes, n_keys, runs[r], runs[r + 1], k0)
        hi = _first_code_at_least(codes, n_keys, lo, runs[r + 1], k1)
        for i in range(lo, hi):
            _place(codes, i, k0, k1, fill, order)


@njit(nogil=True, cache=True)
def _first_code_at_least(codes: np.ndarray, n_keys: int, a: int, b: int, target: int) -> int:
    """In ``a..b``, where the kept codes ascend (dropped ones, outside 0..n_keys-1,
    may sit anywhere): a position with every kept code before it below
    ``target`` and every kept code from it on at least ``target``."""
    lo, hi = a, b
    while lo < hi:
        mid = (lo + hi) >> 1
        j = mid
        while j < hi and not (0 <= codes[j] < n_keys):
            j += 1
        if j < hi and codes[j] < target:
            lo = j + 1
        else:
            hi = mid  # mid..j-1 are dropped: cutting at mid is as good as at j
    return lo


@njit(nogil=True, cache=True)
def gather_groups(
    starts: np.ndarray,
    e_ts: np.ndarray,
    c_ts: np.ndarray,
    same: bool,
    order: np.ndarray,
    s_ets: np.ndarray,
    s_cts: np.ndarray,
    x: np.ndarray,
    s_x: np.ndarray,
    k0: int,
    k1: int,
) -> None:
    """For key groups ``k0..k1`` of ``scatter``'s positions: fetch their times,
    sort the groups not in time order (``sort_groups``), then fetch ``x`` (a
    value column, or empty) in the layout's order. One visit per group, while
    its entries are in cache; a scatter of the times themselves would add a
    second random write per event. ``same``: created_ts is event_ts, and
    ``s_cts`` is ``s_ets``."""
    for k in range(k0, k1):
        for i in range(starts[k], starts[k + 1]):
            p = order[i]
            s_ets[i] = e_ts[p]
            if not same:
                s_cts[i] = c_ts[p]
    sort_groups(starts, s_ets, s_cts, order, same, k0, k1)
    if len(x):
        for i in range(starts[k0], starts[k1]):
            s_x[i] = x[order[i]]


@njit(nogil=True, cache=True)
def sort_groups(
    starts: np.ndarray,
    s_ets: np.ndarray,
    s_cts: np.ndarray,
    order: np.ndarray,
    same: bool,
    k0: int,
    k1: int,
) -> int:
    """Sort key groups ``k0..k1`` (``starts[k]..starts[k+1]``) by (event_ts,
    created_ts), stably: ``scatter`` leaves each group in input order, so ties
    stay in input position order. Groups already in order are left alone. Returns
    how many were sorted. ``same``: ``s_cts`` is ``s_ets``.

    A group of at most ``_RANKED`` events is sorted by ranking: each event's place
    is the number of events before it in that order, counted without a branch on
    the data (an insertion sort of a shuffled group mispredicts about once per
    move). Larger groups get a merge sort.
    """
    te = np.empty(_RANKED, np.int64)
    tc = np.empty(_RANKED, np.int64)
    tp = np.empty(_RANKED, np.int64)
    tmp = np.empty((3, 0), np.int64)
    n_sorted = 0
    for k in range(k0, k1):
        s, e = starts[k], starts[k + 1]
        in_order = True
        for i in range(s + 1, e):
            a, b = s_ets[i - 1], s_ets[i]
            in_order &= (a < b) | ((a == b) & (same or s_cts[i - 1] <= s_cts[i]))
        if in_order:
            continue
        n_sorted += 1
        n = e - s
        if n > _RANKED:
            if tmp.shape[1] < n:
                tmp = np.empty((3, n), np.int64)
            _merge_sort(s_ets, s_cts, order, s, e, tmp)
            continue
        # Padded to 8, 16 or 32 entries of +inf: the counting loops then have a
        # fixed length and vectorise.
        width = 8 if n <= 8 else (16 if n <= 16 else _RANKED)
        for i in range(width):
            te[i] = s_ets[s + i] if i < n else INT64_MAX
        for i in range(n):
            tp[i] = order[s + i]
        if same:
            for i in range(n):
                v = te[i]
                rank = 0
                for j in range(width):
                    rank += (te[j] < v) | ((te[j] == v) & (j < i))
                s_ets[s + rank] = v
                order[s + rank] = tp[i]
            continue
        for i in range(width):
            tc[i] = s_cts[s + i] if i < n else INT64_MAX
        for i in range(n):
            v, c = te[i], tc[i]
            rank = 0
            for j in range(width):
                rank += (te[j] < v) | ((te[j] == v) & ((tc[j] < c) | ((tc[j] == c) & (j < i))))
            s_ets[s + rank] = v
            s_cts[s + rank] = c
            order[s + rank] = tp[i]
    return n_sorted


@njit(nogil=True, cache=True)
def gather(src: np.ndarray, order: np.ndarray, out: np.ndarray, a: int, b: int) -> None:
    """``out[i] = src[order[i]]`` for i in ``a..b``: a value column in the layout."""
    for i in range(a, b):
        out[i] = src[order[i]]


@njit(nogil=True, cache=True)
def sort_queries(
    keys: np.ndarray,
    ts: np.ndarray,
    n_keys: int,
    starts: np.ndarray,
    order: np.ndarray,
    slot_keys: np.ndarray,
    slot_ts: np.ndarray,
) -> None:
    """Stable counting sort of query positions by key, so the kernels walk the
    event layout in order instead of jumping around it.

    Fills ``order`` (the query at each slot), the slots' keys and times, and
    ``starts`` (``n_keys + 3`` entries, the last one scratch): the queries of key
    ``k`` are slots ``starts[k + 1]..starts[k + 2]``; bucket 0 holds the unmatched.
    """
    starts[:] = 0
    for q in range(len(keys)):
        k = keys[q]
        starts[(k + 1 if 0 <= k < n_keys else 0) + 2] += 1
    for b in range(1, n_keys + 3):
        starts[b] += starts[b - 1]
    # starts[b + 1] is bucket b's next free slot; once all are placed, it is where
    # bucket b + 1 starts.
    for q in range(len(keys)):
        k = keys[q]
        b = (k + 1 if 0 <= k < n_keys else 0) + 1
        f = starts[b]
        order[f] = q
        slot_keys[f] = k
        slot_ts[f] = ts[q]
        starts[b] = f + 1


@njit(nogil=True, cache=True)
def group_prefix_max(
    gs: np.ndarray, ge: np.ndarray, values: np.ndarray, out: np.ndarray, k0: int, k1: int
) -> None:
    """Running max of ``values`` restarted at each group ``gs[k]..ge[k]``, for keys
    ``k0..k1`` (non-decreasing per group); positions outside groups are not written."""
    for k in range(k0, k1):
        m = INT64_MIN
        for i in range(gs[k], ge[k]):
            if values[i] > m:
                m = values[i]
            out[i] = m


@njit(cache=True, inline="always")
def _upper(arr: np.ndarray, lo: int, hi: int, t: int) -> int:
    """First position in [lo, hi) with ``arr[pos] > t`` (``arr`` non-decreasing), else hi."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if arr[mid] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(nogil=True, cache=True)
def window_bounds(
    query_keys: np.ndarray,
    query_ts: np.ndarray,
    gs: np.ndarray,
    ge: np.ndarray,
    s_ets: np.ndarray,
    s_pmx: np.ndarray,
    window: int,
    hop: int,
    as_of: bool,
    out: np.ndarray,
    a: int,
    b: int,
) -> None:
    """For queries ``a..b``, the window's positions in the sorted layout and its
    effective time, as rows ``out[0..3]`` = ``(lo, mid, hi, t)``.

    Give the queries grouped by key (slot order): the searches then read the
    layout front to back, and the bounds come out in that same order.

    Events ``lo..hi-1`` have ``t - window < event_ts <= t`` (``window <= 0``:
    lifetime; ``hop > 0`` floors t first). With ``as_of``, every event in
    ``lo..mid-1`` is known by ``t`` (created_ts <= t) and the events in ``mid..hi-1``
    must be checked one by one; without it ``mid == hi``. ``s_pmx`` is the per-group
    running max of created_ts, which is what makes ``mid`` a binary search: before
    the first position where it passes ``t``, nothing is late.
    """
    n_keys = len(gs)
    for q in range(a, b):
        t = query_ts[q]
        if hop > 0:
            t = (t // hop) * hop  # floor division, also for instants before 1970
        k = query_keys[q]
        lw, m, h = 0, 0, 0
        if 0 <= k < n_keys:
            lw, m, h = window_span(gs[k], ge[k], s_ets, s_pmx, t, window, as_of)
        out[0, q] = lw
        out[1, q] = m
        out[2, q] = h
        out[3, q] = t


@njit(cache=True, inline="always")
def window_span(
    s: int, e: int, s_ets: np.ndarray, s_pmx: np.ndarray, t: int, window: int, as_of: bool
) -> tuple[int, int, int]:
    """``(lo, mid, hi)`` of one window over the group ``s..e`` (see ``window_bounds``)."""
    h = _upper(s_ets, s, e, t)
    lw = s if window <= 0 else _upper(s_ets, s, h, t - window)
    m = h
    if as_of:
        m = min(max(_upper(s_pmx, s, h, t), lw), h)
    return lw, m, h


@njit(nogil=True, cache=True)
def zero_where_not(values: np.ndarray, ok: np.ndarray) -> None:
    """``values[i] = 0`` where ``ok[i]`` is False (numpy's masked assignment takes
    ~10x longer on a scattered mask)."""
    for i in range(len(values)):
        if not ok[i]:
            values[i] = 0
