"""Execution engines: batch (Polars), stream (Kafka), and the Numba kernels
(point-in-time joins, windowed aggregations).

Every kernel module lives below this package, so configuring Numba's cache here
(``featurestore._jit``) happens before any of them imports Numba.
"""

from featurestore._jit import configure_cache

configure_cache()
