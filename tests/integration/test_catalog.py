"""Finding things (issue 16, item 3): ``list``, ``describe`` and ``search`` as a user
runs them, in subprocesses over the quickstart repo with its real SQLite registry
and Delta tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from featurestore import FeatureStore
from featurestore.api import catalog
from featurestore.scaffold.sample_data import current_hour
from tests.helpers import quickstart

FS = [sys.executable, "-m", "featurestore"]
ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path, code: int) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*FS, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "250"},
    )
    assert proc.returncode == code, f"{args} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return proc


def fs(args: list[str], cwd: Path, code: int = 0) -> str:
    proc = run(args, cwd, code)
    return proc.stdout + proc.stderr


def fs_json(args: list[str], cwd: Path, code: int = 0) -> Any:
    """``--json`` output: JSON alone on stdout, nothing on stderr."""
    proc = run([*args, "--json"], cwd, code)
    assert proc.stderr == "", proc.stderr
    return json.loads(proc.stdout)


END = current_hour()


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    # data up to the current hour, so that materialize has values inside retention
    return quickstart(tmp_path / "demo", data_end=END)


def names(rows: object) -> list[str]:
    assert isinstance(rows, list)
    return [r["name"] for r in rows]


def test_list_filters_by_kind_tag_and_owner(demo: Path) -> None:
    out = fs(["list"], demo)
    assert "The registry is empty: run `featurestore apply`" in out
    assert fs_json(["list"], demo) == []
    fs(["apply"], demo)

    everything = fs_json(["list"], demo)
    assert isinstance(everything, list) and len(everything) == 9
    assert names(fs_json(["list", "entities"], demo)) == ["driver"]
    assert names(fs_json(["list", "sources"], demo)) == ["driver_stats_source", "trip_request"]
    assert names(fs_json(["list", "views"], demo)) == [
        "driver_hourly_stats",
        "driver_windows",
        "trip_fit",
    ]
    assert names(fs_json(["list", "services"], demo)) == [
        "driver_ranking",
        "driver_ranking_with_request",
        "driver_windows_service",
    ]
    (view,) = fs_json(["list", "--tag", "team=driver-ranking"], demo)
    assert view == {
        "kind": "feature_view",
        "name": "driver_hourly_stats",
        "description": "",
        "owner": "ml-platform@example.com",
        "tags": {"team": "driver-ranking"},
        "summary": "4 features from driver_stats_source, ttl 2d, online",
    }
    assert names(fs_json(["list", "--tag", "team"], demo)) == ["driver_hourly_stats"]
    assert fs_json(["list", "--tag", "team=other"], demo) == []
    assert names(fs_json(["list", "views", "--owner", "ML-Platform@example.com"], demo)) == [
        "driver_hourly_stats"
    ]
    assert fs_json(["list", "services", "--owner", "ml-platform@example.com"], demo) == []

    text = fs(["list", "views"], demo)
    assert "driver_windows" in text and "3 aggregations from driver_stats_source" in text
    assert "Nothing matches at registry version 1" in fs(["list", "--owner", "nobody"], demo)
    assert "'bogus' is not one of" in fs(["list", "bogus"], demo, code=2)
    error = fs(["list", "--tag", "=x"], demo, code=1)
    assert "option --tag" in error and "key=value" in error


def test_search_names_descriptions_owners_tags_and_features(demo: Path) -> None:
    fs(["apply"], demo)
    hits = fs_json(["search", "driver_windows"], demo)
    assert isinstance(hits, list)
    # the exact name first, then other name matches
    assert [(h["name"], h["matched"]) for h in hits] == [
        ("driver_windows", ["name"]),
        ("driver_windows_service", ["name"]),
    ]
    by_owner = fs_json(["search", "ML-PLATFORM"], demo)
    assert [(h["name"], h["matched"]) for h in by_owner] == [("driver_hourly_stats", ["owner"])]
    by_tag = fs_json(["search", "driver-ranking"], demo)
    assert [(h["name"], h["matched"]) for h in by_tag] == [("driver_hourly_stats", ["tags"])]
    by_text = fs_json(["search", "trips service"], demo)
    assert [(h["name"], h["matched"]) for h in by_text] == [
        ("driver_stats_source", ["description"])
    ]
    by_feature = fs_json(["search", "acceptance_gap"], demo)
    assert [(h["name"], h["matched"]) for h in by_feature] == [
        ("driver_hourly_stats", ["features"])
    ]
    assert "2 found for 'driver_windows'" in fs(["search", "driver_windows"], demo)
    assert "Nothing registered mentions 'zebra'" in fs(["search", "zebra"], demo)
    assert fs_json(["search", "zebra"], demo) == []
    assert "search text" in fs(["search", "  "], demo, code=1)


def test_describe_a_view_through_its_life(demo: Path) -> None:
    fs(["apply"], demo)
    before = fs_json(["describe", "driver_hourly_stats"], demo)
    assert isinstance(before, dict)
    assert before["offline"]["exists"] is False and before["materialized_until"] is None
    text = fs(["describe", "driver_hourly_stats"], demo)
    assert "not created yet: run `featurestore backfill`" in text
    assert "never: run `featurestore materialize`" in text

    fs(["backfill"], demo)
    fs(["materialize"], demo)
    info = fs_json(["describe", "driver_hourly_stats"], demo)
    assert isinstance(info, dict)
    assert (info["kind"], info["owner"], info["tags"]) == (
        "feature_view",
        "ml-platform@example.com",
        {"team": "driver-ranking"},
    )
    assert info["registry_version"] == 1 and info["changed_in_versions"] == [1]
    assert [f["name"] for f in info["definition"]["features"]] == [
        "conv_rate",
        "acc_rate",
        "avg_daily_trips",
        "acceptance_gap",
    ]
    assert info["lineage"] == {
        "reads": ["entity driver", "batch_source driver_stats_source"],
        "used_by": [
            "on_demand_feature_view trip_fit",
            "feature_service driver_ranking",
            "feature_service driver_ranking_with_request",
        ],
    }
    # The table's facts agree with Delta's own log.
    table = DeltaTable(str(demo / ".featurestore" / "offline" / "driver_hourly_stats"))
    off = info["offline"]
    assert off["exists"] is True and off["version"] == table.version()
    assert off["rows"] == 20 * 7 * 24 == table.to_pyarrow_table().num_rows
    assert off["files"] == len(table.file_uris())
    assert off["last_commit"].startswith("20") and off["last_operation"]
    first, last = END - timedelta(days=7), END - timedelta(hours=1)
    assert off["event_time_range"] == [str(first), str(last)]
    assert info["online"]["online"] is True
    assert info["online"]["retention"] == "2 x ttl = 4d"
    assert info["online"]["served_from_version"] == 1
    store = FeatureStore(demo)
    mark = store.registry.get_watermark("materialize:driver_hourly_stats")
    store.close()
    assert mark is not None and info["materialized_until"] is not None

    text = fs(["describe", "driver_hourly_stats"], demo)
    for expected in (
        "feature_view driver_hourly_stats (registry version 1",
        "owner: ml-platform@example.com",
        "transform acceptance_gap:",
        "used by: on_demand_feature_view trip_fit, feature_service driver_ranking",
        "rows: 3360",
        "retention: 2 x ttl = 4d (set by [online_store] retention)",
    ):
        assert expected in text, text
    windows = fs(["describe", "driver_windows"], demo)
    assert "aggregation conv_rate_mean_7d: mean(conv_rate) over 1w, hop 1h" in windows
    assert "a lifetime window: never purged" in windows


def test_describe_other_kinds_and_lineage(demo: Path) -> None:
    fs(["apply"], demo)
    entity = fs_json(["describe", "driver"], demo)
    assert isinstance(entity, dict) and "offline" not in entity
    assert entity["lineage"]["used_by"] == [
        "feature_view driver_hourly_stats",
        "feature_view driver_windows",
    ]
    odfv = fs_json(["describe", "trip_fit"], demo)
    assert odfv["lineage"] == {
        "reads": ["request_source trip_request", "feature_view driver_hourly_stats"],
        "used_by": ["feature_service driver_ranking_with_request"],
    }
    service = fs_json(["describe", "driver_ranking_with_request"], demo)
    assert service["lineage"]["reads"] == [
        "feature_view driver_hourly_stats",
        "on_demand_feature_view trip_fit",
    ]
    assert "features: driver_hourly_stats:conv_rate, " in fs(["describe", "driver_ranking"], demo)


def test_unknown_and_ambiguous_names_exit_1_with_the_fix(demo: Path) -> None:
    assert "run `featurestore apply` first" in fs(["describe", "driver"], demo, code=1)
    fs(["apply"], demo)
    out = fs(["describe", "driver_hourly_stat"], demo, code=1)
    assert "name 'driver_hourly_stat'" in out and "did you mean 'driver_hourly_stats'" in out
    assert len(out.strip().splitlines()) == 1, out
    body = fs_json(["describe", "drivr_windows"], demo, code=1)
    assert isinstance(body, dict) and body["exit_code"] == 1
    assert "did you mean 'driver_windows'" in body["hint"]
    assert "`featurestore list` shows every registered name" in fs(["describe", "xyz"], demo, 1)

    # Names are unique per kind only: a service may share a name with an entity.
    features = demo / "features.py"
    features.write_text(
        features.read_text()
        + '\nsame_name = FeatureService(name="driver", features=[driver_hourly_stats])\n'
    )
    fs(["apply"], demo)
    out = fs(["describe", "driver"], demo, code=1)
    assert "entity 'driver', feature_service 'driver'" in out and "--kind" in out
    entity = fs_json(["describe", "driver", "--kind", "entities"], demo)
    service = fs_json(["describe", "driver", "--kind", "services"], demo)
    assert (entity["kind"], service["kind"]) == ("entity", "feature_service")


def test_kafka_sources_are_listed_with_their_topic() -> None:
    store = FeatureStore(ROOT / "examples" / "rideshare")
    plan = store.compile().plan
    sources = {e.name: e for e in catalog.list_entries(plan, group="sources")}
    kafka = next(e for e in sources.values() if e.kind == "kafka_source")
    assert kafka.summary.startswith("Kafka topic trips, history at data/trips")
    views = catalog.list_entries(plan, group="views")
    assert views and all(v.kind.endswith("feature_view") for v in views)
    reads = {
        e.name: catalog.lineage(plan, plan.get(e.kind, e.name))["reads"]  # type: ignore[arg-type]
        for e in views
        if e.kind == "feature_view"
    }
    assert any(f"kafka_source {kafka.name}" in r for r in reads.values()), reads


def test_describe_shows_a_pending_definition_until_promoted(demo: Path) -> None:
    fs(["apply"], demo)
    fs(["backfill"], demo)
    fs(["materialize"], demo)
    features = demo / "features.py"
    features.write_text(
        features.read_text().replace(
            'pl.col("conv_rate") - pl.col("acc_rate")', 'pl.col("acc_rate") - pl.col("conv_rate")'
        )
    )
    store = FeatureStore(demo)
    assert store.apply().version == 2  # the API's apply pins the changed view
    store.close()
    online = fs_json(["describe", "driver_hourly_stats"], demo)["online"]
    assert (online["served_from_version"], online["pending_definition"]) == (1, True)
    text = fs(["describe", "driver_hourly_stats"], demo)
    assert "served from registry version: 1" in text and "`featurestore promote`" in text
    fs(["promote", "driver_hourly_stats"], demo)
    online = fs_json(["describe", "driver_hourly_stats"], demo)["online"]
    assert (online["served_from_version"], online["pending_definition"]) == (2, False)
