"""The stream worker against a real Kafka-protocol broker (tansu): a generated event log
with out-of-order, late, duplicated and bad events -> online + offline + dead letters.

The helpers here are shared with ``test_stream_faults.py``.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from featurestore import BatchSource, Entity, FeatureView, Field, KafkaSource
from featurestore.compile import PlanIndex, compile_definitions
from featurestore.compile.discover import Found
from featurestore.compile.views import FeatureViewPlan
from featurestore.engines.batch import latest_per_entity, transform_rows
from featurestore.engines.stream import StreamMetrics, StreamSettings, run_worker
from featurestore.stores.offline import DeltaOfflineStore
from featurestore.stores.online import ReadRequest, open_online_store
from featurestore.stores.online.base import OnlineStore
from featurestore.stores.view_specs import offline_spec, online_schema
from tests.fixtures.kafka import TEST_CONSUMER_OPTIONS

pytestmark = pytest.mark.kafka

NOW_MS = int(time.time() * 1000)
KEYS = 60
SCHEMA = {
    "driver_id": "int64",
    "fare": "float64",
    "distance_km": "float64",
    "city": "string",
    "event_ts": "datetime",
}


# ---------------------------------------------------------------- definitions


def stream_views(tmp: Path, *, topic: str, bootstrap: str) -> list[FeatureViewPlan]:
    """Two plain views of one topic: one online with a row transform, one offline only."""
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    src = KafkaSource(
        name="trips_stream",
        topic=topic,
        bootstrap_servers=bootstrap,
        schema=SCHEMA,
        timestamp_field="event_ts",
        batch_source=BatchSource(name="trips_history", path="history", timestamp_field="event_ts"),
    )
    fares = FeatureView(
        name="driver_fares",
        entities=[driver],
        source=src,
        ttl=None,
        fields=[
            Field(name="fare", dtype="float64"),
            Field(name="fare_per_km", dtype="float64"),
            Field(name="city", dtype="string"),
        ],
        transform={"fare_per_km": pl.col("fare") / pl.col("distance_km")},
    )
    cities = FeatureView(
        name="driver_cities",
        entities=[driver],
        source=src,
        ttl=None,
        online=False,
        fields=[Field(name="city_upper", dtype="string")],
        transform={"city_upper": pl.col("city").str.to_uppercase()},
    )
    found = [Found(o, "features.py") for o in (driver, src, fares, cities)]
    index = PlanIndex(compile_definitions(found, repo=tmp, project="it").plan)
    return [index.view("driver_fares"), index.view("driver_cities")]


# ---------------------------------------------------------------- the event log


@dataclass(frozen=True)
class Record:
    """One Kafka record: its bytes, its record timestamp and, if valid, the event."""

    key: bytes
    value: bytes | None
    ts_ms: int
    event: dict[str, Any] | None
    reason: str | None = None


BAD = [
    (b"{not json", "undecodable"),
    (b"[1, 2, 3]", "not_an_object"),
    (
        orjson.dumps({"driver_id": 1, "fare": 1.0, "distance_km": 1.0, "event_ts": 0}),
        "missing_field",
    ),
    (
        orjson.dumps(
            {"driver_id": "7", "fare": 1.0, "distance_km": 1.0, "city": "x", "event_ts": 0}
        ),
        "wrong_type",
    ),
    (
        orjson.dumps(
            {
                "driver_id": 7,
                "fare": 1.0,
                "distance_km": 1.0,
                "city": "x",
                "event_ts": "2024-01-01T00:00:00",
            }
        ),
        "naive_timestamp",
    ),
    (
        orjson.dumps(
            {
                "driver_id": None,
                "fare": 1.0,
                "distance_km": 1.0,
                "city": "x",
                "event_ts": "2024-01-01T00:00:00Z",
            }
        ),
        "null_key",
    ),
    (b'{"driver_id":3,"fare":1.0,"distance_km":1.0,"city":"x","event_ts":X}', "future_timestamp"),
]


def make_log(
    n: int, *, seed: int = 1, bad_every: int = 40, start_ms: int | None = None
) -> list[Record]:
    """``n`` records over ``KEYS`` drivers: event times jitter around the record time
    (out of order), 5% are hours late, 3% are sent twice, and every ``bad_every``-th
    record is bad (one of each reason in turn). Record timestamps are unique."""
    rng = random.Random(seed)
    base_ms = (start_ms if start_ms is not None else NOW_MS - 3_600_000) - 10 * n
    out: list[Record] = []
    while len(out) < n:
        ts_ms = base_ms + 10 * len(out)
        if bad_every and len(out) % bad_every == bad_every - 1:
            value, reason = BAD[(len(out) // bad_every) % len(BAD)]
            if reason == "future_timestamp":
                value = value.replace(b"X", str((ts_ms + 3_600_000) * 1000).encode())
            out.append(Record(b"bad", value, ts_ms, None, reason))
            continue
        key = rng.randrange(KEYS)
        late = rng.random() < 0.05
        event_us = (ts_ms - rng.randrange(0, 3000) - (7_200_000 if late else 0)) * 1000
        if rng.random() < 0.02:
            event_us = (ts_ms + 50) * 1000  # a little ahead of the record: allowed
        event = {
            "driver_id": key,
            "fare": round(rng.uniform(3, 80), 2),
            "distance_km": rng.choice([0.5, 1.0, 2.5, 4.0]),
            "city": rng.choice(["lyon", "oslo", None]),
            "event_ts": event_us
            if rng.random() < 0.5
            else dt.datetime.fromtimestamp(event_us / 1e6, dt.UTC).isoformat(),
        }
        value = orjson.dumps(event)
        out.append(Record(str(key).encode(), value, ts_ms, event))
        if rng.random() < 0.03 and len(out) < n:  # the same event, sent again
            out.append(Record(str(key).encode(), value, ts_ms + 5, event))
    return out[:n]


def produce(bootstrap: str, topic: str, log: list[Record]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for rec in log:
        producer.produce(topic, key=rec.key, value=rec.value, timestamp=rec.ts_ms)
        producer.poll(0)
    assert producer.flush(30) == 0


def event_frame(log: list[Record]) -> pl.DataFrame:
    """The valid events as source rows, ``record_ts`` being the Kafka timestamp."""
    rows = [
        {**r.event, "event_ts": _as_us(r.event["event_ts"]), "record_ts": r.ts_ms * 1000}
        for r in log
        if r.event is not None
    ]
    schema = {"driver_id": pl.Int64, "fare": pl.Float64, "distance_km": pl.Float64}
    return pl.DataFrame(
        rows, schema={**schema, "city": pl.String, "event_ts": pl.Int64, "record_ts": pl.Int64}
    ).with_columns(pl.col("event_ts", "record_ts").cast(pl.Datetime("us", "UTC")))


def _as_us(value: int | str) -> int:
    if isinstance(value, int):
        return value
    t = dt.datetime.fromisoformat(value)
    return int((t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(microseconds=1))


def expected_rows(view: FeatureViewPlan, log: list[Record]) -> pl.DataFrame:
    """What the offline table must hold: every valid record once, computed by the
    batch engine over the same log (created_ts = the Kafka record timestamp)."""
    rows = transform_rows(
        view,
        event_frame(log).lazy(),
        timestamp_field="event_ts",
        created_timestamp_field="record_ts",
    )
    return sort_rows(rows.collect())


def sort_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in one order whatever order they were stored in: an aggregated view keeps
    rows that tie on (key, event_ts, created_ts), so every column decides."""
    return frame.sort(frame.columns, nulls_last=True)


