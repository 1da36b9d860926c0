"""``featurestore retention apply``: rows older than a view's retention leave its
offline table in one commit; newer rows stay as they were; a re-run deletes
nothing."""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl
from typer.testing import CliRunner

from featurestore._time import to_us
from featurestore.api.retention import apply_retention
from featurestore.api.store import FeatureStore
from featurestore.cli.main import app as cli
from featurestore.scaffold.sample_data import SAMPLE_END
from tests.helpers import quickstart

VIEW = "driver_hourly_stats"


def test_retention_deletes_only_older_rows_once(tmp_path):
    repo = quickstart(tmp_path / "qs")
    store = FeatureStore(repo)
    store.apply()
    store.backfill()
    before = store.offline.read_table(VIEW).collect()
    at = to_us(SAMPLE_END, what="t")
    cutoff = SAMPLE_END - timedelta(days=2)
    old = before.filter(pl.col("event_ts") < cutoff)
    assert 0 < old.height < before.height
    version = store.offline.version(VIEW)
    dry = apply_retention(store, {VIEW: "2d"}, at_us=at, dry_run=True)
    assert dry.deleted == {VIEW: old.height} and store.offline.version(VIEW) == version
    done = apply_retention(store, {VIEW: "2d"}, at_us=at)
    assert done.deleted == {VIEW: old.height}
    after = store.offline.read_table(VIEW).collect()
    kept = before.filter(pl.col("event_ts") >= cutoff)
    assert after.sort(after.columns).equals(kept.sort(kept.columns))
    assert store.offline.version(VIEW) == version + 1
    assert apply_retention(store, {VIEW: "2d"}, at_us=at).deleted == {VIEW: 0}
    assert store.offline.version(VIEW) == version + 1
    store.close()
    # the command: a far longer retention deletes nothing; a bad view is named
    runner = CliRunner()
    ok = runner.invoke(
        cli, ["retention", "apply", "--repo", str(repo), "--view", f"{VIEW}=4000d", "--json"]
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["deleted"] == {VIEW: 0}
    bad = runner.invoke(cli, ["retention", "apply", "--repo", str(repo), "--view", "nope=1d"])
    assert bad.exit_code == 1 and "nope" in bad.output


def test_policy_file_retention_is_applied_and_described(tmp_path):
    """``[policy.offline_retention]`` alone drives ``retention apply`` (no --view), and
    ``describe`` shows each view's offline retention."""
    repo = quickstart(tmp_path / "qs")
    with (repo / "featurestore.toml").open("a") as f:
        f.write(f'\n[policy]\n\n[policy.offline_retention]\n{VIEW} = "4000d"\n')
    store = FeatureStore(repo)
    store.apply()
    store.backfill([VIEW])
    store.close()
    runner = CliRunner()
    done = runner.invoke(cli, ["retention", "apply", "--repo", str(repo), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["deleted"] == {VIEW: 0}
    described = runner.invoke(cli, ["describe", VIEW, "--repo", str(repo), "--json"])
    assert described.exit_code == 0, described.output
    assert "4000d" in json.loads(described.stdout)["offline"]["retention"]
    other = runner.invoke(cli, ["describe", "driver_windows", "--repo", str(repo), "--json"])
    assert "every row" in json.loads(other.stdout)["offline"]["retention"]
    text = runner.invoke(cli, ["describe", VIEW, "--repo", str(repo)]).output
    assert "retention: rows of the last 4000d" in text
