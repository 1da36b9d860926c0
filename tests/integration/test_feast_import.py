"""``featurestore import-feast`` on Feast's own quickstart, checked against Feast.

``feast init`` (the installed package; its sample data is generated locally) makes
the repo. Its ``created`` column has no time zone: Feast reads it as UTC, we reject
it (the report says so), so the test writes it with the UTC zone, which Feast reads
the same. Then Feast applies its repo; we import, apply and backfill ours, and
both compute a training dataset on one spine. The rows may differ only where the
report names a difference: the spine rows exactly one TTL after the last event
(``ttl_boundary``) and rows whose event tie on (driver, event time, created time)
(``created_ties``), both found here independently from the data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from featurestore.api.store import FeatureStore

VIEW = "driver_hourly_stats"
FEATURES = [f"{VIEW}:conv_rate", f"{VIEW}:acc_rate", f"{VIEW}:avg_daily_trips"]
ODFV = ["transformed_conv_rate:conv_rate_plus_val1", "transformed_conv_rate:conv_rate_plus_val2"]
TTL = timedelta(days=1)


def import_feast() -> Any:
    """The feast package; locally a missing one skips, under CI=true it fails."""
    if os.environ.get("CI") == "true":
        import feast

        return feast
    return pytest.importorskip(
        "feast", reason="the feast extra is not installed (pip install 'featurestore[feast]')"
    )


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import_feast()
    root = tmp_path_factory.mktemp("feast")
    feast_cli = Path(sys.executable).parent / "feast"
    subprocess.run(
        [str(feast_cli), "init", "qs"], cwd=root, check=True, capture_output=True, timeout=120
    )
    repo = root / "qs" / "feature_repo"
    data = repo / "data" / "driver_stats.parquet"
    frame = pl.read_parquet(data)
    frame.with_columns(pl.col("created").dt.replace_time_zone("UTC")).write_parquet(data)
    return repo


@pytest.fixture(scope="module")
def imported(feast_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from featurestore.integrations.feast import import_feast_repo

    out = tmp_path_factory.mktemp("ours") / "repo"
    report = import_feast_repo(feast_repo, out)
    return out, report


def spine(data: pl.DataFrame) -> pl.DataFrame:
    """Every driver at: each 7th event time, 30 minutes after it, exactly one TTL and
    one TTL plus a second after its last event, an hour before its first; plus an
    unknown driver. Request fields of the on-demand view ride along."""
    by = data.group_by("driver_id").agg(
        last=pl.col("event_timestamp").max(), first=pl.col("event_timestamp").min()
    )
    times = data.select("driver_id", "event_timestamp").gather_every(7)
    parts = [
        times,
        times.with_columns(pl.col("event_timestamp") + timedelta(minutes=30)),
        by.select("driver_id", event_timestamp=pl.col("last") + TTL),
        by.select("driver_id", event_timestamp=pl.col("last") + TTL + timedelta(seconds=1)),
        by.select("driver_id", event_timestamp=pl.col("first") - timedelta(hours=1)),
        times.head(3).with_columns(driver_id=pl.lit(9999, pl.Int64)),
    ]
    out = pl.concat([p.select("driver_id", "event_timestamp") for p in parts])
    out = out.with_columns(pl.col("event_timestamp").dt.cast_time_unit("us"))
    n = out.height
    return out.with_columns(
        row_id=pl.int_range(n, dtype=pl.Int64),
        val_to_add=pl.int_range(n, dtype=pl.Int64) % 5,
        val_to_add_2=pl.int_range(n, dtype=pl.Int64) % 7 + 10,
    )


def expected_exceptions(data: pl.DataFrame, rows: pl.DataFrame) -> tuple[set[int], set[int]]:
    """Spine rows where the report's differences apply: the latest event at or
    before t is exactly TTL old, or the chosen (driver, event time) has created-time
    ties. Computed from the data alone."""
    events = data.select("driver_id", "event_timestamp", "created").sort(
        "driver_id", "event_timestamp"
    )
    ties = events.filter(pl.struct("driver_id", "event_timestamp", "created").is_duplicated())
    latest = rows.sort("event_timestamp").join_asof(
        events.select("driver_id", ev="event_timestamp").sort("ev"),
        left_on="event_timestamp",
        right_on="ev",
        by="driver_id",
        strategy="backward",
    )
    boundary = latest.filter(pl.col("event_timestamp") - pl.col("ev") == TTL)["row_id"]
    tied = latest.join(
        ties.select("driver_id", ev="event_timestamp").unique(), on=["driver_id", "ev"]
    )["row_id"]
    return set(boundary.to_list()), set(tied.to_list())


def test_quickstart_report_lists_every_object(imported: tuple[Path, Any]) -> None:
    out, report = imported
    statuses = {(i.kind, i.name): i for i in report.items}
    view = statuses[("FeatureView", VIEW)]
    assert view.status == "converted with a semantic difference"
    assert {"ttl_boundary", "created_ties"} <= set(view.differences)
    assert any("driver_metadata (Map)" in n for n in view.notes)  # dropped, said so
    assert statuses[("FeatureView", "driver_hourly_stats_fresh")].differences[0] == "push"
    assert statuses[("OnDemandFeatureView", "transformed_conv_rate")].status == "converted"
    assert statuses[("LabelView", "driver_quality_labels")].status == "not supported"
    assert statuses[("FeatureService", "driver_activity_v1")].status == "converted"
    text = (out / "features.py").read_text()
    assert "TODO: driver_hourly_stats: Feast fields without an equivalent dtype" in text
    assert (out / "FEAST_IMPORT.md").read_text().count("| FeatureView `") == 2
    # readable and formatted: ruff leaves the generated file as it is
    ruff = Path(sys.executable).parent / "ruff"
    if ruff.exists():
        done = subprocess.run(
            [str(ruff), "format", "--check", "--isolated", str(out / "features.py")],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_training_dataset_equals_feast_except_named_rows(
    feast_repo: Path, imported: tuple[Path, Any]
) -> None:
    feast = import_feast()
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    out, report = imported
    apply_total(
        load_repo_config(feast_repo, feast_repo / "feature_store.yaml"),
        feast_repo,
        skip_source_validation=True,
    )
    data = pl.read_parquet(feast_repo / "data" / "driver_stats.parquet").with_columns(
        pl.col("event_timestamp").dt.cast_time_unit("us"),
        pl.col("created").dt.cast_time_unit("us"),
    )
    rows = spine(data)
    refs = FEATURES + ODFV

    fs = feast.FeatureStore(repo_path=str(feast_repo))
    theirs = pl.from_pandas(
        fs.get_historical_features(entity_df=rows.to_pandas(), features=refs).to_df(),
        nan_to_null=True,
    ).sort("row_id")

    store = FeatureStore(out)
    try:
        store.apply()
        store.backfill()
        ours = store.get_training_dataset(rows, features=refs).frame.sort("row_id")
    finally:
        store.close()

    assert ours.height == rows.height
    # Feast's file offline store leaves out spine rows outside the data's time range
    # (measured with Feast 0.67); the report names it, and we answer them with nulls
    lo, hi = data["event_timestamp"].min(), data["event_timestamp"].max()
    outside = rows.filter((pl.col("event_timestamp") < lo) | (pl.col("event_timestamp") > hi + TTL))
    assert set(rows["row_id"]) - set(theirs["row_id"]) == set(outside["row_id"])
    assert (
        ours.filter(pl.col("row_id").is_in(outside["row_id"].to_list()))["conv_rate"].null_count()
        == outside.height
    )
    assert "dropped_spine_rows" in report.item("FeatureView", VIEW).differences
    ours = ours.filter(pl.col("row_id").is_in(theirs["row_id"].to_list()))
    names = [r.split(":")[1] for r in refs]
    differ: set[int] = set()
    for name in names:
        a, b = ours[name].cast(pl.Float64), theirs[name].cast(pl.Float64)
        same = (a == b) | (a.is_null() & b.is_null())
        differ |= set(ours.filter(~same.fill_null(False))["row_id"].to_list())
    boundary_ids, tied_ids = expected_exceptions(data, rows)
    assert boundary_ids, "the spine must hold TTL-boundary rows"
    # every boundary row differs; a tie row may (Feast's pick is arbitrary); nothing else
    assert boundary_ids <= differ <= boundary_ids | tied_ids
    exceptions = boundary_ids
    # on the boundary rows Feast has the row exactly TTL old, we have nothing
    boundary = ours.filter(pl.col("row_id").is_in(sorted(exceptions)))
    assert boundary["conv_rate"].null_count() == boundary.height
    assert theirs.filter(pl.col("row_id").is_in(sorted(exceptions)))["conv_rate"].null_count() == 0
    assert "ttl_boundary" in report.item("FeatureView", VIEW).differences


def test_cli_writes_the_repo_and_refuses_to_overwrite(feast_repo: Path, tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "featurestore", "import-feast", str(feast_repo)]
    done = subprocess.run(
        [*cli, "--out", str(tmp_path / "r"), "--json"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert {i["name"] for i in doc["items"] if i["kind"] == "FeatureView"} == {
        VIEW,
        "driver_hourly_stats_fresh",
    }
    assert (tmp_path / "r" / "features.py").exists()
    again = subprocess.run([*cli, "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert again.returncode == 1
    assert "already holds a feature repo" in again.stderr
