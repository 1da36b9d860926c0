"""The sorted path: events grouped by key and time, each window a run of positions.

Built for any workload: O(n) to lay the events out (a counting sort by key, then
a sort of only the key groups not already in time order: ``_workload.EventIndex``)
and O(log n) per query and window after that, however many queries share a key.
``_functions`` holds the per-function loops; this module feeds them and caches what
specs share (counts, sums, trees) per value column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from featurestore.engines import _memory, _parallel
from featurestore.engines.aggregate import _functions as fn
from featurestore.engines.aggregate._layout import gather, window_bounds
from featurestore.engines.aggregate._ties import break_ties, tied_runs
from featurestore.engines.aggregate._workload import Values, Workload
from featurestore.engines.aggregate.spec import WindowSpec

_NO_TREE = np.zeros(2)
_NO_MOMENT_TREE = np.zeros((2, 3))
# window_stats: every value is valid (read-only, as real validity arrays are).
_NO_VALID = _memory.readonly(np.zeros(0, np.bool_))
_NO_PREFIX = np.zeros(0, np.int64)


# What the fused ``window_stats`` kernel answers (other functions have a kernel
# each), and which of its accumulators each function reads besides the count.
WINDOW_STATS = frozenset({"count", "sum", "mean", "min", "max"})
_NEEDS = {"sum": fn.NEED_SUM, "mean": fn.NEED_SUM, "min": fn.NEED_MIN, "max": fn.NEED_MAX}
# Query slots per thread below which one thread answers them all (~50 us of work
# per 1,000 slots with three windows: below ~16k a second thread costs more than it
# saves, see ``_parallel.MIN_PART``).
MIN_SLOTS = 1 << 14


def bounds(work: Workload, spec: WindowSpec) -> tuple[np.ndarray, ...]:
    """``(lo, mid, hi, t)`` per query slot (see ``_layout.window_bounds``), cached."""
    key = (spec.window_us or 0, spec.hop_us or 0)
    cache = work.cache
    if ("bounds", key) not in cache:
        index = work.index
        pmx = index.created_prefix_max() if work.as_of else index.cts
        out = np.empty((4, len(work.slot_keys)), np.int64)
        _parallel.run(
            lambda a, b: window_bounds(
                work.slot_keys,
                work.slot_ts,
                index.gs,
                index.ge,
                index.ets,
                pmx,
                key[0],
                key[1],
                work.as_of,
                out,
                a,
                b,
            ),
            _parallel.cuts(len(work.slot_keys), MIN_SLOTS),
        )
        cache["bounds", key] = tuple(out)
    return cache["bounds", key]  # type: ignore[no-any-return]


class SortedColumn:
    """A value column in the sorted layout, with helpers built on first use."""

    def __init__(self, work: Workload, values: Values) -> None:
        # The first column to need the layout has its values fetched along.
        carry = None if values.values is None else values.x
        self.work, self.values, self.index = work, values, work.layout(carry)
        self._cache: dict[Any, Any] = {}

    def cached(self, name: Any, build: Any) -> Any:
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    @property
    def x(self) -> np.ndarray:
        """The values (as ``Values.x``) at the layout's positions."""
        return self.cached("x", lambda: self._in_layout(self.values.x))  # type: ignore[no-any-return]

    @property
    def valid(self) -> np.ndarray:
        """Validity at the layout's positions."""
        return self.cached("valid", lambda: self._in_layout(self.values.valid))  # type: ignore[no-any-return]

    def _in_layout(self, src: np.ndarray) -> np.ndarray:
        if src is self.index.carried_from and self.index.carried is not None:
            return self.index.carried
        order = self.index.order
        if order is None:
            return src
        out = _memory.empty(len(order), src.dtype)
        _parallel.run(lambda a, b: gather(src, order, out, a, b), _parallel.cuts(len(order)))
        return _memory.readonly(out)

    def prefix(self, name: str) -> np.ndarray:
        def build() -> np.ndarray:
            if name == "valid" and self.values.all_valid:
                return np.arange(len(self.valid) + 1, dtype=np.int64)
            src = self.valid if name == "valid" else np.where(self.valid, self.x, 0)
            out = np.zeros(len(src) + 1, np.int64)
            np.cumsum(src, dtype=np.int64, out=out[1:])  # int64 wraps: exact mod 2^64
            return out

        return self.cached(("prefix", name), build)  # type: ignore[no-any-return]

    def window_stats(self, specs: Sequence[WindowSpec], direct_max: int) -> None:
        """Count, sum, min and max of every window of ``specs`` (those of functions
        in ``WINDOW_STATS``) in one fused pass over the queries (``_functions.
        window_stats``); ``raw`` then reads them from the cache."""
        wanted = [s for s in specs if s.function in WINDOW_STATS]
        if not wanted:
            return
        # By width (lifetime last), as window_stats wants them.
        keys = sorted(
            {(s.window_us or 0, s.hop_us or 0) for s in wanted},
            key=lambda wh: (wh[0] <= 0, wh[0], wh[1]),
        )
        row = {key: w for w, key in enumerate(keys)}
        need = np.zeros((len(keys), 3), np.bool_)
        for s in wanted:
            if s.function in _NEEDS:
                need[row[s.window_us or 0, s.hop_us or 0], _NEEDS[s.function]] = True
        stats = _WindowStats(self, np.array(keys, np.int64).reshape(-1, 2), need, direct_max)
        for w, (width, hop) in enumerate(keys):
            wkey = (width or None, hop or None)
            self._cache["n", wkey] = stats.n[w]
            if need[w, fn.NEED_SUM]:
                self._cache["total", wkey] = stats.total[w]
            if need[w, fn.NEED_MIN]:
                self._cache["best", False, wkey] = stats.low[w]
            if need[w, fn.NEED_MAX]:
                self._cache["best", True, wkey] = stats.high[w]

    def raw(self, spec: WindowSpec, direct_max: int) -> dict[str, np.ndarray]:
        """The spec's partial result per query (fields as in ``state``), or
        ``{"pos": ...}`` (input positions) for first/last and ``{"count": ...}``
        for count_distinct."""
        f = spec.function
        wkey = (spec.window_us, spec.hop_us)
        if f in WINDOW_STATS and ("n", wkey) in self._cache:
            n = self._cache["n", wkey]
            if f == "count":
                return {"n": n}
            if f in ("sum", "mean"):
                return {"n": n, "total": self._cache["total", wkey]}
            return {"n": n, "best": self._cache["best", f == "max", wkey]}
        lo, mid, hi, t = bounds(self.work, spec)
        order, cts, ok = self.work.query_order, self.index.cts, self.valid
        n = self.cached(
            ("n", wkey),
            lambda: fn.count_valid(lo, mid, hi, t, order, self.prefix("valid"), ok, cts),
        )
        if f == "count":
            return {"n": n}
        if f == "count_distinct":
            codes, prev = self.cached("distinct", self._distinct_codes)
            return {"count": fn.count_distinct(lo, mid, hi, t, order, codes, prev, cts)}
        large = bool(np.any(mid - lo > direct_max))
        if f in ("sum", "mean"):
            total = self.cached(("total", wkey), lambda: self._total(spec, large, direct_max))
            return {"n": n, "total": total}
        if f == "stddev":
            xf = self.x.astype(np.float64, copy=False)
            tree = (
                self.cached("moments", lambda: fn.build_moment_tree(xf, ok))
                if large
                else _NO_MOMENT_TREE
            )
            mean, m2 = fn.stddev_moments(lo, mid, hi, t, order, xf, ok, cts, tree, direct_max)
            return {"n": n, "mean": mean, "m2": m2}
        if f in ("min", "max"):
            is_max = f == "max"
            x, neutral = self.values.ordered(self.x, is_max)
            tree = (
                self.cached(("best", is_max), lambda: fn.build_best_tree(x, ok, is_max, neutral))
                if large
                else np.full(2, neutral)
            )
            best = fn.best(lo, mid, hi, t, order, x, ok, cts, tree, direct_max, is_max, neutral)
            return {"n": n, "best": best}
        perm, ok, nxt, prv = self.cached("edges", self._edge_layout)
        pos = fn.edge_positions(lo, mid, hi, t, order, ok, cts, nxt, prv, f == "last")
        found = pos >= 0
        pos[found] = perm[pos[found]]  # sorted position -> input position
        return {"pos": pos}

    def _edge_layout(self) -> tuple[np.ndarray, ...]:
        """The layout first/last read: runs of events tied on (key, event_ts,
        created_ts) reordered by value rank (``_ties``), so the run's first valid
        event has the smallest value and its last the largest. Ties share their
        times, so the windows' bounds stay as they are. Returns the input position
        of each sorted position, validity and ``valid_neighbours`` in that layout."""
        index, ok = self.index, self.valid
        perm = index.order if index.order is not None else np.arange(index.size, dtype=np.int64)
        # Groups end where the next one starts, or (input as layout) before events
        # of other keys: ties never run across those cuts.
        cuts = np.union1d(index.gs, index.ge)
        same = tied_runs(index.ets, index.cts, cuts=cuts)
        if same is not None:
            first_perm = perm
            moved = break_ties(same, lambda at: self.values.rank_of(first_perm[at]))
            perm, ok = perm[moved], ok[moved]
        return (perm, ok, *fn.valid_neighbours(ok))

    def _total(self, spec: WindowSpec, large: bool, direct_max: int) -> np.ndarray:
        lo, mid, hi, t = bounds(self.work, spec)
        order, cts, ok = self.work.query_order, self.index.cts, self.valid
        if self.x.dtype.kind != "f":
            return fn.sum_int(lo, mid, hi, t, order, self.prefix("x"), self.x, ok, cts)
        tree = self.cached("sum_tree", lambda: fn.build_sum_tree(self.x, ok)) if large else _NO_TREE
        return fn.sum_float(lo, mid, hi, t, order, self.x, ok, cts, tree, direct_max)

    def _distinct_codes(self) -> tuple[np.ndarray, np.ndarray]:
        if self.values.uniques is not None:
            codes, n_codes = self.x, len(self.values.uniques)
        else:
            # np.unique treats every NaN as one value and -0.0 as 0.0.
            uniq, inverse = np.unique(self.x[self.valid], return_inverse=True)
            codes = np.full(len(self.x), -1, np.int64)
            codes[self.valid] = inverse
            n_codes = len(uniq)
        if not self.values.all_valid:
            codes = np.where(self.valid, codes, -1)
        return codes, fn.previous_same(codes, n_codes)


