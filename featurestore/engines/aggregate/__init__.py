"""Windowed aggregations (SEMANTICS: Windowed aggregations).

Every module of the folder, top-down (a module imports only those below it):

==============  ===============================================================
view_records    a feature view's aggregations over a frame of its events: the
                columns each reads, the online records of many entities
online          online records: which states a slot keeps per window, and how a
                lookup folds them into the answer (``AggregateReader``)
records         ``Slots`` (many entities' states, CSR) and the versioned codec of
                the online record text
asof            ``aggregate_spine``: the Polars driver for training spines
kernels         ``aggregate_asof``: numpy in/out, picks the scan or sorted path
_scan_driver    the scan path's Python side: windows, accumulators, per-query rows
_sorted         the sorted path's Python side: window bounds, cached prefix sums
                and trees per value column
_workload       ``Workload`` (coded events and queries, the path choice),
                ``Values`` (a column the loops read), ``EventIndex`` (sorted layout)
_scan           Numba: one pass over the events into each query's accumulators
_functions      Numba: one loop over the queries per aggregation function
_layout         Numba: events grouped by key and time; each window's bounds
_keys           Numba: dense codes for an integer key column (a hash join)
state           mergeable partial states shared by batch, stream and online (numpy)
_ties           the first/last tie rule: values' sort order, tie runs reordered
reference       brute-force Python, the executable definition used by tests
spec            ``WindowSpec``, ``AggFunction``, output dtypes (no heavy imports)
==============  ===============================================================

Only ``spec`` loads with the package; the rest load on first use, so the online
server can read states without importing Numba or Polars.
"""

from __future__ import annotations

import importlib
from typing import Any

from featurestore.engines.aggregate.spec import (
    AGG_FUNCTIONS,
    AggFunction,
    WindowSpec,
    output_dtype,
)

_LAZY = {
    "aggregate_asof": "kernels",
    "aggregate_spine": "asof",
    "States": "state",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AGG_FUNCTIONS",
    "AggFunction",
    "States",
    "WindowSpec",
    "aggregate_asof",
    "aggregate_spine",
    "output_dtype",
]
