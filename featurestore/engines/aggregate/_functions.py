"""Numba: one loop over the queries per aggregation function.

Each query's window is the run ``lo..hi-1`` of the sorted layout (see
``_layout.window_bounds``). Bounds come in slot order (queries grouped by key, so
the event arrays are read front to back); the result of slot i lands at the
query's own index ``order[i]``, so nothing needs un-permuting afterwards. The run
``lo..mid-1`` is used whole, through O(1) or O(log n) structures; the tail
``mid..hi-1`` (non-empty only with as_of_known_time) is visited event by event,
keeping those with created_ts <= t.

Float sums never use prefix sums: ``P[hi] - P[lo]`` loses everything when earlier
events are large. Runs of at most ``direct_max`` events are summed directly, in
(event_ts, created_ts, position) order, which is bit-identical to the reference;
longer runs add O(log n) nodes of a tree of partial sums, each node summed in
order, so they agree with direct summation within 1e-9 relative unless the
window's own values cancel. Integers use prefix sums, exact modulo 2^64.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from featurestore.engines.aggregate._layout import _upper


@njit(cache=True)
def count_valid(
    lo: np.ndarray,
    mid: np.ndarray,
    hi: np.ndarray,
    teff: np.ndarray,
    order: np.ndarray,
    prefix: np.ndarray,
    valid: np.ndarray,
    cts: np.ndarray,
) -> np.ndarray:
    out = np.empty(len(lo), np.int64)
    for i in range(len(order)):
        q = order[i]
        c = prefix[mid[i]] - prefix[lo[i]]
        for j in range(mid[i], hi[i]):
            if valid[j] and cts[j] <= teff[i]:
                c += 1
        out[q] = c
    return out


@njit(cache=True)
def sum_int(
    lo: np.ndarray,
    mid: np.ndarray,
    hi: np.ndarray,
    teff: np.ndarray,
    order: np.ndarray,
    prefix: np.ndarray,
    x: np.ndarray,
    valid: np.ndarray,
    cts: np.ndarray,
) -> np.ndarray:
    out = np.empty(len(lo), np.int64)
    for i in range(len(order)):
        q = order[i]
        s = prefix[mid[i]] - prefix[lo[i]]  # int64 arithmetic wraps: exact mod 2^64
        for j in range(mid[i], hi[i]):
            if valid[j] and cts[j] <= teff[i]:
                s += x[j]
        out[q] = s
    return out


@njit(cache=True)
def build_sum_tree(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    size = 1
    while size < len(x):
        size *= 2
    tree = np.zeros(2 * size)
    for i in range(len(x)):
        if valid[i]:
            tree[size + i] = x[i]
    for i in range(size - 1, 0, -1):
        tree[i] = tree[2 * i] + tree[2 * i + 1]
    return tree


@njit(cache=True, inline="always")
def _tree_sum(tree: np.ndarray, lo: int, hi: int) -> float:
    size = len(tree) // 2
    left = 0.0
    right = 0.0
    lo += size
    hi += size
    while lo < hi:
        if lo & 1:
            left += tree[lo]
            lo += 1
        if hi & 1:
            hi -= 1
            right = tree[hi] + right
        lo >>= 1
        hi >>= 1
    return left + right


@njit(cache=True)
def sum_float(
    lo: np.ndarray,
    mid: np.ndarray,
    hi: np.ndarray,
    teff: np.ndarray,
    order: np.ndarray,
    x: np.ndarray,
    valid: np.ndarray,
    cts: np.ndarray,
    tree: np.ndarray,
    direct_max: int,
) -> np.ndarray:
    out = np.empty(len(lo))
    for i in range(len(order)):
        q = order[i]
        if mid[i] - lo[i] <= direct_max:
            s = 0.0
            for j in range(lo[i], mid[i]):
                if valid[j]:
                    s += x[j]
        else:
            s = _tree_sum(tree, lo[i], mid[i])
        for j in range(mid[i], hi[i]):
            if valid[j] and cts[j] <= teff[i]:
                s += x[j]
        out[q] = s
    return out


@njit(cache=True)
def _chan(
    na: float, ma: float, qa: float, nb: float, mb: float, qb: float
) -> tuple[float, float, float]:
    """Merge two (n, mean, M2) moments (Chan, Golub and LeVeque)."""
    if na == 0:
        return nb, mb, qb
    if nb == 0:
        return na, ma, qa
    n = na + nb
    d = mb - ma
    return n, ma + d * (nb / n), qa + qb + d * d * (na * nb / n)


@njit(cache=True)
def build_moment_tree(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows (n, mean, M2) of a segment tree, leaves at ``size + i``."""
    size = 1
    while size < len(x):
        size *= 2
    tree = np.zeros((2 * size, 3))
    for i in range(len(x)):
        if valid[i]:
            tree[size + i, 0] = 1.0
            tree[size + i, 1] = x[i]
    for i in range(size - 1, 0, -1):
        a, b = tree[2 * i], tree[2 * i + 1]
        tree[i, 0], tree[i, 1], tree[i, 2] = _chan(a[0], a[1], a[2], b[0], b[1], b[2])
    return tree


