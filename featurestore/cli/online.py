"""Online commands: ``get`` (one lookup in process) and ``serve`` (the HTTP server)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from featurestore.cli._common import (
    ISO_EXAMPLE,
    JsonOpt,
    RepoOpt,
    console,
    open_store,
    parse_time,
    print_json,
)
from featurestore.cli._errors import UsageProblem


def _parse_scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _pairs(items: list[str], *, option: str) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageProblem(
                "is not name=value",
                obj=f"option {option}",
                value=item,
                hint=f"e.g. {option} driver_id=1001",
            )
        out[name] = [_parse_scalar(value)]
    return out


def get(
    entity: Annotated[
        list[str], typer.Option("--entity", "-e", help="key=value of a join key (repeatable).")
    ],
    features: Annotated[
        list[str] | None,
        typer.Option("--feature", "-f", help="'view:feature' to look up (repeatable)."),
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="A feature service to look up.")
    ] = None,
    request: Annotated[
        list[str] | None,
        typer.Option("--request", help="name=value of request data for on-demand features."),
    ] = None,
    request_time: Annotated[
        str | None,
        typer.Option(
            "--request-time",
            help=f"Look up as of this ISO time with zone (TTL, windows), e.g. {ISO_EXAMPLE}; "
            "default: now.",
        ),
    ] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Look up online features for one entity (in process, no server)."""
    from featurestore._time import from_us

    request_time = parse_time(request_time, option="--request-time")
    keys = _pairs(entity, option="--entity")
    data = _pairs(request or [], option="--request")
    store = open_store(repo)
    resp = store.get_online_features(
        keys,
        features=features or None,
        feature_service=service,
        request_data=data or None,
        request_time=request_time,
    )
    if as_json:
        print_json(resp.to_dict())
        return
    table = Table("feature", "value", "status", "event time")
    for name, values in resp.values.items():
        ts = resp.event_ts[name][0]
        table.add_row(
            name,
            repr(values[0]),
            resp.statuses[name][0],
            "" if ts is None else from_us(ts).isoformat(),
        )
    console.print(table)


def serve(
    host: Annotated[
        str | None,
        typer.Option(
            help="Address to listen on. Default: server.host in featurestore.toml (127.0.0.1)."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port. Default: server.port in featurestore.toml (6566)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Worker processes. Default: server.workers in featurestore.toml (1)."),
    ] = None,
    registry_version: Annotated[
        int | None, typer.Option("--registry-version", help="Pin a registry version (no refresh).")
    ] = None,
    log_level: Annotated[
        str, typer.Option("--log-level", help="Server log level: debug, info, warning, error.")
    ] = "warning",
    repo: RepoOpt = Path("."),
) -> None:
    """Serve online lookups over HTTP (POST /v1/features/online; /docs, /metrics)."""
    from featurestore.config import load_settings
    from featurestore.server import run

    settings = load_settings(repo)
    root = settings.repo
    cfg = settings.config.server
    console.print(
        f"serving [bold]{root}[/] on http://{host or cfg.host}:{port or cfg.port} with "
        f"{workers or cfg.workers} worker(s); OpenAPI docs at /docs",
        highlight=False,
    )
    run(
        root,
        host=host,
        port=port,
        workers=workers,
        registry_version=registry_version,
        log_level=log_level,
    )
