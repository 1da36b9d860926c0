"""Online lookups: feature references -> one multi-view read -> values with statuses.

The hot path. A ``LookupPlan`` is built once per distinct feature list (or
service) and cached, so a request does: validate keys, one store round trip,
status by TTL. No registry access per request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurestore._time import now_us
from featurestore.api.access import Classes, feature_classes
from featurestore.api.on_demand import (
    OnDemandPlan,
    check_request_data,
    compile_on_demand,
    run_on_demand,
)
from featurestore.compile.views import FeatureRef, PlanIndex
from featurestore.errors import RequestError
from featurestore.stores.online.base import OnlineStore, OnlineViewSchema, ReadRequest
from featurestore.stores.view_specs import RECORD_COLUMN, online_schema, served_schema

if TYPE_CHECKING:
    import polars as pl

    from featurestore.compile.views import FeatureViewPlan
    from featurestore.engines.aggregate.online import AggregateReader

PRESENT = "PRESENT"
MISSING = "MISSING"
EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class ViewLookup:
    schema: OnlineViewSchema
    features: tuple[str, ...]
    outputs: tuple[str | None, ...]  # None: read only as an input of an on-demand view
    ttl_us: int | None
    # Aggregated views: how to answer the features from the stored records, and the
    # layout of those records (``schema`` above describes the features served).
    aggregates: AggregateReader | None = None
    record_schema: OnlineViewSchema | None = None

    @property
    def aggregated(self) -> bool:
        return self.aggregates is not None


@dataclass(frozen=True)
class OnDemandLookup:
    plan: OnDemandPlan
    features: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class LookupPlan:
    """What one feature list needs: which views, which features, which output names."""

    views: tuple[ViewLookup, ...]
    join_keys: tuple[str, ...]
    outputs: tuple[str, ...]
    registry_version: int
    on_demand: tuple[OnDemandLookup, ...] = ()
    # ("view:feature", class) of each requested reference: what the policy checks
    classes: Classes = ()


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
    repo: Path | None = None,
) -> LookupPlan:
    """Resolve references once: views to read, hidden inputs of on-demand views,
    output names (clashes are errors unless ``full_feature_names``)."""
    refs = index.resolve(list(features) if features is not None else None, feature_service)
    wanted = [r for r in refs if r.view not in index.on_demand]
    odfv_refs: dict[str, list[str]] = {}
    for ref in refs:
        if ref.view in index.on_demand:
            odfv_refs.setdefault(ref.view, []).append(ref.feature)
    on_demand = []
    hidden: list[FeatureRef] = []
    for name, od_feats in odfv_refs.items():
        odp = compile_on_demand(index.on_demand[name], index, repo=repo or Path("."))
        od_outs = tuple(f"{name}__{f}" if full_feature_names else f for f in od_feats)
        on_demand.append(OnDemandLookup(odp, tuple(od_feats), od_outs))
        hidden.extend(i for i in odp.inputs if i not in wanted and i not in hidden)
    by_view: dict[str, list[tuple[str, bool]]] = {}
    for ref in wanted:
        by_view.setdefault(ref.view, []).append((ref.feature, True))
    for ref in hidden:
        by_view.setdefault(ref.view, []).append((ref.feature, False))
    views = []
    outputs: list[str] = []
    keys: list[str] = []
    for name, items in by_view.items():
        view = index.view(name)
        if not view.online:
            raise RequestError(
                "this view is not served online (online=False)", obj=f"feature view {name!r}"
            )
        feats = tuple(dict.fromkeys(f for f, _ in items))
        shown = {f for f, visible in items if visible}
        outs = tuple(
            (f"{name}__{f}" if full_feature_names else f) if f in shown else None for f in feats
        )
        if view.aggregations:
            views.append(
                ViewLookup(
                    served_schema(project, view),
                    feats,
                    outs,
                    # SEMANTICS: no TTL for windowed aggregations, even in a plan
                    # applied before the compiler refused one: never EXPIRED.
                    None,
                    _aggregate_reader(view, feats),
                    online_schema(project, view),
                )
            )
        else:
            views.append(ViewLookup(online_schema(project, view), feats, outs, view.ttl_us))
        outputs.extend(o for o in outs if o is not None)
        keys.extend(k for k in view.join_keys if k not in keys)
    for od in on_demand:
        outputs.extend(od.outputs)
    clashes = sorted({o for o in outputs if outputs.count(o) > 1})
    if clashes:
        raise RequestError(
            "two views give features of the same name",
            value=clashes,
            hint="pass full_feature_names=True to get 'view__feature' names",
        )
    return LookupPlan(
        tuple(views),
        tuple(keys),
        tuple(outputs),
        registry_version,
        tuple(on_demand),
        feature_classes(index, refs),
    )


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
    request_data: Mapping[str, Sequence[Any]] | None = None,
) -> OnlineResponse:
    """Read every view of ``plan`` for ``entities`` in one store call, then run the
    on-demand transforms over ``request_data`` and the values read."""
    columns, n = _entity_columns(entities, plan.join_keys)
    # request data is checked against its declared dtypes before the store is read
    typed = [check_request_data(od.plan, request_data or {}, n) for od in plan.on_demand]
    r = now_us() if request_time_us is None else request_time_us
    requests = [
        ReadRequest(v.schema, {k: columns[k] for k in v.schema.join_keys}, v.features)
        if v.record_schema is None
        else ReadRequest(
            v.record_schema, {k: columns[k] for k in v.schema.join_keys}, (RECORD_COLUMN,)
        )
        for v in plan.views
    ]
    results = store.read(requests)
    values: dict[str, list[Any]] = {}
    statuses: dict[str, list[str]] = {}
    stamps: dict[str, list[int | None]] = {}
    inputs: dict[tuple[str, str], tuple[list[Any], list[str]]] = {}
    for v, res in zip(plan.views, results, strict=True):
        ets = res.event_ts
        if v.ttl_us is None:
            status = [MISSING if t is None else PRESENT for t in ets]
        else:
            cutoff = r - v.ttl_us
            status = [MISSING if t is None else (EXPIRED if t <= cutoff else PRESENT) for t in ets]
        expired = [i for i, s in enumerate(status) if s == EXPIRED]
        found = res.features
        if v.aggregates is not None:
            # Windows end at the request time, so the values are computed here.
            found = v.aggregates.values(res.features[RECORD_COLUMN], at_us=ets, request_us=r)
        for feat, out in zip(v.features, v.outputs, strict=True):
            vals = found[feat]
            if expired:
                vals = list(vals)
                for i in expired:
                    vals[i] = None
            if plan.on_demand:
                inputs[(v.schema.view, feat)] = (vals, status)
            if out is not None:
                values[out] = vals
                statuses[out] = status
                stamps[out] = ets
    for od, request_columns in zip(plan.on_demand, typed, strict=True):
        _run_on_demand_online(od, inputs, request_columns, n, values, statuses, stamps)
    return OnlineResponse(
        {k: columns[k] for k in plan.join_keys}, values, statuses, stamps, plan.registry_version, r
    )


def _aggregate_reader(view: FeatureViewPlan, features: tuple[str, ...]) -> AggregateReader:
    from featurestore.engines.aggregate.online import AggregateReader
    from featurestore.engines.aggregate.spec import WindowSpec

    slot = {a["name"]: (j, a) for j, a in enumerate(view.aggregations)}
    return AggregateReader(
        functions=tuple(a["function"] for a in view.aggregations),
        features={
            f: (
                slot[f][0],
                WindowSpec(slot[f][1]["function"], slot[f][1]["window_us"], slot[f][1]["hop_us"]),
                slot[f][1]["dtype"],
            )
            for f in features
        },
    )


_RANK = {PRESENT: 0, EXPIRED: 1, MISSING: 2}


def _run_on_demand_online(
    od: OnDemandLookup,
    inputs: Mapping[tuple[str, str], tuple[list[Any], list[str]]],
    request_columns: Mapping[str, pl.Series],
    n: int,
    values: dict[str, list[Any]],
    statuses: dict[str, list[str]],
    stamps: dict[str, list[int | None]],
) -> None:
    import polars as pl

    cols: dict[str, Any] = dict(request_columns)  # checked and typed by the caller
    status = [PRESENT] * n
    for ref in od.plan.inputs:
        vals, st = inputs[(ref.view, ref.feature)]
        cols[ref.feature] = vals
        status = [a if _RANK[a] >= _RANK[b] else b for a, b in zip(status, st, strict=True)]
    out = run_on_demand(od.plan, pl.DataFrame(cols, strict=False))
    for feat, name in zip(od.features, od.outputs, strict=True):
        values[name] = out[feat].to_list()
        statuses[name] = status
        stamps[name] = [None] * n


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
        repo: Path | None = None,
        serving: tuple[Any, ...] = (),
    ) -> LookupPlan:
        """The plan for this request shape; ``serving`` names what else decides the
        plan besides the version (the blue/green pins of ``api/serving.py``)."""
        key = (
            registry_version,
            serving,
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
                repo=repo,
            )
            with self._lock:
                if len(self._plans) > 10_000:
                    self._plans.clear()
                self._plans[key] = plan
        return plan
