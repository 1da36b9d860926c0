"""Typed, read-only accessors over compiled specs, for the engines and the APIs.

Engines never see definition objects, only plans: what ran in training is what
the registry recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featurestore.compile.plan import ObjectPlan, RepoPlan
from featurestore.errors import UnknownFeatureError, UnknownServiceError

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class SourcePlan:
    spec: Mapping[str, Any]

    @property
    def batch(self) -> Mapping[str, Any]:
        """The batch part: the source itself, or the history a Kafka source backfills from."""
        return self.spec if self.spec["type"] == "batch" else self.spec["batch_source"]

    @property
    def timestamp_field(self) -> str:
        return str(self.batch["timestamp_field"])

    @property
    def created_timestamp_field(self) -> str | None:
        value = self.batch.get("created_timestamp_field")
        return None if value is None else str(value)

    def resolved_path(self, repo: Path) -> str:
        path = str(self.batch["path"])
        if "://" in path or Path(path).is_absolute():
            return path
        return str(repo / path)


@dataclass(frozen=True)
class FeatureViewPlan:
    """A compiled feature view."""

    plan: ObjectPlan

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def hash(self) -> str:
        return self.plan.hash

    @property
    def spec(self) -> Mapping[str, Any]:
        return self.plan.spec

    @property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(k["name"] for k in self.spec["join_keys"])

    @property
    def key_dtypes(self) -> tuple[str, ...]:
        return tuple(k["dtype"] for k in self.spec["join_keys"])

    @property
    def ttl_us(self) -> int | None:
        value = self.spec["ttl_us"]
        return None if value is None else int(value)

    @property
    def source(self) -> SourcePlan:
        return SourcePlan(self.spec["source"])

    @property
    def aggregations(self) -> list[Mapping[str, Any]]:
        return list(self.spec["aggregations"])

    @property
    def features(self) -> tuple[str, ...]:
        if self.aggregations:
            return tuple(a["name"] for a in self.aggregations)
        return tuple(f["name"] for f in self.spec["features"])

    @property
    def feature_dtypes(self) -> tuple[str, ...]:
        if self.aggregations:
            return tuple(a.get("dtype", "float64") for a in self.aggregations)
        return tuple(f["dtype"] for f in self.spec["features"])

    @property
    def online(self) -> bool:
        return bool(self.spec["online"])

    @cached_property
    def transform_exprs(self) -> dict[str, pl.Expr]:
        from featurestore.compile.expr import expr_from_spec

        return {t["name"]: expr_from_spec(t["expr"]) for t in self.spec["transform"]}


@dataclass(frozen=True)
class FeatureRef:
    view: str
    feature: str

    @classmethod
    def parse(cls, ref: str) -> FeatureRef:
        if not isinstance(ref, str) or ref.count(":") != 1 or not all(ref.split(":")):
            raise UnknownFeatureError(
                "is not a feature reference", value=ref, hint="use 'view_name:feature_name'"
            )
        view, feature = ref.split(":")
        return cls(view, feature)

    def __str__(self) -> str:
        return f"{self.view}:{self.feature}"


class PlanIndex:
    """Fast lookups into one registry snapshot: views, services, feature references."""

    def __init__(self, plan: RepoPlan) -> None:
        self.plan = plan
        self.views = {o.name: FeatureViewPlan(o) for o in plan.of_kind("feature_view")}
        self.on_demand = {o.name: o for o in plan.of_kind("on_demand_feature_view")}
        self.services = {o.name: o for o in plan.of_kind("feature_service")}

    def view(self, name: str) -> FeatureViewPlan:
        try:
            return self.views[name]
        except KeyError:
            raise UnknownFeatureError(
                "no such feature view",
                obj=f"feature view {name!r}",
                hint=f"registered views: {', '.join(sorted(self.views)) or '(none)'}",
            ) from None

    def resolve(
        self, features: list[str] | None = None, feature_service: str | None = None
    ) -> list[FeatureRef]:
        """Feature references from a list or a service, checked against the plan."""
        if (features is None) == (feature_service is None):
            raise UnknownFeatureError("give either features or feature_service, not both/neither")
        if feature_service is not None:
            svc = self.services.get(feature_service)
            if svc is None:
                raise UnknownServiceError(
                    "no such feature service",
                    obj=f"feature service {feature_service!r}",
                    hint=f"registered services: {', '.join(sorted(self.services)) or '(none)'}",
                )
            features = list(svc.spec["features"])
        assert features is not None
        refs = [FeatureRef.parse(r) for r in features]
        for ref in refs:
            if ref.view in self.on_demand:
                outs = [o["name"] for o in self.on_demand[ref.view].spec["outputs"]]
                if ref.feature not in outs:
                    raise UnknownFeatureError(
                        "no such feature",
                        obj=f"view {ref.view!r}",
                        value=ref.feature,
                        hint=f"its features: {outs}",
                    )
                continue
            view = self.view(ref.view)
            if ref.feature not in view.features:
                raise UnknownFeatureError(
                    "no such feature",
                    obj=f"feature view {ref.view!r}",
                    value=ref.feature,
                    hint=f"its features: {', '.join(view.features)}",
                )
        return refs
