"""Declarative definitions: plain frozen objects, no I/O, no heavy imports."""

from featurestore.definitions.entity import Entity
from featurestore.definitions.feature_view import (
    AGGREGATION_FUNCTIONS,
    Aggregation,
    FeatureService,
    FeatureView,
    OnDemandFeatureView,
)
from featurestore.definitions.field import Field
from featurestore.definitions.sources import BatchSource, KafkaSource, RequestSource

DEFINITION_TYPES = (
    Entity,
    BatchSource,
    KafkaSource,
    RequestSource,
    FeatureView,
    OnDemandFeatureView,
    FeatureService,
)

__all__ = [
    "AGGREGATION_FUNCTIONS",
    "DEFINITION_TYPES",
    "Aggregation",
    "BatchSource",
    "Entity",
    "FeatureService",
    "FeatureView",
    "Field",
    "KafkaSource",
    "OnDemandFeatureView",
    "RequestSource",
]
