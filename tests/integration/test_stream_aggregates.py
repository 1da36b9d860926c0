"""The stream worker on a view with windowed aggregations, against a real Kafka-protocol
broker (tansu), real Redis / SQLite online stores and real Delta tables.

One generated event log (out of order, hours late, duplicated; keyed by entity, so
each entity lives in one partition) goes (a) through Kafka into the worker and (b)
as the view's BatchSource through backfill + materialize. Then:

- the online values at several request times at and after the last event, and the
  offline rows, are identical (floats within 1e-9 relative, ints exact); both also
  agree with a brute-force reading of docs/semantics.md;
- a worker SIGKILLed mid-stream and restarted, and a second worker joining the group
  mid-stream, end with the values of an uninterrupted run (nothing lost or counted
  twice);
- a watermark handover (backfill + materialize before ``W``, the stream from ``W``)
  ends with the values of a pure batch run over every event.

The last test (xfail, strict) pins a product bug: an event sent twice with the same
record timestamp counts twice online in the stream but once on the batch path.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from featurestore import Aggregation, BatchSource, Entity, FeatureView, KafkaSource
from featurestore.api.online import build_lookup_plan, lookup
from featurestore.compile import PlanIndex, compile_definitions
from featurestore.compile.discover import Found
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.stream import StreamMetrics, run_worker
from featurestore.materialize import backfill_view, materialize_view
from featurestore.stores.offline import DeltaOfflineStore
from featurestore.stores.offline.spec import RECORD_ID
from featurestore.stores.online import open_online_store
from featurestore.stores.online.base import OnlineStore
from featurestore.stores.view_specs import offline_spec
from tests.integration.test_stream_faults import run as run_sqlite
from tests.integration.test_stream_faults import second_worker_joins, start_child
from tests.integration.test_stream_worker import (
    NOW_MS,
    SCHEMA,
    Record,
    event_frame,
    expected_rows,
    offline_rows,
    produce,
    settings,
)

pytestmark = pytest.mark.kafka

PROJECT = "it"
VIEW = "driver_trips"
KEYS = 20
IDS = list(range(KEYS + 2))  # the last two have no events: MISSING on both paths
CITIES = ["lyon", "oslo", "nice", "rome", "bern", "graz", "pisa", "kiel", "gent", "bonn"]
MIN_US = 60_000_000
HOUR_US = 60 * MIN_US

AGGREGATIONS = [
    Aggregation(name="fare_sum_1h", column="fare", function="sum", window="1h", hop="5m"),
    Aggregation(name="trips_30m", column=None, function="count", window="30m"),
    Aggregation(
        name="per_km_mean", column="fare_per_km", function="mean", window="lifetime", hop="1h"
    ),
    Aggregation(name="fare_last", column="fare", function="last", window="lifetime"),
    Aggregation(name="cities_2h", column="city", function="count_distinct", window="2h", hop="10m"),
]
FEATURES = [a.name for a in AGGREGATIONS]
STATUS = "<status>"


# ---------------------------------------------------------------- definitions


def compile_view(tmp: Path, *, topic: str, bootstrap: str) -> tuple[PlanIndex, FeatureViewPlan]:
    """An aggregated view of a Kafka topic with a row transform; its history (the
    BatchSource) is ``tmp/history.parquet``, whose ``record_ts`` column is the Kafka
    record timestamp, i.e. the ``created_ts`` the stream gives each row."""
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    src = KafkaSource(
        name="trips_stream",
        topic=topic,
        bootstrap_servers=bootstrap,
        schema=SCHEMA,
        timestamp_field="event_ts",
        batch_source=BatchSource(
            name="trips_history",
            path="history.parquet",
            timestamp_field="event_ts",
            created_timestamp_field="record_ts",
        ),
    )
    view = FeatureView(
        name=VIEW,
        entities=[driver],
        source=src,
        ttl=None,
        transform={"fare_per_km": pl.col("fare") / pl.col("distance_km")},
        aggregations=AGGREGATIONS,
    )
    found = [Found(o, "features.py") for o in (driver, src, view)]
    index = PlanIndex(compile_definitions(found, repo=tmp, project=PROJECT).plan)
    return index, index.view(VIEW)


# ---------------------------------------------------------------- the event log


def make_log(n: int, *, seed: int, step_ms: int = 5_000) -> list[Record]:
    """``n`` Kafka records over ``KEYS`` drivers, keyed by driver, ``step_ms`` apart
    and ending ten minutes ago: event times lag their record by up to 90 s (out of
    order), 8% are 10 min to 3 h late, 2% are slightly ahead of their record, 4% sit
    exactly on a 5-minute tile edge, 3% have no fare; 4% are sent a second time as a
    new record with a later record timestamp, 4% with the same one (a producer retry:
    the two rows tie on key, event_ts and created_ts, and both count), and 3% have a
    second, different event of the same key at the same instant (a tie too)."""
    rng = random.Random(seed)
    base_ms = NOW_MS - 600_000 - step_ms * n
    out: list[Record] = []
    while len(out) < n:
        ts_ms = base_ms + step_ms * len(out)
        key = rng.randrange(KEYS)
        u = rng.random()
        if u < 0.08:
            lag_us = rng.randrange(600_000_000, 3 * HOUR_US)
        elif u < 0.10:
            lag_us = -50_000
        else:
            lag_us = rng.randrange(0, 90_000_000)
        event_us = ts_ms * 1000 - lag_us
        if rng.random() < 0.04:
            event_us -= event_us % (5 * MIN_US)  # on a hop edge
        event = {
            "driver_id": key,
            "fare": None if rng.random() < 0.03 else round(rng.uniform(3, 80), 2),
            "distance_km": rng.choice([0.5, 1.0, 2.5, 4.0]),
            "city": rng.choice([*CITIES, None]),
            "event_ts": event_us
            if rng.random() < 0.5
            else dt.datetime.fromtimestamp(event_us / 1e6, dt.UTC).isoformat(),
        }
        value = orjson.dumps(event)
        out.append(Record(str(key).encode(), value, ts_ms, event))
        u = rng.random()
        if u < 0.04:  # the same event in a second record, a later record timestamp
            out.append(Record(str(key).encode(), value, ts_ms + step_ms // 2, event))
        elif u < 0.08:  # a producer retry: same bytes, same record timestamp (a tie)
            out.append(Record(str(key).encode(), value, ts_ms, event))
        elif u < 0.11:  # another event of the key at the same instant (a tie, new values)
            other = {**event, "fare": round(rng.uniform(3, 80), 2), "city": rng.choice(CITIES)}
            out.append(Record(str(key).encode(), orjson.dumps(other), ts_ms, other))
    return out[:n]


def write_history(root: Path, log: list[Record]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    event_frame(log).write_parquet(root / "history.parquet")


def drivers(log: list[Record]) -> set[int]:
    return {r.event["driver_id"] for r in log if r.event is not None}


def last_event_us(log: list[Record]) -> int:
    return int(event_frame(log)["event_ts"].dt.epoch("us").max())  # type: ignore[arg-type]


def request_times(log: list[Record]) -> list[int]:
    """At and after the last event: on it, on the next tile edges, where the last
    event leaves the no-hop window, hours and a day later."""
    t = last_event_us(log)
    five = (t // (5 * MIN_US) + 1) * 5 * MIN_US
    return [
        t,
        t + 1,
        five,
        five - 1,
        t + 30 * MIN_US,
        t + 30 * MIN_US - 1,
        t + 47 * MIN_US,
        t + 2 * HOUR_US + 1,
        t + 5 * HOUR_US,
        t + 26 * HOUR_US,
    ]


# ---------------------------------------------------------------- runs


def stream(
    view: FeatureViewPlan,
    root: Path,
    bootstrap: str,
    group: str,
    *,
    online_url: str,
    **kw: Any,
) -> Any:
    """A worker run (to the end of the topic unless told otherwise), Delta under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    online = open_online_store(online_url)
    try:
        return run_worker(
            project=PROJECT,
            views=[view],
            offline=DeltaOfflineStore(str(root / "offline")),
            online=online,
            group_id=group,
            settings=kw.pop("stream_settings", settings()),
            until_end=kw.pop("until_end", True),
            idle_timeout_s=kw.pop("idle_timeout_s", 60),
            handle_signals=False,
            **kw,
        )
    finally:
        online.close()


