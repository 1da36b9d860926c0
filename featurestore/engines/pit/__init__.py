"""Point-in-time join: Numba kernels (``kernel``) and the Polars driver (``join``).

Importing this package imports Numba; ``import featurestore`` does not.
"""

from featurestore.engines.pit.join import FeatureFrame, event_time_bounds, point_in_time_join

__all__ = ["FeatureFrame", "event_time_bounds", "point_in_time_join"]
