"""Audit reports for people: a rich table on the terminal and Markdown.

JSON is ``AuditReport.to_json``; the self-contained HTML page is in ``html.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featurestore._time import from_us
from featurestore.audit.examples import COLUMNS, Group, text
from featurestore.audit.html import render_html
from featurestore.audit.report import AuditReport, FeatureResult

if TYPE_CHECKING:
    from rich.console import Console

# The terminal is narrow: the ids to find a row, the feature, both values.
TERMINAL_COLUMNS = ("request_id", "entity", "feature", "served", "offline")


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _causes(f: FeatureResult) -> str:
    return ", ".join(f"{k} {v}" for k, v in f.causes.items()) or "-"


def _feature_row(f: FeatureResult) -> list[str]:
    if f.skipped is not None:
        return [f.feature, str(f.rows), "-", "-", "-", "-", "-", f"skipped: {f.skipped}", "-", "-"]
    d = f.distribution
    return [
        f.feature,
        str(f.rows),
        str(f.matched),
        str(f.value_mismatch),
        str(f.missing_online),
        str(f.missing_offline),
        f"{f.mismatch_rate:.3%}",
        _causes(f),
        _fmt(d.psi if d else None),
        _fmt(d.null_rate_change if d else None, "+.3%"),
    ]


HEADERS = [
    "feature",
    "rows",
    "match",
    "value mismatch",
    "missing online",
    "missing offline",
    "mismatch rate",
    "causes",
    "PSI",
    "null rate change",
]


def _summary(report: AuditReport) -> list[str]:
    span = " to ".join(
        "…" if us is None else from_us(us).isoformat() for us in (report.start_us, report.end_us)
    )
    lines = [
        f"table {report.table} (version {report.table_version}), requests {span}",
        f"{report.rows} rows from {report.requests} requests; registry versions served "
        f"{report.served_versions}, current {report.current_version}",
        f"{report.mismatched} of {report.compared} values differ "
        f"({report.mismatch_rate:.3%}); {report.seconds:.2f} s",
    ]
    if report.training_dataset:
        lines.append(f"distributions against training dataset {report.training_dataset!r}")
    return lines


def _rows(g: Group, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{c: row[c] for c in columns if c in row} for row in g.examples]


def render_terminal(
    report: AuditReport, *, console: Console | None = None, max_examples: int = 10
) -> None:
    """Print the report as rich tables (to stdout unless ``console`` is given)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # Every piece of data goes in as Text: a reference like "view:x:" must not be
    # read as rich markup or as an emoji code.
    console = console or Console()
    for line in _summary(report):
        console.print(Text(line))
    table = Table(title="Served vs offline, per feature")
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("feature", "causes") else "right")
    for f in report.features:
        table.add_row(*(Text(cell) for cell in _feature_row(f)))
    console.print(table)
    for g in report.example_groups(max_examples):
        style = "bold red" if g.cause == "unexplained" else "bold"
        console.print(Text.assemble((f"{g.cause}: {g.values} values. ", style), g.help.meaning))
        console.print(Text.assemble(("  what to do: ", "dim"), g.help.remedy))
        rows = _rows(g, TERMINAL_COLUMNS)
        if rows:
            ex = Table(title=f"{g.cause}: {len(rows)} of {g.values}")
            for col in rows[0]:
                ex.add_column(col, overflow="fold")
            for row in rows:
                ex.add_row(*(Text(text(v)) for v in row.values()))
            console.print(ex)
    for note in report.notes:
        console.print(Text.assemble(("note: ", "yellow"), note))
    if report.passed:
        console.print(Text.assemble(("PASS", "bold green"), ": every threshold holds"))
    else:
        for failure in report.failures:
            console.print(Text.assemble(("FAIL", "bold red"), ": ", failure))


def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: AuditReport, *, max_examples: int = 10) -> str:
    """The report as Markdown (for CI summaries and pull requests)."""
    verdict = "PASS" if report.passed else "FAIL"
    out = [f"# Skew audit: {verdict}", ""]
    out += [f"- {_md_cell(line)}" for line in _summary(report)]
    out += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(_md_cell(c) for c in _feature_row(f)) + " |" for f in report.features]
    groups = report.example_groups(max_examples)
    out += [
        "",
        "## Causes",
        "",
        "| cause | values | what it means | what to do |",
        "|---|---|---|---|",
    ]
    out += [
        f"| {g.cause} | {g.values} | {_md_cell(g.help.meaning)} | {_md_cell(g.help.remedy)} |"
        for g in groups
    ]
    for g in groups:
        if not g.examples:
            continue
        cols = [c for c in COLUMNS if c in g.examples[0]]
        out += ["", f"## {g.cause}: {len(g.examples)} of {g.values} values", ""]
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        out += [
            "| " + " | ".join(_md_cell(text(row[c])) for c in cols) + " |" for row in g.examples
        ]
    if report.notes:
        out += ["", "## Notes", ""] + [f"- {_md_cell(n)}" for n in report.notes]
    if report.failures:
        out += ["", "## Failures", ""] + [f"- {_md_cell(f)}" for f in report.failures]
    return "\n".join(out) + "\n"


__all__ = ["render_html", "render_markdown", "render_terminal"]
