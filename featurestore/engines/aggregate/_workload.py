"""What both kernel paths read: the coded events and queries (``Workload``), a value
column in a form the Numba loops take (``Values``), and the events' sorted layout
(``EventIndex``, built only when some column takes the sorted path).

``Workload.use_scan`` picks the path for a set of windows (see ``kernels`` for the
two paths and what each costs). This module sits below ``kernels``, ``_scan_driver``
and ``_sorted``, so those read top-down: the drivers take a ``Workload``, and
``kernels`` hands it to them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from featurestore.engines import _memory, _parallel
from featurestore.engines.aggregate._layout import (
    SPARE,
    check_grouped,
    count_keys,
    gather_groups,
    group_prefix_max,
    last_known_before,
    scatter,
    scatter_runs,
    sort_queries,
    zero_where_not,
)
from featurestore.engines.aggregate._scan import run_starts
from featurestore.engines.aggregate._ties import value_order
from featurestore.errors import DataError

# The scan serves small inputs only: events + queries <= SCAN_MAX_ROWS. It builds
# no layout, so below that it is up to ~10% faster; above, the sorted path wins in
# every layout (it runs on all threads and reads a table sorted by key in place).
# Measured (benchmarks/aggregations.py workload scaled down, 12 features): even at
# 10k events, 2.6x faster at 1M events in a table sorted by key.
SCAN_MAX_ROWS = 8_000
# ...while pairs x windows <= SCAN_FACTOR x (events + queries): a scan step costs a
# few cache hits, the sorted path a scatter per event plus binary searches per
# query and window.
SCAN_FACTOR = 8
# ...and while the events are (nearly) ordered by key: runs x keys <= CLUSTERED x
# events (shuffled, the scan's accumulator updates become cache misses).
CLUSTERED = 1
# Events at the head of each part that key_stats checks first for a grouped input.
_HEAD = 4096
# Up to this many ascending runs of keys (the offline store's daily partitions,
# each sorted by key), each thread of the counting sort searches its keys' share
# of every run instead of reading the whole input (``_layout.scatter_runs``).
FEW_RUNS = 256
Strategy = Literal["auto", "scan", "sorted"]
_SIGN = np.uint64(1 << 63)
_NO_VALUES = _memory.readonly(np.zeros(0, np.int64))


def _same_memory(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two contiguous arrays are views of the same memory."""
    return a.shape == b.shape and a.ctypes.data == b.ctypes.data


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
    return _memory.readonly(np.ascontiguousarray(a, dtype=np.int64))


@dataclass(frozen=True)
class KeyStats:
    """What one pass over the coded events tells (``key_stats``): events per key
    code (``counts``), ascending runs of codes (``runs``), and whether the input
    is already the sorted layout (``grouped``), key k at ``first[k]..end[k]``."""

    counts: np.ndarray
    runs: int
    grouped: bool
    first: np.ndarray
    end: np.ndarray
    # Where the runs start, plus the end, when there are at most FEW_RUNS.
    run_starts: np.ndarray | None = None


def key_stats(work: Workload) -> KeyStats:
    codes, n_keys = work.event_keys, work.n_keys
    bounds = _parallel.cuts(len(codes))
    starts = [int(a) for a in bounds[:-1]]
    before = {a: last_known_before(codes, n_keys, a) for a in starts}
    # A table sorted by key and time is the layout as it stands: then no count is
    # needed. Any other input fails this check within its first few events.
    first, end = _grouped_spans(work, bounds, before)
    if first is not None and end is not None:
        counts = np.subtract(end, first, out=_memory.empty(n_keys, np.int64))
        return KeyStats(counts=counts, runs=1, grouped=True, first=first, end=end)
    hists = {a: _memory.full(n_keys + SPARE, 0, np.int64) for a in starts}
    cuts = {a: np.empty(FEW_RUNS + 1, np.int64) for a in starts}

    def count(a: int, b: int) -> int:
        prev = codes[before[a]] if before[a] >= 0 else -1
        return count_keys(codes, n_keys, prev, hists[a], cuts[a], a, b)  # type: ignore[no-any-return]

    descents = dict(zip(starts, _parallel.run(count, bounds), strict=True))
    counts = hists[0][SPARE:].copy()
    for a in starts[1:]:
        counts += hists[a][SPARE:]
    runs = sum(descents.values()) + 1
    few = None
    if runs <= FEW_RUNS:
        few = np.array([0, *(int(c) for a in starts for c in cuts[a][: descents[a]]), len(codes)])
    return KeyStats(
        counts=counts, runs=runs, grouped=False, first=counts[:0], end=counts[:0], run_starts=few
    )


