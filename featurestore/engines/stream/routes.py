"""From compiled views to what the loop runs: per topic, a decoder and the views it feeds.

Everything that can be checked before the first record is checked here, so a
definition that cannot work stops the worker at start-up with a ``StreamError``
naming the view, never per event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from featurestore.compile.views import FeatureViewPlan
from featurestore.config import OnlineRetention
from featurestore.engines.stream.aggregates import AggregateSink
from featurestore.engines.stream.decode import EventDecoder
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.engines.stream.settings import (
    RESERVED_CONSUMER_OPTIONS,
    SHARED_CLIENT_PREFIXES,
    StreamSettings,
)
from featurestore.engines.stream.sinks import OfflineSink, OnlineLatestSink, Sink
from featurestore.engines.stream.transform import ViewTransform
from featurestore.errors import DataError, StreamError
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.online.base import OnlineStore


@dataclass
class ViewRoute:
    view: FeatureViewPlan
    transform: ViewTransform
    sinks: list[Sink]


@dataclass
class TopicRoute:
    """One Kafka topic: its source's decoder and the views fed from it."""

    topic: str
    source: Mapping[str, Any]
    decoder: EventDecoder
    views: list[ViewRoute] = field(default_factory=list)


def _kafka_source(view: FeatureViewPlan) -> Mapping[str, Any]:
    spec = view.source.spec
    if spec.get("type") != "kafka":
        raise StreamError(
            "is not fed by a KafkaSource",
            obj=f"feature view {view.name!r}",
            value=spec.get("name"),
            hint="Stream only the views whose source is a KafkaSource; batch views are "
            "kept fresh by `featurestore materialize`",
        )
    return spec


def build_routes(
    views: Sequence[FeatureViewPlan],
    *,
    project: str,
    online: OnlineStore,
    offline: DeltaOfflineStore,
    metrics: StreamMetrics,
    settings: StreamSettings,
    watermark_us: int | None,
    retention: OnlineRetention | None = None,
) -> dict[str, TopicRoute]:
    if not views:
        raise StreamError("no feature views to stream", obj="stream worker")
    routes: dict[str, TopicRoute] = {}
    for view in views:
        src = _kafka_source(view)
        topic = str(src["topic"])
        route = routes.get(topic)
        if route is None:
            route = routes[topic] = TopicRoute(topic, src, _decoder(src, settings))
        elif _shape(route.source) != _shape(src):
            raise StreamError(
                f"reads topic {topic!r} with a different schema than source "
                f"{route.source['name']!r}",
                obj=f"feature view {view.name!r}",
                hint="Give views of one topic the same KafkaSource, or run separate workers",
            )
        transform = ViewTransform(
            view,
            timestamp_field=str(src["timestamp_field"]),
            created_timestamp_field=src.get("created_timestamp_field"),
            watermark_us=watermark_us,
        )
        try:
            transform.check(pl.DataFrame(schema=route.decoder.schema))
        except (DataError, pl.exceptions.PolarsError) as exc:
            raise StreamError(
                f"cannot be computed from the events of topic {topic!r}: {exc}",
                obj=f"feature view {view.name!r}",
                hint="Every column the view reads must be in the KafkaSource schema",
            ) from exc
        sinks = sinks_for_view(
            view,
            project=project,
            online=online,
            offline=offline,
            metrics=metrics,
            retry_s=settings.store_retry_s,
            always_merge=settings.offline_write == "merge",
            retention=retention,
        )
        route.views.append(ViewRoute(view, transform, sinks))
    return routes


