"""Run a Numba kernel over disjoint ranges on several threads.

The kernels are compiled with ``nogil=True``, so a plain thread pool runs them in
parallel: each call gets a range ``a..b`` (of events, key codes or query slots)
and writes only its own part of the outputs. Numba's own ``parallel=True`` would
bring a threading layer whose default (workqueue) must not be entered from two
Python threads at once, and a server answers requests on several.

The pool has as many threads as Polars' (``polars.thread_pool_size()``, which
follows ``POLARS_MAX_THREADS`` and the CPUs the process may use), the calling
thread included. Small inputs run on the calling thread alone: handing a part to
another thread costs ~0.1 ms per step, more than tens of thousands of rows take
(``MIN_PART``).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import polars as pl

T = TypeVar("T")
# Below this many items per part the threads cost more than they save. Measured
# on the training benchmark's workload scaled down (12 features, every step
# split): two threads lose up to 0.8 ms below 40k events (waking the other thread
# costs ~0.1 ms per step here) and break even at ~80k.
MIN_PART = 1 << 16

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1


def threads() -> int:
    """Threads a large kernel call is split over (the calling one included)."""
    return max(1, pl.thread_pool_size())


def cuts(n: int, min_part: int | None = None) -> np.ndarray:
    """Boundaries ``c[0] = 0 < ... < c[-1] = n`` of equal parts, as many as
    ``threads()`` but none smaller than ``min_part`` items (default ``MIN_PART``;
    one part at least)."""
    smallest = MIN_PART if min_part is None else min_part
    parts = max(1, min(threads(), n // max(smallest, 1)))
    return np.linspace(0, n, parts + 1).round().astype(np.int64)


def run(kernel: Callable[[int, int], T], bounds: np.ndarray) -> list[T]:
    """``kernel(a, b)`` for each consecutive pair of ``bounds``, the first on the
    calling thread and the others on the pool; results in part order. Every part
    has finished when this returns, also when one raised (the first error is
    raised then)."""
    parts = [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    if len(parts) <= 1:
        return [kernel(a, b) for a, b in parts]
    futures: list[Future[T]] = [_executor().submit(kernel, a, b) for a, b in parts[1:]]
    try:
        first = kernel(*parts[0])
    finally:
        done = [f.exception() for f in futures]  # waits for every part
    for error in done:
        if error is not None:
            raise error
    return [first, *(f.result() for f in futures)]


def _executor() -> ThreadPoolExecutor:
    # A forked child inherits the executor but not its threads: make a new one.
    global _pool, _pool_pid
    with _lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(
                max_workers=max(1, threads() - 1), thread_name_prefix="featurestore-kernel"
            )
            _pool_pid = os.getpid()
        return _pool