def _grouped_spans(
    work: Workload, bounds: np.ndarray, before: dict[int, int]
) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """Where each key's events start and end if the input is already grouped and
    in time order (``_layout.check_grouped``), else ``(None, None)``. Each part
    records its own, merged here: a key's events may run across a seam."""
    n_keys = work.n_keys
    # Most inputs that are not grouped show it within their first events: check
    # those first, into scratch arrays, before zeroing arrays for every key.
    head = [(int(a), min(int(a) + _HEAD, int(b))) for a, b in itertools.pairwise(bounds)]
    scratch = np.empty(n_keys, np.int64), np.empty(n_keys, np.int64)
    for a, b in head:
        if not check_grouped(
            work.event_keys, work.event_ts, work.created_ts, n_keys, before[a], *scratch, a, b
        ):
            return None, None
    spans = {
        int(a): (_memory.full(n_keys, 0, np.int64), _memory.full(n_keys, 0, np.int64))
        for a in bounds[:-1]
    }
    ok = _parallel.run(
        lambda a, b: check_grouped(
            work.event_keys, work.event_ts, work.created_ts, n_keys, before[a], *spans[a], a, b
        ),
        bounds,
    )
    if not all(ok):
        return None, None
    first, end = spans[0]
    for a in bounds[1:-1]:
        f, e = spans[int(a)]
        here = f != e  # keys first met in an earlier part keep their start
        np.copyto(first, f, where=here & (first == end))
        np.copyto(end, e, where=here)
    return first, end


