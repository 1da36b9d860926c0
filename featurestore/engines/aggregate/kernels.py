"""Windowed aggregations as of query times: numpy arrays in, numpy arrays out.

``aggregate_asof`` answers, for every query (key code, time t) and every
``WindowSpec``, the aggregate of the events of that key with
``t - window < event_ts <= t`` (SEMANTICS: Windowed aggregations). No Python loop
runs per row. Two strategies compute the same values:

scan (``_scan``)
    One pass over the events (ascending runs of keys merged by key, input order
    within a key), adding each into the queries of its key whose window holds it:
    O(n + pairs x windows), with pairs = sum over keys of events x queries. Chosen
    for small inputs only (``_workload.SCAN_MAX_ROWS``, where building no layout
    pays) when pairs is small and the events come ordered by key.
sorted (``_sorted``)
    A stable counting sort of the events by key (none when the input is already
    sorted by key and time: it is then the layout), a sort of only the key groups
    not already in (event_ts, created_ts, position) order, then binary searches
    per query and window, prefix sums and trees: O(n + q log n) whatever the
    pairs. count, sum, mean, min and max of all windows of a column come from one
    fused pass over the queries (``_functions.window_stats``). Always used for
    ``count_distinct``, and for every input above the scan's size.

The large steps run on all threads (``_parallel``: as many as Polars uses, one
below ~128k rows) and write into arrays from Arrow's memory pool (``_memory``), so
repeated calls do not pay page faults for their scratch memory.

Float results: the sorted path sums windows of at most ``direct_max`` events
(default 64) directly in (event_ts, created_ts, position) order, the reference's
order, so results are identical to it; larger windows combine partial sums in
tree order, and the scan path adds in input order. Those differ from the
reference by rounding only: within 1e-9 relative unless the window's values
cancel (|sum| much smaller than the sum of |values|). The same holds for mean and
stddev (two-pass in the sorted path's small windows, Chan/Welford otherwise).

Other rules: ``count`` counts valid entries (``values=None`` counts events);
``count_distinct`` counts NaN as one value and -0.0 as 0.0; ``first``/``last``
break exact (event_ts, created_ts) ties by value, the smallest for ``first`` and
the largest for ``last`` (``_ties``: any input order gives the same answer); with
``hop_us`` the query time is floored first
and the floored time is also the cut-off for created_ts. Integer sums wrap at
int64 (uint64 values above 2**63 wrap too). Null outputs hold 0 (None for objects).

Modules, top-down: this one checks the specs, picks a path per column and turns
partial results into values (``state.finalize``); ``_scan_driver`` (over the Numba
``_scan``) and ``_sorted`` (over ``_functions`` and ``_layout``) compute the partial
results; ``_workload`` holds what both read and the choice between them
(``Workload.use_scan``, with the measured thresholds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from featurestore.engines import _memory
from featurestore.engines.aggregate._scan_driver import scan_raw
from featurestore.engines.aggregate._sorted import SortedColumn
from featurestore.engines.aggregate._workload import Strategy, Values, Workload, int64_array
from featurestore.engines.aggregate.spec import NUMERIC_ONLY, WindowSpec
from featurestore.engines.aggregate.state import States, finalize
from featurestore.errors import DefinitionError

# ``Workload`` and ``Strategy`` live in ``_workload`` (below the two paths' drivers);
# callers import them from here, with the functions that take them.
__all__ = ["DIRECT_MAX", "Strategy", "Workload", "aggregate_asof", "aggregate_column"]

DIRECT_MAX = 64


def aggregate_column(
    work: Workload,
    *,
    values: Any,
    valid: Any,
    specs: Sequence[WindowSpec],
    direct_max: int = DIRECT_MAX,
    value_rank: Any = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``aggregate_asof`` for one value column of a ``Workload``. ``value_rank``
    (int64 per event) orders the values for first/last ties when ``values`` are not
    the values themselves (row numbers to gather from, say)."""
    vals = Values(values, valid, work.n_events, value_rank)
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
    rest = [spec for spec, raw in zip(specs, raws, strict=True) if raw is None]
    if rest:
        col = SortedColumn(work, vals)
        col.window_stats(rest, direct_max)
    for i, spec in enumerate(specs):
        if raws[i] is None and col is not None:
            raws[i] = col.raw(spec, direct_max)
    valid_of: dict[int, np.ndarray] = {}
    return [
        _finish(spec, raw, vals, valid_of)
        for spec, raw in zip(specs, raws, strict=True)
        if raw is not None
    ]


def _finish(
    spec: WindowSpec, raw: dict[str, np.ndarray], vals: Values, valid_of: dict[int, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The values and validity of one spec (as ``state.finalize``), from the partial
    results of this call alone: they are returned as they are, not copied, and
    specs over the same window share one validity array (``valid_of``, keyed by
    the id of the window's counts) so that ``asof`` packs it once."""
    f = spec.function
    if f in ("count", "count_distinct"):
        counts = raw["n" if f == "count" else "count"]
        if -1 not in valid_of:
            valid_of[-1] = _memory.full(len(counts), True, np.bool_)
        return counts, valid_of[-1]
    if f in ("first", "last"):
        return vals.gather(raw["pos"])
    n = raw["n"]
    if id(n) not in valid_of:
        valid_of[id(n)] = np.greater(n, 0, out=_memory.empty(len(n), np.bool_))
    ok = valid_of[id(n)]
    if f in ("min", "max"):
        return vals.decode_best(raw["best"], ok), ok
    if f == "sum":
        return raw["total"], ok
    if f == "mean":
        # A window without values has total 0, so dividing by max(n, 1) gives the
        # 0 that null outputs hold, with no masked (slow) division.
        at_least_1 = np.maximum(n, 1, out=_memory.empty(len(n), np.int64))
        return np.divide(raw["total"], at_least_1, out=_memory.empty(len(n), np.float64)), ok
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
    qkeys = int64_array(query_keys, "query_keys")
    ekeys = int64_array(event_keys, "event_keys")
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
