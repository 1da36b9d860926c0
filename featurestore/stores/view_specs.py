"""Store layouts derived from a compiled feature view: one place decides them."""

from __future__ import annotations

from featurestore.compile.plan import content_hash
from featurestore.compile.views import FeatureViewPlan
from featurestore.stores.offline.spec import OfflineTableSpec
from featurestore.stores.online.base import OnlineViewSchema, make_schema_id

# An aggregated view is stored online as one encoded record per entity in this
# column (``engines.aggregate.online``), not as one column per feature.
RECORD_COLUMN = "_aggregates"


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


# What decides the values a view computes. Metadata, TTL and the online flag do not.
_DERIVATION = ("join_keys", "source", "transform", "features", "aggregations")


def derivation_hash(view: FeatureViewPlan) -> str:
    """A hash of everything that decides a view's values (not docs, not the TTL)."""
    return content_hash({k: view.spec.get(k) for k in _DERIVATION})[:8]


def online_schema(project: str, view: FeatureViewPlan) -> OnlineViewSchema:
    """The online layout of a view. Its ``schema_id`` changes when the values would:
    a new transform or source gets fresh records (re-materialize), because
    compare-and-set would otherwise keep the old values, whose timestamps are equal.
    An aggregated view stores one ``RECORD_COLUMN`` of encoded aggregate records."""
    keys = dict(zip(view.join_keys, view.key_dtypes, strict=True))
    if view.aggregations:
        features = {RECORD_COLUMN: "string"}
    else:
        features = dict(zip(view.features, view.feature_dtypes, strict=True))
    layout = make_schema_id(
        join_keys=tuple(keys),
        key_dtypes=tuple(keys.values()),
        features=tuple(features),
        feature_dtypes=tuple(features.values()),
    )
    return OnlineViewSchema(
        project=project,
        view=view.name,
        join_keys=tuple(keys),
        key_dtypes=tuple(keys.values()),
        features=tuple(features),
        feature_dtypes=tuple(features.values()),
        ttl_us=view.ttl_us,
        schema_id=f"{layout}-{derivation_hash(view)}",
    )


def served_schema(project: str, view: FeatureViewPlan) -> OnlineViewSchema:
    """The features a lookup returns for ``view``, with their dtypes. The same as
    ``online_schema`` for a plain view; for an aggregated view, the aggregations
    (computed at lookup time) rather than the stored record column."""
    stored = online_schema(project, view)
    if not view.aggregations:
        return stored
    return OnlineViewSchema(
        project=project,
        view=view.name,
        join_keys=stored.join_keys,
        key_dtypes=stored.key_dtypes,
        features=view.features,
        feature_dtypes=view.feature_dtypes,
        ttl_us=view.ttl_us,
        schema_id=stored.schema_id,
    )
