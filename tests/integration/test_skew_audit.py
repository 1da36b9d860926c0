"""The skew audit end to end: quickstart repo, real online stores (embedded SQLite and a
private Redis), lookups logged by FeatureLogger, skews injected on purpose, and the
audit must find exactly those rows, each with its cause."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from featurestore import FeatureStore
from featurestore.api.feature_log import FeatureLogger
from featurestore.audit import (
    EXIT_THRESHOLD,
    Thresholds,
    render_html,
    render_markdown,
    render_terminal,
    run_audit,
)
from tests.helpers import quickstart

NOW_HOUR = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
END = NOW_HOUR - timedelta(hours=3)  # materialized up to here
R = END + timedelta(hours=1)  # when the requests are served
DRIVERS = list(range(1001, 1021))
UNKNOWN = 1099
FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", "acceptance_gap"]
SERVICE = "driver_ranking"


def _store(tmp_path, online_url: str | None = None) -> FeatureStore:
    """Quickstart with its sample data moved to end an hour before END, applied,
    backfilled and materialized up to END."""
    root = quickstart(tmp_path / "repo")
    if online_url is not None:
        with (root / "featurestore.toml").open("a") as f:
            f.write(f'\n[online_store]\nurl = "{online_url}"\n')
    data = root / "data/driver_stats.parquet"
    frame = pl.read_parquet(data)
    shift = END - timedelta(hours=1) - frame["event_timestamp"].max()
    frame.with_columns(pl.col("event_timestamp") + shift, pl.col("created") + shift).write_parquet(
        data
    )
    store = FeatureStore(root)
    store.apply()
    store.backfill()
    store.materialize(end=END)
    return store


def _serve(store: FeatureStore, logger: FeatureLogger, request_id: str, when: datetime) -> None:
    response = store.get_online_features(
        {"driver_id": [*DRIVERS, UNKNOWN]}, feature_service=SERVICE, request_time=when
    )
    logger.log(response, feature_service=SERVICE, request_id=request_id)


def test_without_skew_every_value_matches_and_distributions_agree(tmp_path):
    store = _store(tmp_path)
    logger = FeatureLogger(store.offline, project=store.project, index=store.index)
    for i in range(8):
        _serve(store, logger, f"req-{i}", R - timedelta(minutes=7 * i))
    adhoc = ["driver_hourly_stats:conv_rate"]
    response = store.get_online_features(
        {"driver_id": DRIVERS}, features=adhoc, full_feature_names=True, request_time=R
    )
    logger.log(response, features=adhoc, full_feature_names=True, request_id="adhoc")
    logger.close()
    assert logger.stats()["written_rows"] == 8 * 21 + 20

    report = run_audit(store, feature_service=SERVICE)
    assert (report.rows, report.requests, report.compared) == (168, 8, 672)
    assert report.mismatched == 0 and report.mismatches.height == 0
    assert report.passed and report.exit_code == 0
    for f in report.features:
        assert (f.rows, f.matched, f.mismatched_vs_known_time) == (168, 168, 0)
    # Not trivially equal: most served values are real numbers.
    log = store.offline.read_table(report.table).collect()
    assert log["driver_hourly_stats__conv_rate"].null_count() == 8  # only the unknown driver
    assert set(log["driver_hourly_stats__conv_rate__status"]) == {"PRESENT", "MISSING"}
    assert json.loads(report.to_json())["mismatched_values"] == 0

    adhoc_report = run_audit(store, features=adhoc)
    assert (adhoc_report.rows, adhoc_report.mismatched) == (20, 0)

    half = run_audit(store, feature_service=SERVICE, sample=0.5)
    assert 0 < half.requests < 8 and half.rows == 21 * half.requests  # whole requests
    again = run_audit(store, feature_service=SERVICE, sample=0.5)
    assert again.rows == half.rows  # the same sample every time

    # The training dataset of the same (entity, time) rows has the served distribution.
    spine = log.select("driver_id", pl.col("request_time").alias("event_timestamp"))
    store.save_dataset(
        store.get_training_dataset(spine, feature_service=SERVICE), "train", entity_df=spine
    )
    with_training = run_audit(store, feature_service=SERVICE, training_dataset="train")
    for f in with_training.features:
        d = f.distribution
        assert d is not None and d.kind == "numeric"
        assert (d.psi, d.ks, d.null_rate_change) == (0.0, 0.0, 0.0)
        assert d.null_rate_served == pytest.approx(1 / 21)
    store.close()


@pytest.mark.redis
def test_injected_skews_are_found_and_attributed(tmp_path, redis_url):
    store = _store(tmp_path, redis_url)
    assert type(store.online).__module__.endswith(".redis")
    root = store.repo
    source = pl.read_parquet(root / "data/driver_stats.parquet")
    last_1003 = source.filter(pl.col("driver_id") == 1003)["event_timestamp"].max()

    def row(driver: int, event: datetime, created: datetime, conv: float) -> dict:
        return {"driver_id": driver, "event_timestamp": event, "conv_rate": conv,
                "acc_rate": 0.125, "avg_daily_trips": 9, "created": created}  # fmt: skip

    extra = pl.DataFrame(
        [
            # stale online: known by R, but materialization stopped at END
            row(1001, END + timedelta(minutes=30), END + timedelta(minutes=35), 0.5),
            # late data: happened before R, arrived after it
            row(1002, END + timedelta(minutes=40), R + timedelta(hours=1), 0.75),
        ],
        schema=source.schema,
    )
    pl.concat([source, extra]).write_parquet(root / "data/driver_stats.parquet")
    store.backfill()

    logger = FeatureLogger(store.offline, project=store.project, index=store.index)
    for i in range(2):
        _serve(store, logger, f"main-{i}", R)
    # TTL edge: served half a second before driver 1003's row expires, logged with a
    # clock one second later (a fault injected between serving and logging).
    edge = store.get_online_features(
        {"driver_id": [1003]},
        feature_service=SERVICE,
        request_time=last_1003 + timedelta(days=2) - timedelta(milliseconds=500),
    )
    assert edge.statuses["conv_rate"] == ["PRESENT"]
    edge.request_time_us += 1_000_000
    logger.log(edge, feature_service=SERVICE, request_id="ttl-edge")
    # A serving bug: a value that no data explains.
    bug = store.get_online_features({"driver_id": [1005]}, feature_service=SERVICE, request_time=R)
    bug.values["conv_rate"] = [0.123456]
    logger.log(bug, feature_service=SERVICE, request_id="bug")
    logger.close()

    # Definition changed after serving: a new transform, applied and backfilled.
    features_py = root / "features.py"
    features_py.write_text(
        features_py.read_text().replace(
            'pl.col("conv_rate") - pl.col("acc_rate")', 'pl.col("conv_rate") + pl.col("acc_rate")'
        )
    )
    assert store.apply().version == 2
    store.backfill()

    report = run_audit(store, feature_service=SERVICE)
    assert (report.served_versions, report.current_version) == ([1], 2)
    log = store.offline.read_table(report.table).collect()
    main = log.filter(pl.col("request_id").str.starts_with("main"))
    changed_gap = main.filter(
        pl.col("driver_id").is_in(DRIVERS[2:]),
        pl.col("driver_hourly_stats__acceptance_gap")
        != pl.col("driver_hourly_stats__conv_rate") + pl.col("driver_hourly_stats__acc_rate"),
    )["driver_id"].unique()
    assert changed_gap.len() >= 15  # the transform change shows on nearly every driver

    expected = set()
    for rid in ("main-0", "main-1"):
        for f in FEATURES:
            expected.add((rid, 1001, f, "stale_online"))
        for f in FEATURES[:3]:
            expected.add((rid, 1002, f, "late_data"))
        expected.add((rid, 1002, "acceptance_gap", "definition_changed"))
        for d in changed_gap:
            expected.add((rid, d, "acceptance_gap", "definition_changed"))
    for f in FEATURES:
        expected.add(("ttl-edge", 1003, f, "ttl_edge"))
    expected.add(("bug", 1005, "conv_rate", "unexplained"))
    if 1005 in changed_gap:  # the bug request was served by the old definition too
        expected.add(("bug", 1005, "acceptance_gap", "definition_changed"))
    found = {
        (r["request_id"], r["driver_id"], r["feature"].split(":")[1], r["cause"])
        for r in report.mismatches.iter_rows(named=True)
    }
    assert found == expected
    assert report.mismatches.height == len(expected)

    totals = report.cause_totals()
    assert totals["unexplained"] == 1 and totals["ttl_edge"] == 4
    assert report.exit_code == EXIT_THRESHOLD
    assert any("unexplained" in f for f in report.failures)
    lenient = run_audit(
        store, feature_service=SERVICE, thresholds=Thresholds(max_mismatch_rate=1.0)
    )
    (failure,) = lenient.failures  # other causes pass; the alarm does not
    assert failure.startswith("driver_hourly_stats:conv_rate: 1 unexplained mismatch(es)")
    stale = report.mismatches.filter(
        pl.col("cause") == "stale_online", pl.col("feature").str.ends_with(":conv_rate")
    )
    assert stale["served_event_ts"].to_list()[0] < stale["offline_event_ts"].to_list()[0]
    assert stale["offline"].to_list() == ["0.5", "0.5"]

    html = render_html(report)
    assert "<script" not in html and "http" not in html and "<link" not in html
    assert "stale_online" in html and "FAIL" in html
    markdown = render_markdown(report)
    assert "| unexplained | 1 |" in markdown
    data = json.loads(report.to_json(max_examples=3))
    assert data["exit_code"] == EXIT_THRESHOLD
    assert all(len(f["examples"]) <= 3 for f in data["features"])
    from rich.console import Console

    console = Console(record=True, width=200)
    render_terminal(report, console=console)
    text = console.export_text()
    assert "FAIL" in text and "definition_changed" in text
    store.close()
