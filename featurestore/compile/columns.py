"""Column names a compiled feature view will create, checked before anything runs.

A view becomes an offline table (join keys, ``event_ts``, ``created_ts``,
``event_date``, then the stored feature columns) and an online record (join keys,
then the features). The stores refuse duplicate or reserved names, but only when a
backfill or a lookup builds them, long after ``apply`` recorded the plan. This
module repeats their rules at compile time so that ``apply`` refuses what they
would. It cannot import the stores (layers point down), so the reserved names are
kept here too; a unit test asserts they equal ``stores.offline.spec.RESERVED``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

# The offline table's own columns (stores/offline/spec.py: RESERVED).
RESERVED_COLUMNS = frozenset({"event_ts", "created_ts", "event_date", "_record_id"})

# Names become Redis keys and feature references ("view:feature"): the online store
# refuses whitespace, ':', '{' and '}' (stores/online/base.py: _NAME).
_BAD_KEY_CHARS = re.compile(r"[\s:{}]")


def key_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a project, view or feature name, or None when it can."""
    if not name:
        return "is empty"
    if _BAD_KEY_CHARS.search(name):
        return "contains whitespace, ':', '{' or '}'"
    return None


def view_column_problems(spec: Mapping[str, Any]) -> Iterator[tuple[str, str, str]]:
    """``(field, message, hint)`` for each name clash in a compiled view spec."""
    reserved = ", ".join(sorted(RESERVED_COLUMNS))
    keys = [k["name"] for k in spec["join_keys"]]
    seen_keys: set[str] = set()
    for key in keys:
        if key in RESERVED_COLUMNS:
            yield (
                f"entities (join key {key!r})",
                "join key uses a column name the offline store reserves",
                f"rename the entity's join key; {reserved} are taken",
            )
        if key in seen_keys:
            yield (
                f"entities (join key {key!r})",
                "two entities of the view have the same join key",
                "give the entities distinct join key names",
            )
        seen_keys.add(key)
    aggs = list(spec["aggregations"])
    if aggs:
        features = [(f"aggregations[{a['name']!r}]", a["name"]) for a in aggs]
        # The offline table stores the events' input columns, once each.
        inputs = {a["column"] for a in aggs if isinstance(a["column"], str)}
        stored = [(f"aggregations column {c!r}", c) for c in sorted(inputs)]
    else:
        features = [(f"fields[{f['name']!r}]", f["name"]) for f in spec["features"]]
        stored = features
    for where, name in stored:
        if name in RESERVED_COLUMNS:
            yield (
                where,
                f"column {name!r} is one the offline store reserves",
                f"rename it (e.g. in the transform); {reserved} are taken",
            )
        elif name in seen_keys:
            yield (
                where,
                f"column {name!r} is also the view's join key",
                "a feature cannot be the entity key; rename the feature (e.g. with a transform)",
            )
    if not aggs:
        return
    names: set[str] = set()
    for where, name in features:
        if name in seen_keys or name in RESERVED_COLUMNS:
            yield (
                where,
                f"aggregation name {name!r} clashes with a join key or a reserved column",
                f"rename the aggregation; join keys and {reserved} are taken",
            )
        elif name in names:
            yield (where, "two aggregations have this name", "rename one of them")
        names.add(name)
