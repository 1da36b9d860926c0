"""Package-wide promises: light import and a pinned public API (one-way layers and
no import cycles: ``test_layers.py``)."""

import subprocess
import sys
from pathlib import Path

import featurestore

PKG = Path(featurestore.__file__).parent


def test_public_api_is_pinned():
    assert sorted(featurestore.__all__) == [
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
    for name in featurestore.__all__:
        assert getattr(featurestore, name) is not None


def test_import_is_light():
    code = (
        "import sys, featurestore; "
        "print(','.join(m for m in ('numba', 'redis', 'confluent_kafka', 'fastapi', "
        "'polars', 'sqlalchemy', 'deltalake', 'numpy', 'ray') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_import_time_under_budget():
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import featurestore"],
        capture_output=True,
        text=True,
        check=True,
    )
    line = [ln for ln in proc.stderr.splitlines() if ln.rstrip().endswith("| featurestore")][-1]
    cumulative_us = int(line.split("|")[1])
    assert cumulative_us < 300_000, f"import featurestore took {cumulative_us} us cumulative"
