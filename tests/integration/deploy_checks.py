"""Helpers for the deploy/ tests: the tools they run, the CLI and the metric names.

Nothing here is hard-coded from the manifests: command lines are parsed by the
real typer app, metric names come from the code's own metric registries.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import typer

from tests.fixtures.services import service_unavailable

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str, install: str) -> str:
    """The path of a program: the venv's bin first (PyPI tools), then PATH."""
    venv = Path(sys.executable).parent / name
    path = str(venv) if venv.exists() else shutil.which(name)
    if path is None:
        service_unavailable(f"{name} not found ({install})")
    assert path is not None
    return path


def parse_cli(args: Sequence[str]) -> dict[str, Any]:
    """Parse ``featurestore ARGS`` as the CLI would (options, types), without running
    it; raises on an unknown command or option."""
    from featurestore.cli.main import app

    cmd: Any = typer.main.get_command(app)
    rest = list(args)
    path: list[str] = []
    while hasattr(cmd, "get_command"):  # a group: descend into the subcommand
        assert rest, f"featurestore {' '.join(path)}: no subcommand"
        name = rest.pop(0)
        path.append(name)
        sub = cmd.get_command(cmd.make_context("featurestore", [], resilient_parsing=True), name)
        assert sub is not None, f"featurestore has no command {' '.join(path)!r}"
        cmd = sub
    try:
        ctx = cmd.make_context(" ".join(path), rest)
    except Exception as exc:  # the vendored click's UsageError / NoSuchOption
        raise AssertionError(f"featurestore {' '.join(args)}: {exc}") from exc
    return dict(ctx.params)


def exported_metrics() -> set[str]:
    """Every series name the code exports: the server's, the stream worker's and the
    monitor's registries, histograms with their _bucket/_sum/_count series."""
    from featurestore.audit.monitor import MonitorMetrics
    from featurestore.engines.stream.metrics import StreamMetrics
    from featurestore.server.metrics import ServerMetrics

    metrics: list[Any] = [*ServerMetrics().all, *StreamMetrics().all, *MonitorMetrics().all()]
    names: set[str] = set()
    for metric in metrics:
        names.add(metric.name)
        if metric.kind == "histogram":
            names |= {metric.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_NAME = re.compile(r"\bfeaturestore[a-zA-Z0-9_:]*")


def promql_names(expr: str) -> set[str]:
    """The featurestore series names a PromQL expression reads (label values, being
    quoted, are left out)."""
    return set(_NAME.findall(_QUOTED.sub('""', expr)))


def rules(paths: Iterable[Path]) -> list[dict[str, Any]]:
    import yaml

    out: list[dict[str, Any]] = []
    for path in paths:
        for group in yaml.safe_load(path.read_text())["groups"]:
            out.extend(group["rules"])
    return out
