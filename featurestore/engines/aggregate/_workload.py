"""What both kernel paths read: the coded events and queries (``Workload``), a value
column in a form the Numba loops take (``Values``), and the events' sorted layout
(``EventIndex``, built only when some column takes the sorted path).

``Workload.use_scan`` picks the path for a set of windows (see ``kernels`` for the
two paths and what each costs). This module sits below ``kernels``, ``_scan_driver``
and ``_sorted``, so those read top-down: the drivers take a ``Workload``, and
``kernels`` hands it to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from featurestore.engines.aggregate._layout import group_and_sort, group_prefix_max, sort_queries
from featurestore.engines.aggregate._scan import key_stats
from featurestore.engines.aggregate._ties import value_order
from featurestore.errors import DataError

# Scan while pairs x windows <= SCAN_FACTOR x (events + queries): a scan step
# costs a few cache hits, the sorted path a random scatter per event plus a few
# binary searches per query and window.
SCAN_FACTOR = 8
# ...and while the events are (nearly) ordered by key: runs x keys <= CLUSTERED x
# events. Measured on 1M events / 100k keys: one run (a table sorted by key), the
# scan takes ~30% less time than the sorted path; 30 runs (daily partitions, each
# sorted by key), the two tie; shuffled, the scan takes ~1.7x longer.
CLUSTERED = 1
Strategy = Literal["auto", "scan", "sorted"]
_SIGN = np.uint64(1 << 63)


def int64_array(arr: Any, name: str) -> np.ndarray:
    """``arr`` as a contiguous 1-D int64 array; ``name`` names it in the error."""
    a = np.asarray(arr)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "iu"):
        raise DataError(
            "must be a 1-D integer array",
            obj="aggregate_asof",
            field=name,
            value=f"{a.dtype} array of shape {a.shape}",
            hint="Pass int64 codes or int64 microseconds since the Unix epoch (UTC)",
        )
    return np.ascontiguousarray(a, dtype=np.int64)


class EventIndex:
    """Events grouped by key code and sorted by (event_ts, created_ts, position)."""

    def __init__(self, keys: np.ndarray, ets: np.ndarray, cts: np.ndarray, n_keys: int) -> None:
        self.order, self.starts, self.ets, self.cts, self.n_sorted_groups = group_and_sort(
            keys, ets, cts, n_keys
        )
        self._pmx: np.ndarray | None = None

    def created_prefix_max(self) -> np.ndarray:
        if self._pmx is None:
            self._pmx = group_prefix_max(self.starts, self.cts)
        return self._pmx


class Workload:
    """Coded events and queries, shared by every value column aggregated over them.

    The sorted layout of the events is built only if some column needs it.
    """

    def __init__(
        self,
        *,
        event_keys: Any,
        event_ts: Any,
        created_ts: Any,
        query_keys: Any,
        query_ts: Any,
        n_keys: int,
        as_of_known_time: bool = False,
        strategy: Strategy = "auto",
    ) -> None:
        self.event_keys = int64_array(event_keys, "event_keys")
        self.event_ts = int64_array(event_ts, "event_ts")
        self.created_ts = int64_array(created_ts, "created_ts")
        self.query_keys = int64_array(query_keys, "query_keys")
        self.query_ts = int64_array(query_ts, "query_ts")
        if not len(self.event_keys) == len(self.event_ts) == len(self.created_ts):
            raise DataError(
                "event arrays differ in length",
                obj="aggregate_asof",
                value={
                    "event_keys": len(self.event_keys),
                    "event_ts": len(self.event_ts),
                    "created_ts": len(self.created_ts),
                },
            )
        if len(self.query_keys) != len(self.query_ts):
            raise DataError(
                "query_keys and query_ts differ in length",
                obj="aggregate_asof",
                value=(len(self.query_keys), len(self.query_ts)),
            )
        self.n_keys = n_keys
        self.as_of = bool(as_of_known_time)
        self.strategy = strategy
        # Queries grouped by key (unmatched ones in bucket 0): both paths walk them
        # in this order for locality, and write results at each query's own index.
        self.query_order, self.query_starts = sort_queries(self.query_keys, n_keys)
        self.slot_keys = self.query_keys[self.query_order]
        self.slot_ts = self.query_ts[self.query_order]
        self.cache: dict[Any, Any] = {}
        self._index: EventIndex | None = None
        self._stats: tuple[int, int] | None = None
        self.run_starts = np.zeros(0, np.int64)

    @property
    def n_events(self) -> int:
        return len(self.event_keys)

    @property
    def index(self) -> EventIndex:
        if self._index is None:
            self._index = EventIndex(self.event_keys, self.event_ts, self.created_ts, self.n_keys)
        return self._index

    def pairs_and_runs(self) -> tuple[int, int]:
        """(event, query) pairs of equal key, and runs of ascending key codes."""
        if self._stats is None:
            hist, self.run_starts = key_stats(self.event_keys, self.n_keys)
            pairs = int(hist @ np.diff(self.query_starts[1:]))
            self._stats = (pairs, len(self.run_starts) - 1)
        return self._stats

    def use_scan(self, n_windows: int) -> bool:
        """Whether the scan path should serve ``n_windows`` distinct windows."""
        if self.strategy != "auto":
            return self.strategy == "scan"
        pairs, runs = self.pairs_and_runs()
        # Few (event, query) pairs, and events ordered by key, so that neighbouring
        # events touch neighbouring queries: otherwise the scan's accumulator
        # updates become cache misses and sorting wins.
        few_pairs = pairs * n_windows <= SCAN_FACTOR * (self.n_events + len(self.query_keys))
        return few_pairs and runs * self.n_keys <= CLUSTERED * max(self.n_events, 1)


# Ranks the values at the given input positions, comparable among those positions
# only: what first/last need to break ties, computed for tied events alone.
RankRows = Callable[[np.ndarray], Any]


class Values:
    """A value column in input order, as int64 or float64 the kernels can read.

    ``rank`` orders the values where first/last break ties on (event_ts,
    created_ts): int64 per event, or a ``RankRows`` function; by default the values'
    own order (``_ties``). It is read only where events tie.
    """

    def __init__(
        self, values: Any, valid: Any, n: int, rank: np.ndarray | RankRows | None = None
    ) -> None:
        self.values = None if values is None else np.asarray(values)
        ok = np.ones(n, bool) if valid is None else np.asarray(valid, dtype=bool)
        if (self.values is not None and self.values.shape != (n,)) or ok.shape != (n,):
            raise DataError(
                "values and valid must be 1-D with one entry per event",
                obj="aggregate_asof",
                value={
                    "events": n,
                    "values": getattr(self.values, "shape", None),
                    "valid": ok.shape,
                },
            )
        self.valid = ok
        self.all_valid = bool(ok.all())
        self.dtype = None if self.values is None else self.values.dtype
        self.kind = "" if self.dtype is None else self.dtype.kind
        self.uniques: np.ndarray | None = None
        if self.values is None:
            self.x = np.zeros(n, np.int64)
        elif self.kind == "f":
            self.x = self.values.astype(np.float64, copy=False)
        elif self.kind in "iub":
            self.x = self.values.astype(np.int64, copy=False)
        elif self.kind in "mM":
            self.x = self.values.view(np.int64)
        else:
            # Strings and other objects: rank them, so min/max/count_distinct work on
            # int codes in the values' own order.
            self.uniques, inverse = np.unique(self.values[ok], return_inverse=True)
            self.x = np.full(n, -1, np.int64)
            self.x[ok] = inverse
        self._rank_rows = rank if callable(rank) else None
        self._rank = None if rank is None or callable(rank) else int64_array(rank, "value_rank")
        if self._rank is not None and len(self._rank) != n:
            raise DataError(
                "value_rank must give one rank per event",
                obj="aggregate_asof",
                field="value_rank",
                value={"events": n, "value_rank": len(self._rank)},
            )

    def rank_of(self, rows: np.ndarray) -> np.ndarray:
        """int64 keys of the events at input positions ``rows``, in the order
        first/last break ties by (see ``_ties``); comparable among ``rows`` only."""
        if self._rank is not None:
            return self._rank[rows]
        if self._rank_rows is not None:
            return int64_array(self._rank_rows(rows), "value_rank")
        if self.values is None or self.uniques is not None:
            return self.x[rows]  # no values (never read), or codes in value order
        return value_order(self.values[rows], self.valid[rows])

    def rank(self) -> np.ndarray:
        """``rank_of`` every event."""
        if self._rank is None:
            self._rank = self.rank_of(np.arange(len(self.valid), dtype=np.int64))
        return self._rank

    def ordered(self, x: np.ndarray, is_max: bool) -> tuple[np.ndarray, Any]:
        """``x`` mapped so int64/float64 order is the values' order, and the neutral
        element of min (or max) in that domain."""
        if self.dtype == np.uint64:
            x = (x.view(np.uint64) ^ _SIGN).view(np.int64)
        if x.dtype.kind == "f":
            return x, np.float64(np.nan)
        info = np.iinfo(np.int64)
        return x, np.int64(info.min if is_max else info.max)

    def decode_best(self, best: np.ndarray, ok: np.ndarray) -> np.ndarray:
        best = best.copy()
        best[~ok] = 0
        if self.uniques is not None:
            res = np.empty(len(best), self.uniques.dtype)
            res[ok] = self.uniques[best[ok]]
            return res
        if self.dtype == np.uint64:
            return (best.view(np.uint64) ^ _SIGN) * ok
        if self.kind in "mM" and self.dtype is not None:
            return best.view(self.dtype)
        return best.astype(self.dtype)  # type: ignore[arg-type]

    def gather(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The values at input positions ``pos`` (-1: null), in their own dtype."""
        ok = pos >= 0
        src = self.values if self.values is not None else self.x
        out = (
            np.empty(len(pos), src.dtype)
            if src.dtype.kind == "O"
            else np.zeros(len(pos), src.dtype)
        )
        out[ok] = src[pos[ok]]
        return out, ok
