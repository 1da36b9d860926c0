"""The CLI as a user runs it: real subprocesses in a fresh directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FS = [sys.executable, "-m", "featurestore"]


def run(args, cwd, check=True):
    proc = subprocess.run(
        [*FS, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_init_plan_apply_history_rollback(tmp_path: Path):
    run(["init", "demo"], tmp_path)
    demo = tmp_path / "demo"
    assert (demo / "data" / "driver_stats.parquet").exists()
    out = run(["plan"], demo).stdout
    assert "+ feature_view driver_hourly_stats (added)" in out
    out = run(["apply"], demo).stdout
    assert "Applied: registry version 1." in out
    out = run(["apply"], demo).stdout
    assert "Nothing to apply; the registry stays at version 1." in out

    features = demo / "features.py"
    features.write_text(features.read_text().replace('ttl="2d"', 'ttl="1d"'))
    out = run(["plan"], demo).stdout
    assert "ttl_us: 172800000000 -> 86400000000" in out and "TTL shrink" in out
    applied = json.loads(run(["apply", "--json"], demo).stdout)
    assert applied["version"] == 2 and applied["created"] is True

    history = json.loads(run(["registry", "history", "--json"], demo).stdout)
    assert [h["version"] for h in history] == [1, 2]
    shown = json.loads(run(["registry", "show", "1", "--json"], demo).stdout)
    view = next(o for o in shown["objects"] if o["name"] == "driver_hourly_stats")
    assert view["spec"]["ttl_us"] == 172800000000
    out = run(["registry", "rollback", "--to", "1"], demo).stdout
    assert "version 3 restores version 1" in out
    head = json.loads(run(["registry", "show", "3", "--json"], demo).stdout)
    assert head["hash"] == shown["hash"]


def test_bad_definitions_exit_1_with_every_problem(tmp_path: Path):
    run(["init", "demo"], tmp_path)
    demo = tmp_path / "demo"
    (demo / "more.py").write_text(
        "from featurestore import Entity\n"
        "a = Entity(name='bad name', join_keys={'k': 'int64'})\n"
        "b = Entity(name='b', join_keys={'k': 'complex'})\n"
    )
    proc = run(["plan"], demo, check=False)
    assert proc.returncode == 1
    assert "2 problem(s)" in proc.stderr
    assert "more.py, Entity 'bad name', field name" in proc.stderr
    assert "field join_keys['k'].dtype" in proc.stderr
    proc = run(["plan", "--json"], demo, check=False)
    assert proc.returncode == 1
    assert len(json.loads(proc.stdout)["errors"]) == 2


def test_outside_a_repo_is_a_clear_error(tmp_path: Path):
    proc = run(["plan"], tmp_path, check=False)
    assert proc.returncode == 1
    assert "no featurestore.toml" in proc.stderr and "featurestore init" in proc.stderr


@pytest.mark.parametrize("args", [["registry", "show", "7"], ["registry", "rollback", "--to", "9"]])
def test_unknown_versions(tmp_path: Path, args):
    run(["init", "demo"], tmp_path)
    run(["apply"], tmp_path / "demo")
    proc = run(args, tmp_path / "demo", check=False)
    assert proc.returncode == 1 and "no such registry version" in proc.stderr
