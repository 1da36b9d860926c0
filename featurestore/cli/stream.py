"""``featurestore stream``: Kafka sources -> online and offline stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from featurestore.cli._common import (
    ISO_EXAMPLE,
    JsonOpt,
    RepoOpt,
    console,
    open_store,
    parse_time,
    print_json,
)
from featurestore.errors import RequestError


def stream(
    views: Annotated[
        list[str] | None, typer.Argument(help="Kafka-fed views; default: all of them.")
    ] = None,
    group_id: Annotated[
        str | None,
        typer.Option(
            "--group-id",
            help="Consumer group shared by the workers of one job; default: PROJECT.stream.",
        ),
    ] = None,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option("--bootstrap-servers", help="Override the sources' bootstrap servers."),
    ] = None,
    consumer_option: Annotated[
        list[str] | None,
        typer.Option(
            "--consumer-option",
            help="K=V librdkafka option (repeatable), e.g. security.protocol=SSL",
        ),
    ] = None,
    dead_letter_topic: Annotated[
        str | None,
        typer.Option("--dead-letter-topic", help="Send records that fail validation here."),
    ] = None,
    watermark: Annotated[
        str | None,
        typer.Option(
            help=f"Handover time: the stream owns event_ts >= this (ISO time with zone, "
            f"e.g. {ISO_EXAMPLE})."
        ),
    ] = None,
    max_messages: Annotated[
        int | None, typer.Option("--max-messages", help="Stop after this many records.")
    ] = None,
    idle_timeout: Annotated[
        float | None,
        typer.Option("--idle-timeout", help="Stop after this many seconds without records."),
    ] = None,
    until_end: Annotated[
        bool, typer.Option("--until-end", help="Stop at the end of the partitions.")
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics on this port.")
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option(
            "--metrics-host",
            help="Address the metrics port binds to; 0.0.0.0 lets Prometheus scrape a pod.",
        ),
    ] = "127.0.0.1",
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Consume the Kafka sources of feature views into the online and offline stores."""
    from featurestore._time import to_us
    from featurestore.engines.stream import StreamMetrics, StreamSettings, run_worker
    from featurestore.engines.stream.metrics import serve_metrics

    watermark = parse_time(watermark, option="--watermark")
    store = open_store(repo)
    index = store.index()
    chosen = (
        [index.view(v) for v in views]
        if views
        else [v for v in index.views.values() if v.source.spec["type"] == "kafka"]
    )
    if not chosen:
        raise RequestError(
            "no feature view reads a KafkaSource",
            obj=f"project {store.project!r}",
            hint="declare a FeatureView with a KafkaSource and run `featurestore apply`",
        )
    options: dict[str, Any] = {}
    for item in consumer_option or []:
        key, _, value = item.partition("=")
        options[key] = value
    fields: dict[str, Any] = {"consumer_options": options}
    if bootstrap_servers:
        fields["bootstrap_servers"] = bootstrap_servers
    if dead_letter_topic:
        fields["dead_letter_topic"] = dead_letter_topic
    settings = StreamSettings(**fields)
    metrics = StreamMetrics()
    server = (
        serve_metrics(metrics, host=metrics_host, port=metrics_port)
        if metrics_port is not None
        else None
    )
    try:
        report = run_worker(
            project=store.project,
            views=chosen,
            offline=store.offline,
            online=store.online,
            group_id=group_id or f"{store.project}.stream",
            settings=settings,
            metrics=metrics,
            watermark_us=None if watermark is None else to_us(watermark, what="watermark"),
            retention=store.settings.online_retention,
            max_messages=max_messages,
            idle_timeout_s=idle_timeout,
            until_end=until_end,
        )
    finally:
        if server is not None:
            server.shutdown()
    if as_json:
        print_json(report.__dict__)
    else:
        console.print(
            f"stream stopped ({report.stopped_by}): {report.records:,} records, "
            f"{report.rows:,} rows, {report.dead_letters:,} dead letters in "
            f"{report.seconds:.1f}s",
            highlight=False,
        )
