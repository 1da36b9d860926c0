"""``FeatureStore``: the entry point users type. It delegates; it does not compute.

>>> store = FeatureStore("path/to/repo")          # doctest: +SKIP
>>> store.plan().diff.empty                        # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurestore._time import now_us, to_us
from featurestore.compile import CompileResult, PlanIndex, RepoPlan, compile_repo
from featurestore.config import Settings, load_settings
from featurestore.errors import DataError
from featurestore.registry import ApplyResult, PlanDiff, Registry

if TYPE_CHECKING:
    from featurestore.api.access import AccessGate
    from featurestore.api.feature_log import FeatureLogger
    from featurestore.api.online import LookupCache, OnlineResponse
    from featurestore.api.push import PushReport
    from featurestore.api.training import Lineage, TrainingDataset
    from featurestore.engines.executor import Executor
    from featurestore.materialize import BackfillReport, MaterializeReport
    from featurestore.stores.offline.delta import DeltaOfflineStore
    from featurestore.stores.online.base import OnlineStore

Instant = datetime | str | int


@dataclass(frozen=True)
class PlanResult:
    """What ``apply`` would do: the compiled plan, its diff and any warnings."""

    plan: RepoPlan
    diff: PlanDiff
    warnings: list[str]


class FeatureStore:
    """A feature repo: its definitions, registry and stores."""

    def __init__(
        self,
        repo: str | Path = ".",
        *,
        registry_version: int | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``executor`` runs batch jobs (training datasets, materialize, backfill's
        source reads) per partition; default: the ``[engine]`` section's (none for the
        default local engine: one process, unpartitioned).
        ``featurestore.engines.executor.make_executor`` builds one."""
        self.settings: Settings = load_settings(repo)
        self._executor = executor
        self._owns_executor = False
        self.repo = self.settings.repo
        self.project = self.settings.project
        self.pinned_version = registry_version
        self.feature_logger: FeatureLogger | None = None
        self._indexes: dict[int, PlanIndex] = {}
        self._pins: tuple[float, dict[str, int]] | None = None
        self._access_cache: dict[tuple[Any, ...], Any] = {}
        self._pins_ttl_s = self.settings.config.registry.head_cache_seconds

    @property
    def executor(self) -> Executor | None:
        """The executor batch jobs run on (built from ``[engine]`` at first use)."""
        engine = self.settings.config.engine
        if self._executor is None and (engine.type != "local" or engine.partitions):
            from featurestore.engines.executor import make_executor

            self._executor = make_executor(
                engine.type, ray_address=engine.ray_address, partitions=engine.partitions
            )
            self._owns_executor = True
        return self._executor

    @cached_property
    def registry(self) -> Registry:
        return Registry(
            self.settings.registry_url,
            project=self.project,
            head_cache_seconds=self.settings.config.registry.head_cache_seconds,
        )

    # -- definitions -> registry ----------------------------------------------
    def compile(self) -> CompileResult:
        return compile_repo(
            self.repo,
            project=self.project,
            default_classification=self.settings.config.project.classification,
        )

    def plan(self) -> PlanResult:
        """Compile the repo and diff it against the registry head."""
        result = self.compile()
        return PlanResult(result.plan, self.registry.diff(result.plan), result.warnings)

    def apply(self, *, expected_version: int | None = None, message: str = "") -> ApplyResult:
        """Compile and apply; ``expected_version`` guards against racing applies.

        A view whose values change (transform, source, aggregations) but whose served
        features do not keeps being served online from its old definition until a
        full ``materialize`` of it, or ``promote``, switches it (``api/serving.py``).
        """
        from featurestore.api.serving import keep_serving

        result = self.compile()
        return self.registry.apply(
            result.plan,
            expected_version=expected_version,
            message=message,
            keep_serving=keep_serving,
        )

    def serving_index(self, version: int | None = None) -> PlanIndex:
        """The index online lookups use at ``version`` (default: pinned, else head):
        the registry's, with each view pinned for blue/green serving replaced by the
        definition whose records serve it."""
        from featurestore.api.serving import serving_index

        version = self._version() if version is None else version
        return serving_index(
            self.index(version), version=version, pins=self.serving_pins(), index_at=self.index
        )

    def serving_pins(self) -> dict[str, int]:
        """View -> the registry version whose definition serves it online (cached for
        the registry's ``head_cache_seconds``)."""
        now = time.monotonic()
        if self._pins is None or now - self._pins[0] > self._pins_ttl_s:
            self._pins = (now, self.registry.serving_pins())
        return self._pins[1]

    def promote(self, view: str) -> int | None:
        """Serve ``view`` online from the head's definition now; returns the version
        it was served from before (None if it was not pinned)."""
        self.index().view(view)  # an unknown name is an error, not a no-op
        self._pins = None
        return self.registry.promote(view)

    def gc(self, *, older_than: str | int = "1h", dry_run: bool = False) -> dict[str, int | None]:
        """Delete online records of derivations nothing serves any more, replaced at
        least ``older_than`` ago (a duration, default 1h). Returns schema id -> records
        deleted (None on a dry run)."""
        from featurestore._time import parse_duration_us
        from featurestore.api.serving import unserved_schemas

        grace_s = parse_duration_us(older_than) / 1_000_000
        versions = [(v.version, v.created_at.timestamp()) for v in self.registry.history()]
        versions.sort()
        schemas = unserved_schemas(
            project=self.project,
            versions=versions,
            index_at=self.index,
            pins=self.registry.serving_pins(),
            now_s=time.time(),
            grace_s=grace_s,
        )
        if dry_run:
            return {schema.schema_id: None for schema in schemas}
        return {schema.schema_id: self.online.delete_view(schema) for schema in schemas}

    def index(self, version: int | None = None) -> PlanIndex:
        """A lookup index over the registry at ``version`` (default: pinned, else head)."""
        snap = self.registry.snapshot(version if version is not None else self.pinned_version)
        cached = self._indexes.get(snap.version)
        if cached is None:
            cached = self._indexes[snap.version] = PlanIndex(snap.plan)
        return cached

    @cached_property
    def offline(self) -> DeltaOfflineStore:
        from featurestore.stores.offline.delta import DeltaOfflineStore

        return DeltaOfflineStore(
            self.settings.offline_root,
            storage_options=dict(self.settings.config.offline_store.storage_options) or None,
        )

    @cached_property
    def online(self) -> OnlineStore:
        from featurestore.stores.online import open_online_store

        return open_online_store(self._online_url())

    def _online_url(self) -> str:
        """The online store's URL with the configured timeout (batch tasks on another
        process open the store from it)."""
        url = self.settings.online_url
        redis_schemes = ("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")
        if url.startswith(redis_schemes) and "timeout_s=" not in url:
            timeout = self.settings.config.online_store.timeout_seconds
            url += ("&" if "?" in url else "?") + f"timeout_s={timeout}"
        return url

    @cached_property
    def _lookups(self) -> LookupCache:
        from featurestore.api.online import LookupCache

        return LookupCache()

    def _version(self) -> int:
        return self.pinned_version if self.pinned_version is not None else self.registry.head()

    def _views(self, views: Sequence[str] | None, index: PlanIndex) -> list[Any]:
        names = list(views) if views else sorted(index.views)
        return [index.view(n) for n in names]

    # -- batch ---------------------------------------------------------------
    def backfill(
        self,
        views: Sequence[str] | None = None,
        *,
        start: Instant | None = None,
        end: Instant | None = None,
        mode: str = "merge",
        progress: bool = False,
    ) -> list[BackfillReport]:
        """Batch sources -> row transforms -> offline Delta tables (``start <= event_ts < end``)."""
        from featurestore.materialize import backfill_view

        index = self.index()
        return [
            backfill_view(
                v,
                repo=self.repo,
                offline=self.offline,
                start_us=None if start is None else to_us(start, what="start"),
                end_us=None if end is None else to_us(end, what="end"),
                mode=mode,
                progress=progress,
                executor=self.executor,
            )
            for v in self._views(views, index)
        ]

    def materialize(
        self,
        views: Sequence[str] | None = None,
        *,
        end: Instant,
        start: Instant | None = None,
        progress: bool = False,
    ) -> list[MaterializeReport]:
        """Latest offline row per entity with ``start <= event_ts <= end`` -> online."""
        end_us = to_us(end, what="end")
        start_us = None if start is None else to_us(start, what="start")
        if start_us is not None and start_us > end_us:
            raise DataError("start is after end", field="start", value=start)
        return self._materialize(
            views, end_us=end_us, start_of=lambda _: start_us, progress=progress
        )

    def materialize_incremental(
        self,
        views: Sequence[str] | None = None,
        *,
        end: Instant | None = None,
        lookback: str | int = "1h",
        progress: bool = False,
    ) -> list[MaterializeReport]:
        """Materialize from each view's watermark (minus ``lookback``, for late data)
        up to ``end`` (default now). The watermark lives in the registry."""
        from featurestore._time import parse_duration_us

        end_us = now_us() if end is None else to_us(end, what="end")
        back = parse_duration_us(lookback)
        return self._materialize(
            views,
            end_us=end_us,
            start_of=lambda mark: None if mark is None else mark - back,
            progress=progress,
        )

    def _materialize(
        self,
        views: Sequence[str] | None,
        *,
        end_us: int,
        start_of: Callable[[int | None], int | None],
        progress: bool,
    ) -> list[MaterializeReport]:
        """Materialize each online view from ``start_of(its watermark)`` to ``end_us``,
        then move its watermark (kept in the registry) forward to ``end_us``."""
        from featurestore.materialize import materialize_view

        index = self.index()
        retention = self.settings.online_retention
        retention.check_views(list(index.views))
        pins = self.registry.serving_pins()
        reports = []
        for view in self._views(views, index):
            if not view.online:
                continue
            name = f"materialize:{view.name}"
            mark = self.registry.get_watermark(name)
            pinned = view.name in pins
            reports.append(
                materialize_view(
                    view,
                    project=self.project,
                    offline=self.offline,
                    online=self.online,
                    # A view still served from its old definition (blue/green) gets
                    # every entity's record of the new one, then switches over.
                    start_us=None if pinned else start_of(mark),
                    end_us=end_us,
                    progress=progress,
                    retention=retention,
                    executor=self.executor,
                    online_url=self._online_url(),
                )
            )
            if pinned and self.offline.exists(view.name):
                self.registry.promote(view.name)
                self._pins = None
            # The watermark moves only over data that was there to read: a view with
            # no offline table yet keeps it, so a later incremental run reads it all.
            if self.offline.exists(view.name):
                self.registry.set_watermark(name, max(end_us, mark or end_us))
        return reports

    # -- serving ---------------------------------------------------------------
    def get_online_features(
        self,
        entities: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
        *,
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        request_time: Instant | None = None,
        request_data: Mapping[str, Sequence[Any]] | None = None,
        principal: str | None = None,
    ) -> OnlineResponse:
        """Values, statuses and event times for ``entities`` (columns or rows).

        ``request_data`` holds the request-time fields that on-demand features read,
        one value per entity. With a ``[policy]``, ``principal`` must be allowed to
        read these features online (``AccessDenied`` otherwise); reads of pii or
        sensitive features are recorded in the access log (docs/governance.md).
        """
        from featurestore.api.online import lookup
        from featurestore.api.serving import served_pins

        version = self._version()
        index = self.index(version)
        classes = self._access_classes(
            principal, "online", version, features=features, feature_service=feature_service
        )
        plan = self._lookups.get(
            self.serving_index(version),
            serving=served_pins(index, self.serving_pins(), version),
            project=self.project,
            registry_version=version,
            features=features,
            feature_service=feature_service,
            full_feature_names=full_feature_names,
            repo=self.repo,
        )
        response = lookup(
            plan,
            self.online,
            entities,
            request_time_us=None if request_time is None else to_us(request_time),
            request_data=request_data,
        )
        if self.feature_logger is not None:
            self.feature_logger.log(
                response,
                feature_service=feature_service,
                features=features,
                full_feature_names=full_feature_names,
                plan=plan,
            )
        if classes:
            self._record_access(
                principal,
                "online",
                classes,
                entities=len(next(iter(response.entities.values()), ())),
                origin="python",
                registry_version=version,
            )
        return response

    @cached_property
    def _access(self) -> AccessGate:
        from featurestore.api.access import AccessGate

        return AccessGate(self.settings.policy)

    def _record_access(self, principal: str | None, action: str, classes: Any, **row: Any) -> None:
        """Append a pii/sensitive read to the access log (its writer thread starts on
        the first such read, not with every store)."""
        from featurestore.api.access_log import AccessLogger

        if self._access.logger is None:
            self._access.logger = AccessLogger(self.offline)
        self._access.record(principal, action, classes, **row)

    def _access_classes(
        self,
        principal: str | None,
        action: str,
        version: int,
        *,
        features: Sequence[str] | None,
        feature_service: str | None,
    ) -> Any:
        """Check ``principal`` against the policy; returns the classes to log (empty
        when none is pii or sensitive). Cached per request shape: lookups are hot."""
        from featurestore.api.access import logged

        key = (principal, action, version, tuple(features or ()), feature_service)
        found = self._access_cache.get(key)
        if found is None:
            index = self.index(version)
            checked = self._access.check(
                principal, action, index, features=features, feature_service=feature_service
            )
            found = self._access_cache[key] = checked if logged(checked) else ()
        return found

    def enable_feature_logging(self, **options: Any) -> FeatureLogger:
        """Log every in-process lookup to the offline store (asynchronously, bounded;
        see ``FeatureLogger`` for ``queue_size``, ``sample_rates``...)."""
        from featurestore.api.feature_log import FeatureLogger

        if self.feature_logger is None:
            self.feature_logger = FeatureLogger(
                self.offline, project=self.project, index=self.index, **options
            )
        return self.feature_logger

    # -- training ----------------------------------------------------------------
    def get_training_dataset(
        self,
        entity_df: Any,
        *,
        features: Sequence[str] | None = None,
        feature_service: str | None = None,
        timestamp: str = "event_timestamp",
        as_of_known_time: bool = False,
        full_feature_names: bool = False,
        principal: str | None = None,
    ) -> TrainingDataset:
        """Point-in-time correct features for every row of ``entity_df``. With a
        ``[policy]``, ``principal`` must be allowed to build training data from them."""
        from featurestore.api.training import compute_dataset

        version = self._version()
        classes = self._access_classes(
            principal, "training", version, features=features, feature_service=feature_service
        )
        dataset = compute_dataset(
            index=self.index(version),
            project=self.project,
            registry_version=version,
            offline=self.offline,
            entity_df=entity_df,
            features=features,
            feature_service=feature_service,
            timestamp=timestamp,
            as_of_known_time=as_of_known_time,
            full_feature_names=full_feature_names,
            repo=self.repo,
            executor=self.executor,
        )
        if classes:
            self._record_access(
                principal,
                "training",
                classes,
                entities=dataset.frame.height,
                origin="python",
                registry_version=version,
            )
        return dataset

    def save_dataset(self, dataset: TrainingDataset, name: str, *, entity_df: Any) -> Lineage:
        """Store a dataset, its spine and lineage under ``name`` in the offline store."""
        from featurestore.api.training import save_dataset, to_polars_frame

        return save_dataset(dataset, name, offline=self.offline, spine=to_polars_frame(entity_df))

    def rebuild_dataset(self, name: str) -> tuple[TrainingDataset, Lineage]:
        """Recompute a saved dataset from its pinned versions; compare ``content_hash``."""
        from featurestore.api.training import compute_dataset, load_lineage, load_saved

        lineage = load_lineage(name, offline=self.offline)
        _, spine = load_saved(name, offline=self.offline)
        index = self.index(lineage.registry_version)
        rebuilt = compute_dataset(
            index=index,
            project=self.project,
            registry_version=lineage.registry_version,
            offline=self.offline,
            entity_df=spine,
            features=lineage.features,
            timestamp=lineage.timestamp,
            as_of_known_time=lineage.as_of_known_time,
            full_feature_names=lineage.full_feature_names,
            table_versions=lineage.table_versions,
            repo=self.repo,
            executor=self.executor,
        )
        return rebuilt, lineage

    # -- push --------------------------------------------------------------------
    def push(self, view: str, rows: Any, *, push_id: str | None = None) -> PushReport:
        """Write ``rows`` (the view's source columns: a DataFrame, columns or records)
        through the view's row transforms to the online store, as the stream does, and
        to its offline table in one commit. Retrying with the same ``push_id`` after
        any failure writes each row once (``api/push.py``).

        >>> store.push("driver_stats", df, push_id="orders-17")  # doctest: +SKIP
        """
        from featurestore.api.push import push

        version = self._version()
        target = self.index(version).view(view)
        # blue/green: the derivation whose records serve the view gets the rows too
        online_views = [self.serving_index(version).view(view)]
        server = self.settings.config.server
        return push(
            target,
            rows,
            project=self.project,
            online=self.online,
            offline=self.offline,
            push_id=push_id,
            online_views=online_views,
            retention=self.settings.online_retention,
            retry_s=server.push_store_retry_seconds,
            replay_window_s=server.push_replay_window_seconds,
        )

    def close(self) -> None:
        if self._owns_executor and self._executor is not None:
            self._executor.close()
            self._executor = None
        if self.feature_logger is not None:
            self.feature_logger.close()
        if "_access" in self.__dict__ and self._access.logger is not None:
            self._access.logger.close()
        if "registry" in self.__dict__:
            self.registry.close()
        if "online" in self.__dict__:
            self.online.close()
