"""The history page: every registry version with the diff ``featurestore plan`` shows.

Version ``v``'s diff is ``registry.diff(plan at v, base_version=v - 1)``: the same
``diff_plans`` that ``plan`` and ``apply`` print, field by field, with impacts.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from featurestore.ui.access import Visibility
from featurestore.ui.catalog_data import object_url

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore

MAX_VALUE = 160  # characters of an old/new value shown before it is cut


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def history(store: FeatureStore, vis: Visibility, *, limit: int = 50) -> dict[str, Any]:
    """The newest ``limit`` versions, newest first, each with its visible changes."""
    registry = store.registry
    versions = registry.history()
    head = versions[-1].version if versions else 0
    out = []
    for info in reversed(versions[-limit:]):
        plan = registry.snapshot(info.version).plan
        diff = registry.diff(plan, base_version=info.version - 1)
        changes = [
            {
                "kind": o.kind,
                "name": o.name,
                "action": o.action,
                "url": object_url(o.kind, o.name) if o.action != "removed" else "",
                "changes": [
                    {"path": c.path, "old": _show(c.old), "new": _show(c.new)} for c in o.changes
                ],
                "impacts": list(o.impacts),
            }
            for o in diff.objects
            if vis.sees(o.kind, o.name)
        ]
        out.append(
            {
                **info.to_dict(),
                "changes": changes,
                # rollback restores a version as a new one; the page only shows how
                "rollback": ""
                if info.version == head
                else f"featurestore registry rollback --to {info.version}",
            }
        )
    return {"registry_version": head, "versions": out, "total": len(versions)}
