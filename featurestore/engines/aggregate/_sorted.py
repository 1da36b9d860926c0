"""The sorted path: events grouped by key and time, each window a run of positions.

Built for any workload: O(n) to lay the events out (a counting sort by key, then
a sort of only the key groups not already in time order: ``_workload.EventIndex``)
and O(log n) per query and window after that, however many queries share a key.
``_functions`` holds the per-function loops; this module feeds them and caches what
specs share (counts, sums, trees) per value column.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from featurestore.engines.aggregate import _functions as fn
from featurestore.engines.aggregate._layout import window_bounds
from featurestore.engines.aggregate._ties import break_ties, tied_runs
from featurestore.engines.aggregate._workload import Values, Workload
from featurestore.engines.aggregate.spec import WindowSpec

_NO_TREE = np.zeros(2)
_NO_MOMENT_TREE = np.zeros((2, 3))


def bounds(work: Workload, spec: WindowSpec) -> tuple[np.ndarray, ...]:
    """``(lo, mid, hi, t)`` per query slot (see ``_layout.window_bounds``), cached."""
    key = (spec.window_us or 0, spec.hop_us or 0)
    cache = work.cache
    if ("bounds", key) not in cache:
        index = work.index
        pmx = index.created_prefix_max() if work.as_of else index.cts
        cache["bounds", key] = window_bounds(
            work.slot_keys, work.slot_ts, index.starts, index.ets, pmx, key[0], key[1], work.as_of
        )
    return cache["bounds", key]  # type: ignore[no-any-return]


class SortedColumn:
    """A value column in the sorted layout, with helpers built on first use."""

    def __init__(self, work: Workload, values: Values) -> None:
        index = work.index
        self.work, self.values, self.index = work, values, index
        self.x = values.x[index.order]
        self.valid = (
            np.ones(len(index.order), bool) if values.all_valid else values.valid[index.order]
        )
        self._cache: dict[Any, Any] = {}

    def cached(self, name: Any, build: Any) -> Any:
        if name not in self._cache:
            self._cache[name] = build()
        return self._cache[name]

    def prefix(self, name: str) -> np.ndarray:
        def build() -> np.ndarray:
            if name == "valid" and self.values.all_valid:
                return np.arange(len(self.valid) + 1, dtype=np.int64)
            src = self.valid if name == "valid" else np.where(self.valid, self.x, 0)
            out = np.zeros(len(src) + 1, np.int64)
            np.cumsum(src, dtype=np.int64, out=out[1:])  # int64 wraps: exact mod 2^64
            return out

        return self.cached(("prefix", name), build)  # type: ignore[no-any-return]

    def raw(self, spec: WindowSpec, direct_max: int) -> dict[str, np.ndarray]:
        """The spec's partial result per query (fields as in ``state``), or
        ``{"pos": ...}`` (input positions) for first/last and ``{"count": ...}``
        for count_distinct."""
        f = spec.function
        lo, mid, hi, t = bounds(self.work, spec)
        order, cts, ok = self.work.query_order, self.index.cts, self.valid
        wkey = (spec.window_us, spec.hop_us)
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
        perm = index.order
        same = tied_runs(index.ets, index.cts, cuts=index.starts)
        if same is not None:
            moved = break_ties(same, lambda at: self.values.rank_of(index.order[at]))
            perm, ok = index.order[moved], ok[moved]
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
