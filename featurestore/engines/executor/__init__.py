"""Executors: where a batch job's per-partition work runs (ARCHITECTURE: Executors).

- ``base``: the ``Executor`` protocol (``map`` over partitions) and ``LocalExecutor``;
- ``partition``: the stable key hash that cuts a job's input (splitmix64 / FNV-1a);
- ``commit``: tasks write Parquet files and return Delta add actions; the driver
  commits them once per job;
- ``ray``: ``RayExecutor`` on Ray Core tasks, imported only by :func:`make_executor`.
"""

from __future__ import annotations

from typing import Literal

from featurestore.engines.executor.base import Executor, LocalExecutor
from featurestore.engines.executor.partition import key_hash, partition_ids, split_by_key
from featurestore.errors import RequestError

__all__ = [
    "Executor",
    "LocalExecutor",
    "key_hash",
    "make_executor",
    "partition_ids",
    "split_by_key",
]


def make_executor(
    engine: Literal["local", "ray"] | str = "local",
    *,
    ray_address: str | None = None,
    partitions: int | None = None,
) -> Executor:
    """The executor an ``[engine]`` section or ``--engine`` names."""
    if partitions is not None and partitions < 1:
        raise RequestError(
            "must be at least 1", field="partitions", value=partitions, hint="e.g. --partitions 8"
        )
    if engine == "local":
        return LocalExecutor(partitions or 1)
    if engine == "ray":
        from featurestore.engines.executor.ray import RayExecutor

        return RayExecutor(address=ray_address, partitions=partitions)
    raise RequestError(
        "unknown engine",
        field="engine",
        value=engine,
        hint="use 'local' or 'ray'",
    )