class EventIndex:
    """Events grouped by key code and sorted by (event_ts, created_ts, position):
    key k at positions ``gs[k]..ge[k]`` of ``ets``/``cts``; ``order`` maps a
    position to the event's input position, or is None when the input is already
    in that layout (positions are input positions; nothing was copied).

    Built by a parallel counting sort (``_layout.scatter``, each thread for a
    range of keys) and a per-group pass that fetches the times, sorts the groups
    not in time order and fetches one value column (``carry``) on the way.
    """

    def __init__(self, work: Workload, carry: np.ndarray | None = None) -> None:
        stats = work.key_stats()
        self.n_keys = work.n_keys
        self.order: np.ndarray | None
        # A value column fetched into the layout's order while it was built
        # (``carried_from``, the column in input order, and ``carried``).
        self.carried_from: np.ndarray | None = None
        self.carried: np.ndarray | None = None
        if stats.grouped:
            self.order = None
            self.gs, self.ge = stats.first, stats.end
            self.ets, self.cts = work.event_ts, work.created_ts
        else:
            self._scatter(work, stats, carry)
        # Read-only from here on (``_memory.readonly``).
        ro = _memory.readonly
        self.gs, self.ge, self.ets = ro(self.gs), ro(self.ge), ro(self.ets)
        self.cts = self.ets if work.same_times else ro(self.cts)
        self.order = None if self.order is None else ro(self.order)
        self.carried = None if self.carried is None else ro(self.carried)
        self.size = len(self.ets)
        self._pmx: np.ndarray | None = None

    def _scatter(self, work: Workload, stats: KeyStats, carry: np.ndarray | None) -> None:
        """Counting sort by key, each thread for a range of keys, then per group a
        fetch of the times, a sort if not in time order, and a fetch of ``carry``."""
        n_keys, same = work.n_keys, work.same_times
        starts = _memory.empty(n_keys + 1, np.int64)
        starts[0] = 0
        np.cumsum(stats.counts, out=starts[1:])
        m = int(starts[-1])
        self.gs, self.ge = starts[:-1], starts[1:]
        parts = self.key_parts()
        # Past the groups, SPARE spare slots per thread (a cache line), one line
        # per thread.
        spare = {int(k0): m + SPARE * p for p, k0 in enumerate(parts[:-1])}
        order = _memory.empty(m + SPARE * len(spare), np.int64)
        self.order = order[:m]
        self.ets = _memory.empty(m, np.int64)
        self.cts = self.ets if same else _memory.empty(m, np.int64)
        x = _NO_VALUES if carry is None else carry
        s_x = _memory.empty(m, x.dtype) if len(x) else np.zeros(0, x.dtype)
        codes, e_ts, c_ts = work.event_keys, work.event_ts, work.created_ts

        def part(k0: int, k1: int) -> None:
            fill = _memory.empty(n_keys + SPARE, np.int64)
            fill[:SPARE] = spare[k0] + np.arange(SPARE)
            fill[SPARE:] = starts[:-1]
            if stats.run_starts is not None:
                scatter_runs(codes, stats.run_starts, k0, k1, fill, order)
            else:
                scatter(codes, k0, k1, fill, order)
            gather_groups(starts, e_ts, c_ts, same, order, self.ets, self.cts, x, s_x, k0, k1)

        _parallel.run(part, parts)
        if carry is not None:
            self.carried_from, self.carried = carry, s_x

    def key_parts(self) -> np.ndarray:
        """Key code bounds ``0 = k[0] < ... < k[-1] = n_keys`` (just ``[0]`` without keys)
        that cut the events into about equal parts, at most one per thread."""
        sizes = np.cumsum(self.ge - self.gs, out=_memory.empty(self.n_keys, np.int64))
        total = int(sizes[-1]) if len(sizes) else 0
        inner = np.searchsorted(sizes, _parallel.cuts(total)[1:-1], side="left")
        inner = inner[(inner > 0) & (inner < self.n_keys)]
        return np.unique(np.concatenate(([0], inner, [self.n_keys]))).astype(np.int64)

    def created_prefix_max(self) -> np.ndarray:
        if self._pmx is None:
            pmx = _memory.empty(self.size, np.int64)
            gs, ge, cts = self.gs, self.ge, self.cts
            _parallel.run(
                lambda k0, k1: group_prefix_max(gs, ge, cts, pmx, k0, k1), self.key_parts()
            )
            self._pmx = _memory.readonly(pmx)
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
        # created_ts=None in aggregate_spine passes the event times twice: then the
        # sorted layout keeps one array for both.
        self.same_times = created_ts is event_ts or _same_memory(self.created_ts, self.event_ts)
        if self.same_times:
            self.created_ts = self.event_ts
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
        nq = len(self.query_keys)
        starts = _memory.empty(n_keys + 3, np.int64)
        self.query_order = _memory.empty(nq, np.int64)
        self.slot_keys = _memory.empty(nq, np.int64)
        self.slot_ts = _memory.empty(nq, np.int64)
        sort_queries(
            self.query_keys,
            self.query_ts,
            n_keys,
            starts,
            self.query_order,
            self.slot_keys,
            self.slot_ts,
        )
        ro = _memory.readonly
        self.query_starts = ro(starts[: n_keys + 2])
        self.query_order, self.slot_keys, self.slot_ts = (
            ro(self.query_order),
            ro(self.slot_keys),
            ro(self.slot_ts),
        )
        self.cache: dict[Any, Any] = {}
        self._index: EventIndex | None = None
        self._stats: KeyStats | None = None
        self._run_starts: np.ndarray | None = None

    @property
    def n_events(self) -> int:
        return len(self.event_keys)

    @property
    def index(self) -> EventIndex:
        return self.layout(None)

    def layout(self, carry: np.ndarray | None) -> EventIndex:
        """The sorted layout, built on first use; then with ``carry`` (a value
        column in input order) fetched into the layout's order on the way
        (``EventIndex.carried``), cheaper than fetching it afterwards."""
        if self._index is None:
            self._index = EventIndex(self, carry)
        return self._index

    def key_stats(self) -> KeyStats:
        if self._stats is None:
            self._stats = key_stats(self)
        return self._stats

    @property
    def run_starts(self) -> np.ndarray:
        """Where the runs of ascending key codes start, plus the end (the scan's
        merge reads them)."""
        if self._run_starts is None:
            self._run_starts = run_starts(self.event_keys, self.n_keys)
        return self._run_starts

    def pairs_and_runs(self) -> tuple[int, int]:
        """(event, query) pairs of equal key, and runs of ascending key codes."""
        stats = self.key_stats()
        return int(stats.counts @ np.diff(self.query_starts[1:])), stats.runs

    def use_scan(self, n_windows: int) -> bool:
        """Whether the scan path should serve ``n_windows`` distinct windows."""
        if self.strategy != "auto":
            return self.strategy == "scan"
        if self.n_events + len(self.query_keys) > SCAN_MAX_ROWS:
            return False
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
        ok = _memory.full(n, True, np.bool_) if valid is None else np.asarray(valid, dtype=bool)
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
        self.all_valid = valid is None or bool(ok.all())
        self.dtype = None if self.values is None else self.values.dtype
        self.kind = "" if self.dtype is None else self.dtype.kind
        self.uniques: np.ndarray | None = None
        if self.values is None:
            self.x = _memory.full(n, 0, np.int64)
        elif self.kind == "f":
            self.x = _converted(self.values, np.float64)
        elif self.kind in "iub":
            self.x = _converted(self.values, np.int64)
        elif self.kind in "mM":
            self.x = self.values.view(np.int64)
        else:
            # Strings and other objects: rank them, so min/max/count_distinct work on
            # int codes in the values' own order.
            self.uniques, inverse = np.unique(self.values[ok], return_inverse=True)
            self.x = np.full(n, -1, np.int64)
            self.x[ok] = inverse
        self.x, self.valid = _memory.readonly(self.x), _memory.readonly(self.valid)
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
            x = _memory.readonly((x.view(np.uint64) ^ _SIGN).view(np.int64))
        if x.dtype.kind == "f":
            return x, np.float64(np.nan)
        info = np.iinfo(np.int64)
        return x, np.int64(info.min if is_max else info.max)

    def decode_best(self, best: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """min/max results in the values' dtype, 0 where ``ok`` is False. ``best``
        is a partial result of this call alone: it is overwritten."""
        zero_where_not(best, ok)
        if self.uniques is not None:
            res = np.empty(len(best), self.uniques.dtype)
            res[ok] = self.uniques[best[ok]]
            return res
        if self.dtype == np.uint64:
            return (best.view(np.uint64) ^ _SIGN) * ok
        if self.kind in "mM" and self.dtype is not None:
            return best.view(self.dtype)
        return best.astype(self.dtype, copy=False)  # type: ignore[arg-type]

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


def _converted(values: np.ndarray, dtype: Any) -> np.ndarray:
    """``values`` as ``dtype``: the array itself when it already is, else a copy."""
    if values.dtype == dtype:
        return values
    out = _memory.empty(len(values), dtype)
    out[:] = values
    return out
