"""A self-contained HTML audit report: inline CSS bar charts, no scripts, no external assets."""

from __future__ import annotations

from html import escape

from featurestore._time import from_us
from featurestore.audit.causes import CAUSES, UNEXPLAINED
from featurestore.audit.report import AuditReport, FeatureResult

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:72rem}
h1 .pass{color:#1a7f37}h1 .fail{color:#cf222e}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
td,th{border:1px solid #ddd;padding:.25rem .5rem;font-size:.85rem;text-align:right}
td:first-child,th:first-child{text-align:left}
.feature{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.bars{display:grid;grid-template-columns:14rem 1fr 4.5rem;gap:2px 8px;font-size:.8rem}
.bar{height:.7rem;background:#0969da;margin:1px 0}
.bar.served{background:#bf8700}.bar.unexplained{background:#cf222e}.bar.cause{background:#8250df}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 1rem}
.note{color:#9a6700}.failure{color:#cf222e;font-weight:600}
"""


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


def _examples(report: AuditReport, limit: int) -> str:
    frame = report.mismatches.head(limit)
    if not frame.height:
        return ""
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape('' if v is None else str(v))}</td>" for v in row) + "</tr>"
        for row in frame.iter_rows()
    )
    title = f"<h2>First {frame.height} of {report.mismatches.height} mismatches</h2>"
    return f"{title}<table><tr>{head}</tr>{body}</table>"


def render_html(report: AuditReport, *, max_examples: int = 50) -> str:
    """One HTML page, readable offline: summary, per-feature charts, examples."""
    verdict = (
        '<span class="pass">PASS</span>' if report.passed else '<span class="fail">FAIL</span>'
    )
    span = " to ".join(
        "…" if us is None else from_us(us).isoformat() for us in (report.start_us, report.end_us)
    )
    totals = report.cause_totals()
    summary = (
        f"<p>Table <code>{escape(report.table)}</code> (version {report.table_version}), "
        f"requests {escape(span)}: {report.rows} rows from {report.requests} requests. "
        f"Registry versions served {report.served_versions}, current "
        f"{report.current_version}. {report.mismatched} of {report.compared} values differ "
        f"({report.mismatch_rate:.3%}).</p>"
    )
    causes = "".join(f"<tr><td>{escape(c)}</td><td>{totals[c]}</td></tr>" for c in CAUSES)
    failures = "".join(f'<p class="failure">{escape(x)}</p>' for x in report.failures)
    notes = "".join(f'<p class="note">{escape(x)}</p>' for x in report.notes)
    features = "".join(_feature(f) for f in report.features)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Skew audit: {escape(report.table)}</title><style>{_CSS}</style></head><body>"
        f"<h1>Skew audit: {verdict}</h1>{summary}{failures}{notes}"
        f"<h2>Causes</h2><table><tr><th>cause</th><th>values</th></tr>{causes}</table>"
        f"<h2>Features</h2>{features}{_examples(report, max_examples)}</body></html>\n"
    )
