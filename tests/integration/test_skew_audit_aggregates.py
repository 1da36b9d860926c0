"""The skew audit of an aggregated view end to end: the quickstart's `driver_windows`
(count over 1d, mean over 7d with a 1h hop, max over the lifetime) materialized into
the SQLite online store, lookups of `driver_windows_service` logged by FeatureLogger,
skews injected on purpose, and the audit must find those rows, each with its cause.

Floats: the online records add a hopped window tile by tile, the batch kernel in tree
order, so a mean may differ in its last bits (SEMANTICS "Windowed aggregations",
Floats). The audit compares floats within 1e-9 relative, so those rows match; the
tests check the integer aggregations exactly and bound the mean's rounding."""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from featurestore import FeatureStore
from featurestore.api.feature_log import FeatureLogger
from featurestore.audit import run_audit
from tests.integration.test_skew_audit import DRIVERS, END, UNKNOWN, R, _store

SERVICE = "driver_windows_service"
VIEW = "driver_windows"
EXACT = ["stats_rows_1d", "max_daily_trips"]  # integers: every path gives the same value
MEAN = "conv_rate_mean_7d"
ROUNDING = 1e-9  # relative (SEMANTICS "Windowed aggregations", Floats)


def _serve(
    store: FeatureStore,
    logger: FeatureLogger,
    request_id: str,
    when,
    *,
    drivers=(*DRIVERS, UNKNOWN),
    shift_us=0,
) -> None:
    response = store.get_online_features(
        {"driver_id": list(drivers)}, feature_service=SERVICE, request_time=when
    )
    response.request_time_us += shift_us  # the logging clock runs that much ahead
    logger.log(response, feature_service=SERVICE, request_id=request_id)


def _mismatches(report) -> dict[tuple[str, int, str], tuple[str, float | None]]:
    return {
        (r["request_id"], r["driver_id"], r["feature"].split(":")[1]): (r["cause"], r["rel_diff"])
        for r in report.mismatches.iter_rows(named=True)
    }


def test_without_skew_the_aggregates_match(tmp_path):
    store = _store(tmp_path)
    logger = FeatureLogger(store.offline, project=store.project, index=store.index)
    for i in range(6):  # from the materialization time END to an hour after it
        _serve(store, logger, f"req-{i}", R - timedelta(minutes=12 * i))
    logger.close()

    report = run_audit(store, feature_service=SERVICE)
    assert (report.rows, report.requests, report.compared) == (6 * 21, 6, 3 * 6 * 21)
    by_name = {f.feature.split(":")[1]: f for f in report.features}
    assert all(f.skipped is None for f in report.features)  # audited, not skipped
    for name in EXACT:
        f = by_name[name]
        assert (f.rows, f.matched, f.mismatched_vs_known_time) == (126, 126, 0)
    mean = by_name[MEAN]
    assert mean.missing_online == mean.missing_offline == 0
    assert mean.max_rel_diff is None or mean.max_rel_diff <= ROUNDING  # rounding only
    # Not trivially equal: the served values are real for every known driver.
    log = store.offline.read_table(report.table).collect()
    for name in (*EXACT, MEAN):
        assert log[f"{VIEW}__{name}"].null_count() == (6 if name != "stats_rows_1d" else 0)
    assert set(log[f"{VIEW}__stats_rows_1d"]) >= {0, 22}  # unknown driver 0, others 22
    store.close()


def test_injected_skews_are_found_and_attributed(tmp_path):
    store = _store(tmp_path)
    root = store.repo
    source = pl.read_parquet(root / "data/driver_stats.parquet")

    def row(driver: int, event, created, trips: int) -> dict:
        return {"driver_id": driver, "event_timestamp": event, "conv_rate": 0.75,
                "acc_rate": 0.125, "avg_daily_trips": trips, "created": created}  # fmt: skip

    extra = pl.DataFrame(
        [
            # stale online: known by R, but materialization stopped at END
            row(1001, END + timedelta(minutes=30), END + timedelta(minutes=35), 5000),
            # late data: happened before R, arrived after it
            row(1002, END + timedelta(minutes=40), R + timedelta(hours=1), 6000),
        ],
        schema=source.schema,
    )
    pl.concat([source, extra]).write_parquet(root / "data/driver_stats.parquet")
    store.backfill([VIEW])

    logger = FeatureLogger(store.offline, project=store.project, index=store.index)
    _serve(store, logger, "main", R)
    # Window edge: served 1 us before R, logged at R (clocks differ), for the drivers
    # without injected events. Each one's event at R - 1d drops out of the 1d count,
    # the one at END - 167h out of the 7d mean (its floored window moves by the hop).
    edge_drivers = DRIVERS[2:]
    _serve(store, logger, "edge", R - timedelta(microseconds=1), drivers=edge_drivers, shift_us=1)
    logger.close()

    report = run_audit(store, feature_service=SERVICE)
    found = _mismatches(report)
    exact = {k: cause for k, (cause, _) in found.items() if k[2] in EXACT}
    assert exact == {
        ("main", 1001, "stats_rows_1d"): "stale_online",
        ("main", 1001, "max_daily_trips"): "stale_online",
        ("main", 1002, "stats_rows_1d"): "late_data",
        ("main", 1002, "max_daily_trips"): "late_data",
        # the edge shifts every driver's 1d window past one hourly event
        **{("edge", d, "stats_rows_1d"): "window_edge" for d in edge_drivers},
    }
    # The mean: real differences where a skew was injected; elsewhere rounding.
    real = {k: cause for k, (cause, rel) in found.items() if k[2] == MEAN and rel > ROUNDING}
    assert real.pop(("main", 1001, MEAN)) == "stale_online"
    # Late data, when the as-of-known-time mean is bit-identical to the served one;
    # otherwise the hourly events near the hop's edges are the next explanation.
    assert real.pop(("main", 1002, MEAN)) in ("late_data", "window_edge")
    assert set(real.values()) == {"window_edge"}
    assert {(rid, d) for rid, d, _ in real} == {("edge", d) for d in edge_drivers}

    stale = report.mismatches.filter(
        pl.col("cause") == "stale_online", pl.col("feature").str.ends_with(":max_daily_trips")
    )
    # The served record is as of END; offline, the event known by R is newer.
    assert stale["served_event_ts"].to_list() == [END]
    assert stale["offline_event_ts"].to_list() == [END + timedelta(minutes=30)]
    assert stale["offline"].to_list() == ["5000"]
    late = report.mismatches.filter(
        pl.col("cause") == "late_data", pl.col("feature").str.ends_with(":max_daily_trips")
    )
    assert late["offline_created_ts"].to_list() == [R + timedelta(hours=1)]
    assert late["offline"].to_list() == ["6000"]
    assert late["offline_known_time"].to_list() == late["served"].to_list()
    assert report.cause_totals()["unexplained"] == 0
    store.close()
