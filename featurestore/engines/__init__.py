"""Execution engines: batch (Polars), stream (Kafka), point-in-time and aggregation kernels (Numba)."""
