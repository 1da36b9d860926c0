"""The skew audit: prove that serving matched training, row by row.

``run_audit`` replays the rows a ``FeatureLogger`` wrote against the offline path
and attributes every difference to a cause (``causes.py`` has the rules and their
precedence); ``render`` turns the report into a terminal table, JSON, HTML or
Markdown.
"""

from featurestore.audit.causes import CAUSES, OUTCOMES
from featurestore.audit.recompute import RECOMPUTES, PlainRecompute, ViewRecompute
from featurestore.audit.render import render_html, render_markdown, render_terminal
from featurestore.audit.report import (
    EXIT_THRESHOLD,
    AuditReport,
    Bin,
    Distribution,
    FeatureResult,
    Thresholds,
)
from featurestore.audit.run import run_audit

__all__ = [
    "CAUSES",
    "EXIT_THRESHOLD",
    "OUTCOMES",
    "RECOMPUTES",
    "AuditReport",
    "Bin",
    "Distribution",
    "FeatureResult",
    "PlainRecompute",
    "Thresholds",
    "ViewRecompute",
    "render_html",
    "render_markdown",
    "render_terminal",
    "run_audit",
]
