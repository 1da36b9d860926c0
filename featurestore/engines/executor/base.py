"""The executor seam: how a batch job runs its per-partition work.

A job cuts its input into partitions (``partition.split_by_key``), hands the executor
one picklable function and the partitions, and gets back one result per partition,
in order. Everything a task needs travels in its argument or in the function's
closure (a ``functools.partial`` of a module-level function), so the same code runs
in this process (:class:`LocalExecutor`) or on a Ray cluster (``RayExecutor``).
Writes follow the same split: tasks write files, the driver commits once
(``commit.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M")
P = TypeVar("P")


@runtime_checkable
class Executor(Protocol):
    """Runs ``fn`` over partitions; results come back in the partitions' order."""

    name: str
    partitions: int

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]: ...

    def shuffle(
        self,
        map_fn: Callable[[M], list[P]],
        map_items: Sequence[M],
        reduce_fn: Callable[[T, list[P]], R],
        reduce_items: Sequence[T],
    ) -> list[R]:
        """Map then reduce: ``map_fn`` cuts each map item into one piece per reduce
        item; reduce ``j`` gets ``reduce_items[j]`` and piece ``j`` of every map, in
        map order. On a cluster the pieces go from task to task, not via the driver."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """This process, one partition after another: the default, and the twin the unit
    tests use. ``partitions`` is how many pieces a job cuts its input into (1: the
    job runs unpartitioned, exactly as before the seam)."""

    name = "local"

    def __init__(self, partitions: int = 1) -> None:
        self.partitions = partitions

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        return [fn(item) for item in items]

    def shuffle(
        self,
        map_fn: Callable[[M], list[P]],
        map_items: Sequence[M],
        reduce_fn: Callable[[T, list[P]], R],
        reduce_items: Sequence[T],
    ) -> list[R]:
        pieces = [map_fn(item) for item in map_items]
        return [
            reduce_fn(item, [piece[j] for piece in pieces]) for j, item in enumerate(reduce_items)
        ]

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"LocalExecutor(partitions={self.partitions})"
