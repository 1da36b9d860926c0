"""Shared pytest setup. Service fixtures live in tests/fixtures/, one module each."""

from __future__ import annotations

import os
import tempfile

# Numba's on-disk cache must be writable and shared across test processes.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(tempfile.gettempdir(), "featurestore-numba"))

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.kafka",
    "tests.fixtures.redis_cluster",
    "tests.fixtures.s3",
]
