"""The lineage graph: source -> view -> on-demand view -> service -> saved dataset.

One pass over the registry head (the same plan ``api.catalog.lineage`` reads, which
answers for one object at a time) plus the lineage of each saved dataset
(``api.training.load_lineage``). ``graph`` is what ``/ui/api/lineage`` returns;
``layout`` places it in columns for the SVG on the lineage page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from featurestore.compile.plan import RepoPlan
from featurestore.ui.access import Visibility
from featurestore.ui.catalog_data import head_plan, object_url

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore

COLUMNS = ("source", "feature_view", "on_demand_feature_view", "feature_service", "dataset")
COLUMN_TITLES = ("Sources", "Feature views", "On-demand views", "Services", "Saved datasets")
_SOURCES = ("batch_source", "kafka_source", "request_source")
# layout, in SVG user units
NODE_W, NODE_H, COL_W, ROW_H, TOP = 204, 34, 244, 48, 34


def _id(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def saved_datasets(store: FeatureStore) -> list[dict[str, Any]]:
    """Name and lineage of every dataset saved in the offline store (a local
    directory or an object store such as S3)."""
    from featurestore.api.training import DATASETS, load_lineage

    prefix = f"{DATASETS}/"
    names = sorted(
        {
            t.removeprefix(prefix).removesuffix("/lineage")
            for t in store.offline.tables_under(DATASETS)
            if t.endswith("/lineage")
        }
    )
    return [{"name": n, "lineage": load_lineage(n, offline=store.offline)} for n in names]


def graph(store: FeatureStore, vis: Visibility) -> dict[str, Any]:
    """Nodes (id, kind, name, column, url, detail) and edges (from, to) as JSON."""
    head, plan = head_plan(store)
    nodes: dict[str, dict[str, Any]] = {}
    edges: list[dict[str, str]] = []

    def node(kind: str, name: str, column: str, detail: str = "", url: str = "") -> str:
        key = _id(kind, name)
        nodes.setdefault(
            key,
            {
                "id": key,
                "kind": kind,
                "name": name,
                "column": column,
                "url": url or object_url(kind, name),
                "detail": detail,
            },
        )
        return key

    def edge(a: str, b: str) -> None:
        edges.append({"from": a, "to": b})

    visible = vis.filter(plan)
    for obj in visible:
        if obj.kind in _SOURCES:
            node(obj.kind, obj.name, "source", obj.kind.replace("_", " "))
    for obj in visible:
        if obj.kind == "feature_view":
            spec = obj.spec
            detail = "aggregations" if spec["aggregations"] else "features"
            v = node(obj.kind, obj.name, "feature_view", detail)
            src = spec["source"]["name"]
            src_kind: Literal["kafka_source", "batch_source"] = (
                "kafka_source" if spec["source"]["type"] == "kafka" else "batch_source"
            )
            # a source defined inline in the view is no registered object: its box
            # opens the view, which shows it
            inline = plan.get(src_kind, src) is None
            detail = src_kind.replace("_", " ") + (" (inline)" if inline else "")
            url = object_url(obj.kind, obj.name) if inline else ""
            edge(node(src_kind, src, "source", detail, url=url), v)
    for obj in visible:
        if obj.kind == "on_demand_feature_view":
            v = node(obj.kind, obj.name, "on_demand_feature_view", "on demand")
            for inp in obj.spec["inputs"]:
                kind = _input_kind(plan, inp)
                column = "source" if kind == "request_source" else kind
                edge(node(kind, inp["name"], column), v)
    services: dict[str, frozenset[str]] = {}
    for obj in visible:
        if obj.kind == "feature_service":
            s = node(obj.kind, obj.name, "feature_service", f"{len(obj.spec['features'])} features")
            services[obj.name] = frozenset(obj.spec["features"])
            for view in dict.fromkeys(ref.split(":")[0] for ref in obj.spec["features"]):
                kind = (
                    "on_demand_feature_view"
                    if plan.get("on_demand_feature_view", view)
                    else "feature_view"
                )
                edge(node(kind, view, kind), s)
    for ds in saved_datasets(store):
        lineage = ds["lineage"]
        if not all(vis.sees_ref(ref) for ref in lineage.features):
            continue
        d = node(
            "dataset",
            ds["name"],
            "dataset",
            f"registry v{lineage.registry_version}, {lineage.spine_rows} rows",
            url=f"/ui/datasets/{ds['name']}",
        )
        wanted = frozenset(lineage.features)
        exact = [s for s, feats in services.items() if feats == wanted]
        if exact:
            for s in exact:
                edge(_id("feature_service", s), d)
        else:
            for view in dict.fromkeys(ref.split(":")[0] for ref in lineage.features):
                key = next(
                    (
                        k
                        for k in (_id("feature_view", view), _id("on_demand_feature_view", view))
                        if k in nodes
                    ),
                    None,
                )
                if key is not None:
                    edge(key, d)
    return {"registry_version": head, "nodes": list(nodes.values()), "edges": edges}


def _input_kind(plan: RepoPlan, inp: Any) -> str:
    if inp["type"] == "request":
        return "request_source"
    if plan.get("on_demand_feature_view", inp["name"]) is not None:
        return "on_demand_feature_view"
    return "feature_view"


def layout(data: dict[str, Any]) -> dict[str, Any]:
    """Boxes in columns (``COLUMNS`` order, empty columns dropped) and curved edges."""
    used = [c for c in COLUMNS if any(n["column"] == c for n in data["nodes"])]
    pos: dict[str, tuple[float, float]] = {}
    boxes = []
    rows = 0
    for ci, column in enumerate(used):
        members = [n for n in data["nodes"] if n["column"] == column]
        rows = max(rows, len(members))
        for ri, n in enumerate(members):
            x, y = ci * COL_W + 4, TOP + ri * ROW_H
            pos[n["id"]] = (x, y)
            boxes.append({**n, "x": x, "y": y})
    paths = []
    for e in data["edges"]:
        if e["from"] not in pos or e["to"] not in pos:
            continue
        (x1, y1), (x2, y2) = pos[e["from"]], pos[e["to"]]
        ax, ay, bx, by = x1 + NODE_W, y1 + NODE_H / 2, x2, y2 + NODE_H / 2
        if bx <= ax:  # same column (an on-demand view reading another): loop round
            bx = x2 + NODE_W / 2
            by = y2
        mid = (ax + bx) / 2
        paths.append(
            {
                "from": e["from"],
                "to": e["to"],
                "d": f"M{ax:.0f},{ay:.0f} C{mid:.0f},{ay:.0f} {mid:.0f},{by:.0f} {bx:.0f},{by:.0f}",
            }
        )
    titles = [
        {"x": i * COL_W + 4, "text": COLUMN_TITLES[COLUMNS.index(c)]} for i, c in enumerate(used)
    ]
    return {
        "boxes": boxes,
        "paths": paths,
        "titles": titles,
        "width": max(1, len(used)) * COL_W,
        "height": TOP + max(rows, 1) * ROW_H,
        "node_w": NODE_W,
        "node_h": NODE_H,
    }
