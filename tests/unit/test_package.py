"""Package-wide promises: light import, a pinned public API, one-way layers."""

import ast
import subprocess
import sys
from pathlib import Path

import featurestore

PKG = Path(featurestore.__file__).parent

# Higher layers may import lower ones, never the reverse (ARCHITECTURE.md).
LAYERS = [
    ["cli"],
    ["server", "audit"],
    ["api"],
    ["materialize"],
    ["engines"],
    ["stores"],
    ["registry"],
    ["compile"],
    ["definitions"],
    ["errors", "config", "_dtypes", "_time", "_typing", "_progress"],
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


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
        "'polars', 'sqlalchemy', 'deltalake', 'numpy') if m in sys.modules))"
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


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "featurestore" or len(parts) < 2:
        return None
    return parts[1]


def test_imports_point_down_only():
    bad = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG)
        if rel.parts[0] in ("scaffold", "__init__.py", "__main__.py"):
            continue
        own = rel.parts[0].removesuffix(".py")
        if own not in RANK:
            bad.append(f"{rel}: package {own!r} has no layer in this test")
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                target = _layer(name)
                if target is None or target == own or target not in RANK:
                    continue
                if RANK[target] < RANK[own]:
                    bad.append(f"{rel} imports {name} (layer {target} is above {own})")
    assert not bad, "\n".join(bad)
