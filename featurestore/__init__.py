"""featurestore: declare features once; train and serve the same values.

``import featurestore`` is light: definitions are plain Python. The engines and
stores (Polars, Numba, Redis, Kafka, FastAPI) load when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featurestore.definitions import (
    Aggregation,
    BatchSource,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    KafkaSource,
    OnDemandFeatureView,
    RequestSource,
)
from featurestore.errors import FeatureStoreError

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore

__version__ = "0.1.0"

_LAZY = {"FeatureStore": "featurestore.api.store"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featurestore' has no attribute {name!r}")


__all__ = [
    "Aggregation",
    "BatchSource",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureStoreError",
    "FeatureView",
    "Field",
    "KafkaSource",
    "OnDemandFeatureView",
    "RequestSource",
    "__version__",
]
