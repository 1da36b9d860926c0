"""``featurestore monitor``: audit skew, drift and freshness on a schedule and export
them as Prometheus metrics (``featurestore.audit.monitor``)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from featurestore.cli._common import RepoOpt, console, open_store


def monitor(
    feature_service: Annotated[
        str | None,
        typer.Option("--feature-service", "-s", help="Watch the log of this feature service."),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option("--features", help="Comma-separated 'view:feature' list (an ad-hoc log)."),
    ] = None,
    log_table: Annotated[
        str | None, typer.Option("--log-table", help="Watch this feature log table.")
    ] = None,
    every: Annotated[
        str, typer.Option("--every", help="Audit this often, e.g. 5m (ignored with --once).")
    ] = "5m",
    lookback: Annotated[
        str, typer.Option("--lookback", help="Audit the requests of this long before now.")
    ] = "1h",
    sample: Annotated[
        float | None, typer.Option(help="Audit this fraction of requests (0-1).")
    ] = None,
    training_dataset: Annotated[
        str | None,
        typer.Option("--training-dataset", help="Saved dataset to measure drift against."),
    ] = None,
    edge_tolerance: Annotated[
        str, typer.Option(help="Clock difference between serving and logging to allow.")
    ] = "1s",
    host: Annotated[str, typer.Option(help="Serve /metrics on this address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Serve /metrics on this port (0: a free one).")] = 9464,
    once: Annotated[
        bool,
        typer.Option("--once", help="Audit once and exit (for a scheduler): no HTTP server."),
    ] = False,
    textfile: Annotated[
        Path | None,
        typer.Option(
            "--textfile", help="With --once: write the metrics here (node_exporter textfile)."
        ),
    ] = None,
    repo: RepoOpt = Path("."),
) -> None:
    """Watch what is served: skew by cause and feature, drift, freshness vs TTL.

    Runs until interrupted, serving http://HOST:PORT/metrics; with --once, audits
    once and exits 5 when a threshold is broken (as `featurestore skew audit`).
    """
    from featurestore._time import parse_duration_us
    from featurestore.audit.monitor import MonitorMetrics, MonitorSettings, run_once, serve, watch

    settings = MonitorSettings(
        feature_service=feature_service,
        features=[f.strip() for f in features.split(",")] if features else None,
        log_table=log_table,
        lookback=lookback,
        sample=sample,
        training_dataset=training_dataset,
        edge_tolerance=edge_tolerance,
    )
    settings.lookback_us()  # a bad duration fails here, before any work
    interval = timedelta(microseconds=parse_duration_us(every))
    store = open_store(repo)
    metrics = MonitorMetrics()
    if once:
        try:
            report = run_once(store, settings, metrics, raise_errors=True)
        finally:
            if textfile is not None:
                textfile.write_text(metrics.to_prometheus())
        assert report is not None  # raise_errors: an error raised instead
        console.print(
            f"{report.mismatched} of {report.compared} values differ; "
            f"unexplained {report.cause_totals()['unexplained']}; "
            + ("PASS" if report.passed else "FAIL: " + "; ".join(report.failures))
        )
        raise typer.Exit(report.exit_code)
    server = serve(metrics, host=host, port=port)
    bound = server.server_address[1]
    console.print(f"monitor: metrics on http://{host}:{bound}/metrics, auditing every {every}")
    stop = threading.Event()
    try:
        watch(store, settings, metrics, every=interval, stop=stop)
    except KeyboardInterrupt:
        stop.set()
    finally:
        server.shutdown()