@njit(cache=True)
def stddev_moments(
    lo: np.ndarray,
    mid: np.ndarray,
    hi: np.ndarray,
    teff: np.ndarray,
    order: np.ndarray,
    x: np.ndarray,
    valid: np.ndarray,
    cts: np.ndarray,
    tree: np.ndarray,
    direct_max: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per query (mean, M2) of the window's values; the count comes from count_valid."""
    nq = len(lo)
    means = np.zeros(nq)
    m2s = np.zeros(nq)
    size = len(tree) // 2
    for i in range(len(order)):
        q = order[i]
        t = teff[i]
        if mid[i] - lo[i] <= direct_max:
            # Two passes, as the reference does: the sum in order, then the squared
            # deviations from the mean in order.
            n = 0
            s = 0.0
            for j in range(lo[i], hi[i]):
                if valid[j] and (j < mid[i] or cts[j] <= t):
                    s += x[j]
                    n += 1
            if n == 0:
                continue
            mean = s / n
            m2 = 0.0
            for j in range(lo[i], hi[i]):
                if valid[j] and (j < mid[i] or cts[j] <= t):
                    d = x[j] - mean
                    m2 += d * d
            means[q] = mean
            m2s[q] = m2
            continue
        ln, lm, lq = 0.0, 0.0, 0.0
        rn, rm, rq = 0.0, 0.0, 0.0
        a = lo[i] + size
        b = mid[i] + size
        while a < b:
            if a & 1:
                ln, lm, lq = _chan(ln, lm, lq, tree[a, 0], tree[a, 1], tree[a, 2])
                a += 1
            if b & 1:
                b -= 1
                rn, rm, rq = _chan(tree[b, 0], tree[b, 1], tree[b, 2], rn, rm, rq)
            a >>= 1
            b >>= 1
        n2, mean, m2 = _chan(ln, lm, lq, rn, rm, rq)
        for j in range(mid[i], hi[i]):
            if valid[j] and cts[j] <= t:
                n2, mean, m2 = _chan(n2, mean, m2, 1.0, x[j], 0.0)
        means[q] = mean
        m2s[q] = m2
    return means, m2s


@njit(cache=True, inline="always")
def _pick(a: Any, b: Any, is_max: bool) -> Any:
    """The better of two values, skipping NaN (a no-op test for integers)."""
    if a != a:
        return b
    if b != b:
        return a
    if is_max:
        return a if a >= b else b
    return a if a <= b else b


@njit(cache=True)
def build_best_tree(x: np.ndarray, valid: np.ndarray, is_max: bool, neutral: Any) -> np.ndarray:
    size = 1
    while size < len(x):
        size *= 2
    tree = np.full(2 * size, neutral)
    for i in range(len(x)):
        if valid[i]:
            tree[size + i] = x[i]
    for i in range(size - 1, 0, -1):
        tree[i] = _pick(tree[2 * i], tree[2 * i + 1], is_max)
    return tree


@njit(cache=True)
def best(
    lo: np.ndarray,
    mid: np.ndarray,
    hi: np.ndarray,
    teff: np.ndarray,
    order: np.ndarray,
    x: np.ndarray,
    valid: np.ndarray,
    cts: np.ndarray,
    tree: np.ndarray,
    direct_max: int,
    is_max: bool,
    neutral: Any,
) -> np.ndarray:
    """Min or max per query, NaN skipped; ``neutral`` (NaN, or the dtype's extreme)
    stands for "nothing yet" and is returned for windows without values."""
    out = np.full(len(lo), neutral)
    for i in range(len(order)):
        q = order[i]
        acc = neutral
        if mid[i] - lo[i] <= direct_max:
            for j in range(lo[i], mid[i]):
                if valid[j]:
                    acc = _pick(acc, x[j], is_max)
        else:
            acc = _tree_best(tree, lo[i], mid[i], acc, is_max)
        for j in range(mid[i], hi[i]):
            if valid[j] and cts[j] <= teff[i]:
                acc = _pick(acc, x[j], is_max)
        out[q] = acc
    return out


# Columns of ``window_stats``' ``need``: what a window's specs read besides the count.
NEED_SUM, NEED_MIN, NEED_MAX = range(3)


@njit(nogil=True, cache=True)
def window_stats(
    a: int,
    b: int,
    slots: np.ndarray,
    order: np.ndarray,
    slot_keys: np.ndarray,
    slot_ts: np.ndarray,
    gs: np.ndarray,
    ge: np.ndarray,
    ets: np.ndarray,
    pmx: np.ndarray,
    cts: np.ndarray,
    as_of: bool,
    x: np.ndarray,
    xb: np.ndarray,
    valid: np.ndarray,
    windows: np.ndarray,
    need: np.ndarray,
    direct_max: int,
    sum_tree: np.ndarray,
    int_prefix: np.ndarray,
    low_tree: np.ndarray,
    high_tree: np.ndarray,
    valid_prefix: np.ndarray,
    have_trees: bool,
    neutral_min: Any,
    neutral_max: Any,
    n_out: np.ndarray,
    total_out: np.ndarray,
    low_out: np.ndarray,
    high_out: np.ndarray,
    late: np.ndarray,
) -> int:
    """count, sum, min and max of every window of each query slot in one visit:
    the slot's key group is found once, and its windows share the reads.

    Slots ``a..b``, or ``slots[a:b]`` when ``slots`` is not empty, with the
    queries' order, keys and times in slot order (``Workload``); ``gs``/``ge``,
    ``ets``, ``pmx`` (created_ts running max, read with ``as_of``) and ``cts`` are
    the sorted layout (``EventIndex``). ``x`` holds the values for sums, ``xb`` for
    min/max (``Values.ordered``, which also gives the neutral start values);
    ``valid`` is empty when every value is. ``windows[w] = (width, hop)`` and
    ``need[w]`` flags ``NEED_*``. Results land at each query's own index in row w
    of ``n_out``, ``total_out``, ``low_out``, ``high_out`` (min/max 0 when the
    window has no values).

    Runs of at most ``direct_max`` events are read one by one in layout order, as
    the per-function kernels do; a longer one reads the prefix sums and trees
    (those the windows need, the others empty; ``_sorted`` builds them). Without
    them (``have_trees`` False) such a slot is listed in ``late[a:]`` and skipped:
    returns how many were, for a second call with the trees.

    Arrays come one by one, not in tuples: Numba reference-counts arrays taken
    out of a tuple, atomically, and with several threads on the same arrays that
    made this loop three times slower.
    """
    every = len(valid) == 0
    n_keys = len(gs)
    zero = np.zeros(1, x.dtype)[0]
    zero_b = np.zeros(1, xb.dtype)[0]
    n_late = 0
    for r in range(a, b):
        i = slots[r] if len(slots) else r
        q = order[i]
        k = slot_keys[i]
        s, e = 0, 0
        if 0 <= k < n_keys:
            s, e = gs[k], ge[k]
        h, top, t_prev, w_prev = 0, 0, 0, 0
        for w in range(len(windows)):
            width, hop = windows[w, 0], windows[w, 1]
            t = slot_ts[i] if hop <= 0 else (slot_ts[i] // hop) * hop
            if w == 0 or t != t_prev:
                h = _upper(ets, s, e, t)
                top, t_prev = h, t
            # At the same t, a wider window starts no later than a narrower one, so
            # its search can stop at that start (windows come by width).
            lw = s
            if width > 0:
                lw = _upper(ets, s, top if width >= w_prev else h, t - width)
                top, w_prev = lw, width
            m = h
            if as_of:
                m = min(max(_upper(pmx, s, h, t), lw), h)
            f_sum, f_min, f_max = need[w, NEED_SUM], need[w, NEED_MIN], need[w, NEED_MAX]
            c, tot, lo_v, hi_v = 0, zero, neutral_min, neutral_max
            start = lw
            if m - lw > direct_max:
                if have_trees:
                    c = m - lw if every else valid_prefix[m] - valid_prefix[lw]
                    if f_sum and x.dtype.kind == "f":
                        tot = _tree_sum(sum_tree, lw, m)
                    elif f_sum:
                        tot = int_prefix[m] - int_prefix[lw]  # int64 wraps: exact
                    if f_min:
                        lo_v = _tree_best(low_tree, lw, m, lo_v, False)
                    if f_max:
                        hi_v = _tree_best(high_tree, lw, m, hi_v, True)
                elif every and not (f_sum or f_min or f_max):
                    c = m - lw
                else:
                    late[a + n_late] = i
                    n_late += 1
                    break
                start = m
            # The run lw..m-1 directly (unless done above), then the events of
            # m..h-1 that are known by t, in position order.
            for j in range(start, h):
                if (every or valid[j]) and (j < m or cts[j] <= t):
                    c += 1
                    if f_sum:
                        tot += x[j]
                    if f_min:
                        lo_v = _pick(lo_v, xb[j], False)
                    if f_max:
                        hi_v = _pick(hi_v, xb[j], True)
            n_out[w, q] = c
            if f_sum:
                total_out[w, q] = tot
            if f_min:
                low_out[w, q] = lo_v if c > 0 else zero_b
            if f_max:
                high_out[w, q] = hi_v if c > 0 else zero_b
    return n_late


@njit(cache=True, inline="always")
def _tree_best(tree: np.ndarray, lo: int, hi: int, acc: Any, is_max: bool) -> Any:
    """``acc`` picked with the min (or max) of leaves ``lo..hi-1`` of a best tree."""
    size = len(tree) // 2
    a = lo + size
    b = hi + size
    while a < b:
        if a & 1:
            acc = _pick(acc, tree[a], is_max)
            a += 1
        if b & 1:
            b -= 1
            acc = _pick(acc, tree[b], is_max)
        a >>= 1
        b >>= 1
    return acc


@njit(cache=True)
def valid_neighbours(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``nxt[i]``: first valid position >= i (or n); ``prv[i]``: last valid < i (or -1)."""
    n = len(valid)
    nxt = np.empty(n + 1, np.int64)
    prv = np.empty(n + 1, np.int64)
    nxt[n] = n
    for i in range(n - 1, -1, -1):
        nxt[i] = i if valid[i] else nxt[i + 1]
    prv[0] = -1
    for i in range(1, n + 1):
        prv[i] = i - 1 if valid[i - 1] else prv[i - 1]
    return nxt, prv


@njit(cache=True)
def edge_positions(
    lo: np.ndarray,
    mid: np.ndarray,
    hi: np.ndarray,
    teff: np.ndarray,
    order: np.ndarray,
    valid: np.ndarray,
    cts: np.ndarray,
    nxt: np.ndarray,
    prv: np.ndarray,
    last: bool,
) -> np.ndarray:
    """Position of the first (or last) non-null event of each window, or -1.

    Positions run in (event_ts, created_ts) order with each run of exact ties in
    value order (``_sorted.SortedColumn._edge_layout``), so ties go to the smallest
    value for ``first`` and the largest for ``last``.
    """
    out = np.full(len(lo), -1, np.int64)
    for i in range(len(order)):
        q = order[i]
        t = teff[i]
        if not last:
            j = nxt[lo[i]]
            if j < mid[i]:
                out[q] = j
                continue
            for j in range(mid[i], hi[i]):
                if valid[j] and cts[j] <= t:
                    out[q] = j
                    break
        else:
            for j in range(hi[i] - 1, mid[i] - 1, -1):
                if valid[j] and cts[j] <= t:
                    out[q] = j
                    break
            if out[q] < 0 and prv[mid[i]] >= lo[i]:
                out[q] = prv[mid[i]]
    return out


@njit(cache=True)
def previous_same(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """``prev[i]``: the last position before i with the same code (or -1)."""
    last = np.full(n_codes, -1, np.int64)
    prev = np.full(len(codes), -1, np.int64)
    for i in range(len(codes)):
        c = codes[i]
        if c >= 0:
            prev[i] = last[c]
            last[c] = i
    return prev


@njit(cache=True)
def count_distinct(
    lo: np.ndarray,
    mid: np.ndarray,
    hi: np.ndarray,
    teff: np.ndarray,
    order: np.ndarray,
    codes: np.ndarray,
    prev: np.ndarray,
    cts: np.ndarray,
) -> np.ndarray:
    """Distinct codes (>= 0) per window in O((n + q) log n).

    Queries are visited in order of ``mid`` (a counting sort); a Fenwick tree marks,
    for each code, only its latest position before ``mid``. The distinct codes of
    ``lo..mid-1`` are then the marks at positions >= lo.
    """
    n, nq = len(codes), len(lo)
    bucket = np.zeros(n + 2, np.int64)
    for q in range(nq):
        bucket[mid[q] + 1] += 1
    for i in range(n + 1):
        bucket[i + 1] += bucket[i]
    by_mid = np.empty(nq, np.int64)
    for q in range(nq):
        by_mid[bucket[mid[q]]] = q
        bucket[mid[q]] += 1
    fenwick = np.zeros(n + 1, np.int64)
    out = np.zeros(nq, np.int64)
    p = 0
    for r in by_mid:
        while p < mid[r]:
            if codes[p] >= 0:
                i = p + 1
                while i <= n:
                    fenwick[i] += 1
                    i += i & -i
                if prev[p] >= 0:
                    i = int(prev[p]) + 1
                    while i <= n:
                        fenwick[i] -= 1
                        i += i & -i
            p += 1
        c = 0
        i = mid[r]
        while i > 0:
            c += int(fenwick[i])
            i -= i & -i
        i = lo[r]
        while i > 0:
            c -= int(fenwick[i])
            i -= i & -i
        t = teff[r]
        for j in range(mid[r], hi[r]):
            if codes[j] < 0 or cts[j] > t:
                continue
            # New unless an earlier included event of the window has the same code:
            # walk back along the same-code chain while still inside the window.
            seen = False
            k = prev[j]
            while k >= lo[r]:
                if k < mid[r] or cts[k] <= t:
                    seen = True
                    break
                k = prev[k]
            if not seen:
                c += 1
        out[order[r]] = c
    return out
