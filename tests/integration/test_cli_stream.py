"""`featurestore stream` as a user runs it: a repo with a Kafka source, a real broker."""

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from featurestore import FeatureStore
from tests.fixtures.kafka import TEST_CONSUMER_OPTIONS
from tests.helpers import write_repo

pytestmark = pytest.mark.kafka

DEFS = """
import polars as pl
from featurestore import BatchSource, Entity, FeatureView, Field, KafkaSource

rider = Entity(name="rider", join_keys={{"rider_id": "int64"}})
history = BatchSource(name="ratings_history", path="data/ratings", format="delta",
                      timestamp_field="ts")
ratings = KafkaSource(name="ratings_stream", topic="{topic}", bootstrap_servers="{servers}",
                      schema={{"rider_id": "int64", "stars": "float64", "ts": "datetime"}},
                      timestamp_field="ts", batch_source=history)
rider_ratings = FeatureView(
    name="rider_ratings", entities=[rider], source=ratings, ttl="1d",
    transform={{"stars_pct": pl.col("stars") * 20}},
    fields=[Field(name="stars", dtype="float64"), Field(name="stars_pct", dtype="float64")],
)
"""


def test_stream_command_consumes_into_the_online_store(tmp_path, kafka_broker, kafka_topics):
    from confluent_kafka import Producer

    topic = kafka_topics(partitions=2)
    repo = write_repo(
        tmp_path / "repo", {"features.py": DEFS.format(topic=topic, servers=kafka_broker.bootstrap)}
    )
    store = FeatureStore(repo)
    store.apply()
    now = datetime.now(UTC).replace(microsecond=0)
    events = [
        (1, 3.0, now - timedelta(minutes=5)),
        (1, 4.0, now - timedelta(minutes=1)),
        (1, 2.0, now - timedelta(minutes=3)),  # late: older than the one before it
        (2, 5.0, now - timedelta(minutes=2)),
    ]
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for rider, stars, ts in events:
        producer.produce(
            topic,
            key=str(rider),
            value=orjson.dumps({"rider_id": rider, "stars": stars, "ts": ts.isoformat()}),
        )
    producer.produce(topic, key="x", value=b"{not json")
    producer.flush(10)
    opts = [a for k, v in TEST_CONSUMER_OPTIONS.items() for a in ("--consumer-option", f"{k}={v}")]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "featurestore",
            "stream",
            "--until-end",
            "--idle-timeout",
            "20",
            "--json",
            *opts,
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["records"] == 5 and report["dead_letters"] == 1
    resp = FeatureStore(repo).get_online_features(
        {"rider_id": [1, 2, 3]}, features=["rider_ratings:stars", "rider_ratings:stars_pct"]
    )
    assert resp.values["stars"] == [4.0, 5.0, None]
    assert resp.values["stars_pct"] == [80.0, 100.0, None]
    assert resp.statuses["stars"] == ["PRESENT", "PRESENT", "MISSING"]
