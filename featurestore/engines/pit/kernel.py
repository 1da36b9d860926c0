"""Numba kernels of the point-in-time join: numpy arrays in, numpy arrays out.

The driver (``join.py``) gives each distinct spine key a dense code ``0..n-1``
(``keys.py`` does it for integer keys, inline in the kernel; other keys go through a
Polars join) and hands over int64 microseconds since the epoch, UTC.

The join reads each feature row once, in whatever order the rows come, and never
sorts or groups them. Only the spine is ordered, by (key code, t): it is usually
far smaller than the feature tables, and sorting 1M feature rows alone would cost
more than the whole join (shared/MEASURED.md).

Once the spine is in that order, the spine rows for which a feature row
(key, event_ts=e, created_ts=c) is eligible form one contiguous range: those of its
key with ``e <= t < e + ttl``, and ``c <= t`` under ``as_of_known_time``. SEMANTICS
picks, per spine row, the eligible row that is largest in (event_ts, created_ts,
input position) order. So each feature row is a "keep the maximum" update over a
range of spine rows, applied to a segment tree over the sorted spine rows in
O(log n) nodes, and a final top-down pass carries each node's maximum to the
leaves. Cost: O((F + S) log S) for F feature rows and S spine rows, whatever the
input order; no scan, no per-group sort, no worst case for late created_ts.

Feature rows come in batches that carry their own offset, so a caller can hand a
table over chunk by chunk, without copying it into one array, and in an order
that keeps the spine's working set in cache (see ``join._ViewRows.lanes``).

Both cores: the batches come in lanes, each owning a range of key codes, and the
lanes run at once on threads (the kernel releases the GIL). No lock is needed: the
spine rows of different codes are disjoint ranges of leaves, and an update only
touches tree nodes whose leaves all lie inside its own range, so two lanes never
write the same node. The final top-down pass runs once all lanes are done.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from featurestore.engines import _parallel
from featurestore.engines.pit.keys import KeyTable, code_of, frozen, key_table

INT64_MIN = np.iinfo(np.int64).min
INT64_MAX = np.iinfo(np.int64).max
# Columns of a (event_ts, created_ts, position) triple; the spine uses (t, 0, row).
EV, CR, POS = 0, 1, 2
# Spine groups up to this size are insertion-sorted; beyond it a merge sort wins.
_SMALL_GROUP = 24

# (offset, key codes or int64 keys, event_ts, created_ts, keyed): see ``point_in_time``.
Batch = tuple[int, np.ndarray, np.ndarray, np.ndarray, bool]


@dataclass(frozen=True)
class Lane:
    """Feature rows for the spine keys with codes in ``[first_code, end_code)``.

    Rows of ``batches`` with other codes are skipped, so a lane may be handed whole
    chunks that also hold other lanes' keys (it then reads them only to skip them).
    """

    first_code: int
    end_code: int
    batches: Iterable[Batch]

    @classmethod
    def whole(cls, batches: Iterable[Batch]) -> Lane:
        """One lane for every code."""
        return cls(0, INT64_MAX, batches)


@njit(cache=True, inline="always")
def _less(rows: np.ndarray, i: int, j: int) -> bool:
    """Whether rows[i] comes before rows[j] in (column 0, column 1, column 2) order."""
    if rows[i, 0] != rows[j, 0]:
        return rows[i, 0] < rows[j, 0]
    if rows[i, 1] != rows[j, 1]:
        return rows[i, 1] < rows[j, 1]
    return rows[i, 2] < rows[j, 2]


@njit(cache=True)
def _insertion_sort(rows: np.ndarray, a: int, b: int) -> None:
    for i in range(a + 1, b):
        j = i
        while j > a and _less(rows, j, j - 1):
            for col in range(3):
                rows[j, col], rows[j - 1, col] = rows[j - 1, col], rows[j, col]
            j -= 1


@njit(cache=True)
def _merge_sort(rows: np.ndarray, a: int, b: int, runs: np.ndarray, tmp: np.ndarray) -> None:
    """Natural bottom-up merge sort of rows[a:b]: it merges the sorted runs already
    there, so k runs cost O(n log k). ``runs`` and ``tmp`` are scratch space of at
    least b - a + 1 entries and b - a rows."""
    n_runs = 0
    runs[0] = a
    for i in range(a + 1, b):
        if _less(rows, i, i - 1):
            n_runs += 1
            runs[n_runs] = i
    n_runs += 1
    runs[n_runs] = b
    while n_runs > 1:
        out = 0
        r = 0
        while r < n_runs:
            lo = runs[r]
            if r + 1 == n_runs:
                runs[out] = lo
                out += 1
                break
            mid, hi = runs[r + 1], runs[r + 2]
            i, j, k = lo, mid, 0
            while i < mid and j < hi:
                src = j if _less(rows, j, i) else i
                for col in range(3):
                    tmp[k, col] = rows[src, col]
                if src == j:
                    j += 1
                else:
                    i += 1
                k += 1
            while i < mid:
                for col in range(3):
                    tmp[k, col] = rows[i, col]
                i += 1
                k += 1
            # What is left of the right run is already in place.
            for m in range(k):
                for col in range(3):
                    rows[lo + m, col] = tmp[m, col]
            runs[out] = lo
            out += 1
            r += 2
        runs[out] = b
        n_runs = out


@njit(cache=True)
def group_sort(codes: np.ndarray, rows: np.ndarray, n_codes: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by code (a stable counting sort, O(n)), each group sorted.

    ``rows`` is (n, 3) int64, compared column by column; rows with a negative code
    are dropped. Returns ``starts`` (group c is ``out[starts[c]:starts[c+1]]``) and
    ``out``. Groups already in order, the usual case, are only checked.
    """
    starts = np.zeros(n_codes + 1, dtype=np.int64)
    for i in range(codes.size):
        if codes[i] >= 0:
            starts[codes[i] + 1] += 1
    for c in range(n_codes):
        starts[c + 1] += starts[c]
    out = np.empty((starts[n_codes], 3), dtype=np.int64)
    fill = starts[:-1].copy()
    for i in range(codes.size):
        c = codes[i]
        if c >= 0:
            k = fill[c]
            # Column by column: a row slice would build an array view per row.
            out[k, 0] = rows[i, 0]
            out[k, 1] = rows[i, 1]
            out[k, 2] = rows[i, 2]
            fill[c] = k + 1
    biggest = 0
    for c in range(n_codes):
        if starts[c + 1] - starts[c] > _SMALL_GROUP:
            biggest = max(biggest, starts[c + 1] - starts[c])
    runs = np.empty(biggest + 1, dtype=np.int64)
    tmp = np.empty((biggest, 3), dtype=np.int64)
    for c in range(n_codes):
        a, b = starts[c], starts[c + 1]
        ordered = True
        for i in range(a + 1, b):
            if _less(out, i, i - 1):
                ordered = False
                break
        if ordered:
            continue
        if b - a <= _SMALL_GROUP:
            _insertion_sort(out, a, b)
        else:
            _merge_sort(out, a, b, runs, tmp)
    return starts, out