@dataclass(frozen=True)
class BatchRun:
    rows: pl.DataFrame  # the offline table
    values: dict[tuple[int, str], list[Any]]  # (request time, feature) -> per entity


def batch_run(
    index: PlanIndex, view: FeatureViewPlan, log: list[Record], root: Path, times: list[int]
) -> BatchRun:
    """The same events as the view's BatchSource: backfill, then materialize at the
    last event time."""
    write_history(root, log)
    offline = DeltaOfflineStore(str(root / "offline"))
    backfill_view(view, repo=root, offline=offline)
    online = open_online_store(f"sqlite:///{root / 'online.db'}")
    try:
        report = materialize_view(
            view, project=PROJECT, offline=offline, online=online, end_us=last_event_us(log)
        )
        assert report.written == report.entities == len(drivers(log))
        values = online_values(index, online, times)
    finally:
        online.close()
    return BatchRun(offline_rows(offline, view), values)


def online_values(
    index: PlanIndex, online: OnlineStore, times: list[int]
) -> dict[tuple[int, str], list[Any]]:
    """Values (and statuses) of the drivers ``IDS`` through the lookup path
    ``FeatureStore.get_online_features`` takes."""
    plan = build_lookup_plan(
        index, project=PROJECT, registry_version=0, features=[f"{VIEW}:{f}" for f in FEATURES]
    )
    out: dict[tuple[int, str], list[Any]] = {}
    for r in times:
        resp = lookup(plan, online, {"driver_id": IDS}, request_time_us=r)
        for f in FEATURES:
            out[(r, f)] = resp.values[f]
        out[(r, STATUS)] = resp.statuses[FEATURES[0]]
    return out


