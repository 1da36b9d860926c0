"""The offline store: versioned Delta Lake tables, one per feature view, plus named tables.

>>> from featurestore.stores.offline import DeltaOfflineStore, OfflineTableSpec
>>> spec = OfflineTableSpec(name="driver_stats", join_keys=("driver_id",),
...     key_dtypes=("int64",), features=("trips",), feature_dtypes=("int32",))
>>> store = DeltaOfflineStore("/tmp/offline")  # doctest: +SKIP
>>> store.write_view(spec, frame, mode="merge")  # doctest: +SKIP
"""

from featurestore.stores.offline.base import OfflineStore
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import (
    CREATED_TS,
    EVENT_DATE,
    EVENT_TS,
    OfflineTableSpec,
    WriteReport,
)

__all__ = [
    "CREATED_TS",
    "EVENT_DATE",
    "EVENT_TS",
    "DeltaOfflineStore",
    "OfflineStore",
    "OfflineTableSpec",
    "WriteReport",
]
