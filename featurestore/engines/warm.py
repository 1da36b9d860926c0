"""Compile the Numba kernels ahead of the first real call (``featurestore init``).

A kernel compiles on its first call, a few seconds for the whole set, and Numba
then caches it on disk (``featurestore._jit``), keyed by the argument types. So
running each public entry point once on a few rows of every common input type
fills the cache with exactly the specialisations a later training or
materialization call loads, and no user waits for the compiler after that.

Only public entry points are called: the kernels behind them, and their argument
types, stay the engines' own business. Warming is an optimisation, so a failure
in it is logged and never fails the caller.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

logger = logging.getLogger(__name__)

SKIP_ENV = "FEATURESTORE_NO_WARM"
_done = False


def warm_kernels() -> float:
    """Compile (or load from the cache) the point-in-time and aggregation kernels
    for int64 and string keys and float64, int64 and string values. Returns the
    seconds it took; 0 when ``FEATURESTORE_NO_WARM=1`` or already done in this
    process."""
    global _done
    if _done or os.environ.get(SKIP_ENV, "") not in ("", "0"):
        return 0.0
    t0 = time.perf_counter()
    for step in (_warm_pit, _warm_aggregates):
        try:
            step()
        except Exception:  # the real call compiles, just later
            logger.warning("warming the %s kernels failed", step.__name__[6:], exc_info=True)
    _done = True
    return time.perf_counter() - t0


def _frames(key: str, keys: list[object]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A tiny spine and feature frame: keys ``keys`` (two rows each, one of them a
    same-time correction), float64, int64 and string features."""
    import polars as pl

    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    n = len(keys)
    rows = pl.DataFrame(
        {
            key: keys * 2,
            "event_ts": [t0] * n + [t0 + hour] * n,
            "created_ts": [t0] * n + [t0 + 2 * hour] * n,
            "f": [float(i) for i in range(2 * n)],
            "i": list(range(2 * n)),
            "s": [f"v{i}" for i in range(2 * n)],
        }
    )
    spine = pl.DataFrame({key: [*keys, None], "timestamp": [t0 + 3 * hour] * n + [None]})
    return spine, rows


# Dense ids (a direct lookup table), sparse ids (a hash table), strings (a join).
_KEYS: tuple[list[object], ...] = ([1, 2, 3], [1, 10**12, -(10**15)], ["a", "b", "c"])


def _warm_pit() -> None:
    from featurestore.engines.pit import FeatureFrame, point_in_time_join

    for keys in _KEYS:
        spine, rows = _frames("k", keys)
        for ttl_us in (None, 86_400_000_000):
            view = FeatureFrame(
                name="warm",
                frame=rows,
                join_keys=("k",),
                spine_keys=("k",),
                features=("f", "i", "s"),
                output_names=("f", "i", "s"),
                ttl_us=ttl_us,
            )
            for known in (False, True):
                point_in_time_join(
                    spine, timestamp="timestamp", views=[view], as_of_known_time=known
                )
    # Enough distinct keys for the join to walk key-sorted rows block by block.
    ids: list[object] = list(range(40_000))
    spine, rows = _frames("k", ids)
    view = FeatureFrame(
        name="warm",
        frame=rows.sort("k"),
        join_keys=("k",),
        spine_keys=("k",),
        features=("f",),
        output_names=("f",),
        ttl_us=None,
    )
    point_in_time_join(spine, timestamp="timestamp", views=[view])
    # Rows in no key order on two threads: row lanes with trees of their own, merged.
    import numpy as np

    from featurestore.engines.pit import kernel

    codes = np.array([0, 1, 0], dtype=np.int64)
    index = kernel.prepare_spine(codes, spine_ts=np.array([5, 5, 9]), n_codes=2)
    times = np.array([1, 2, 3], dtype=np.int64)
    batch = (0, codes, times, times, False)
    kernel.point_in_time(
        [],
        row_lanes=[[batch], [batch]],
        spine_index=index,
        n_spine=3,
        ttl_us=-1,
        as_of_known_time=False,
    )


def _warm_aggregates() -> None:
    from featurestore.engines.aggregate import AGG_FUNCTIONS, WindowSpec, aggregate_spine

    hour = 3_600_000_000
    windows = [WindowSpec("count", None), WindowSpec("count", 24 * hour)]
    numeric = [f for f in AGG_FUNCTIONS if f != "count"]
    by_column: dict[str, list[str]] = {
        "f": numeric,
        "i": numeric,
        "s": ["min", "max", "first", "last", "count_distinct"],
    }
    for keys in _KEYS[:2]:
        spine, rows = _frames("k", keys)
        aggregations: list[tuple[str, str | None, WindowSpec]] = [
            (f"n{k}", None, spec) for k, spec in enumerate(windows)
        ]
        for column, functions in by_column.items():
            for function in functions:
                for window, hop in ((24 * hour, hour), (None, None), (2 * hour, None)):
                    spec = WindowSpec(function, window, hop_us=hop)  # type: ignore[arg-type]
                    aggregations.append((f"{column}_{function}_{window}_{hop}", column, spec))
        for strategy in ("scan", "sorted"):
            aggregate_spine(
                events=rows,
                spine=spine,
                keys=["k"],
                aggregations=aggregations,
                strategy=strategy,  # type: ignore[arg-type]
            )
        # The sorted path's other kernels: created_ts running maxima (as of known
        # time) over an input in many runs of keys (a shuffled one); prefix sums
        # and trees for windows of more events than are summed one by one (one
        # key with many events); and the layout built along with the first value
        # column, float or int (count() comes first above).
        by_source = sorted(aggregations, key=lambda a: a[1] != "i")
        for known, frames, aggs in (
            (True, _frames("k", keys * 200), by_source),
            (False, _frames("k", keys[:1] * 40), aggregations[len(windows) :]),
        ):
            aggregate_spine(
                events=frames[1],
                spine=frames[0],
                keys=["k"],
                aggregations=aggs,
                as_of_known_time=known,
                strategy="sorted",
            )