def stream_values(
    index: PlanIndex, online_url: str, times: list[int]
) -> dict[tuple[int, str], list[Any]]:
    online = open_online_store(online_url)
    try:
        return online_values(index, online, times)
    finally:
        online.close()


# ---------------------------------------------------------------- comparison


def same(a: Any, b: Any) -> bool:
    """Ints and strings exactly, floats within 1e-9 relative, None only with None."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, float) and isinstance(b, float)):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return type(a) is type(b) and a == b


def mismatches(
    got: dict[tuple[int, str], list[Any]], want: dict[tuple[int, str], list[Any]]
) -> list[tuple[int, str, int, Any, Any]]:
    assert got.keys() == want.keys()
    out = []
    for (r, f), values in want.items():
        for driver, (g, w) in enumerate(zip(got[(r, f)], values, strict=True)):
            if not same(g, w):
                out.append((r, f, IDS[driver], g, w))
    return out


def assert_same_values(got: dict[Any, list[Any]], want: dict[Any, list[Any]]) -> None:
    bad = mismatches(got, want)
    assert not bad, f"{len(bad)} mismatches (request_us, feature, driver, got, want): {bad[:8]}"


def brute_force(log: list[Record], times: list[int]) -> dict[tuple[int, str], list[Any]]:
    """docs/semantics.md "Windowed aggregations", read literally, over the valid events."""
    rows = event_frame(log).with_columns(
        pl.col("event_ts", "record_ts").dt.epoch("us"),
        fare_per_km=pl.col("fare") / pl.col("distance_km"),
    )
    by_driver: dict[int, list[dict[str, Any]]] = {d: [] for d in IDS}
    for i, row in enumerate(rows.iter_rows(named=True)):
        by_driver[row["driver_id"]].append({**row, "i": i})
    for events in by_driver.values():
        events.sort(key=lambda e: (e["event_ts"], e["record_ts"], e["i"]))
    out: dict[tuple[int, str], list[Any]] = {}
    for r in times:
        for agg in AGGREGATIONS:
            t = r if agg.hop_us is None else r // agg.hop_us * agg.hop_us
            column: list[Any] = []
            for d in IDS:
                inside = [
                    e
                    for e in by_driver[d]
                    if e["event_ts"] <= t
                    and (agg.window_us is None or e["event_ts"] > t - agg.window_us)
                ]
                values = [e[agg.column] for e in inside if agg.column is not None]
                values = [v for v in values if v is not None]
                if agg.function == "count":
                    column.append(len(inside))
                elif agg.function == "count_distinct":
                    column.append(len(set(values)))  # never null (state.finalize)
                elif not values:
                    column.append(None)
                elif agg.function == "sum":
                    column.append(math.fsum(values))
                elif agg.function == "mean":
                    column.append(math.fsum(values) / len(values))
                elif agg.function == "last":
                    column.append(values[-1])
                else:  # pragma: no cover
                    raise AssertionError(agg.function)
            out[(r, agg.name)] = column
        out[(r, STATUS)] = ["PRESENT" if by_driver[d] else "MISSING" for d in IDS]
    return out


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("online_kind", ["redis", "sqlite"])
def test_stream_and_batch_give_identical_online_values_and_offline_rows(
    tmp_path, kafka_broker, kafka_topics, online_kind, request
):
    topic = kafka_topics(4)
    index, view = compile_view(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(2500, seed=21)
    produce(kafka_broker.bootstrap, topic, log)
    times = request_times(log)
    if online_kind == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = f"sqlite:///{tmp_path / 'stream' / 'online.db'}"
    metrics = StreamMetrics()
    report = stream(
        view, tmp_path / "stream", kafka_broker.bootstrap, "g-agg", online_url=url, metrics=metrics
    )
    assert report.stopped_by == "end"
    assert report.records == report.rows == len(log) and report.dead_letters == 0
    assert metrics.aggregate_skipped.total() == 0
    assert metrics.aggregate_conflicts.total() == 0

    batch = batch_run(index, view, log, tmp_path / "batch", times)
    got = stream_values(index, url, times)
    assert_same_values(got, batch.values)
    assert_same_values(batch.values, brute_force(log, times))
    # offline: every record once, the same rows on both paths
    stream_rows = offline_rows(DeltaOfflineStore(str(tmp_path / "stream" / "offline")), view)
    assert_frame_equal(stream_rows, batch.rows)
    assert_frame_equal(stream_rows, expected_rows(view, log))

    # A new group re-reads the whole topic (an offset reset): the records' marks skip
    # every event, so the online values do not move; the offline merge adds nothing.
    again = StreamMetrics()
    reread = stream(
        view,
        tmp_path / "stream",
        kafka_broker.bootstrap,
        "g-agg-again",
        online_url=url,
        metrics=again,
        stream_settings=settings(offline_write="merge"),
    )
    assert reread.records == len(log)
    assert again.aggregate_skipped.total() == len(log)
    assert_same_values(stream_values(index, url, times), batch.values)
    assert_frame_equal(
        offline_rows(DeltaOfflineStore(str(tmp_path / "stream" / "offline")), view), batch.rows
    )


def test_a_worker_killed_mid_stream_resumes_to_the_values_of_an_uninterrupted_run(
    tmp_path, kafka_broker, kafka_topics
):
    topic = kafka_topics(4)
    index, view = compile_view(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(6000, seed=22, step_ms=2_000)
    produce(kafka_broker.bootstrap, topic, log)
    times = request_times(log)
    ref, victim = tmp_path / "ref", tmp_path / "victim"
    ref.mkdir()
    victim.mkdir()
    # The child (test_stream_faults.py as a script) runs with small batches and a
    # checkpoint every 0.1 s, into victim/online.db and victim/offline.
    child = start_child(view, victim, kafka_broker.bootstrap, "g-agg-victim", mode="kill")
    offline = DeltaOfflineStore(str(victim / "offline"))
    wait_for_versions(child, offline, 4)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    partial = offline_rows(offline, view).height
    assert 0 < partial < len(log)

    metrics = StreamMetrics()
    resumed = run_sqlite(view, victim, kafka_broker.bootstrap, "g-agg-victim", metrics=metrics)
    assert 0 < resumed.records < len(log)  # from the last commit, not from zero
    assert metrics.aggregate_conflicts.total() == 0
    run_sqlite(view, ref, kafka_broker.bootstrap, "g-agg-ref")

    want = stream_values(index, f"sqlite:///{ref / 'online.db'}", times)
    got = stream_values(index, f"sqlite:///{victim / 'online.db'}", times)
    assert_same_values(got, want)
    assert_same_values(want, brute_force(log, times))
    assert_frame_equal(offline_rows(offline, view), expected_rows(view, log))  # each once
    assert_frame_equal(
        offline_rows(DeltaOfflineStore(str(ref / "offline")), view), expected_rows(view, log)
    )


def wait_for_versions(child: Any, offline: DeltaOfflineStore, versions: int) -> None:
    """Until the child made ``versions`` Delta commits of the view (it is then mid-stream)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and child.poll() is None:
        if (offline.version(VIEW) or 0) >= versions:
            return
        time.sleep(0.01)
    assert child.poll() is None, "the worker finished before the test could kill it"
    raise AssertionError(f"no {versions} Delta commits within 60 s")