def offline_rows(offline: DeltaOfflineStore, view: FeatureViewPlan) -> pl.DataFrame:
    return sort_rows(offline.read_view(offline_spec(view)).collect())


def online_rows(online: OnlineStore, view: FeatureViewPlan) -> pl.DataFrame:
    schema = online_schema("it", view)
    keys = list(range(KEYS))
    [res] = online.read([ReadRequest(schema, {"driver_id": keys})])
    frame = pl.DataFrame(
        {"driver_id": keys, "event_ts": res.event_ts, "created_ts": res.created_ts, **res.features},
        schema_overrides={"event_ts": pl.Int64, "created_ts": pl.Int64},
    )
    return frame.filter(pl.col("event_ts").is_not_null())


def expected_online(view: FeatureViewPlan, log: list[Record]) -> pl.DataFrame:
    """Per driver, the latest row by the materializer's own rule, on the same log."""
    latest = latest_per_entity(expected_rows(view, log).lazy(), view.join_keys).collect()
    return latest.with_columns(pl.col("event_ts", "created_ts").dt.epoch("us")).sort("driver_id")


def read_topic(bootstrap: str, topic: str, *, expect: int, timeout: float = 20.0) -> list[Any]:
    """Every record of a one-partition topic (e.g. the dead-letter topic)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "fetch.wait.max.ms": 10}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        out += [m for m in consumer.consume(500, 0.2) if m.error() is None]
    consumer.close()
    return out


def settings(**kw: Any) -> StreamSettings:
    base: dict[str, Any] = {
        "consumer_options": TEST_CONSUMER_OPTIONS,
        "batch_size": 400,
        "flush_rows": 1500,
        "flush_interval_s": 0.5,
    }
    return StreamSettings(**{**base, **kw})


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("online_kind", ["sqlite", "redis"])
def test_worker_applies_the_log_online_offline_and_dead_letters_bad_events(
    tmp_path, kafka_broker, kafka_topics, online_kind, request
):
    topic = kafka_topics(4)
    views = stream_views(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(4000)
    produce(kafka_broker.bootstrap, topic, log)
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    if online_kind == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = f"sqlite:///{tmp_path / 'online.db'}"
    online = open_online_store(url)
    metrics = StreamMetrics()
    report = run_worker(
        project="it",
        views=views,
        offline=offline,
        online=online,
        group_id="g-main",
        settings=settings(),
        metrics=metrics,
        until_end=True,
        idle_timeout_s=60,
    )
    bad = [r for r in log if r.event is None]
    # a null key is refused by each of the two views of the topic: two dead letters
    letters_expected = sum(2 if r.reason == "null_key" else 1 for r in bad)
    assert report.stopped_by == "end"
    assert report.records == len(log)
    assert report.dead_letters == letters_expected
    assert report.checkpoints >= 2
    fares, cities = views
    # offline: every valid record exactly once, for both views
    for view in views:
        assert_frame_equal(offline_rows(offline, view), expected_rows(view, log))
    # online: per driver, the row the materializer would pick from the same log
    assert_frame_equal(
        online_rows(online, fares), expected_online(fares, log), check_column_order=False
    )
    assert online_rows(online, cities).height == 0  # online=False
    # dead letters: reason, origin and the original bytes
    letters = read_topic(kafka_broker.bootstrap, f"{topic}.dlq", expect=letters_expected)
    assert len(letters) == letters_expected
    by_value: dict[bytes, set[str]] = {}
    for m in letters:
        headers = dict(m.headers())
        assert headers["fs.topic"].decode() == topic
        assert int(headers["fs.offset"]) >= 0 and int(headers["fs.partition"]) in range(4)
        assert headers["fs.group"] == b"g-main"
        assert headers["fs.error"]
        by_value.setdefault(m.value(), set()).add(headers["fs.reason"].decode())
    assert by_value == {r.value: {r.reason} for r in bad if r.value is not None}
    assert metrics.dead_letters.value(topic=topic, reason="null_key") == 2 * sum(
        r.reason == "null_key" for r in bad
    )
    assert metrics.freshness_seconds.count > 0

    # A second run of the same group finds everything committed: nothing is re-applied.
    again = run_worker(
        project="it",
        views=views,
        offline=offline,
        online=online,
        group_id="g-main",
        settings=settings(),
        until_end=True,
        idle_timeout_s=30,
    )
    assert again.records == 0
    assert offline_rows(offline, fares).height == expected_rows(fares, log).height


def test_watermark_handover_from_a_backfill_has_no_gap_and_no_overlap(
    tmp_path, kafka_broker, kafka_topics
):
    """The backfill owns event_ts < W, the stream the rest; together: every event once."""
    topic = kafka_topics(2)
    [fares, _] = stream_views(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(1500, seed=9, bad_every=0)
    produce(kafka_broker.bootstrap, topic, log)
    all_rows = expected_rows(fares, log)
    mark_us = int(all_rows["event_ts"].dt.epoch("us").median())
    mark = pl.lit(mark_us).cast(pl.Datetime("us", "UTC"))
    # the backfill, from the topic's history archive (created_ts = record timestamps)
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    offline.write_view(
        offline_spec(fares), all_rows.filter(pl.col("event_ts") < mark), mode="merge"
    )
    online = open_online_store("memory://")
    report = run_worker(
        project="it",
        views=[fares],
        offline=offline,
        online=online,
        group_id="g-handover",
        settings=settings(),
        watermark_us=mark_us,
        until_end=True,
        idle_timeout_s=60,
    )
    before = all_rows.filter(pl.col("event_ts") < mark).height
    assert report.before_watermark == before
    assert report.rows == len(log) - before
    assert_frame_equal(offline_rows(offline, fares), all_rows)
    # online holds the stream's newest rows: those at or after the mark
    online_now = online_rows(online, fares)
    assert online_now["event_ts"].min() >= mark_us


def test_a_bounded_run_stops_after_max_messages_and_the_next_run_continues(
    tmp_path, kafka_broker, kafka_topics
):
    topic = kafka_topics(1)
    [fares, _] = stream_views(tmp_path, topic=topic, bootstrap=kafka_broker.bootstrap)
    log = make_log(1200, seed=2, bad_every=0)
    produce(kafka_broker.bootstrap, topic, log)
    offline = DeltaOfflineStore(str(tmp_path / "offline"))
    online = open_online_store("memory://")
    common: dict[str, Any] = {
        "project": "it",
        "views": [fares],
        "offline": offline,
        "online": online,
        "group_id": "g-bounded",
        "settings": settings(batch_size=100),
    }
    first = run_worker(**common, max_messages=500, idle_timeout_s=30)
    assert first.stopped_by == "max_messages"
    assert 500 <= first.records < 600  # whole micro-batches
    assert offline_rows(offline, fares).height == first.records  # flushed before stopping
    rest = run_worker(**common, until_end=True, idle_timeout_s=30)
    assert first.records + rest.records == len(log)
    assert_frame_equal(offline_rows(offline, fares), expected_rows(fares, log))
