"""The audit's result: per-feature counts, causes, distributions and the verdict."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from featurestore._time import from_us
from featurestore.audit.causes import CAUSES, UNEXPLAINED
from featurestore.audit.examples import Group, example_groups

# Exit code of a finished audit that breaks a threshold (the CLI's 1-4 mean errors).
EXIT_THRESHOLD = 5


@dataclass(frozen=True)
class Thresholds:
    """When an audit fails. Rates are per feature, over the rows that served it.

    ``max_mismatch_rate``: every non-matching value, whatever its cause.
    ``max_unexplained_rate``: mismatches no known cause explains (the alarm); the
    default 0 fails on the first one. ``max_psi`` / ``max_ks``: distribution drift
    against the training dataset, when one is given (None: not checked).
    """

    max_mismatch_rate: float = 0.01
    max_unexplained_rate: float = 0.0
    max_psi: float | None = 0.25
    max_ks: float | None = None


@dataclass(frozen=True)
class Bin:
    label: str
    training: float  # share of the training values in this bin
    served: float  # share of the served values


@dataclass(frozen=True)
class Distribution:
    """Training dataset vs served values of one feature (see ``distribution.py``)."""

    kind: str  # "numeric" | "categorical" | "unsupported"
    training_rows: int
    served_rows: int
    psi: float | None
    ks: float | None
    null_rate_training: float
    null_rate_served: float
    bins: list[Bin] = field(default_factory=list)

    @property
    def null_rate_change(self) -> float:
        return self.null_rate_served - self.null_rate_training


@dataclass
class FeatureResult:
    """One feature: how its served values compare with the offline recompute."""

    feature: str  # "view:feature"
    dtype: str
    rows: int  # logged rows that served this feature
    matched: int = 0
    value_mismatch: int = 0
    missing_online: int = 0
    missing_offline: int = 0
    causes: dict[str, int] = field(default_factory=dict)
    mismatched_vs_known_time: int = 0  # served differs from what could be known at r
    max_abs_diff: float | None = None
    max_rel_diff: float | None = None
    skipped: str | None = None  # why the feature was not compared
    distribution: Distribution | None = None

    @property
    def mismatched(self) -> int:
        return self.value_mismatch + self.missing_online + self.missing_offline

    @property
    def mismatch_rate(self) -> float:
        return self.mismatched / self.rows if self.rows else 0.0

    @property
    def unexplained(self) -> int:
        return self.causes.get(UNEXPLAINED, 0)

    @property
    def unexplained_rate(self) -> float:
        return self.unexplained / self.rows if self.rows else 0.0


@dataclass
class AuditReport:
    """Everything one audit found. ``mismatches`` holds every non-matching value."""

    table: str
    table_version: int | None
    start_us: int | None
    end_us: int | None
    sample: float | None
    rows: int
    requests: int
    current_version: int
    served_versions: list[int]
    view_table_versions: dict[str, int | None]
    features: list[FeatureResult]
    mismatches: pl.DataFrame
    thresholds: Thresholds
    training_dataset: str | None = None
    notes: list[str] = field(default_factory=list)
    key_columns: list[str] = field(default_factory=list)  # join keys in ``mismatches``
    # per view: age of the served records at request time, seconds (p50, p99, max),
    # over the values served with a record; and the view's TTL (None: no TTL)
    served_age: dict[str, dict[str, float]] = field(default_factory=dict)
    view_ttl_seconds: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage

    @property
    def compared(self) -> int:
        return sum(f.rows for f in self.features if f.skipped is None)

    @property
    def mismatched(self) -> int:
        return sum(f.mismatched for f in self.features)

    @property
    def mismatch_rate(self) -> float:
        return self.mismatched / self.compared if self.compared else 0.0

    def cause_totals(self) -> dict[str, int]:
        return {c: sum(f.causes.get(c, 0) for f in self.features) for c in CAUSES}

    @property
    def failures(self) -> list[str]:
        """Each threshold broken, in words; empty when the audit passes."""
        t = self.thresholds
        out = []
        for f in self.features:
            if f.skipped is not None:
                continue
            if f.mismatch_rate > t.max_mismatch_rate:
                out.append(
                    f"{f.feature}: mismatch rate {f.mismatch_rate:.4%} > {t.max_mismatch_rate:.4%}"
                )
            if f.unexplained_rate > t.max_unexplained_rate:
                out.append(
                    f"{f.feature}: {f.unexplained} unexplained mismatch(es), rate "
                    f"{f.unexplained_rate:.4%} > {t.max_unexplained_rate:.4%}"
                )
            d = f.distribution
            if d is not None and t.max_psi is not None and d.psi is not None and d.psi > t.max_psi:
                out.append(f"{f.feature}: PSI {d.psi:.4f} > {t.max_psi}")
            if d is not None and t.max_ks is not None and d.ks is not None and d.ks > t.max_ks:
                out.append(f"{f.feature}: KS {d.ks:.4f} > {t.max_ks}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0 when every threshold holds, :data:`EXIT_THRESHOLD` otherwise."""
        return 0 if self.passed else EXIT_THRESHOLD

    def example_groups(self, limit: int) -> list[Group]:
        """The mismatch examples every report shows: per cause, most severe first."""
        return example_groups(
            self.mismatches,
            key_columns=self.key_columns,
            totals=self.cause_totals(),
            limit=limit,
        )

    def to_dict(self, *, max_examples: int = 20) -> dict[str, Any]:
        """A JSON-friendly summary: per cause (most severe first) its meaning, remedy
        and up to ``max_examples`` mismatches, the rows the HTML and Markdown reports
        show; and per feature up to ``max_examples`` mismatches."""

        features = []
        for f in self.features:
            item = asdict(f)
            item.update(
                mismatched=f.mismatched,
                mismatch_rate=f.mismatch_rate,
                unexplained_rate=f.unexplained_rate,
            )
            if f.distribution is not None:
                item["distribution"]["null_rate_change"] = f.distribution.null_rate_change
            examples = self.mismatches.filter(pl.col("feature") == f.feature).head(max_examples)
            item["examples"] = _json_rows(examples)
            features.append(item)
        return {
            "table": self.table,
            "table_version": self.table_version,
            "start": None if self.start_us is None else from_us(self.start_us).isoformat(),
            "end": None if self.end_us is None else from_us(self.end_us).isoformat(),
            "sample": self.sample,
            "rows": self.rows,
            "requests": self.requests,
            "current_registry_version": self.current_version,
            "served_registry_versions": self.served_versions,
            "view_table_versions": self.view_table_versions,
            "training_dataset": self.training_dataset,
            "compared_values": self.compared,
            "mismatched_values": self.mismatched,
            "mismatch_rate": self.mismatch_rate,
            "causes": self.cause_totals(),
            "mismatches_by_cause": [
                {
                    "cause": g.cause,
                    "values": g.values,
                    "meaning": g.help.meaning,
                    "remedy": g.help.remedy,
                    "examples": [_clean(row) for row in g.examples],
                }
                for g in self.example_groups(max_examples)
            ],
            "thresholds": asdict(self.thresholds),
            "passed": self.passed,
            "failures": self.failures,
            "exit_code": self.exit_code,
            "notes": self.notes,
            "served_age_seconds": self.served_age,
            "view_ttl_seconds": self.view_ttl_seconds,
            "seconds": self.seconds,
            "timings": self.timings,
            "features": features,
        }

    def to_json(self, *, max_examples: int = 20, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(max_examples=max_examples), indent=indent, default=str)


def _json_rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return [_clean(row) for row in frame.iter_rows(named=True)]


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    # Datetimes as ISO strings; NaN and infinities are not JSON, so they become strings.
    clean = {}
    for k, v in row.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        elif hasattr(v, "isoformat"):
            v = v.isoformat()
        clean[k] = v
    return clean
