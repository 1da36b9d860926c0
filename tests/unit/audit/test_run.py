"""run_audit's edges: which table, aggregated views skipped through the recompute hook,
thresholds and exit codes, renderers on a report built by hand."""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl
import pytest
from rich.console import Console

from featurestore import FeatureStore
from featurestore._time import to_us
from featurestore.api.feature_log import FeatureLogger
from featurestore.api.online import OnlineResponse, build_lookup_plan
from featurestore.audit import (
    EXIT_THRESHOLD,
    AuditReport,
    Bin,
    Distribution,
    FeatureResult,
    Thresholds,
    render_html,
    render_markdown,
    render_terminal,
    run_audit,
)
from featurestore.audit import recompute as recompute_module
from featurestore.audit.recompute import RECOMPUTES, PlainRecompute, recompute_for
from featurestore.audit.recompute_aggregates import AggregateRecompute
from featurestore.errors import RequestError
from featurestore.scaffold.sample_data import SAMPLE_END
from tests.helpers import quickstart

AGGREGATED = """

from featurestore import Aggregation

driver_activity = FeatureView(
    name="driver_activity",
    entities=[driver],
    source=driver_stats_source,
    ttl=None,
    aggregations=[Aggregation(name="trips_sum_1d", column="avg_daily_trips",
                              function="sum", window="1d")],
)
both = FeatureService(name="both", features=[driver_hourly_stats, driver_activity])
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Quickstart plus an aggregated view, and one logged request of service "both"
    whose plain values are what the offline path gives (served by hand: the online
    path does not serve aggregations yet)."""
    root = quickstart(tmp_path_factory.mktemp("audit") / "repo")
    with (root / "features.py").open("a") as f:
        f.write(AGGREGATED)
    store = FeatureStore(root)
    store.apply()
    store.backfill(["driver_hourly_stats"])
    plan = build_lookup_plan(
        store.index(), project=store.project, registry_version=1, feature_service="both"
    )
    r_us = to_us(SAMPLE_END - timedelta(hours=2))
    spine = pl.DataFrame({"driver_id": [1001, 1002]}).with_columns(
        event_timestamp=pl.lit(r_us).cast(pl.Datetime("us", "UTC"))
    )
    truth = store.get_training_dataset(spine, feature_service="driver_ranking").frame
    outputs = list(plan.outputs)
    response = OnlineResponse(
        {"driver_id": [1001, 1002]},
        {o: truth[o].to_list() if o in truth.columns else [3, 4] for o in outputs},
        {o: ["PRESENT", "PRESENT"] for o in outputs},
        {o: [r_us - 3_600_000_000] * 2 for o in outputs},
        1,
        r_us,
    )
    with FeatureLogger(store.offline, project=store.project) as logger:
        logger.log(response, feature_service="both", request_id="q", plan=plan)
    yield store
    store.close()


def test_views_no_recompute_supports_are_skipped_and_named(store, monkeypatch):
    index = store.index()
    assert isinstance(recompute_for(index.view("driver_activity")), AggregateRecompute)
    assert recompute_for(index.view("driver_hourly_stats")) is RECOMPUTES[0]
    # Without the aggregate implementation, the aggregated view is skipped, not failed.
    monkeypatch.setattr(recompute_module, "_recomputes", lambda: [PlainRecompute()])
    assert recompute_for(index.view("driver_activity")) is None
    report = run_audit(store, feature_service="both")
    by_name = {f.feature: f for f in report.features}
    skipped = by_name["driver_activity:trips_sum_1d"]
    assert skipped.skipped == "no offline recompute supports this view"
    assert skipped.rows == 2
    plain = by_name["driver_hourly_stats:conv_rate"]
    assert (plain.rows, plain.matched, plain.skipped) == (2, 2, None)
    assert report.compared == 8 and report.passed
    assert "skipped" in render_markdown(report)


def test_table_must_be_named_once_and_exist(store):
    with pytest.raises(RequestError, match="exactly one"):
        run_audit(store, feature_service="both", log_table="_feature_logs/both")
    with pytest.raises(RequestError, match="no feature log"):
        run_audit(store, feature_service="driver_ranking")
    with pytest.raises(RequestError, match="start must be before end"):
        run_audit(store, feature_service="both", start=SAMPLE_END, end=SAMPLE_END)
    with pytest.raises(RequestError, match="sample"):
        run_audit(store, feature_service="both", sample=1.5)


def test_a_window_without_rows_is_an_empty_passing_report(store):
    report = run_audit(store, feature_service="both", end=SAMPLE_END - timedelta(days=30))
    assert (report.rows, report.requests, report.compared, report.features) == (0, 0, 0, [])
    assert report.passed and report.mismatches.height == 0
    assert json.loads(report.to_json())["rows"] == 0


def _report(features: list[FeatureResult], thresholds: Thresholds) -> AuditReport:
    mismatches = pl.DataFrame(
        {
            "row": [0],
            "request_id": ["r<1>"],
            "feature": ["v:x"],
            "outcome": ["value_mismatch"],
            "cause": ["unexplained"],
            "served": ["1.5"],
            "offline": ["2.5"],
            "abs_diff": [float("nan")],
        }
    )
    return AuditReport(
        table="_feature_logs/svc",
        table_version=3,
        start_us=None,
        end_us=None,
        sample=None,
        rows=100,
        requests=10,
        current_version=2,
        served_versions=[2],
        view_table_versions={"v": 4},
        features=features,
        mismatches=mismatches,
        thresholds=thresholds,
    )


def test_thresholds_decide_the_exit_code_and_renderers_show_them():
    dist = Distribution("numeric", 50, 100, 0.3, 0.2, 0.0, 0.1, [Bin("<= 1", 0.5, 0.7)])
    x = FeatureResult("v:x", "float64", 100, matched=99, value_mismatch=1,
                      causes={"unexplained": 1}, distribution=dist)  # fmt: skip
    y = FeatureResult("v:y", "string", 100, matched=98, missing_online=2,
                      causes={"stale_online": 2})  # fmt: skip
    strict = _report([x, y], Thresholds())
    assert strict.failures == [
        "v:x: 1 unexplained mismatch(es), rate 1.0000% > 0.0000%",
        "v:x: PSI 0.3000 > 0.25",
        "v:y: mismatch rate 2.0000% > 1.0000%",
    ]
    assert strict.exit_code == EXIT_THRESHOLD and not strict.passed
    assert strict.mismatch_rate == pytest.approx(3 / 200)
    relaxed = _report([x, y], Thresholds(0.05, 0.05, None, 0.1))
    assert relaxed.failures == ["v:x: KS 0.2000 > 0.1"]
    loose = _report([x, y], Thresholds(0.05, 0.05, None, None))
    assert loose.passed and loose.exit_code == 0

    data = json.loads(strict.to_json())
    assert data["causes"]["unexplained"] == 1 and data["causes"]["stale_online"] == 2
    assert data["features"][0]["examples"][0]["abs_diff"] == "nan"  # JSON has no NaN
    assert data["features"][0]["distribution"]["null_rate_change"] == pytest.approx(0.1)
    html = render_html(strict)
    assert "r&lt;1&gt;" in html and "<script" not in html and "width:70.00%" in html
    md = render_markdown(strict)
    assert md.startswith("# Skew audit: FAIL") and "| v:y | 100 | 98 |" in md
    console = Console(record=True, width=240)
    render_terminal(strict, console=console)
    text = console.export_text()
    assert "FAIL: v:x: PSI 0.3000 > 0.25" in text and "stale_online 2" in text
