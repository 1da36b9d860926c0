"""``featurestore skew``: audit what was served against what training computes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featurestore.cli._common import ISO_EXAMPLE, JsonOpt, RepoOpt, console, open_store, parse_time

skew_app = typer.Typer(help="Training/serving skew: audit what was served.", no_args_is_help=True)


def audit(
    feature_service: Annotated[
        str | None,
        typer.Option("--feature-service", "-s", help="Audit the log of this feature service."),
    ] = None,
    features: Annotated[
        str | None,
        typer.Option("--features", help="Comma-separated 'view:feature' list (an ad-hoc log)."),
    ] = None,
    log_table: Annotated[
        str | None,
        typer.Option("--log-table", help="Read this feature log table instead of the default."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--start", help=f"Requests at or after this ISO time with zone, e.g. {ISO_EXAMPLE}."
        ),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", help="Requests before this ISO time with zone; default: all."),
    ] = None,
    sample: Annotated[
        float | None, typer.Option(help="Audit this fraction of requests (0-1).")
    ] = None,
    training_dataset: Annotated[
        str | None,
        typer.Option("--training-dataset", help="Saved dataset to compare distributions with."),
    ] = None,
    max_mismatch_rate: Annotated[
        float, typer.Option(help="Fail (exit 5) above this fraction of mismatched values.")
    ] = 0.01,
    max_unexplained_rate: Annotated[
        float,
        typer.Option(help="Fail (exit 5) above this fraction of mismatches with no known cause."),
    ] = 0.0,
    max_psi: Annotated[
        float, typer.Option(help="Fail (exit 5) above this PSI vs --training-dataset, per feature.")
    ] = 0.25,
    max_ks: Annotated[
        float | None,
        typer.Option(help="Fail (exit 5) above this KS statistic vs --training-dataset."),
    ] = None,
    edge_tolerance: Annotated[
        str,
        typer.Option(help="A request this close to a value's TTL end counts as a TTL edge."),
    ] = "1s",
    html: Annotated[Path | None, typer.Option("--html", help="Write an HTML report.")] = None,
    markdown: Annotated[
        Path | None, typer.Option("--markdown", help="Write a Markdown report.")
    ] = None,
    examples: Annotated[
        int, typer.Option("--examples", help="Mismatch examples to show per feature.")
    ] = 10,
    save: Annotated[
        bool,
        typer.Option(
            "--save/--no-save",
            help="Keep the report in the offline store (the web UI's skew page lists it).",
        ),
    ] = True,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Recompute what was served offline, report and explain every mismatch.

    Exits 5 when a threshold is exceeded, so CI and schedulers can gate on it.
    """
    from featurestore.audit import (
        Thresholds,
        render_html,
        render_markdown,
        render_terminal,
        run_audit,
    )

    start, end = parse_time(start, option="--start"), parse_time(end, option="--end")
    store = open_store(repo)
    with console.status("auditing served features"):
        report = run_audit(
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
    if save:
        from featurestore.audit.saved import save_report

        run_id = save_report(store.offline, report)
        if not as_json:
            console.print(f"report saved as audit run {run_id}", highlight=False)
    if html is not None:
        html.write_text(render_html(report, max_examples=examples))
    if markdown is not None:
        markdown.write_text(render_markdown(report, max_examples=examples))
    if as_json:
        print(report.to_json(max_examples=examples))
    else:
        render_terminal(report, console=console, max_examples=examples)
    raise typer.Exit(report.exit_code)