def sinks_for_view(
    view: FeatureViewPlan,
    *,
    project: str,
    online: OnlineStore,
    offline: DeltaOfflineStore,
    metrics: StreamMetrics,
    retry_s: float,
    always_merge: bool = False,
    retention: OnlineRetention | None = None,
) -> list[Sink]:
    """The sinks a view needs: online, the latest row per entity (plain view) or the
    entities' aggregate records (windowed aggregations), kept for ``retention`` (the
    project's ``[online_store] retention``; default 2 x ttl); offline, the rows."""
    sinks: list[Sink] = []
    online_sink = AggregateSink if view.aggregations else OnlineLatestSink
    if view.online:
        sinks.append(
            online_sink(
                view,
                project=project,
                online=online,
                metrics=metrics,
                retry_s=retry_s,
                retention=retention,
            )
        )
    sinks.append(
        OfflineSink(
            view, offline=offline, metrics=metrics, retry_s=retry_s, always_merge=always_merge
        )
    )
    return sinks


def _shape(src: Mapping[str, Any]) -> tuple[Any, ...]:
    schema = tuple((f["name"], f["dtype"]) for f in src["schema"])
    return (schema, src["timestamp_field"], src.get("created_timestamp_field"))


def _decoder(src: Mapping[str, Any], settings: StreamSettings) -> EventDecoder:
    try:
        return EventDecoder(
            source=str(src["name"]),
            fields=[(f["name"], f["dtype"]) for f in src["schema"]],
            timestamp_field=str(src["timestamp_field"]),
            created_timestamp_field=src.get("created_timestamp_field"),
            max_future_skew_us=round(settings.max_future_skew_s * 1_000_000),
            epoch_unit=settings.epoch_unit,
        )
    except ValueError as exc:
        raise StreamError(str(exc), obj=f"KafkaSource {src['name']!r}") from exc


def consumer_config(
    routes: Mapping[str, TopicRoute], *, group_id: str, settings: StreamSettings
) -> dict[str, Any]:
    """librdkafka settings of the worker's consumer.

    Sources' ``consumer_options`` are merged (they must agree), then the worker's
    ``settings.consumer_options``; the commit settings are the worker's own.
    """
    if not group_id:
        raise StreamError("needs a consumer group id", obj="stream worker", field="group_id")
    servers = {str(r.source["bootstrap_servers"]) for r in routes.values()}
    if settings.bootstrap_servers is None and len(servers) > 1:
        raise StreamError(
            "the views' sources name different clusters",
            obj="stream worker",
            value=sorted(servers),
            hint="Run one worker per cluster, or set bootstrap_servers to override",
        )
    merged: dict[str, str] = {}
    for route in routes.values():
        for key, value in dict(route.source.get("consumer_options") or {}).items():
            if merged.get(key, value) != value:
                raise StreamError(
                    f"sources disagree on consumer option {key!r}",
                    obj=f"KafkaSource {route.source['name']!r}",
                    value=value,
                    hint="Run separate workers, or set the option in the worker settings",
                )
            merged[key] = value
    merged.update(settings.consumer_options)
    taken = sorted(RESERVED_CONSUMER_OPTIONS & set(merged))
    if taken:
        raise StreamError(
            f"consumer options {taken} are set by the worker itself",
            obj="stream worker",
            hint="Remove them: offsets are committed only after the stores are written, "
            "and the group id is the worker's group_id",
        )
    if str(merged.get("group.protocol", "classic")).lower() != "classic":
        raise StreamError(
            "only the classic consumer group protocol is supported",
            obj="stream worker",
            field="group.protocol",
            value=merged["group.protocol"],
            hint="Remove group.protocol (the default is classic)",
        )
    conf: dict[str, Any] = {"auto.offset.reset": "earliest"}
    conf.update(merged)
    conf.update(
        {
            "bootstrap.servers": settings.bootstrap_servers or servers.pop(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
        }
    )
    return conf


def shared_client_config(conf: Mapping[str, Any]) -> dict[str, Any]:
    """The connection settings (servers, security) another client can reuse."""
    out = {"bootstrap.servers": conf["bootstrap.servers"]}
    out.update({k: v for k, v in conf.items() if k.startswith(SHARED_CLIENT_PREFIXES)})
    return out


def cooperative(conf: Mapping[str, Any]) -> bool:
    return "cooperative" in str(conf.get("partition.assignment.strategy", ""))
