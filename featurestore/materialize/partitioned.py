"""Materialization on an executor: a shuffle of the view's table by entity key.

Map tasks read the pinned table version in slices of its dates
(``engines.executor.slices``) and cut each slice by the stable key hash; reduce task
``j`` gets every row of the entities of partition ``j``, runs the same function the
local path runs on them (``latest_per_entity``, ``build_records``), opens the online
store from its URL and writes them with the same compare-and-set writer. Entities of
different partitions are disjoint, so the records are those of a local run.

Below ``aggregates`` and ``online``, above ``report`` (module order of the package).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import polars as pl

from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.executor import Executor
from featurestore.engines.executor.slices import plan_slices, read_and_cut
from featurestore.errors import DefinitionError
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online.base import OnlineStore, WriteStats
from featurestore.stores.view_specs import offline_spec

# (entities found, what the writes did) of one partition.
Counts = tuple[int, WriteStats]
ReduceFn = Callable[[int, list[pl.DataFrame]], Counts]


@dataclass(frozen=True)
class OnlineTarget:
    """Where a task writes: the online store's URL, opened in the task (so it works
    from another process or machine), or, for tasks in this process, the open store
    itself (which also covers the in-memory twin, which has no shareable URL)."""

    url: str | None
    store: OnlineStore | None = field(default=None, compare=False)

    @contextmanager
    def open(self) -> Iterator[OnlineStore]:
        if self.store is not None:
            yield self.store
            return
        if self.url is None:
            raise ValueError("an OnlineTarget needs a URL or an open store")
        from featurestore.stores.online import open_online_store

        store = open_online_store(self.url)
        try:
            yield store
        finally:
            store.close()

    @classmethod
    def for_executor(
        cls, executor: Executor, *, online: OnlineStore, url: str | None
    ) -> OnlineTarget:
        """The open store on the local executor; its URL anywhere else."""
        if executor.name == "local":
            return cls(url, online)
        if url is None:
            raise DefinitionError(
                "materializing on a cluster needs the online store's URL",
                obj=f"executor {executor.name!r}",
                field="online_url",
                value=None,
                hint="pass online_url= to materialize_view (FeatureStore passes "
                "settings.online_url)",
            )
        return cls(url)


def run_partitioned(
    view: FeatureViewPlan,
    *,
    offline: DeltaOfflineStore,
    executor: Executor,
    start_us: int | None,
    end_us: int,
    reduce_fn: ReduceFn,
) -> Counts:
    """Shuffle the view's rows with ``start_us <= event_ts < end_us`` (at the table's
    current version, pinned here for every task) by key into ``executor.partitions``
    partitions and run ``reduce_fn`` on each; the partitions' counts summed."""
    spec = offline_spec(view)
    version = offline.version(view.name)
    assert version is not None  # callers check the table exists
    parts = max(executor.partitions, 1)
    slices = plan_slices(
        offline,
        spec,
        version,
        start_us=start_us,
        end_us=end_us,
        keys=tuple(view.join_keys),
        partitions=parts,
    )
    results = executor.shuffle(
        partial(read_and_cut, offline=offline), slices, reduce_fn, list(range(parts))
    )
    entities, stats = 0, WriteStats()
    for found, done in results:
        entities += found
        stats = stats + done
    return entities, stats
