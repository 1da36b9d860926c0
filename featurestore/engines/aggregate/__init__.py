"""Windowed aggregations (SEMANTICS: Windowed aggregations).

============  ===============================================================
spec          ``WindowSpec``, ``AggFunction``, output dtypes (no heavy imports)
state         mergeable partial states shared by batch, stream and online (numpy)
kernels       ``aggregate_asof``: numpy in/out, Numba inside
asof          ``aggregate_spine``: the Polars driver for training spines
reference     brute-force Python, the executable definition used by tests
============  ===============================================================

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
