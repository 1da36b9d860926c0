"""Store layouts derived from a compiled feature view: one place decides them."""

from __future__ import annotations

from featurestore.compile.plan import content_hash
from featurestore.compile.views import FeatureViewPlan
from featurestore.config import OnlineRetention, Windows
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
        event_log=bool(view.aggregations),
    )


# What decides the values a view computes. Metadata, TTL and the online flag do not.
_DERIVATION = ("join_keys", "source", "transform", "features", "aggregations")


def derivation_hash(view: FeatureViewPlan) -> str:
    """A hash of everything that decides a view's values (not docs, not the TTL)."""
    return content_hash({k: view.spec.get(k) for k in _DERIVATION})[:8]


def windows(view: FeatureViewPlan) -> Windows:
    """``(window_us, hop_us)`` of each aggregation; empty for a plain view."""
    return tuple((a["window_us"], a.get("hop_us")) for a in view.aggregations)


def retention_us(view: FeatureViewPlan, retention: OnlineRetention | None = None) -> int | None:
    """How long the view's online records are kept past their ``event_ts`` under
    ``retention`` (default: the SEMANTICS default); None: until replaced."""
    setting = (retention or OnlineRetention()).for_view(view.name)
    return setting.resolve(ttl_us=view.ttl_us, windows=windows(view))


def describe_retention(view: FeatureViewPlan, retention: OnlineRetention | None = None) -> str:
    """The view's retention for a report, e.g. ``2 x ttl = 2d``."""
    setting = (retention or OnlineRetention()).for_view(view.name)
    return setting.describe(ttl_us=view.ttl_us, windows=windows(view))


def online_schema(
    project: str, view: FeatureViewPlan, *, retention: OnlineRetention | None = None
) -> OnlineViewSchema:
    """The online layout of a view. Its ``schema_id`` changes when the values would:
    a new transform or source gets fresh records (re-materialize), because
    compare-and-set would otherwise keep the old values, whose timestamps are equal.
    An aggregated view stores one ``RECORD_COLUMN`` of encoded aggregate records.

    ``retention`` (the project's ``[online_store] retention`` settings; default
    ``"2x ttl"``) gives ``retention_us``, which only writers use; it never changes
    the ``schema_id``, so every setting reads the same records."""
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
        retention_us=retention_us(view, retention),
    )


def served_schema(
    project: str, view: FeatureViewPlan, *, retention: OnlineRetention | None = None
) -> OnlineViewSchema:
    """The features a lookup returns for ``view``, with their dtypes. The same as
    ``online_schema`` for a plain view; for an aggregated view, the aggregations
    (computed at lookup time) rather than the stored record column."""
    stored = online_schema(project, view, retention=retention)
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
        retention_us=stored.retention_us,
    )
