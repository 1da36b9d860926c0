"""Feeds ``_scan.scan``: windows, accumulators and per-query results of the scan path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from featurestore.engines.aggregate import _scan
from featurestore.engines.aggregate._workload import Values, Workload
from featurestore.engines.aggregate.spec import WindowSpec

_NONE = np.zeros(0, np.int64)  # no ranks: the scan flags the keys with ties
_NO_KEYS = np.zeros(0, np.bool_)  # no key filter: every key
_NEEDS = {
    "sum": (_scan.NEED_SUM,),
    "mean": (_scan.NEED_SUM,),
    "stddev": (_scan.NEED_MOMENTS,),
    "min": (_scan.NEED_MIN,),
    "max": (_scan.NEED_MAX,),
    "first": (_scan.NEED_FIRST,),
    "last": (_scan.NEED_LAST,),
    "count": (),
}


def scan_raw(
    work: Workload, vals: Values, specs: Sequence[WindowSpec]
) -> list[dict[str, np.ndarray]]:
    """Per spec, the partial result per query (fields as in ``SortedColumn.raw``)."""
    x_best, _ = vals.ordered(vals.x, False)
    if x_best is not vals.x and any(s.function in ("sum", "mean", "stddev") for s in specs):
        # uint64 min/max need order-preserving values, sums the plain ones: two scans.
        best = [i for i, s in enumerate(specs) if s.function in ("min", "max")]
        other = [i for i, s in enumerate(specs) if s.function not in ("min", "max")]
        out: list[dict[str, np.ndarray]] = [{}] * len(specs)
        for group, x in ((best, x_best), (other, vals.x)):
            for i, raw in zip(
                group, _scan_group(work, vals, [specs[i] for i in group], x), strict=True
            ):
                out[i] = raw
        return out
    x = x_best if any(s.function in ("min", "max") for s in specs) else vals.x
    return _scan_group(work, vals, specs, x)


def _scan_group(
    work: Workload, vals: Values, specs: Sequence[WindowSpec], x: np.ndarray
) -> list[dict[str, np.ndarray]]:
    if not specs:
        return []
    windows = sorted({(s.window_us or 0, s.hop_us or 0) for s in specs})
    slot_of = {w: i for i, w in enumerate(windows)}
    need = np.zeros((len(windows), 6), np.bool_)
    for s in specs:
        for field in _NEEDS[s.function]:
            need[slot_of[s.window_us or 0, s.hop_us or 0], field] = True
    slot_ts = work.slot_ts
    qts = np.empty((len(slot_ts), len(windows)), np.int64)
    for w, (_, hop) in enumerate(windows):
        qts[:, w] = slot_ts if hop <= 0 else np.floor_divide(slot_ts, hop) * hop
    _, neutral_min = vals.ordered(x[:0], False)
    _, neutral_max = vals.ordered(x[:0], True)
    if x.dtype.kind == "f":
        neutral_min = neutral_max = np.float64(np.nan)
    widths = np.array([w for w, _ in windows], np.int64)

    def run(need: np.ndarray, rank: np.ndarray, only: np.ndarray) -> tuple[Any, ...]:
        return _scan.scan(  # type: ignore[no-any-return]
            work.event_keys,
            work.run_starts,
            work.event_ts,
            work.created_ts,
            x,
            vals.valid,
            rank,
            only,
            work.query_starts,
            qts,
            widths,
            need,
            work.as_of,
            neutral_min,
            neutral_max,
        )

    n, total, low, high, mean, m2, first, last, tied = run(need, _NONE, _NO_KEYS)
    if tied.any():
        first, last = _retie(work, vals, need, tied, first, last, run)
    order = work.query_order
    cache: dict[int, np.ndarray] = {}

    def per_query(acc: np.ndarray, w: int) -> np.ndarray:
        if id(acc) not in cache:
            cache[id(acc)] = _scan.by_query(acc, order)
        return cache[id(acc)][w]

    raws = []
    for s in specs:
        w = slot_of[s.window_us or 0, s.hop_us or 0]
        f = s.function
        raw = {"n": per_query(n, w)}
        if f in ("sum", "mean"):
            raw["total"] = per_query(total, w)
        elif f == "stddev":
            raw["mean"], raw["m2"] = per_query(mean, w), per_query(m2, w)
        elif f in ("min", "max"):
            raw["best"] = per_query(low if f == "min" else high, w)
        elif f in ("first", "last"):
            raw = {"pos": per_query(first if f == "first" else last, w)}
        raws.append(raw)
    return raws


def _retie(
    work: Workload,
    vals: Values,
    need: np.ndarray,
    tied: np.ndarray,
    first: np.ndarray,
    last: np.ndarray,
    run: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[Any, ...]],
) -> tuple[np.ndarray, np.ndarray]:
    """first/last again for the keys whose windows hold events tied on (event_ts,
    created_ts), with their values ranked (``_ties``); other keys keep theirs."""
    codes = work.event_keys
    known = (codes >= 0) & (codes < len(tied))
    rows = np.flatnonzero(known)[tied[codes[known]]]
    rank = np.zeros(len(codes), np.int64)
    rank[rows] = vals.rank_of(rows)
    edges = [_scan.NEED_FIRST, _scan.NEED_LAST]
    edges_only = np.zeros_like(need)
    edges_only[:, edges] = need[:, edges]
    first2, last2 = run(edges_only, rank, tied)[6:8]
    counts = np.diff(work.query_starts)
    redone = np.repeat(np.concatenate(([False], tied)), counts)  # slot order
    if need[:, _scan.NEED_FIRST].any():
        first[redone] = first2[redone]
    if need[:, _scan.NEED_LAST].any():
        last[redone] = last2[redone]
    return first, last
