"""Store layouts derived from a compiled feature view: one place decides them."""

from __future__ import annotations

from featurestore.compile.views import FeatureViewPlan
from featurestore.stores.offline.spec import OfflineTableSpec
from featurestore.stores.online.base import OnlineViewSchema


def stored_features(view: FeatureViewPlan) -> dict[str, str]:
    """Feature columns of the offline table: the declared fields or, for an
    aggregated view, the (transformed) event columns its aggregations read."""
    if not view.aggregations:
        return dict(zip(view.features, view.feature_dtypes, strict=True))
    fields = {f["name"]: f["dtype"] for f in view.spec["features"]}
    out: dict[str, str] = {}
    for agg in view.aggregations:
        col = agg["column"]
        if isinstance(col, str):
            out[col] = fields.get(col) or agg.get("input_dtype") or "float64"
    return out


def offline_spec(view: FeatureViewPlan) -> OfflineTableSpec:
    features = stored_features(view)
    return OfflineTableSpec(
        name=view.name,
        join_keys=view.join_keys,
        key_dtypes=view.key_dtypes,
        features=tuple(features),
        feature_dtypes=tuple(features.values()),
    )


def online_schema(project: str, view: FeatureViewPlan) -> OnlineViewSchema:
    return OnlineViewSchema.build(
        project=project,
        view=view.name,
        keys=dict(zip(view.join_keys, view.key_dtypes, strict=True)),
        features=dict(zip(view.features, view.feature_dtypes, strict=True)),
        ttl_us=view.ttl_us,
    )
