"""The ``featurestore`` command. Thin: every command calls the Python API.

Exit codes: 0 success; 1 invalid definitions, data or request; 2 usage error;
3 conflict or a service that may come back (retry can help); 4 internal error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from featurestore.errors import FeatureStoreError

app = typer.Typer(
    help="featurestore: declare features once; train and serve the same values.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
registry_app = typer.Typer(help="Registry versions: history, show, rollback.", no_args_is_help=True)
app.add_typer(registry_app, name="registry")

console = Console()
err_console = Console(stderr=True)

RepoOpt = Annotated[Path, typer.Option("--repo", "-r", help="Feature repo directory.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(exc: FeatureStoreError, as_json: bool) -> None:
    code = 3 if exc.retryable else 1
    if as_json:
        print(json.dumps(exc.to_dict(), indent=2))
    else:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
    raise typer.Exit(code)


def _store(repo: Path) -> Any:
    from featurestore.api.store import FeatureStore

    return FeatureStore(repo)


def _print_diff(diff: Any) -> None:
    if diff.empty:
        console.print(
            f"No changes: the registry (version {diff.base_version}) matches the definitions."
        )
        return
    colors = {"added": "green", "removed": "red", "changed": "yellow"}
    signs = {"added": "+", "removed": "-", "changed": "~"}
    console.print(f"Changes against registry version {diff.base_version}:")
    for obj in diff.objects:
        c = colors[obj.action]
        console.print(
            f"  [{c}]{signs[obj.action]} {obj.kind} {obj.name}[/] ({obj.action})", highlight=False
        )
        for ch in obj.changes:
            console.print(
                f"      {ch.path}: {ch.old!r} -> {ch.new!r}", highlight=False, markup=False
            )
        for impact in obj.impacts:
            console.print(f"      [bold magenta]! {impact}[/]", highlight=False)


def _print_apply_json(result: Any) -> None:
    print(
        json.dumps(
            {"version": result.version, "created": result.created, "diff": result.diff.to_dict()},
            indent=2,
            default=str,
        )
    )


@app.command()
def version() -> None:
    """Print the featurestore version."""
    from featurestore import __version__

    print(__version__)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the repo.")],
    project: Annotated[str | None, typer.Option(help="Project name.")] = None,
    force: Annotated[bool, typer.Option(help="Write into a non-empty directory.")] = False,
) -> None:
    """Create a runnable example feature repo with sample data."""
    from featurestore.scaffold import init_repo

    try:
        root = init_repo(directory, project=project, force=force)
    except FeatureStoreError as exc:
        _fail(exc, False)
    console.print(
        f"Created feature repo [bold]{root}[/]. Next:\n"
        f"  cd {directory}\n  featurestore plan\n  featurestore apply",
        highlight=False,
    )


@app.command()
def plan(repo: RepoOpt = Path("."), as_json: JsonOpt = False) -> None:
    """Show what `apply` would change in the registry, field by field."""
    try:
        store = _store(repo)
        result = store.plan()
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(
            json.dumps(
                {
                    "project": store.project,
                    "plan_hash": result.plan.hash,
                    "diff": result.diff.to_dict(),
                    "warnings": result.warnings,
                },
                indent=2,
                default=str,
            )
        )
        return
    for w in result.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    _print_diff(result.diff)


@app.command()
def apply(
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
    message: Annotated[str, typer.Option("--message", "-m")] = "",
) -> None:
    """Compile the definitions and record them as a new registry version."""
    try:
        store = _store(repo)
        planned = store.plan()
        result = store.registry.apply(
            planned.plan, expected_version=planned.diff.base_version, message=message
        )
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        _print_apply_json(result)
        return
    for w in planned.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    _print_diff(result.diff)
    if result.created:
        console.print(f"[bold green]Applied:[/] registry version {result.version}.")
    else:
        console.print(f"Nothing to apply; the registry stays at version {result.version}.")


@registry_app.command("history")
def registry_history(repo: RepoOpt = Path("."), as_json: JsonOpt = False) -> None:
    """List registry versions."""
    try:
        rows = _store(repo).registry.history()
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    table = Table("version", "created", "operation", "author", "message", "plan hash")
    for r in rows:
        table.add_row(
            str(r.version),
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.operation,
            r.author,
            r.message,
            r.plan_hash,
        )
    console.print(table)


@registry_app.command("show")
def registry_show(
    version: Annotated[int, typer.Argument()], repo: RepoOpt = Path("."), as_json: JsonOpt = False
) -> None:
    """Print the plan recorded at a registry version."""
    try:
        snap = _store(repo).registry.snapshot(version)
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(snap.plan.to_json())
        return
    table = Table("kind", "name", "hash", title=f"registry version {version}")
    for o in snap.plan:
        table.add_row(o.kind, o.name, o.hash)
    console.print(table)


@registry_app.command("rollback")
def registry_rollback(
    to: Annotated[int, typer.Option("--to", help="Version to restore.")],
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Restore the objects of an earlier version, as a new version."""
    try:
        reg = _store(repo).registry
        result = reg.rollback(to_version=to, expected_version=reg.head(fresh=True))
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        _print_apply_json(result)
        return
    _print_diff(result.diff)
    if result.created:
        console.print(
            f"[bold green]Rolled back:[/] version {result.version} restores version {to}."
        )
    else:
        console.print(f"Version {to} already matches the head; nothing changed.")


