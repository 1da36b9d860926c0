"""Online lookups: feature references -> one multi-view read -> values with statuses.

The hot path. A ``LookupPlan`` is built once per distinct feature list (or
service) and cached, so a request does: validate keys, one store round trip,
status by TTL. No registry access per request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from featurestore._time import now_us
from featurestore.compile.views import FeatureRef, PlanIndex
from featurestore.errors import RequestError
from featurestore.stores.online.base import OnlineStore, OnlineViewSchema, ReadRequest
from featurestore.stores.view_specs import online_schema

if TYPE_CHECKING:
    import polars as pl

PRESENT = "PRESENT"
MISSING = "MISSING"
EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class ViewLookup:
    schema: OnlineViewSchema
    features: tuple[str, ...]
    outputs: tuple[str, ...]
    ttl_us: int | None


@dataclass(frozen=True)
class LookupPlan:
    """What one feature list needs: which views, which features, which output names."""

    views: tuple[ViewLookup, ...]
    join_keys: tuple[str, ...]
    outputs: tuple[str, ...]
    registry_version: int


@dataclass
class OnlineResponse:
    """Columnar answer: one list per feature, aligned with the request's entities."""

    entities: dict[str, list[Any]]
    values: dict[str, list[Any]]
    statuses: dict[str, list[str]]
    event_ts: dict[str, list[int | None]]
    registry_version: int
    request_time_us: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "entities": self.entities,
            "features": {
                name: {
                    "values": self.values[name],
                    "statuses": self.statuses[name],
                    "event_ts": self.event_ts[name],
                }
                for name in self.values
            },
            "registry_version": self.registry_version,
            "request_time_us": self.request_time_us,
        }

    def to_polars(self) -> pl.DataFrame:
        """Keys and one column per feature (statuses and timestamps are left out)."""
        import polars as pl

        return pl.DataFrame({**self.entities, **self.values}, strict=False)


def build_lookup_plan(
    index: PlanIndex,
    *,
    project: str,
    registry_version: int,
    features: Sequence[str] | None = None,
    feature_service: str | None = None,
    full_feature_names: bool = False,
) -> LookupPlan:
    refs = index.resolve(list(features) if features is not None else None, feature_service)
    by_view: dict[str, list[FeatureRef]] = {}
    for ref in refs:
        if ref.view in index.on_demand:
            raise RequestError("on-demand features are not served yet", obj=str(ref))
        by_view.setdefault(ref.view, []).append(ref)
    views = []
    outputs: list[str] = []
    keys: list[str] = []
    for name, view_refs in by_view.items():
        view = index.view(name)
        if not view.online:
            raise RequestError(
                "this view is not served online (online=False)", obj=f"feature view {name!r}"
            )
        feats = tuple(dict.fromkeys(r.feature for r in view_refs))
        outs = tuple(f"{name}__{f}" if full_feature_names else f for f in feats)
        views.append(ViewLookup(online_schema(project, view), feats, outs, view.ttl_us))
        outputs.extend(outs)
        keys.extend(k for k in view.join_keys if k not in keys)
    clashes = sorted({o for o in outputs if outputs.count(o) > 1})
    if clashes:
        raise RequestError(
            "two views give features of the same name",
            value=clashes,
            hint="pass full_feature_names=True to get 'view__feature' names",
        )
    return LookupPlan(tuple(views), tuple(keys), tuple(outputs), registry_version)


def _entity_columns(
    entities: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]], keys: tuple[str, ...]
) -> tuple[dict[str, list[Any]], int]:
    if isinstance(entities, Mapping):
        columns = {k: list(v) for k, v in entities.items()}
    else:
        rows = list(entities)
        columns = {k: [r.get(k) for r in rows] for k in keys if rows and k in rows[0]}
    missing = [k for k in keys if k not in columns]
    if missing:
        raise RequestError(
            "entity key columns are missing",
            field="entities",
            value=missing,
            hint=f"these features need the keys {list(keys)}",
        )
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise RequestError(
            "entity key columns have different lengths",
            field="entities",
            value={k: len(v) for k, v in columns.items()},
        )
    n = lengths.pop() if lengths else 0
    if n == 0:
        raise RequestError(
            "no entities given",
            field="entities",
            hint='give at least one entity, e.g. {"driver_id": [1001]}',
        )
    return columns, n


def lookup(
    plan: LookupPlan,
    store: OnlineStore,
    entities: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    request_time_us: int | None = None,
) -> OnlineResponse:
    """Read every view of ``plan`` for ``entities`` in one store call."""
    columns, _ = _entity_columns(entities, plan.join_keys)
    r = now_us() if request_time_us is None else request_time_us
    requests = [
        ReadRequest(v.schema, {k: columns[k] for k in v.schema.join_keys}, v.features)
        for v in plan.views
    ]
    results = store.read(requests)
    values: dict[str, list[Any]] = {}
    statuses: dict[str, list[str]] = {}
    stamps: dict[str, list[int | None]] = {}
    for v, res in zip(plan.views, results, strict=True):
        ets = res.event_ts
        if v.ttl_us is None:
            status = [MISSING if t is None else PRESENT for t in ets]
        else:
            cutoff = r - v.ttl_us
            status = [MISSING if t is None else (EXPIRED if t <= cutoff else PRESENT) for t in ets]
        expired = [i for i, s in enumerate(status) if s == EXPIRED]
        for feat, out in zip(v.features, v.outputs, strict=True):
            vals = res.features[feat]
            if expired:
                vals = list(vals)
                for i in expired:
                    vals[i] = None
            values[out] = vals
            statuses[out] = status
            stamps[out] = ets
    return OnlineResponse(
        {k: columns[k] for k in plan.join_keys}, values, statuses, stamps, plan.registry_version, r
    )


class LookupCache:
    """Lookup plans per (registry version, feature list); rebuilt when the head moves."""

    def __init__(self) -> None:
        self._plans: dict[tuple[Any, ...], LookupPlan] = {}
        self._lock = threading.Lock()

    def get(
        self,
        index: PlanIndex,
        *,
        project: str,
        registry_version: int,
        features: Sequence[str] | None,
        feature_service: str | None,
        full_feature_names: bool,
    ) -> LookupPlan:
        key = (
            registry_version,
            tuple(features) if features is not None else None,
            feature_service,
            full_feature_names,
        )
        plan = self._plans.get(key)
        if plan is None:
            plan = build_lookup_plan(
                index,
                project=project,
                registry_version=registry_version,
                features=features,
                feature_service=feature_service,
                full_feature_names=full_feature_names,
            )
            with self._lock:
                if len(self._plans) > 10_000:
                    self._plans.clear()
                self._plans[key] = plan
        return plan