@njit(cache=True, inline="always")
def _lower_bound(spine: np.ndarray, a: int, b: int, t: int) -> int:
    """First index in [a, b) whose time (column 0, ascending there) is >= t."""
    while a < b:
        mid = (a + b) >> 1
        if spine[mid, 0] < t:
            a = mid + 1
        else:
            b = mid
    return a


@njit(cache=True, inline="always")
def _offer(tree: np.ndarray, node: int, e: int, c: int, p: int) -> None:
    """Keep (e, c, p) at ``node`` if it is larger than what the node holds."""
    if e > tree[node, EV] or (
        e == tree[node, EV]
        and (c > tree[node, CR] or (c == tree[node, CR] and p > tree[node, POS]))
    ):
        tree[node, EV] = e
        tree[node, CR] = c
        tree[node, POS] = p


@njit(cache=True)
def _prepare_spine(
    spine_codes: np.ndarray, spine_ts: np.ndarray, n_codes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Spine rows ordered by (key code, t, row): ``starts`` (code c owns
    ``rows[starts[c]:starts[c+1]]``) and ``rows`` of (t, 0, row). Rows with code -1
    (a null key or a null time) are left out: they never match."""
    rows = np.empty((spine_codes.size, 3), dtype=np.int64)
    for j in range(spine_codes.size):
        rows[j, 0] = spine_ts[j]
        rows[j, 1] = 0
        rows[j, 2] = j
    return group_sort(spine_codes, rows, n_codes)


@njit(cache=True)
def _new_tree(m: int) -> np.ndarray:
    """A segment tree over m sorted spine rows (leaves at ``size + k``). Node k
    holds the best (event_ts, created_ts, position) offered to its whole range;
    (INT64_MIN, INT64_MIN, -1) is below every real row."""
    size = 1
    while size < m:
        size *= 2
    tree = np.empty((2 * size, 3), dtype=np.int64)
    for node in range(2 * size):
        tree[node, EV] = INT64_MIN
        tree[node, CR] = INT64_MIN
        tree[node, POS] = -1
    return tree


@njit(cache=True, nogil=True)
def _offer_rows(
    tree: np.ndarray,
    starts: np.ndarray,
    spine: np.ndarray,
    values: np.ndarray,
    event_ts: np.ndarray,
    created_ts: np.ndarray,
    offset: int,
    first_code: int,
    end_code: int,
    ttl_us: int,
    as_of_known_time: bool,
    keyed: bool,
    direct: bool,
    base: int,
    last: int,
    shift: int,
    slots: np.ndarray,
    codes: np.ndarray,
) -> None:
    """Offer feature rows ``offset + i`` with a key code in ``[first_code, end_code)``
    to the spine rows they are eligible for.

    Row i has ``event_ts[i]``, ``created_ts[i]`` and, in ``values[i]``, either its
    key code (-1: no spine row has its key) or, when ``keyed``, its int64 key, looked
    up here in the table (direct, base, ..., codes) to spare an array of codes.
    ``ttl_us < 0`` means no TTL.
    """
    size = tree.shape[0] // 2
    for i in range(values.size):
        c = code_of(values[i], direct, base, last, shift, slots, codes) if keyed else values[i]
        if c < first_code or c >= end_code:  # -1 (no spine row has the key) included
            continue
        a, b = starts[c], starts[c + 1]
        if a == b:
            continue
        e = event_ts[i]
        cr = created_ts[i]
        # Eligible spine rows: from the first with t >= e (and >= created_ts under
        # as_of_known_time) ...
        first_t = cr if as_of_known_time and cr > e else e
        lo = _lower_bound(spine, a, b, first_t)
        # ... up to, not including, the first with t >= e + ttl (the row is then
        # exactly ttl old or older). Near INT64_MAX, e + ttl would wrap: no bound.
        if ttl_us >= 0 and e <= INT64_MAX - ttl_us:
            hi = _lower_bound(spine, lo, b, e + ttl_us)
        else:
            hi = b
        lo += size
        hi += size
        pos = offset + i
        while lo < hi:
            if lo & 1:
                _offer(tree, lo, e, cr, pos)
                lo += 1
            if hi & 1:
                hi -= 1
                _offer(tree, hi, e, cr, pos)
            lo >>= 1
            hi >>= 1


@njit(cache=True)
def _finish(tree: np.ndarray, spine: np.ndarray, n_spine: int) -> np.ndarray:
    """Per spine row (in spine order), the position chosen, or -1."""
    size = tree.shape[0] // 2
    # Top down, so that each leaf ends with the best row offered to any range
    # containing it.
    for node in range(1, size):
        if tree[node, POS] >= 0:
            _offer(tree, 2 * node, tree[node, EV], tree[node, CR], tree[node, POS])
            _offer(tree, 2 * node + 1, tree[node, EV], tree[node, CR], tree[node, POS])
    out = np.full(n_spine, -1, dtype=np.int64)
    for k in range(spine.shape[0]):
        out[spine[k, 2]] = tree[size + k, POS]
    return out


# Python entry points: they only make the inputs read-only (see ``_frozen``).


def prepare_spine(
    spine_codes: np.ndarray, *, spine_ts: np.ndarray, n_codes: int
) -> tuple[np.ndarray, np.ndarray]:
    """See ``_prepare_spine``."""
    return _prepare_spine(frozen(spine_codes), frozen(spine_ts), n_codes)


def point_in_time(
    lanes: Sequence[Lane],
    *,
    spine_index: tuple[np.ndarray, np.ndarray],
    n_spine: int,
    ttl_us: int,
    as_of_known_time: bool,
    table: KeyTable | None = None,
    row_lanes: Sequence[Iterable[Batch]] = (),
) -> np.ndarray:
    """For each of ``n_spine`` spine rows, the position of the feature row SEMANTICS
    picks, or -1.

    Batches yield feature rows as ``(offset, values, event_ts, created_ts,
    keyed)``: row i of a batch is feature row ``offset + i``, and ``values`` holds
    key codes, or int64 keys to look up in ``table`` when ``keyed``. Batches may
    come in any order and need not be contiguous, which lets the caller hand a
    table over chunk by chunk without copying it into one array, and in an order
    that keeps the spine's working set in cache. Every row must come at least once;
    a row offered twice changes nothing.

    Two kinds of lanes run on the engines' kernel pool (``engines._parallel``: as
    many at once as Polars has threads, the calling thread included):

    - ``lanes`` own disjoint code ranges and share one segment tree (see the module
      docstring); a lane skips rows of codes it does not own.
    - ``row_lanes`` then take rows of any code: the first writes the shared tree,
      each other one a tree of its own, merged into the shared one at the end. They
      suit rows in no key order, which key lanes would each have to read whole.

    ``spine_index`` is what ``prepare_spine`` returned; ``ttl_us < 0`` means no TTL.
    """
    ranges = sorted((lane.first_code, lane.end_code) for lane in lanes)
    for (_, end), (first, _) in itertools.pairwise(ranges):
        if first < end:
            raise ValueError(f"lanes own overlapping key codes: {ranges}")
    starts, spine = frozen(spine_index[0]), frozen(spine_index[1])
    fields = key_table(np.empty(0, dtype=np.int64)) if table is None else table
    tree = _new_tree(spine.shape[0])

    def run(target: np.ndarray, batches: Iterable[Batch], first: int, end: int) -> None:
        for offset, values, event_ts, created_ts, keyed in batches:
            if keyed and table is None:
                raise ValueError("keyed batches need a key table")
            _offer_rows(
                target,
                starts,
                spine,
                frozen(values),
                frozen(event_ts),
                frozen(created_ts),
                offset,
                first,
                end,
                ttl_us,
                as_of_known_time,
                keyed,
                *fields,
            )

    Job = tuple[np.ndarray, Iterable[Batch], int, int]
    key_jobs: list[Job] = [(tree, lane.batches, lane.first_code, lane.end_code) for lane in lanes]
    trees = [tree] + [_new_tree(spine.shape[0]) for _ in row_lanes[1:]]
    row_jobs: list[Job] = [(trees[i], b, 0, INT64_MAX) for i, b in enumerate(row_lanes)]
    for jobs in (key_jobs, row_jobs):
        # Job i is the part (i, i + 1): the first on this thread, the others on the
        # engines' kernel pool.
        def job(i: int, _: int, jobs: list[Job] = jobs) -> None:
            run(*jobs[i])

        _parallel.run(job, np.arange(len(jobs) + 1))
    for other in trees[1:]:
        _merge_tree(tree, other)
    return _finish(tree, spine, n_spine)


@njit(cache=True, nogil=True)
def _merge_tree(tree: np.ndarray, other: np.ndarray) -> None:
    """Keep, at each node of ``tree``, the larger of its row and ``other``'s."""
    for node in range(1, tree.shape[0]):
        if other[node, POS] >= 0:
            _offer(tree, node, other[node, EV], other[node, CR], other[node, POS])


@njit(cache=True)
def _nondecreasing(values: np.ndarray) -> bool:
    # A plain loop: Numba compiles it, not all() over a generator.
    for i in range(1, values.size):  # noqa: SIM110
        if values[i] < values[i - 1]:
            return False
    return True


def is_sorted(values: np.ndarray) -> bool:
    """Whether int64 ``values`` are in non-decreasing order."""
    return bool(_nondecreasing(frozen(values)))