dataset_app = typer.Typer(help="Training datasets: create and rebuild.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")

StartOpt = Annotated[
    str | None, typer.Option("--start", help="ISO time with zone, e.g. 2026-01-01T00:00:00Z")
]
EndOpt = Annotated[str | None, typer.Option("--end", help="ISO time with zone; default: now")]
ViewsOpt = Annotated[
    list[str] | None, typer.Option("--view", "-v", help="A view (repeatable); default all.")
]


@app.command()
def backfill(
    views: Annotated[list[str] | None, typer.Argument(help="Views; default all.")] = None,
    start: StartOpt = None,
    end: EndOpt = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Read batch sources, apply row transforms, write the offline Delta tables."""
    try:
        store = _store(repo)
        reports = store.backfill(views or None, start=start, end=end, progress=not as_json)
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps([r.__dict__ for r in reports], indent=2, default=str))
        return
    for r in reports:
        console.print(
            f"[bold]{r.view}[/]: {r.rows_read:,} rows read, {r.rows_written:,} new, "
            f"{r.rows_updated:,} updated, {r.duplicates_dropped:,} duplicates dropped, "
            f"table version {r.table_version} in {r.seconds:.2f}s "
            f"([bold]{r.rows_per_second:,.0f} rows/s[/])",
            highlight=False,
        )


@app.command()
def materialize(
    views: ViewsOpt = None,
    start: StartOpt = None,
    end: EndOpt = None,
    incremental: Annotated[
        bool, typer.Option("--incremental", help="From each view's watermark.")
    ] = False,
    lookback: Annotated[
        str, typer.Option(help="With --incremental: re-read this much before the watermark.")
    ] = "1h",
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Load the latest offline values per entity into the online store."""
    from featurestore._time import now_us

    try:
        store = _store(repo)
        if incremental:
            reports = store.materialize_incremental(
                views or None, end=end, lookback=lookback, progress=not as_json
            )
        else:
            reports = store.materialize(
                views or None,
                start=start,
                end=end if end is not None else now_us(),
                progress=not as_json,
            )
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps([r.__dict__ for r in reports], indent=2, default=str))
        return
    for r in reports:
        console.print(
            f"[bold]{r.view}[/]: {r.entities:,} entities, {r.written:,} written, "
            f"{r.skipped_stale:,} already newer online, {r.skipped_expired:,} past retention, "
            f"in {r.seconds:.2f}s "
            f"([bold]{r.rows_per_second:,.0f} rows/s[/])",
            highlight=False,
        )


