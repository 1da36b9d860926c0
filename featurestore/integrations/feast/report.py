"""The import report: every Feast object, and what became of it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["converted", "converted with a semantic difference", "not supported"]
# Differences a test (or a user) can check row by row:
# - ttl_boundary: Feast keeps a row exactly ttl old (event_ts >= t - ttl); we do not
#   (event_ts > t - ttl), so those training rows are null here.
# - created_ties: rows sharing (key, event_ts). We take the largest created_ts; a
#   full tie on (key, event_ts, created_ts) is a data error here (the backfill reports
#   it and keeps the last in source order). Feast 0.67's file offline store sorts by
#   created_ts and then by event_ts with an unstable sort, so it keeps any of them,
#   corrections included.
# - push: a Feast PushSource becomes the view's batch source; push with
#   ``featurestore push VIEW`` or ``POST /v1/push`` (per view, not per source).
# - online_ttl: online, an expired value reads EXPIRED with a null value; Feast 0.67's
#   server answers it PRESENT with the old value.
# - naive_time: Feast reads a timestamp column without a zone as UTC; featurestore
#   rejects it (SEMANTICS.md "Time"): write the column with a zone.
# - dropped_spine_rows: Feast 0.67's file offline store leaves out a spine row whose
#   key has rows in a view but none within [t - ttl, t] (its left join is filtered on
#   the TTL): before the key's first event, after its last + ttl, in a longer gap. We
#   keep every spine row, with nulls.
Difference = Literal[
    "ttl_boundary",
    "created_ties",
    "push",
    "online_ttl",
    "naive_time",
    "dropped_spine_rows",
    "other",
]


@dataclass
class ReportItem:
    kind: str
    name: str
    status: Status
    notes: list[str] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)


@dataclass
class ImportReport:
    source: str
    out: str
    items: list[ReportItem] = field(default_factory=list)

    def add(
        self,
        kind: str,
        name: str,
        *,
        notes: list[str] | None = None,
        differences: list[Difference] | None = None,
        supported: bool = True,
    ) -> ReportItem:
        diffs = list(differences or [])
        status: Status = (
            "not supported"
            if not supported
            else "converted with a semantic difference"
            if diffs
            else "converted"
        )
        item = ReportItem(kind, name, status, list(notes or []), diffs)
        self.items.append(item)
        return item

    def item(self, kind: str, name: str) -> ReportItem:
        for it in self.items:
            if it.kind == kind and it.name == name:
                return it
        raise KeyError(f"{kind} {name!r} is not in the report")

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for it in self.items:
            out[it.status] = out.get(it.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "out": self.out, "items": [asdict(i) for i in self.items]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        lines = [
            "# Feast import report",
            "",
            f"From `{self.source}` to `{self.out}`.",
            "",
            "| object | status | notes |",
            "|---|---|---|",
        ]
        for it in self.items:
            notes = "; ".join(it.notes).replace("|", "\\|") or ""
            lines.append(f"| {it.kind} `{it.name}` | {it.status} | {notes} |")
        see = "See docs/migrating-from-feast.md for each semantic difference, with an example."
        lines += ["", see, ""]
        return "\n".join(lines)