def test_a_worker_joining_mid_stream_loses_and_double_counts_nothing(
    tmp_path, kafka_broker, kafka_topics, redis_url
):
    topic = kafka_topics(4)
    index, view = compile_view(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(4000, seed=23, step_ms=3_000)
    times = request_times(log)
    shared = tmp_path / "shared"
    reports: dict[str, Any] = {}
    errors: list[BaseException] = []
    metrics = {"a": StreamMetrics(), "b": StreamMetrics()}

    def worker(name: str) -> None:
        try:
            reports[name] = stream(
                view,
                shared,
                kafka_broker.bootstrap,
                "g-agg-shared",
                online_url=redis_url,
                metrics=metrics[name],
                stream_settings=settings(batch_size=150, flush_interval_s=0.3),
                until_end=False,
                idle_timeout_s=3,
            )
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    second_worker_joins(kafka_broker.bootstrap, topic, log, worker, metrics, chunk=250, first=500)
    assert not errors, errors
    assert set(reports) == {"a", "b"}
    assert metrics["a"].rebalances.value(kind="revoke") >= 1
    assert reports["a"].records > 0 and reports["b"].records > 0
    assert reports["a"].records + reports["b"].records == len(log)  # each read once
    assert sum(m.aggregate_conflicts.total() for m in metrics.values()) == 0

    # the uninterrupted run: one worker, its own group and stores
    ref_url = f"sqlite:///{tmp_path / 'ref' / 'online.db'}"
    stream(view, tmp_path / "ref", kafka_broker.bootstrap, "g-alone", online_url=ref_url)
    want = stream_values(index, ref_url, times)
    assert_same_values(stream_values(index, redis_url, times), want)
    assert_same_values(want, brute_force(log, times))
    assert_frame_equal(
        offline_rows(DeltaOfflineStore(str(shared / "offline")), view), expected_rows(view, log)
    )


def test_watermark_handover_from_backfill_and_materialize_equals_a_pure_batch_run(
    tmp_path, kafka_broker, kafka_topics
):
    """Backfill + materialize own event_ts < W (materialized at W - 1us), the stream
    (``watermark_us=W``) owns the rest: the values of a batch run over every event."""
    topic = kafka_topics(4)
    index, view = compile_view(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(2500, seed=24)
    produce(kafka_broker.bootstrap, topic, log)
    times = request_times(log)
    events = event_frame(log)["event_ts"].dt.epoch("us")
    mark_us = int(events.sort()[events.len() // 2])  # an event exactly on the mark

    root = tmp_path / "handover"
    write_history(root, log)
    offline = DeltaOfflineStore(str(root / "offline"))
    backfill_view(view, repo=root, offline=offline, end_us=mark_us)
    url = f"sqlite:///{root / 'online.db'}"
    online = open_online_store(url)
    try:
        before = materialize_view(
            view, project=PROJECT, offline=offline, online=online, end_us=mark_us - 1
        )
    finally:
        online.close()
    assert before.written == before.entities == KEYS
    report = stream(
        view, root, kafka_broker.bootstrap, "g-agg-handover", online_url=url, watermark_us=mark_us
    )
    early = int((events < mark_us).sum())
    assert report.before_watermark == early
    assert report.rows == len(log) - early

    batch = batch_run(index, view, log, tmp_path / "batch", times)
    assert_same_values(stream_values(index, url, times), batch.values)
    assert_same_values(batch.values, brute_force(log, times))
    assert_frame_equal(offline_rows(offline, view), batch.rows)

    # A later materialize leaves the records the stream now owns alone.
    online = open_online_store(url)
    try:
        again = materialize_view(
            view, project=PROJECT, offline=offline, online=online, end_us=last_event_us(log)
        )
        assert again.written == 0 and again.skipped_stale == KEYS
        assert_same_values(online_values(index, online, times), batch.values)
    finally:
        online.close()


def test_an_event_resent_with_the_same_record_timestamp_counts_alike_on_both_paths(
    tmp_path, kafka_broker, kafka_topics
):
    """Minimal: driver 0, event A in two records with equal bytes and timestamp (what
    an at-least-once producer's retry writes), then event B. docs/semantics.md: "two
    equal events are two events and both count": 3 events on every path (this was a
    strict xfail while the offline table merged rows that tie on keys and times)."""
    topic = kafka_topics(1)
    index, view = compile_view(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    t_ms = NOW_MS - 600_000
    a = {"driver_id": 0, "fare": 10.0, "distance_km": 1.0, "city": "lyon"}
    a["event_ts"] = (t_ms - 2_000) * 1000
    b = {"driver_id": 0, "fare": 5.0, "distance_km": 2.0, "city": "oslo", "event_ts": t_ms * 1000}
    log = [
        Record(b"0", orjson.dumps(a), t_ms - 1_000, a),
        Record(b"0", orjson.dumps(a), t_ms - 1_000, a),  # the retry: same bytes and stamp
        Record(b"0", orjson.dumps(b), t_ms, b),
    ]
    produce(kafka_broker.bootstrap, topic, log)
    times = [t_ms * 1000, t_ms * 1000 + HOUR_US]
    url = f"sqlite:///{tmp_path / 'stream' / 'online.db'}"
    stream(view, tmp_path / "stream", kafka_broker.bootstrap, "g-retry", online_url=url)
    batch = batch_run(index, view, log, tmp_path / "batch", times)
    got = stream_values(index, url, times)
    assert got[(times[0], "trips_30m")][0] == 3  # the stream: both records count
    assert_same_values(got, brute_force(log, times))
    assert_same_values(batch.values, got)
    assert batch.values[(times[0], "trips_30m")][0] == 3
    # The stream's offline copy keeps both records too, each with its Kafka identity.
    streamed = DeltaOfflineStore(str(tmp_path / "stream" / "offline")).read_view(
        offline_spec(view), columns=["driver_id", "event_ts", RECORD_ID]
    )
    ids = streamed.collect()[RECORD_ID].to_list()
    assert sorted(ids) == [f"{topic}/0/{o}" for o in range(3)]