class _WindowStats:
    """One run of ``_functions.window_stats`` over all query slots: rows ``n``,
    ``total``, ``low``, ``high`` per window, each a result in query order.

    Slots whose window is longer than ``direct_max`` are deferred by the first pass
    and answered by a second one with the trees they need, built only then.
    """

    def __init__(
        self, col: SortedColumn, windows: np.ndarray, need: np.ndarray, direct_max: int
    ) -> None:
        work, index, values = col.work, col.index, col.values
        self.col, self.need = col, need
        nq, n_win = len(work.query_keys), len(windows)
        sums, lows, highs = (bool(need[:, f].any()) for f in range(3))
        x = col.x if sums else _memory.readonly(np.zeros(1, values.x.dtype))
        xb, neutral_min = values.ordered(col.x if lows or highs else x, False)
        _, neutral_max = values.ordered(xb[:0], True)
        self.x, self.xb = x, xb
        self.n = _memory.empty_2d(n_win, nq, np.int64)
        self.total = _memory.empty_2d(n_win, nq, x.dtype) if sums else np.zeros((1, 1), x.dtype)
        self.low = _memory.empty_2d(n_win, nq, xb.dtype) if lows else np.zeros((1, 1), xb.dtype)
        self.high = _memory.empty_2d(n_win, nq, xb.dtype) if highs else np.zeros((1, 1), xb.dtype)
        pmx = index.created_prefix_max() if work.as_of else index.cts
        query = (work.query_order, work.slot_keys, work.slot_ts)
        layout = (index.gs, index.ge, index.ets, pmx, index.cts, work.as_of)
        valid = _NO_VALID if values.all_valid else col.valid
        self.inputs = (*query, *layout, x, xb, valid, windows, need, direct_max)
        self.results = (self.n, self.total, self.low, self.high)
        self.neutral = (neutral_min, neutral_max)
        # Same array types as the trees of the second pass: one compiled kernel.
        none = (np.zeros(0), _NO_PREFIX, np.zeros(0, xb.dtype), np.zeros(0, xb.dtype), _NO_PREFIX)
        late = self._run(np.zeros(0, np.int64), nq, none, False)
        if len(late):
            self._run(late, len(late), self._trees(), True)

    def _run(
        self, slots: np.ndarray, n: int, trees: tuple[np.ndarray, ...], ready: bool
    ) -> np.ndarray:
        late = np.empty(n, np.int64)
        bounds = _parallel.cuts(n, MIN_SLOTS)
        args = (*self.inputs, *trees, ready, *self.neutral, *self.results, late)
        kernel: Any = fn.window_stats  # one flat argument list (see its docstring)
        counts = _parallel.run(lambda a, b: kernel(a, b, slots, *args), bounds)
        return np.concatenate([late[a : a + c] for a, c in zip(bounds[:-1], counts, strict=True)])

    def _trees(self) -> tuple[np.ndarray, ...]:
        """What long windows read instead of their events (``window_stats``)."""
        col, need = self.col, self.need
        ok = col.valid
        sum_tree, int_prefix = np.zeros(0), _NO_PREFIX
        if need[:, fn.NEED_SUM].any():
            if self.x.dtype.kind == "f":
                sum_tree = col.cached("sum_tree", lambda: fn.build_sum_tree(self.x, ok))
            else:
                int_prefix = col.prefix("x")
        low, high = np.zeros(0, self.xb.dtype), np.zeros(0, self.xb.dtype)
        if need[:, fn.NEED_MIN].any():
            low = col.cached(
                ("best", False), lambda: fn.build_best_tree(self.xb, ok, False, self.neutral[0])
            )
        if need[:, fn.NEED_MAX].any():
            high = col.cached(
                ("best", True), lambda: fn.build_best_tree(self.xb, ok, True, self.neutral[1])
            )
        valid_prefix = _NO_PREFIX if col.values.all_valid else col.prefix("valid")
        return sum_tree, int_prefix, low, high, valid_prefix
