"""Windowed aggregations as of query times: numpy arrays in, numpy arrays out.

``aggregate_asof`` answers, for every query (key code, time t) and every
``WindowSpec``, the aggregate of the events of that key with
``t - window < event_ts <= t`` (SEMANTICS: Windowed aggregations). No Python loop
runs per row. Two strategies compute the same values:

scan (``_scan``)
    One pass over the events (ascending runs of keys merged by key, input order
    within a key), adding each into the queries of its key whose window holds it:
    O(n + pairs x windows), with pairs = sum over keys of events x queries. Chosen
    when pairs is small (a training spine with a few rows per entity) and the
    events come ordered by key (a table sorted by key).
sorted (``_sorted``)
    A stable counting sort of the events by key, a sort of only the key groups
    not already in (event_ts, created_ts, position) order, then binary searches
    per query and window, prefix sums and trees: O(n + q log n) whatever the
    pairs. Always used for ``count_distinct``.

Float results: the sorted path sums windows of at most ``direct_max`` events
(default 64) directly in (event_ts, created_ts, position) order, the reference's
order, so results are identical to it; larger windows combine partial sums in
tree order, and the scan path adds in input order. Those differ from the
reference by rounding only: within 1e-9 relative unless the window's values
cancel (|sum| much smaller than the sum of |values|). The same holds for mean and
stddev (two-pass in the sorted path's small windows, Chan/Welford otherwise).

Other rules: ``count`` counts valid entries (``values=None`` counts events);
``count_distinct`` counts NaN as one value and -0.0 as 0.0; ``first``/``last``
break exact (event_ts, created_ts) ties by input position (first row wins for
``first``, last row for ``last``); with ``hop_us`` the query time is floored first
and the floored time is also the cut-off for created_ts. Integer sums wrap at
int64 (uint64 values above 2**63 wrap too). Null outputs hold 0 (None for objects).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from featurestore.engines.aggregate._layout import sort_queries
from featurestore.engines.aggregate._scan import key_stats
from featurestore.engines.aggregate._scan_driver import scan_raw
from featurestore.engines.aggregate._sorted import EventIndex, SortedColumn
from featurestore.engines.aggregate.spec import NUMERIC_ONLY, WindowSpec
from featurestore.engines.aggregate.state import States, finalize
from featurestore.errors import DataError, DefinitionError

DIRECT_MAX = 64
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


def _int64(arr: Any, name: str) -> np.ndarray:
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
        self.event_keys = _int64(event_keys, "event_keys")
        self.event_ts = _int64(event_ts, "event_ts")
        self.created_ts = _int64(created_ts, "created_ts")
        self.query_keys = _int64(query_keys, "query_keys")
        self.query_ts = _int64(query_ts, "query_ts")
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


class Values:
    """A value column in input order, as int64 or float64 the kernels can read."""

    def __init__(self, values: Any, valid: Any, n: int) -> None:
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


def aggregate_column(
    work: Workload,
    *,
    values: Any,
    valid: Any,
    specs: Sequence[WindowSpec],
    direct_max: int = DIRECT_MAX,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``aggregate_asof`` for one value column of a ``Workload``."""
    vals = Values(values, valid, work.n_events)
    for spec in specs:
        f = spec.function
        if vals.values is None and f != "count":
            raise DefinitionError(
                "needs values; only count() may go without", obj=f"aggregation {f}"
            )
        if f in NUMERIC_ONLY and vals.kind not in "iubf":
            raise DefinitionError(
                f"cannot compute {f} of values with dtype {vals.dtype}",
                obj=f"aggregation {f}",
                hint="Use numeric or bool values",
            )
    raws: list[dict[str, np.ndarray] | None] = [None] * len(specs)
    scannable = [i for i, s in enumerate(specs) if s.function != "count_distinct"]
    windows = {(specs[i].window_us, specs[i].hop_us) for i in scannable}
    if scannable and work.use_scan(len(windows)):
        for i, raw in zip(
            scannable, scan_raw(work, vals, [specs[i] for i in scannable]), strict=True
        ):
            raws[i] = raw
    col: SortedColumn | None = None
    for i, spec in enumerate(specs):
        if raws[i] is None:
            col = col or SortedColumn(work, vals)
            raws[i] = col.raw(spec, direct_max)
    return [
        _finish(spec, raw, vals) for spec, raw in zip(specs, raws, strict=True) if raw is not None
    ]


def _finish(
    spec: WindowSpec, raw: dict[str, np.ndarray], vals: Values
) -> tuple[np.ndarray, np.ndarray]:
    f = spec.function
    if f == "count":
        return raw["n"].copy(), np.ones(len(raw["n"]), bool)
    if f == "count_distinct":
        return raw["count"], np.ones(len(raw["count"]), bool)
    if f in ("first", "last"):
        return vals.gather(raw["pos"])
    if f in ("min", "max"):
        ok = raw["n"] > 0
        return vals.decode_best(raw["best"], ok), ok
    return finalize(States(f, vals.dtype, raw))  # type: ignore[arg-type]


def aggregate_asof(
    *,
    event_keys: Any,
    event_ts: Any,
    created_ts: Any,
    values: Any = None,
    valid: Any = None,
    query_keys: Any,
    query_ts: Any,
    specs: Sequence[WindowSpec],
    as_of_known_time: bool = False,
    direct_max: int = DIRECT_MAX,
    strategy: Strategy = "auto",
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Windowed aggregates of one value column for each query, per spec.

    Key codes are dense int64 (>= 0; -1 is a null key and never matches). Times are
    int64 microseconds since the Unix epoch, UTC. ``valid`` False marks a null value
    (default: none); ``values=None`` allows only ``count``, which then counts events.
    Returns, per spec, ``(values, valid)`` aligned with the queries in query order.
    ``direct_max`` (window size up to which floats are summed directly) and
    ``strategy`` are tuning knobs; tests use them to force each code path.

    >>> import numpy as np
    >>> out = aggregate_asof(event_keys=np.array([0, 0, 0]), event_ts=np.array([1, 2, 3]),
    ...     created_ts=np.array([1, 2, 3]), values=np.array([1.0, 2.0, 4.0]),
    ...     query_keys=np.array([0, 0, -1]), query_ts=np.array([3, 2, 3]),
    ...     specs=[WindowSpec("sum", 2)])
    >>> out[0][0].tolist(), out[0][1].tolist()
    ([6.0, 3.0, 0.0], [True, True, False])
    """
    qkeys = _int64(query_keys, "query_keys")
    ekeys = _int64(event_keys, "event_keys")
    n_keys = int(qkeys.max()) + 1 if len(qkeys) else 0
    if n_keys > 2 * (len(qkeys) + len(ekeys)) + 1024:
        # Codes are meant to be dense; re-code sparse ones rather than allocate
        # a counting-sort table for every possible code.
        uniq = np.unique(qkeys[qkeys >= 0])
        ekeys = _recode(ekeys, uniq)
        qkeys = _recode(qkeys, uniq)
        n_keys = len(uniq)
    work = Workload(
        event_keys=ekeys,
        event_ts=event_ts,
        created_ts=created_ts,
        query_keys=qkeys,
        query_ts=query_ts,
        n_keys=max(n_keys, 0),
        as_of_known_time=as_of_known_time,
        strategy=strategy,
    )
    return aggregate_column(work, values=values, valid=valid, specs=specs, direct_max=direct_max)


def _recode(keys: np.ndarray, uniq: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(uniq, keys)
    found = (keys >= 0) & (pos < len(uniq)) & (uniq[np.minimum(pos, len(uniq) - 1)] == keys)
    return np.where(found, pos, -1).astype(np.int64)
