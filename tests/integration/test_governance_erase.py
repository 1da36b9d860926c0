"""Erasure end to end on the quickstart (real Delta tables, the SQLite online
store): 3 drivers leave a plain view, an aggregated view, the online store and the
feature log; every other driver's rows stay exactly as they were; a re-run changes
nothing."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from featurestore.api.erase import content_sha256, erase
from featurestore.api.feature_log import LOGS_PREFIX
from featurestore.api.store import FeatureStore
from featurestore.cli.main import app as cli
from featurestore.errors import OfflineStoreError
from featurestore.scaffold.sample_data import SAMPLE_END
from featurestore.stores.online.base import ReadRequest
from featurestore.stores.view_specs import online_schema
from tests.helpers import quickstart

GONE = [1001, 1002, 1003]
KEPT = [1004, 1005]
VIEWS = ("driver_hourly_stats", "driver_windows")


def _digest(frame: pl.DataFrame) -> str:
    rows = frame.sort(frame.columns).write_csv()
    return hashlib.sha256(rows.encode()).hexdigest()


def _offline(store: FeatureStore, name: str) -> pl.DataFrame:
    return store.offline.read_table(name).collect()


def _online(store: FeatureStore, view: str, ids: list[int]) -> list[int | None]:
    schema = online_schema(store.project, store.index().view(view))
    [got] = store.online.read([ReadRequest(schema, {"driver_id": ids})])
    return got.event_ts


def _state(store: FeatureStore) -> dict[str, tuple[int, int, str]]:
    """Per table: rows of the erased drivers, rows of the rest, hash of the rest."""
    out = {}
    for name in [*VIEWS, *store.offline.tables_under(LOGS_PREFIX)]:
        frame = _offline(store, name)
        gone = frame.filter(pl.col("driver_id").is_in(GONE))
        rest = frame.filter(~pl.col("driver_id").is_in(GONE))
        out[name] = (gone.height, rest.height, _digest(rest))
    return out


def _built(tmp_path) -> FeatureStore:
    repo = quickstart(tmp_path / "qs")
    with (repo / "featurestore.toml").open("a") as f:
        f.write('\n[online_store]\nretention = "none"  # the sample data is old\n')
    store = FeatureStore(repo)
    store.apply()
    store.backfill()
    store.materialize(end=SAMPLE_END + timedelta(hours=1))
    logger = store.enable_feature_logging()
    for service in ("driver_ranking", "driver_windows_service"):
        store.get_online_features({"driver_id": GONE + KEPT}, feature_service=service)
    assert logger.flush(30)
    return store


def test_erase_removes_three_drivers_everywhere_and_nothing_else(tmp_path):
    store = _built(tmp_path)
    before = _state(store)
    logs = store.offline.tables_under(LOGS_PREFIX)
    assert len(logs) == 2 and all(before[t][0] == 3 and before[t][1] == 2 for t in logs)
    for view in VIEWS:
        assert before[view][0] > 0 and before[view][1] > 0
        assert None not in _online(store, view, GONE + KEPT)
    versions = {v: store.offline.version(v) for v in VIEWS}

    dry = erase(store, {"driver_id": [str(i) for i in GONE]}, dry_run=True)
    assert _state(store) == before  # a dry run changes nothing
    assert dry.offline == {v: before[v][0] for v in VIEWS}

    report = erase(store, {"driver_id": [str(i) for i in GONE]})
    assert report.offline == dry.offline and report.feature_logs == dry.feature_logs
    assert sum(report.feature_logs.values()) == 6
    assert sorted(report.online.values()) == [3, 3]
    after = _state(store)
    for name, (gone, rest, digest) in after.items():
        assert gone == 0, name  # none of their rows remain
        assert (rest, digest) == before[name][1:], name  # the others are untouched
    for view in VIEWS:
        assert _online(store, view, GONE) == [None] * 3
        assert None not in _online(store, view, KEPT)
        assert store.offline.version(view) == versions[view] + 1  # one commit per table
    doc = report.to_dict()
    sha = doc.pop("sha256")
    assert sha == content_sha256(doc)

    again = erase(store, {"driver_id": GONE})
    assert again.total == 0 and _state(store) == after  # idempotent
    assert all(store.offline.version(v) == versions[v] + 1 for v in VIEWS)  # no new commit


def test_erase_cli_writes_a_hashed_report_and_vacuums(tmp_path):
    store = _built(tmp_path)
    repo = str(store.repo)
    store.close()
    out = tmp_path / "erasure.json"
    args = ["erase", "--repo", repo, "--entity", "driver_id=1001", "--vacuum", "0"]
    result = CliRunner().invoke(cli, [*args, "--report", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["offline"]["driver_hourly_stats"] > 0
    assert all(n > 0 for n in doc["vacuumed_files"].values())
    sha = doc.pop("sha256")
    assert sha == content_sha256(doc)
    # after vacuum, time travel to the version before the erasure fails
    reopened = FeatureStore(repo)
    history = reopened.offline.history("driver_hourly_stats")
    deleted_at = next(h["version"] for h in history if h.get("operation") == "DELETE")
    with pytest.raises((OfflineStoreError, FileNotFoundError)):  # its files are gone
        reopened.offline.read_table("driver_hourly_stats", version=deleted_at - 1).collect()
    bad = CliRunner().invoke(cli, ["erase", "--repo", repo, "--entity", "rider=1"])
    assert bad.exit_code == 1 and "driver_id" in bad.output


def test_an_erasure_killed_midway_and_run_again_converges(tmp_path):
    """SIGKILL right after the first table's DELETE commit: that table is erased, the
    others are not yet; a re-run finishes the job and the end state is the same as
    an erasure that was never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    store = _built(tmp_path)
    before = _state(store)
    repo = str(store.repo)
    store.close()
    log_dir = store.offline.table_uri(VIEWS[0]) + "/_delta_log"
    commits = {p for p in os.listdir(log_dir) if p.endswith(".json")}
    script = (
        "import sys\n"
        "from featurestore.api.store import FeatureStore\n"
        "from featurestore.api.erase import erase\n"
        "print('ready', flush=True)\n"
        f"erase(FeatureStore({repo!r}), {{'driver_id': {[str(i) for i in GONE]!r}}})\n"
        "print('done', flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if {p for p in os.listdir(log_dir) if p.endswith(".json")} - commits:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the erasure finished before it could be killed"

    reopened = FeatureStore(repo)
    try:
        midway = _state(reopened)
        assert midway[VIEWS[0]][0] == 0  # the first table was erased
        assert any(gone for gone, _, _ in midway.values())  # and some were not yet
        report = erase(reopened, {"driver_id": GONE})
        assert report.total > 0
        after = _state(reopened)
        for name, (gone, rest, digest) in after.items():
            assert gone == 0, name
            assert (rest, digest) == before[name][1:], name
        for view in VIEWS:
            assert _online(reopened, view, GONE) == [None] * 3
        assert erase(reopened, {"driver_id": GONE}).total == 0
    finally:
        reopened.close()
