"""The CLI under mistakes: every one ends in a message naming the file, the object
and the fix, with the README's exit code; never in a traceback, never silently.
Real subprocesses in fresh repos (issues 15 and 16)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.test_cli import run


def _fails(args: list[str], cwd: Path, code: int, *needles: str) -> str:
    proc = run(args, cwd, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, f"{args} exited {proc.returncode}, not {code}:\n{out}"
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in:\n{out}"
    return out


def _error_json(args: list[str], cwd: Path, code: int) -> dict:
    proc = run([*args, "--json"], cwd, check=False)
    assert proc.returncode == code, proc.stdout + proc.stderr
    body = json.loads(proc.stdout)
    assert body["exit_code"] == code
    return body


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    run(["init", "demo"], tmp_path)
    return tmp_path / "demo"


def test_nothing_applied_backfill_and_materialize_say_what_to_run(demo: Path):
    for cmd in ("backfill", "materialize"):
        _fails([cmd], demo, 1, "no feature views", "featurestore apply")
    assert _error_json(["backfill"], demo, 1)["hint"] == "run `featurestore apply` first"


def test_materialize_before_backfill_fails_and_moves_no_watermark(demo: Path):
    from featurestore.api.store import FeatureStore

    run(["apply"], demo)
    _fails(
        ["materialize", "--view", "driver_hourly_stats"],
        demo,
        1,
        "feature view 'driver_hourly_stats'",
        "no offline table",
        "featurestore backfill driver_hourly_stats",
    )
    _fails(["materialize", "--incremental"], demo, 1, "featurestore backfill")
    store = FeatureStore(demo)
    assert store.registry.get_watermark("materialize:driver_hourly_stats") is None
    store.registry.close()


def test_source_and_spine_files_missing_or_corrupt(demo: Path):
    run(["apply"], demo)
    source = demo / "data" / "driver_stats.parquet"
    kept = source.read_bytes()
    source.unlink()
    _fails(
        ["backfill"], demo, 1, "BatchSource 'driver_stats_source'", "does not exist", str(source)
    )
    source.write_text("not parquet")
    out = _fails(["backfill"], demo, 1, "BatchSource 'driver_stats_source'", "cannot be read")
    assert "replace the file" in out
    body = _error_json(["backfill"], demo, 1)
    assert (body["object"], body["field"]) == ("BatchSource 'driver_stats_source'", "path")
    source.write_bytes(kept)

    spine = ["dataset", "create", "--entities", "spine.parquet", "-s", "driver_ranking"]
    _fails(spine, demo, 1, "spine.parquet", "spine file not found", "join key columns")
    (demo / "spine.parquet").write_text("garbage")
    _fails(spine, demo, 1, "spine.parquet", "cannot be read as Parquet")
    assert _error_json(spine, demo, 1)["file"] == "spine.parquet"


def test_bad_times_and_names_are_one_line_errors(demo: Path):
    run(["apply"], demo)
    out = _fails(
        ["materialize", "--start", "yesterday"], demo, 2, "--start", "2026-01-01T00:00:00Z"
    )
    assert len(out.strip().splitlines()) == 1, out
    _fails(["backfill", "--end", "2026-01-01T00:00"], demo, 2, "--end", "time zone")
    _fails(["get", "-e", "driver_id=1", "--request-time", "noon"], demo, 2, "--request-time")
    _fails(["backfill", "driver:stats"], demo, 1, "feature view 'driver:stats'", "registered views")
    _fails(["get", "-e", "driver_id", "-s", "driver_ranking"], demo, 2, "--entity", "name=value")


def test_get_request_time(demo: Path):
    run(["apply"], demo)
    run(["backfill"], demo)
    run(["materialize"], demo)
    args = ["get", "-e", "driver_id=1001", "-f", "driver_hourly_stats:conv_rate", "--json"]
    now = json.loads(run(args, demo).stdout)["features"]["conv_rate"]["statuses"]
    later = json.loads(run([*args, "--request-time", "2099-01-01T00:00:00Z"], demo).stdout)
    assert now == ["PRESENT"]
    assert later["features"]["conv_rate"]["statuses"] == ["EXPIRED"]
    assert later["request_time_us"] == 4_070_908_800_000_000


def test_rollback_that_removes_objects_needs_yes(demo: Path):
    run(["apply"], demo)
    out = _fails(["registry", "rollback", "--to", "0"], demo, 2, "removes", "--yes")
    assert "feature_view driver_hourly_stats" in out
    assert _error_json(["registry", "rollback", "--to", "0"], demo, 2)["hint"].endswith("--yes")
    history = json.loads(run(["registry", "history", "--json"], demo).stdout)
    assert [h["version"] for h in history] == [1]  # nothing happened
    out = run(["registry", "rollback", "--to", "0", "--yes"], demo).stdout
    assert "version 2 restores version 0" in out
    # Restoring objects removes nothing: no question asked.
    assert "version 3 restores version 1" in run(["registry", "rollback", "--to", "1"], demo).stdout


def test_definitions_that_exit_are_a_definition_error(demo: Path):
    (demo / "script.py").write_text("import sys\nprint('hello')\nsys.exit(0)\n")
    _fails(["apply"], demo, 1, "script.py:3", "sys.exit(0)", "__main__")
    history = json.loads(run(["registry", "history", "--json"], demo).stdout)
    assert history == []


def test_registry_password_never_printed(demo: Path, postgres_url: str, monkeypatch):
    """A PostgreSQL registry URL with a password, refused (no such role) and
    unreachable (closed port): neither the text nor the JSON error shows it."""
    host = postgres_url.split("@", 1)[-1].split("/", 1)[0]
    urls = {
        f"postgresql+psycopg://nobody_here:Sup3rS3cret@{host}/test": 1,
        "postgresql+psycopg://nobody_here:Sup3rS3cret@127.0.0.1:1/test?connect_timeout=2": 3,
    }
    for url, code in urls.items():
        monkeypatch.setenv("FEATURESTORE_REGISTRY_URL", url)
        out = _fails(["plan"], demo, code, "nobody_here:***@")
        assert "Sup3rS3cret" not in out
        body = _error_json(["registry", "history"], demo, code)
        assert "Sup3rS3cret" not in json.dumps(body) and "***" in body["object"]
        assert body["retryable"] is (code == 3)
