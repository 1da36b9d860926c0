"""The Prometheus alert rules in deploy/alerts pass promtool: syntax and unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.fixtures.services import service_unavailable

ALERTS = Path(__file__).parents[2] / "deploy" / "alerts"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        service_unavailable("promtool not found (apt-get install prometheus)")
    assert path is not None
    return path


def test_alert_rules_are_valid_and_their_unit_tests_pass():
    promtool = _promtool()
    rules = sorted(p for p in ALERTS.glob("*.yml") if not p.name.endswith(".test.yml"))
    tests = sorted(ALERTS.glob("*.test.yml"))
    assert rules and tests
    check = subprocess.run(
        [promtool, "check", "rules", *map(str, rules)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [promtool, "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        cwd=ALERTS,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout + run.stderr
