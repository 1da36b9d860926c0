"""Execution engines: batch (Polars), stream (Kafka), and the Numba kernels
(point-in-time joins, windowed aggregations)."""
