"""The catalog page's data: every visible object, grouped, with its columns and dtypes.

Everything comes from ``featurestore.api.catalog`` (what ``featurestore list`` and
``search`` print) over one registry snapshot; this adds the dtypes and the links.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featurestore.api.catalog import GROUPS, entry, search
from featurestore.compile.plan import ObjectPlan, RepoPlan
from featurestore.ui.access import Visibility

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore

GROUP_TITLES = {
    "entities": "Entities",
    "sources": "Sources",
    "views": "Feature views",
    "services": "Feature services",
}


def head_plan(store: FeatureStore) -> tuple[int, RepoPlan]:
    """The registry head and its plan (an empty plan before the first apply)."""
    head = store.registry.head(fresh=True)
    plan = store.registry.snapshot(head).plan if head else RepoPlan(store.project, ())
    return head, plan


def object_url(kind: str, name: str) -> str:
    if kind in ("feature_view", "on_demand_feature_view"):
        return f"/ui/views/{name}"
    return f"/ui/objects/{kind}/{name}"


def columns(obj: ObjectPlan) -> list[dict[str, str]]:
    """The names and dtypes an object carries (keys, fields, features, outputs)."""
    spec = obj.spec
    if obj.kind == "entity":
        return [{"name": k["name"], "dtype": k["dtype"]} for k in spec["join_keys"]]
    if obj.kind == "request_source":
        return [{"name": f["name"], "dtype": f["dtype"]} for f in spec["schema"]]
    if obj.kind == "feature_view":
        items = spec["aggregations"] or spec["features"]
        return [{"name": f["name"], "dtype": f["dtype"]} for f in items]
    if obj.kind == "on_demand_feature_view":
        return [{"name": o["name"], "dtype": o["dtype"]} for o in spec["outputs"]]
    if obj.kind == "feature_service":
        return [{"name": ref, "dtype": ""} for ref in spec["features"]]
    return []


def _kind_label(obj: ObjectPlan) -> str:
    if obj.kind == "feature_view":
        return "aggregated view" if obj.spec["aggregations"] else "feature view"
    return obj.kind.replace("_", " ")


def item(obj: ObjectPlan) -> dict[str, Any]:
    return {
        **entry(obj).to_dict(),
        "label": _kind_label(obj),
        "columns": columns(obj),
        "url": object_url(obj.kind, obj.name),
    }


def catalog(store: FeatureStore, vis: Visibility, *, query: str = "") -> dict[str, Any]:
    """Objects by group (``GROUPS``) and, for a non-empty ``query``, the search hits."""
    head, plan = head_plan(store)
    groups: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    by_kind = {k: g for g, kinds in GROUPS.items() for k in kinds}
    for obj in vis.filter(plan):
        groups[by_kind[obj.kind]].append(item(obj))
    hits = None
    if query.strip():
        keys: dict[tuple[str, str], ObjectPlan] = {(o.kind, o.name): o for o in plan}
        hits = [
            {**item(keys[(h.entry.kind, h.entry.name)]), "matched": list(h.matched)}
            for h in search(plan, query)
            if vis.sees(h.entry.kind, h.entry.name)
        ]
    return {
        "project": store.project,
        "registry_version": head,
        "groups": groups,
        "titles": GROUP_TITLES,
        "query": query,
        "hits": hits,
    }
