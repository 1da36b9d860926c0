"""Batch work on Ray Core tasks (``pip install 'featurestore[ray]'``).

One ``ray.remote`` task per partition, not Ray Data: Ray Data's Delta reader measured
about 6x slower than Polars here and its writer makes many small files, while a task
that calls our own Polars/Numba code per partition costs only the transfer of its
argument and result through the object store. ``ray`` is imported here only, when an
executor is built, so ``import featurestore`` stays free of it.

A task whose worker dies (a killed process, a lost node) is retried by Ray up to
``max_retries`` times; an exception raised by our code is not retried (it would fail
again) and reaches the caller as itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from featurestore.errors import DefinitionError, FeatureStoreError

T = TypeVar("T")
R = TypeVar("R")
M = TypeVar("M")
P = TypeVar("P")

# Ray workers start from a fresh interpreter: pass the settings our kernels read.
_FORWARDED_ENV = ("NUMBA_CACHE_DIR", "FEATURESTORE_NUMBA_CACHE", "POLARS_MAX_THREADS")


class RayUnavailableError(FeatureStoreError):
    """The Ray cluster cannot be reached (a retry can help)."""

    retryable = True


def _call(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def _reduce(fn: Callable[[Any, list[Any]], Any], item: Any, *pieces: Any) -> Any:
    return fn(item, list(pieces))


class RayExecutor:
    """Runs each partition as a Ray task on the cluster at ``address`` (``"auto"``: a
    running cluster, ``"ray://host:10001"``: a remote one through Ray Client, ``None``:
    start a local one with ``num_cpus``). ``partitions`` defaults to twice the
    cluster's CPUs, so a slow partition does not idle the others."""

    name = "ray"

    def __init__(
        self,
        *,
        address: str | None = None,
        partitions: int | None = None,
        num_cpus: int | None = None,
        max_retries: int = 3,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError as exc:
            raise DefinitionError(
                "the Ray engine needs the ray package, which is not installed",
                obj="engine 'ray'",
                field="engine.type",
                value="ray",
                hint="pip install 'featurestore[ray]', or use the local engine",
            ) from exc
        self._ray = ray
        self._owns_cluster = False
        if not ray.is_initialized():
            env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
            runtime = {**(runtime_env or {})}
            if env:
                runtime["env_vars"] = {**env, **runtime.get("env_vars", {})}
            try:
                ray.init(
                    address=address,
                    num_cpus=num_cpus if address is None else None,
                    include_dashboard=False,
                    runtime_env=runtime or None,
                    log_to_driver=False,
                )
            except (ConnectionError, RuntimeError) as exc:
                raise RayUnavailableError(
                    "cannot connect to the Ray cluster",
                    obj="engine 'ray'",
                    field="ray_address",
                    value=address,
                    hint="start one with `ray start --head`, or leave ray_address unset "
                    "to start a local cluster",
                ) from exc
            self._owns_cluster = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.partitions = partitions if partitions else max(2 * cpus, 1)
        self._task = ray.remote(max_retries=max_retries, retry_exceptions=False)(_call)
        self._reduce = ray.remote(max_retries=max_retries, retry_exceptions=False)(_reduce)

    def map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        ray = self._ray
        if not items:
            return []
        fn_ref = ray.put(fn)  # shipped once, not once per task
        return self._get([self._task.remote(fn_ref, item) for item in items])

    def shuffle(
        self,
        map_fn: Callable[[M], list[P]],
        map_items: Sequence[M],
        reduce_fn: Callable[[T, list[P]], R],
        reduce_items: Sequence[T],
    ) -> list[R]:
        ray = self._ray
        n = len(reduce_items)
        if not n:
            return []
        map_ref, reduce_ref = ray.put(map_fn), ray.put(reduce_fn)
        mapper = self._task.options(num_returns=n) if n > 1 else self._task
        # Each map task returns n objects; a reduce task takes its piece of each as
        # arguments, so Ray moves the pieces between workers, never via the driver.
        launched: list[Any] = [mapper.remote(map_ref, item) for item in map_items]
        pieces: list[list[Any]] = [p if n > 1 else [p] for p in launched]
        return self._get(
            [
                self._reduce.remote(reduce_ref, item, *[p[j] for p in pieces])
                for j, item in enumerate(reduce_items)
            ]
        )

    def _get(self, refs: list[Any]) -> list[Any]:
        ray = self._ray
        try:
            return list(ray.get(refs))
        except ray.exceptions.RayTaskError as exc:
            for ref in refs:
                ray.cancel(ref, force=False)
            cause = exc.as_instanceof_cause()
            if isinstance(cause, FeatureStoreError):
                raise cause from None
            raise

    def close(self) -> None:
        """Disconnect, and stop the cluster if this executor started it."""
        if self._owns_cluster and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_cluster = False

    def __repr__(self) -> str:
        return f"RayExecutor(partitions={self.partitions})"
