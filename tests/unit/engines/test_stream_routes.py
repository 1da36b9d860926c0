"""What the worker checks before consuming: views, sources and client settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from featurestore import BatchSource, Entity, FeatureView, Field, KafkaSource
from featurestore.compile import PlanIndex, compile_definitions
from featurestore.compile.discover import Found
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.engines.stream.routes import (
    build_routes,
    consumer_config,
    cooperative,
    shared_client_config,
)
from featurestore.engines.stream.settings import StreamSettings
from featurestore.errors import StreamError
from featurestore.stores.offline import DeltaOfflineStore
from featurestore.stores.online import MemoryOnlineStore


def views(tmp: Path, *specs: dict[str, Any]) -> list[Any]:
    """One view per spec: {name, topic, servers, options, schema, batch}."""
    driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    found: list[Any] = [driver]
    names = []
    for i, spec in enumerate(specs):
        hist = BatchSource(name=f"hist{i}", path="missing", timestamp_field="ts")
        schema = spec.get("schema", {"driver_id": "int64", "v": "float64", "ts": "datetime"})
        if spec.get("batch"):
            src: Any = hist
        else:
            src = KafkaSource(
                name=f"src{i}",
                topic=spec.get("topic", "t"),
                bootstrap_servers=spec.get("servers", "h:1"),
                schema=schema,
                timestamp_field="ts",
                batch_source=hist,
                consumer_options=spec.get("options", {}),
            )
        fv = FeatureView(
            name=spec["name"],
            entities=[driver],
            source=src,
            ttl=None,
            fields=[Field(name="v", dtype="float64")],
        )
        found += [src, fv]
        names.append(spec["name"])
    plan = compile_definitions([Found(o, "f.py") for o in found], repo=tmp, project="p").plan
    index = PlanIndex(plan)
    return [index.view(n) for n in names]


def routes(tmp: Path, vs: list[Any], **settings: Any) -> dict[str, Any]:
    return build_routes(
        vs,
        project="p",
        online=MemoryOnlineStore(),
        offline=DeltaOfflineStore(str(tmp / "o")),
        metrics=StreamMetrics(),
        settings=StreamSettings(**settings),
        watermark_us=None,
    )


def test_views_of_one_topic_share_a_decoder(tmp_path):
    vs = views(tmp_path, {"name": "a"}, {"name": "b"}, {"name": "c", "topic": "u"})
    r = routes(tmp_path, vs)
    assert sorted(r) == ["t", "u"]
    assert [v.view.name for v in r["t"].views] == ["a", "b"]
    conf = consumer_config(r, group_id="g", settings=StreamSettings())
    assert conf["group.id"] == "g"
    assert conf["enable.auto.commit"] is False
    assert conf["enable.auto.offset.store"] is False
    assert conf["auto.offset.reset"] == "earliest"
    assert conf["bootstrap.servers"] == "h:1"


def test_batch_views_and_mismatched_sources_are_refused(tmp_path):
    with pytest.raises(StreamError, match="not fed by a KafkaSource"):
        routes(tmp_path, views(tmp_path, {"name": "a", "batch": True}))
    other = {"driver_id": "int64", "v": "float64", "w": "int64", "ts": "datetime"}
    with pytest.raises(StreamError, match="different schema"):
        routes(tmp_path, views(tmp_path, {"name": "a"}, {"name": "b", "schema": other}))
    with pytest.raises(StreamError, match="no feature views"):
        routes(tmp_path, [])


def test_source_options_merge_and_worker_options_win(tmp_path):
    opts = {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}
    vs = views(
        tmp_path, {"name": "a", "options": opts}, {"name": "b", "topic": "u", "options": opts}
    )
    settings = StreamSettings(consumer_options={"session.timeout.ms": "2000"})
    conf = consumer_config(routes(tmp_path, vs), group_id="g", settings=settings)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["session.timeout.ms"] == "2000"
    shared = shared_client_config(conf)
    assert shared == {
        "bootstrap.servers": "h:1",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
    }
    assert not cooperative(conf)
    assert cooperative({"partition.assignment.strategy": "cooperative-sticky"})


@pytest.mark.parametrize(
    ("specs", "settings", "match"),
    [
        ([{"name": "a", "servers": "x:1"}, {"name": "b", "topic": "u"}], {}, "different clusters"),
        (
            [
                {"name": "a", "options": {"client.id": "1"}},
                {"name": "b", "topic": "u", "options": {"client.id": "2"}},
            ],
            {},
            "disagree",
        ),
        (
            [{"name": "a"}],
            {"consumer_options": {"enable.auto.commit": "true"}},
            "set by the worker",
        ),
        ([{"name": "a"}], {"consumer_options": {"group.id": "other"}}, "set by the worker"),
        ([{"name": "a"}], {"consumer_options": {"group.protocol": "consumer"}}, "classic"),
    ],
)
def test_client_settings_that_would_break_the_worker_are_refused(tmp_path, specs, settings, match):
    r = routes(tmp_path, views(tmp_path, *specs))
    with pytest.raises(StreamError, match=match):
        consumer_config(r, group_id="g", settings=StreamSettings(**settings))


def test_bootstrap_override_allows_sources_of_several_clusters(tmp_path):
    vs = views(tmp_path, {"name": "a", "servers": "x:1"}, {"name": "b", "topic": "u"})
    conf = consumer_config(
        routes(tmp_path, vs), group_id="g", settings=StreamSettings(bootstrap_servers="k:9")
    )
    assert conf["bootstrap.servers"] == "k:9"
    with pytest.raises(StreamError, match="group id"):
        consumer_config(routes(tmp_path, vs), group_id="", settings=StreamSettings())
