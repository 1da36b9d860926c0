"""Large scratch and output arrays, allocated from Arrow's memory pool.

numpy and Numba allocate through the C library's ``malloc``. glibc hands every
block of a few megabytes straight back to the operating system when it is freed,
so the next call maps fresh pages and takes one page fault per 4 KiB when it first
writes them. On the training benchmark (1M events) that was about 9,000 faults and
over 20 ms of system time per ``aggregate_spine`` call, more than the kernels
themselves. Arrow's pool (mimalloc or jemalloc) keeps freed pages for reuse, so a
second call writes into memory that is already mapped: no faults.

Arrays made here are ordinary writable numpy arrays (their base is an Arrow
buffer), so Numba kernels fill them, and Polars wraps them without a copy. Only
arrays of at least ``POOL_MIN_BYTES`` go to the pool; smaller ones are cheap either
way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

POOL_MIN_BYTES = 1 << 16


def empty(n: int, dtype: Any) -> np.ndarray:
    """An uninitialised 1-D array of ``n`` items of ``dtype``."""
    dt = np.dtype(dtype)
    nbytes = n * dt.itemsize
    if nbytes < POOL_MIN_BYTES:
        return np.empty(n, dt)
    return np.frombuffer(pa.allocate_buffer(nbytes), dt, count=n)


def full(n: int, value: Any, dtype: Any) -> np.ndarray:
    """A 1-D array of ``n`` items of ``dtype``, each ``value``."""
    out = empty(n, dtype)
    out.fill(value)
    return out


def empty_2d(rows: int, cols: int, dtype: Any) -> np.ndarray:
    """An uninitialised C-ordered ``rows x cols`` array (each row contiguous)."""
    return empty(rows * cols, dtype).reshape(rows, cols)


def readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (no copy).

    Numba compiles a kernel once per argument type, and a read-only array is a
    type of its own. Polars hands its columns out read-only, our own arrays are
    writable: passing every input as read-only keeps one compiled version per
    kernel, so that what ``featurestore.engines.warm`` compiled is what later
    calls use."""
    if not a.flags.writeable:
        return a
    view = a.view()
    view.flags.writeable = False
    return view
