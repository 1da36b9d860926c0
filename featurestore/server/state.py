"""What the server holds between requests: the registry plan and the online store.

The registry is read once at start and then only by a background thread that
checks ``registry.head()`` every ``registry_refresh_seconds``; a request never
touches the registry. A new version swaps in a whole new ``ServingState`` (one
attribute assignment, atomic for readers), so a request sees one version from
start to end. Pinning a version turns the refresher off.

``GuardedStore`` wraps the online store: it times reads for the metrics and,
once a read says the store is unreachable, answers 503 at once to every request
while a background thread pings the store until it is back. That keeps a hung
Redis from holding the event loop for a full timeout on every request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurestore.api.online import LookupPlan, build_lookup_plan
from featurestore.api.serving import serving_index
from featurestore.api.store import FeatureStore
from featurestore.compile import PlanIndex
from featurestore.errors import FeatureStoreError, OnlineStoreUnavailable
from featurestore.server.metrics import ServerMetrics
from featurestore.stores.online.base import (
    CAP_PARTIAL,
    OnlineStore,
    OnlineViewSchema,
    ReadRequest,
    ReadResult,
    WriteBatch,
    WriteStats,
)

log = logging.getLogger("featurestore.server")

PlanKey = tuple[tuple[str, ...] | None, str | None, bool]
# The lookup-plan cache is an LRU bounded twice: by entries, and by the feature
# references their keys hold (issue 15: 300 lists of 27k references grew a worker
# by 750 MB when only the entry count was bounded). Clients send a few lists.
MAX_PLANS = 512
MAX_PLAN_REFS = 100_000
# After a bad head at start, how many older versions to try before giving up.
_FALLBACK_VERSIONS = 20


@dataclass
class ServingState:
    version: int
    index: PlanIndex  # with blue/green pins applied (``FeatureStore.serving_index``)
    pins: dict[str, int] = field(default_factory=dict)
    plans: OrderedDict[PlanKey, LookupPlan] = field(default_factory=OrderedDict)
    plan_refs: int = 0  # references held by the keys of ``plans``

    @property
    def serves_nothing(self) -> bool:
        """True for a version with no views and no services (e.g. after a rollback to 0)."""
        return not (self.index.views or self.index.on_demand or self.index.services)


@dataclass(frozen=True)
class Rejected:
    """A registry version the server would not adopt, and why."""

    version: int
    reason: str


class Serving:
    """The current registry version, its index and its lookup plans."""

    def __init__(
        self,
        store: FeatureStore,
        *,
        metrics: ServerMetrics,
        pinned_version: int | None = None,
        refresh_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.project = store.project
        self.metrics = metrics
        self.pinned = pinned_version
        self.refresh_seconds = refresh_seconds
        self.rejected: Rejected | None = None
        self.metrics.registry_rejected_version.set(0.0)
        if pinned_version is not None:
            self.state = self._state_for(pinned_version)  # the operator's choice: fail loudly
        else:
            self.state = self._newest_servable(store.registry.head(fresh=True))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _state_for(self, version: int, pins: dict[str, int] | None = None) -> ServingState:
        """The state of ``version`` (and the blue/green ``pins``), built and checked in
        full before anyone sees it."""
        pins = self.store.registry.serving_pins() if pins is None else pins
        index = serving_index(
            self.store.index(version), version=version, pins=pins, index_at=self.store.index
        )
        check_servable(index, project=self.project, version=version, repo=self.store.repo)
        state = ServingState(version, index, pins)
        self.metrics.registry_version.set(float(version))
        return state

    def _newest_servable(self, head: int) -> ServingState:
        try:
            return self._state_for(head)
        except Exception as exc:
            self._reject(head, exc)
            first = exc
        for version in range(head - 1, max(head - _FALLBACK_VERSIONS, 0) - 1, -1):
            try:
                return self._state_for(version)
            except Exception as exc:
                log.warning("registry version %d cannot be served either: %s", version, exc)
        raise first

    def _reject(self, version: int, exc: BaseException) -> None:
        reason = str(exc) if isinstance(exc, FeatureStoreError) else repr(exc)
        self.rejected = Rejected(version, reason[:500])
        self.metrics.registry_rejected_version.set(float(version))
        log.error(
            "registry version %d cannot be served, keeping version %s: %s",
            version,
            getattr(getattr(self, "state", None), "version", "(none)"),
            exc,
        )

    def plan(
        self, features: tuple[str, ...] | None, service: str | None, full_names: bool
    ) -> LookupPlan:
        state = self.state  # one read: the refresher may swap it meanwhile
        key = (features, service, full_names)
        plans = state.plans
        plan = plans.get(key)
        if plan is not None:
            plans.move_to_end(key)
            return plan
        plan = build_lookup_plan(
            state.index,
            project=self.project,
            registry_version=state.version,
            features=features,
            feature_service=service,
            full_feature_names=full_names,
            repo=self.store.repo,
        )
        plans[key] = plan
        state.plan_refs += _weight(key)
        while len(plans) > MAX_PLANS or (state.plan_refs > MAX_PLAN_REFS and len(plans) > 1):
            old, _ = plans.popitem(last=False)
            state.plan_refs -= _weight(old)
        return plan

    def refresh(self) -> bool:
        """Adopt the registry head if it moved and can be served; True when the served
        version changed. A head that cannot be served is rejected once (logged, in
        ``/ready`` and the metrics) and the last good version stays."""
        if self.pinned is not None:
            return False
        head = self.store.registry.head(fresh=True)
        pins = self.store.registry.serving_pins()
        if head == self.state.version and pins == self.state.pins:
            self._clear_rejection()
            return False
        if self.rejected is not None and self.rejected.version == head:
            return False
        try:
            state = self._state_for(head, pins)
        except Exception as exc:
            self._reject(head, exc)
            return False
        self.state = state
        self._clear_rejection()
        log.info("serving registry version %d (blue/green pins: %s)", head, pins or "none")
        return True

    def _clear_rejection(self) -> None:
        if self.rejected is not None:
            self.rejected = None
            self.metrics.registry_rejected_version.set(0.0)

    def start(self) -> None:
        if self.pinned is not None or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fs-registry-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception as exc:  # a registry outage: keep serving the last plan
                log.warning(
                    "registry refresh failed, serving version %d: %s", self.state.version, exc
                )


def _weight(key: PlanKey) -> int:
    return 1 if key[0] is None else len(key[0])


def check_servable(index: PlanIndex, *, project: str, version: int, repo: Path | None) -> None:
    """Build a lookup plan for every online view, on-demand view and feature service
    of ``index``: whatever a request could hit must plan, or the version is refused
    (a definition that passed ``apply`` but clashes in the online layout, a changed
    transform function...). Raises the first error."""

    def dry_run(features: list[str] | None, service: str | None) -> None:
        build_lookup_plan(
            index,
            project=project,
            registry_version=version,
            features=features,
            feature_service=service,
            full_feature_names=True,
            repo=repo,
        )

    for name, view in index.views.items():
        if view.online:
            dry_run([f"{name}:{f}" for f in view.features], None)
    for name, odfv in index.on_demand.items():
        dry_run([f"{name}:{o['name']}" for o in odfv.spec["outputs"]], None)
    for name in index.services:
        refs = index.resolve(None, name)
        if all(r.view in index.on_demand or index.view(r.view).online for r in refs):
            dry_run(None, name)


class GuardedStore:
    """An ``OnlineStore`` that times reads and fails fast while the store is down."""

    def __init__(
        self, store: OnlineStore, *, metrics: ServerMetrics, probe_seconds: float = 0.25
    ) -> None:
        self.inner = store
        self.capabilities = store.capabilities
        self.metrics = metrics
        self.probe_seconds = probe_seconds
        self.kind = type(store).__name__.removesuffix("OnlineStore").lower() or "online"
        self._labels = (self.kind,)
        self._down: OnlineStoreUnavailable | None = None
        self._lock = threading.Lock()
        self._prober: threading.Thread | None = None
        self._stop = threading.Event()
        metrics.store_up.set(1.0)

    @property
    def down(self) -> bool:
        return self._down is not None

    def read(self, requests: Sequence[ReadRequest]) -> list[ReadResult]:
        down = self._down
        if down is not None:
            raise OnlineStoreUnavailable(
                "the online store is unreachable",
                obj=down.obj,
                value=down.message,
                hint="the server checks it in the background; retry shortly",
            )
        started = time.perf_counter()
        try:
            results = self.inner.read(requests)
        except OnlineStoreUnavailable as exc:
            # A store of nodes (a cluster) fails only the requests that need the node
            # that is down; the others keep being answered, so one failure trips nothing.
            if CAP_PARTIAL not in self.capabilities:
                self.trip(exc)
            raise
        self.metrics.store_latency.observe(time.perf_counter() - started, self._labels)
        return results

    def trip(self, exc: OnlineStoreUnavailable) -> None:
        with self._lock:
            self._down = exc
            self.metrics.store_up.set(0.0)
            # invariant: while the store is down a prober runs; it only exits under
            # this lock, after the store came back, so no failure goes unwatched
            if self._prober is None:
                log.warning("online store unreachable, probing every %.2fs", self.probe_seconds)
                self._prober = threading.Thread(
                    target=self._probe, name="fs-store-probe", daemon=True
                )
                self._prober.start()

    def ping(self) -> None:
        """Ping the store now (for /ready): trips or clears the guard by the answer."""
        try:
            self.inner.ping()
        except OnlineStoreUnavailable as exc:
            if CAP_PARTIAL not in self.capabilities:  # see read(): reads go on
                self.trip(exc)
            raise
        with self._lock:
            self._up()

    def _up(self) -> None:
        if self._down is not None:
            log.warning("online store is reachable again")
        self._down = None
        self.metrics.store_up.set(1.0)

    def _probe(self) -> None:
        while not self._stop.wait(self.probe_seconds):
            seen = self._down
            if seen is not None:
                try:
                    self.inner.ping()
                except OnlineStoreUnavailable:
                    continue
                except Exception as exc:  # not an outage: stop failing fast, let reads tell
                    log.warning("online store ping failed: %s", exc)
            with self._lock:
                if self._down is not seen:
                    continue  # a read failed again while we pinged: keep probing
                self._up()
                self._prober = None
                return

    # the rest of the protocol, for completeness; the server only reads
    def write(self, schema: OnlineViewSchema, rows: WriteBatch) -> WriteStats:
        return self.inner.write(schema, rows)

    def delete_view(self, schema: OnlineViewSchema) -> int:
        return self.inner.delete_view(schema)

    def delete_entities(
        self, schema: OnlineViewSchema, entity_keys: Mapping[str, Sequence[Any]]
    ) -> int:
        return self.inner.delete_entities(schema, entity_keys)

    def stop(self) -> None:
        """Stop probing; the store itself stays open (its owner closes it)."""
        self._stop.set()

    def close(self) -> None:
        self.stop()
        self.inner.close()
