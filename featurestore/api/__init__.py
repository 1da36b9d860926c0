"""Plain-Python APIs: the FeatureStore facade, online lookups, training datasets."""

from featurestore.api.store import FeatureStore, PlanResult

__all__ = ["FeatureStore", "PlanResult"]
