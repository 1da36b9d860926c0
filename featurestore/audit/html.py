"""A self-contained HTML audit report: inline CSS bar charts, no scripts, no external assets.

Laid out for a laptop screen (1366 px): the verdict, then the causes (the alarm
first) with what each means and what to do, a compact per-feature table, the
mismatch examples grouped by cause with served next to offline (wide values folded),
then the per-feature details and distributions.
"""

from __future__ import annotations

from html import escape

from featurestore._time import from_us
from featurestore.audit.causes import CAUSES, UNEXPLAINED
from featurestore.audit.examples import COLUMNS, Group, text
from featurestore.audit.report import AuditReport, FeatureResult

_PAGE_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem auto;color:#222;max-width:80rem;
padding:0 1rem}
"""
# The report's own rules; the web UI embeds them (scoped) with render_fragment's output.
REPORT_CSS = """
h1 .pass{color:#1a7f37}h1 .fail{color:#cf222e}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;table-layout:auto}
td,th{border:1px solid #ddd;padding:.2rem .4rem;font-size:.8rem;text-align:left;
vertical-align:top}
td.n{text-align:right;white-space:nowrap}
td.v{min-width:4.5rem;max-width:12rem;overflow-wrap:anywhere;font-family:ui-monospace,monospace}
td.t{font-size:.72rem;white-space:nowrap}
th.served,td.served{background:#fff8e5}th.offline,td.offline{background:#eef5ff}
tr.unexplained td:first-child{border-left:4px solid #cf222e}
details summary{cursor:pointer}
.feature{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.bars{display:grid;grid-template-columns:14rem 1fr 4.5rem;gap:2px 8px;font-size:.8rem}
.bar{height:.7rem;background:#0969da;margin:1px 0}
.bar.served{background:#bf8700}.bar.unexplained{background:#cf222e}.bar.cause{background:#8250df}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}
.note{color:#9a6700}.remedy{color:#555}
ul.failure{color:#cf222e;font-weight:600;font-size:.85rem;columns:2;margin:.3rem 0}
h3.unexplained{color:#cf222e}
"""
FOLD = 48  # characters of a value shown before it folds
_HEADS = {
    "row": "log row",
    "request_id": "request id",
    "request_time": "request time",
    "served": "served",
    "offline": "offline",
    "offline_known_time": "offline, as known at r",
    "served_event_ts": "served event_ts",
    "offline_event_ts": "offline event_ts",
}


def _bar(share: float, cls: str = "") -> str:
    width = max(0.0, min(share, 1.0)) * 100
    return f'<div class="bar {cls}" style="width:{width:.2f}%"></div>'


def _cause_bars(f: FeatureResult) -> str:
    if not f.mismatched:
        return "<p>Every served value matches the offline recompute.</p>"
    rows = []
    for cause in CAUSES:
        n = f.causes.get(cause, 0)
        if not n:
            continue
        cls = "unexplained" if cause == UNEXPLAINED else "cause"
        rows.append(
            f"<div>{escape(cause)}</div><div>{_bar(n / f.mismatched, cls)}</div><div>{n}</div>"
        )
    return f'<h4>Causes of {f.mismatched} mismatches</h4><div class="bars">{"".join(rows)}</div>'


def _distribution(f: FeatureResult) -> str:
    d = f.distribution
    if d is None:
        return ""
    head = (
        f"<h4>Distribution ({escape(d.kind)}): PSI {_num(d.psi)}, KS {_num(d.ks)}, "
        f"null rate {d.null_rate_training:.2%} → {d.null_rate_served:.2%}</h4>"
    )
    legend = (
        '<div class="legend"><span style="background:#0969da"></span>training'
        '<span style="background:#bf8700"></span>served</div>'
    )
    rows = [
        f"<div>{escape(b.label)}</div><div>{_bar(b.training)}{_bar(b.served, 'served')}</div>"
        f"<div>{b.training:.1%}<br>{b.served:.1%}</div>"
        for b in d.bins
    ]
    return head + legend + f'<div class="bars">{"".join(rows)}</div>'


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _feature(f: FeatureResult) -> str:
    title = f"<h3>{escape(f.feature)} <small>({escape(f.dtype)})</small></h3>"
    if f.skipped is not None:
        return f'<div class="feature">{title}<p class="note">Skipped: {escape(f.skipped)}</p></div>'
    facts = (
        f"<p>{f.rows} rows: {f.matched} match, {f.value_mismatch} value mismatch, "
        f"{f.missing_online} missing online, {f.missing_offline} missing offline "
        f"({f.mismatch_rate:.3%}); {f.mismatched_vs_known_time} differ from what could be "
        f"known at request time. Max abs diff {_num(f.max_abs_diff)}, "
        f"max rel diff {_num(f.max_rel_diff)}.</p>"
    )
    return f'<div class="feature">{title}{facts}{_cause_bars(f)}{_distribution(f)}</div>'


def _feature_table(report: AuditReport) -> str:
    head = (
        "<tr><th>feature</th><th>rows</th><th>mismatched</th><th>rate</th>"
        "<th>unexplained</th><th>causes</th><th>PSI</th></tr>"
    )
    body = []
    for f in sorted(report.features, key=lambda f: (-f.unexplained, -f.mismatch_rate)):
        if f.skipped is not None:
            body.append(
                f"<tr><td>{escape(f.feature)}</td><td class='n'>{f.rows}</td>"
                f"<td colspan='5' class='note'>skipped: {escape(f.skipped)}</td></tr>"
            )
            continue
        causes = ", ".join(f"{escape(k)} {v}" for k, v in f.causes.items()) or "-"
        d = f.distribution
        body.append(
            f"<tr><td>{escape(f.feature)}</td><td class='n'>{f.rows}</td>"
            f"<td class='n'>{f.mismatched}</td><td class='n'>{f.mismatch_rate:.3%}</td>"
            f"<td class='n'>{f.unexplained}</td><td>{causes}</td>"
            f"<td class='n'>{_num(d.psi if d else None)}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _causes(groups: list[Group]) -> str:
    head = "<tr><th>cause</th><th>values</th><th>what it means</th><th>what to do</th></tr>"
    rows = "".join(
        f"<tr class='{escape(g.cause)}'><td>{escape(g.cause)}</td><td class='n'>{g.values}</td>"
        f"<td>{escape(g.help.meaning)}</td><td class='remedy'>{escape(g.help.remedy)}</td></tr>"
        for g in groups
    )
    return f"<table>{head}{rows}</table>"


def _cell(column: str, value: object) -> str:
    shown = text(value)
    cls = {"served": "v served", "offline": "v offline", "offline_known_time": "v"}.get(column)
    if column.endswith("_ts") or column == "request_time":
        cls = "t"
    if column == "row":
        cls = "n"
    attr = f' class="{cls}"' if cls else ""
    if len(shown) > FOLD:
        folded = f"<details><summary>{escape(shown[:FOLD])}…</summary>{escape(shown)}</details>"
        return f"<td{attr}>{folded}</td>"
    return f"<td{attr}>{escape(shown)}</td>"


def _examples(groups: list[Group]) -> str:
    out = []
    for g in groups:
        if not g.examples:
            continue
        cls = ' class="unexplained"' if g.cause == UNEXPLAINED else ""
        out.append(
            f"<h3{cls}>{escape(g.cause)}: {len(g.examples)} of {g.values} values</h3>"
            f"<p class='remedy'>{escape(g.help.remedy)}</p>"
        )
        cols = [c for c in COLUMNS if c in g.examples[0]]
        head = "".join(
            f"<th class='{c}'>{escape(_HEADS.get(c, c))}</th>"
            if c in ("served", "offline")
            else f"<th>{escape(_HEADS.get(c, c))}</th>"
            for c in cols
        )
        body = "".join(
            f"<tr{cls}>" + "".join(_cell(c, row[c]) for c in cols) + "</tr>" for row in g.examples
        )
        out.append(f"<table><tr>{head}</tr>{body}</table>")
    if not out:
        return ""
    return "<h2>Mismatches by cause</h2>" + "".join(out)


def render_html(report: AuditReport, *, max_examples: int = 50) -> str:
    """One HTML page, readable offline: verdict, causes with remedies, per-feature
    rates, up to ``max_examples`` examples per cause (most severe first), details."""
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Skew audit: {escape(report.table)}</title>"
        f"<style>{_PAGE_CSS}{REPORT_CSS}</style></head><body>"
        f"{render_fragment(report, max_examples=max_examples)}</body></html>\n"
    )


def render_fragment(report: AuditReport, *, max_examples: int = 50) -> str:
    """The report's body (no page around it, styled by :data:`REPORT_CSS`): what
    :func:`render_html` wraps in a page and the web UI embeds in its skew page."""
    verdict = (
        '<span class="pass">PASS</span>' if report.passed else '<span class="fail">FAIL</span>'
    )
    span = " to ".join(
        "…" if us is None else from_us(us).isoformat() for us in (report.start_us, report.end_us)
    )
    summary = (
        f"<p>Table <code>{escape(report.table)}</code> (version {report.table_version}), "
        f"requests {escape(span)}: {report.rows} rows from {report.requests} requests. "
        f"Registry versions served {report.served_versions}, current "
        f"{report.current_version}. {report.mismatched} of {report.compared} values differ "
        f"({report.mismatch_rate:.3%}).</p>"
    )
    groups = report.example_groups(max_examples)
    failures = "".join(f"<li>{escape(x)}</li>" for x in report.failures)
    failures = f'<ul class="failure">{failures}</ul>' if failures else ""
    notes = "".join(f'<p class="note">{escape(x)}</p>' for x in report.notes)
    features = "".join(_feature(f) for f in report.features)
    return (
        f"<h1>Skew audit: {verdict}</h1>{summary}{failures}{notes}"
        f"<h2>Causes</h2>{_causes(groups)}"
        f"<h2>Per feature</h2>{_feature_table(report)}"
        f"{_examples(groups)}<h2>Feature details</h2>{features}"
    )