def _parse_scalar(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


@app.command()
def get(
    entity: Annotated[list[str], typer.Option("--entity", "-e", help="key=value (repeatable)")],
    features: Annotated[list[str] | None, typer.Option("--feature", "-f")] = None,
    service: Annotated[str | None, typer.Option("--service", "-s")] = None,
    request: Annotated[
        list[str] | None,
        typer.Option("--request", help="name=value of request data for on-demand features"),
    ] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Look up online features for one entity (in process, no server)."""
    try:
        store = _store(repo)
        keys: dict[str, list[Any]] = {}
        for item in entity:
            name, _, value = item.partition("=")
            keys[name] = [_parse_scalar(value)]
        data: dict[str, list[Any]] = {}
        for item in request or []:
            name, _, value = item.partition("=")
            data[name] = [_parse_scalar(value)]
        resp = store.get_online_features(
            keys, features=features or None, feature_service=service, request_data=data or None
        )
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps(resp.to_dict(), indent=2, default=str))
        return
    table = Table("feature", "value", "status", "event time")
    from featurestore._time import from_us

    for name, values in resp.values.items():
        ts = resp.event_ts[name][0]
        table.add_row(
            name,
            repr(values[0]),
            resp.statuses[name][0],
            "" if ts is None else from_us(ts).isoformat(),
        )
    console.print(table)


@dataset_app.command("create")
def dataset_create(
    entities: Annotated[Path, typer.Option("--entities", help="Spine: Parquet or CSV file.")],
    service: Annotated[str | None, typer.Option("--service", "-s")] = None,
    features: Annotated[list[str] | None, typer.Option("--feature", "-f")] = None,
    timestamp: Annotated[str, typer.Option(help="Spine timestamp column.")] = "event_timestamp",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the dataset here (Parquet).")
    ] = None,
    save: Annotated[
        str | None, typer.Option("--save", help="Save with lineage under NAME.")
    ] = None,
    as_of_known_time: Annotated[bool, typer.Option("--as-of-known-time")] = False,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Build a point-in-time correct training dataset from a spine file."""
    import polars as pl

    try:
        store = _store(repo)
        with console.status("reading the spine"):
            spine = (
                pl.read_csv(entities, try_parse_dates=True)
                if entities.suffix == ".csv"
                else pl.read_parquet(entities)
            )
        with console.status(f"joining {spine.height:,} spine rows"):
            ds = store.get_training_dataset(
                spine,
                features=features or None,
                feature_service=service,
                timestamp=timestamp,
                as_of_known_time=as_of_known_time,
            )
        if out is not None:
            ds.frame.write_parquet(out)
        lineage = store.save_dataset(ds, save, entity_df=spine) if save else ds.lineage
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(
            json.dumps(
                {
                    "rows": ds.frame.height,
                    "seconds": ds.seconds,
                    "lineage": json.loads(lineage.to_json()),
                },
                indent=2,
            )
        )
        return
    console.print(
        f"{ds.frame.height:,} rows x {ds.frame.width} columns in {ds.seconds:.2f}s "
        f"({ds.frame.height / max(ds.seconds, 1e-9):,.0f} rows/s); content hash "
        f"{lineage.content_hash}",
        highlight=False,
    )
    if out is not None:
        console.print(f"written to {out}")
    if save:
        console.print(f"saved as dataset [bold]{save}[/] with its lineage")


@dataset_app.command("rebuild")
def dataset_rebuild(
    name: Annotated[str, typer.Argument()], repo: RepoOpt = Path("."), as_json: JsonOpt = False
) -> None:
    """Recompute a saved dataset from its pinned versions and prove it is identical."""
    try:
        store = _store(repo)
        rebuilt, lineage = store.rebuild_dataset(name)
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    same = rebuilt.lineage.content_hash == lineage.content_hash
    if as_json:
        print(
            json.dumps(
                {
                    "identical": same,
                    "saved_hash": lineage.content_hash,
                    "rebuilt_hash": rebuilt.lineage.content_hash,
                    "registry_version": lineage.registry_version,
                    "table_versions": lineage.table_versions,
                },
                indent=2,
            )
        )
    elif same:
        console.print(
            f"[bold green]identical[/]: dataset {name} rebuilt from registry version "
            f"{lineage.registry_version} and tables {lineage.table_versions}: "
            f"content hash {lineage.content_hash}",
            highlight=False,
        )
    else:
        err_console.print(
            f"[bold red]DIFFERENT[/]: saved {lineage.content_hash}, rebuilt "
            f"{rebuilt.lineage.content_hash}",
            highlight=False,
        )
    if not same:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Default: [server] host.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: [server] port (6566).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    registry_version: Annotated[
        int | None, typer.Option("--registry-version", help="Pin a registry version (no refresh).")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
    repo: RepoOpt = Path("."),
) -> None:
    """Serve online lookups over HTTP (POST /v1/features/online; /docs, /metrics)."""
    from featurestore.config import load_settings
    from featurestore.server import run

    try:
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
    except FeatureStoreError as exc:
        _fail(exc, False)


@app.command()
def stream(
    views: Annotated[list[str] | None, typer.Argument(help="Kafka-fed views; default all.")] = None,
    group_id: Annotated[
        str | None,
        typer.Option("--group-id", help="Consumer group shared by the workers of one job."),
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
    dead_letter_topic: Annotated[str | None, typer.Option("--dead-letter-topic")] = None,
    watermark: Annotated[
        str | None,
        typer.Option(help="Handover time: the stream owns event_ts >= this (ISO time with zone)."),
    ] = None,
    max_messages: Annotated[int | None, typer.Option("--max-messages")] = None,
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
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Consume the Kafka sources of feature views into the online and offline stores."""
    from featurestore._time import to_us
    from featurestore.engines.stream import StreamMetrics, StreamSettings, run_worker
    from featurestore.engines.stream.metrics import serve_metrics
    from featurestore.errors import RequestError

    try:
        store = _store(repo)
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
                hint="declare a FeatureView with a KafkaSource",
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
        server = serve_metrics(metrics, port=metrics_port) if metrics_port is not None else None
        report = run_worker(
            project=store.project,
            views=chosen,
            offline=store.offline,
            online=store.online,
            group_id=group_id or f"{store.project}.stream",
            settings=settings,
            metrics=metrics,
            watermark_us=None if watermark is None else to_us(watermark, what="watermark"),
            max_messages=max_messages,
            idle_timeout_s=idle_timeout,
            until_end=until_end,
        )
        if server is not None:
            server.shutdown()
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if as_json:
        print(json.dumps(report.__dict__, indent=2, default=str))
    else:
        console.print(
            f"stream stopped ({report.stopped_by}): {report.records:,} records, "
            f"{report.rows:,} rows, {report.dead_letters:,} dead letters in "
            f"{report.seconds:.1f}s",
            highlight=False,
        )


skew_app = typer.Typer(help="Training/serving skew: audit what was served.", no_args_is_help=True)
app.add_typer(skew_app, name="skew")


@skew_app.command("audit")
def skew_audit(
    feature_service: Annotated[str | None, typer.Option("--feature-service", "-s")] = None,
    features: Annotated[
        str | None,
        typer.Option("--features", help="Comma-separated 'view:feature' list (an ad-hoc log)."),
    ] = None,
    log_table: Annotated[str | None, typer.Option("--log-table")] = None,
    start: StartOpt = None,
    end: EndOpt = None,
    sample: Annotated[float | None, typer.Option(help="Audit this fraction of requests.")] = None,
    training_dataset: Annotated[
        str | None,
        typer.Option("--training-dataset", help="Saved dataset to compare distributions with."),
    ] = None,
    max_mismatch_rate: Annotated[float, typer.Option()] = 0.01,
    max_unexplained_rate: Annotated[float, typer.Option()] = 0.0,
    max_psi: Annotated[float, typer.Option()] = 0.25,
    max_ks: Annotated[float | None, typer.Option()] = None,
    edge_tolerance: Annotated[str, typer.Option()] = "1s",
    html: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown")] = None,
    examples: Annotated[int, typer.Option("--examples")] = 10,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Recompute what was served offline, report and explain every mismatch.

    Exits 5 when a threshold is exceeded, so CI and schedulers can gate on it.
    """
    from featurestore.audit import Thresholds, render_html, render_markdown, render_terminal
    from featurestore.audit import run_audit as audit

    try:
        store = _store(repo)
        with console.status("auditing served features"):
            report = audit(
                store,
                start=start,
                end=end,
                feature_service=feature_service,
                features=[f.strip() for f in features.split(",")] if features else None,
                log_table=log_table,
                sample=sample,
                training_dataset=training_dataset,
                thresholds=Thresholds(
                    max_mismatch_rate=max_mismatch_rate,
                    max_unexplained_rate=max_unexplained_rate,
                    max_psi=max_psi,
                    max_ks=max_ks,
                ),
                edge_tolerance=edge_tolerance,
            )
    except FeatureStoreError as exc:
        _fail(exc, as_json)
    if html is not None:
        html.write_text(render_html(report, max_examples=examples))
    if markdown is not None:
        markdown.write_text(render_markdown(report, max_examples=examples))
    if as_json:
        print(report.to_json(max_examples=examples))
    else:
        render_terminal(report, console=console, max_examples=examples)
    raise typer.Exit(report.exit_code)


def main() -> None:
    try:
        app()
    except FeatureStoreError as exc:  # an error a command did not catch itself
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(3 if exc.retryable else 1)
