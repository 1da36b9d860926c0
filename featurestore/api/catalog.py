"""The catalog: what is registered, who owns it, where its data is, what uses it.

Plain Python over one registry snapshot (its ``RepoPlan``) and the stores; the CLI's
``list``, ``describe`` and ``search`` print what these functions return. Nothing
here connects to the online store: ``describe`` must answer while Redis is down,
so the online part says what the registry and the settings say (served or not,
which derivation, how long records are kept), not what the store holds.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from featurestore._redact import redact_url
from featurestore._time import format_duration_us, from_us
from featurestore.compile.plan import ObjectPlan, RepoPlan
from featurestore.errors import RequestError

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore
    from featurestore.stores.offline.delta import DeltaOfflineStore

# What a user types after ``featurestore list`` -> the plan kinds it covers.
GROUPS: dict[str, tuple[str, ...]] = {
    "entities": ("entity",),
    "sources": ("batch_source", "kafka_source", "request_source"),
    "views": ("feature_view", "on_demand_feature_view"),
    "services": ("feature_service",),
}


@dataclass(frozen=True)
class CatalogEntry:
    """One registered object as the catalog shows it."""

    kind: str
    name: str
    description: str
    owner: str
    tags: Mapping[str, str]
    summary: str
    features: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "owner": self.owner,
            "tags": dict(self.tags),
            "summary": self.summary,
        }


@dataclass(frozen=True)
class SearchHit:
    entry: CatalogEntry
    matched: tuple[str, ...] = field(default=())  # the fields that contain the text

    def to_dict(self) -> dict[str, Any]:
        return {**self.entry.to_dict(), "matched": list(self.matched)}


def _summary(obj: ObjectPlan) -> str:
    spec = obj.spec
    if obj.kind == "entity":
        return "keys " + ", ".join(f"{k['name']}:{k['dtype']}" for k in spec["join_keys"])
    if obj.kind == "batch_source":
        return f"{spec['format']} at {spec['path']}"
    if obj.kind == "kafka_source":
        return f"Kafka topic {spec['topic']}, history at {spec['batch_source']['path']}"
    if obj.kind == "request_source":
        return "request fields " + ", ".join(f["name"] for f in spec["schema"])
    if obj.kind == "feature_view":
        n = len(spec["aggregations"]) or len(spec["features"])
        ttl = "no ttl" if spec["ttl_us"] is None else f"ttl {format_duration_us(spec['ttl_us'])}"
        kind = "aggregations" if spec["aggregations"] else "features"
        online = "online" if spec["online"] else "offline only"
        return f"{n} {kind} from {spec['source']['name']}, {ttl}, {online}"
    if obj.kind == "on_demand_feature_view":
        return "outputs " + ", ".join(o["name"] for o in spec["outputs"])
    return f"{len(spec['features'])} features"


def _features(obj: ObjectPlan) -> tuple[str, ...]:
    spec = obj.spec
    if obj.kind == "feature_view":
        return tuple(a["name"] for a in spec["aggregations"] or spec["features"])
    if obj.kind == "on_demand_feature_view":
        return tuple(o["name"] for o in spec["outputs"])
    return ()


def entry(obj: ObjectPlan) -> CatalogEntry:
    meta = obj.spec.get("metadata") or {}
    return CatalogEntry(
        kind=obj.kind,
        name=obj.name,
        description=str(meta.get("description") or ""),
        owner=str(meta.get("owner") or ""),
        tags={str(k): str(v) for k, v in (meta.get("tags") or {}).items()},
        summary=_summary(obj),
        features=_features(obj),
    )


def parse_tags(items: Sequence[str]) -> dict[str, str | None]:
    """``["team=ranking", "pii"]`` -> ``{"team": "ranking", "pii": None}`` (None: any value)."""
    out: dict[str, str | None] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key.strip():
            raise RequestError(
                "is not a tag filter",
                obj="option --tag",
                value=item,
                hint="give key=value (or a bare key: any value), e.g. --tag team=ranking",
            )
        out[key.strip()] = value.strip() if sep else None
    return out


def list_entries(
    plan: RepoPlan,
    *,
    group: str | None = None,
    tags: Mapping[str, str | None] | None = None,
    owner: str | None = None,
) -> list[CatalogEntry]:
    """The registered objects of ``group`` (all when None) carrying every tag in
    ``tags`` and owned by ``owner`` (case-insensitive), in plan order."""
    if group is not None and group not in GROUPS:
        raise RequestError(
            "is not a kind of object",
            obj="featurestore list",
            value=group,
            hint=f"use one of: {', '.join(GROUPS)}",
        )
    kinds = GROUPS[group] if group else None
    out = []
    for obj in plan:
        if kinds is not None and obj.kind not in kinds:
            continue
        e = entry(obj)
        if owner is not None and e.owner.lower() != owner.strip().lower():
            continue
        if tags and not all(k in e.tags and (v is None or e.tags[k] == v) for k, v in tags.items()):
            continue
        out.append(e)
    return out


def search(plan: RepoPlan, text: str) -> list[SearchHit]:
    """Objects whose name, description, owner, tags or feature names contain ``text``
    (case-insensitive); name matches first, then by kind and name."""
    needle = text.strip().lower()
    if not needle:
        raise RequestError(
            "is empty", obj="search text", hint="give a word to look for, e.g. driver"
        )
    hits = []
    for obj in plan:
        e = entry(obj)
        fields = {
            "name": [e.name],
            "description": [e.description],
            "owner": [e.owner],
            "tags": [f"{k}={v}" for k, v in e.tags.items()],
            "features": list(e.features),
        }
        matched = tuple(
            f for f, values in fields.items() if any(needle in v.lower() for v in values)
        )
        if matched:
            hits.append(SearchHit(e, matched))
    # stable sort keeps plan order (kind, name) within each rank
    return sorted(hits, key=lambda h: (h.entry.name.lower() != needle, "name" not in h.matched))


def find(plan: RepoPlan, name: str, *, group: str | None = None) -> ObjectPlan:
    """The object called ``name`` (within ``group`` if given); an error suggesting
    close names when there is none, or naming the kinds when several share it."""
    kinds = GROUPS.get(group or "", tuple(o.kind for o in plan))
    found = [o for o in plan if o.name == name and o.kind in kinds]
    if len(found) == 1:
        return found[0]
    if found:
        groups = [g for g, ks in GROUPS.items() if any(o.kind in ks for o in found)]
        raise RequestError(
            f"names several objects: {', '.join(f'{o.kind} {o.name!r}' for o in found)}",
            obj=f"name {name!r}",
            hint=f"say which with --kind ({' or '.join(groups)})",
        )
    names = sorted({o.name for o in plan if o.kind in kinds})
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
    elif names:
        hint = "`featurestore list` shows every registered name"
    else:
        hint = "the registry has nothing registered yet: run `featurestore apply` first"
    raise RequestError("no registered object has this name", obj=f"name {name!r}", hint=hint)


def lineage(plan: RepoPlan, obj: ObjectPlan) -> dict[str, list[str]]:
    """What ``obj`` reads and what reads it, as ``kind name`` lists."""
    reads: list[str] = []
    used_by: list[str] = []
    for other in plan:
        if other.kind == "feature_view" and (
            (obj.kind == "entity" and obj.name in other.spec["entities"])
            or (obj.kind.endswith("_source") and other.spec["source"]["name"] == obj.name)
        ):
            used_by.append(f"feature_view {other.name}")
        elif other.kind == "on_demand_feature_view" and any(
            i["name"] == obj.name for i in other.spec["inputs"]
        ):
            used_by.append(f"on_demand_feature_view {other.name}")
        elif other.kind == "feature_service" and any(
            ref.split(":")[0] == obj.name for ref in other.spec["features"]
        ):
            used_by.append(f"feature_service {other.name}")
    spec = obj.spec
    if obj.kind == "feature_view":
        reads = [f"entity {e}" for e in spec["entities"]]
        src = plan.get("kafka_source", spec["source"]["name"])
        reads.append(f"{'kafka_source' if src else 'batch_source'} {spec['source']['name']}")
    elif obj.kind == "on_demand_feature_view":
        reads = [
            f"{'request_source' if i['type'] == 'request' else 'feature_view'} {i['name']}"
            for i in spec["inputs"]
        ]
    elif obj.kind == "feature_service":
        for v in dict.fromkeys(ref.split(":")[0] for ref in spec["features"]):
            odfv = plan.get("on_demand_feature_view", v) is not None
            reads.append(f"{'on_demand_feature_view' if odfv else 'feature_view'} {v}")
    return {"reads": reads, "used_by": used_by}


def offline_table(offline: DeltaOfflineStore, name: str) -> dict[str, Any]:
    """The Delta table of a view: version, rows, files, bytes, event-time range and
    last commit, from the table's log (no data file is read when it has stats)."""
    import polars as pl
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    uri = offline.table_uri(name)
    try:
        table = DeltaTable(uri, storage_options=offline.storage_options)
    except TableNotFoundError:
        return {"table": redact_url(uri), "exists": False}
    adds = pl.DataFrame(table.get_add_actions(flatten=True))
    rows = adds["num_records"] if "num_records" in adds.columns else None
    if rows is None or rows.null_count():  # files written without stats: count them
        count = int(pl.scan_delta(table).select(pl.len()).collect().item())
    else:
        count = int(rows.sum())
    last = (table.history(1) or [{}])[0]
    stamp = last.get("timestamp")
    info: dict[str, Any] = {
        "table": redact_url(uri),
        "exists": True,
        "version": table.version(),
        "rows": count,
        "files": adds.height,
        "size_bytes": int(adds["size_bytes"].sum()) if adds.height else 0,
        "last_commit": None if stamp is None else from_us(int(stamp) * 1000).isoformat(),
        "last_operation": last.get("operation"),
    }
    if adds.height and "min.event_ts" in adds.columns:
        first, end = adds["min.event_ts"].min(), adds["max.event_ts"].max()
        info["event_time_range"] = [str(first), str(end)]
    return info


def _offline_retention(store: FeatureStore, view: str) -> str:
    """What ``featurestore retention apply`` keeps of the view's offline rows."""
    from featurestore.api.retention import configured

    kept = configured(store.settings.policy).get(view)
    if kept is None:
        return "every row (no [policy.offline_retention] entry for this view)"
    return (
        f"rows of the last {kept} ([policy.offline_retention], by `featurestore retention apply`)"
    )


def _online(store: FeatureStore, obj: ObjectPlan, head: int) -> dict[str, Any]:
    spec = obj.spec
    windows = [(a["window_us"], a["hop_us"]) for a in spec["aggregations"]]
    retention = store.settings.online_retention
    pinned = store.registry.serving_pins().get(obj.name)
    return {
        "online": bool(spec["online"]),
        "store": redact_url(store.settings.online_url),
        "retention": retention.for_view(obj.name).describe(ttl_us=spec["ttl_us"], windows=windows),
        "retention_setting": retention.key_for(obj.name),
        "served_from_version": head if pinned is None else pinned,
        "pending_definition": pinned is not None and pinned != head,
    }


def describe(store: FeatureStore, name: str, *, group: str | None = None) -> dict[str, Any]:
    """Everything the catalog knows about ``name``: its definition at the registry
    head, metadata, revisions, lineage and, for a feature view, its offline table,
    its online state and its last materialization."""
    head = store.registry.head(fresh=True)
    plan = store.registry.snapshot(head).plan if head else RepoPlan(store.project, ())
    obj = find(plan, name, group=group)
    e = entry(obj)
    definition = {k: v for k, v in obj.spec.items() if k != "metadata"}
    revisions = store.registry.object_history(obj.kind, obj.name)
    out: dict[str, Any] = {
        **e.to_dict(),
        "registry_version": head,
        "hash": obj.hash,
        "changed_in_versions": [r["registry_version"] for r in revisions],
        "definition": definition,
        "lineage": lineage(plan, obj),
    }
    if obj.kind == "feature_view":
        out["offline"] = offline_table(store.offline, obj.name)
        out["offline"]["retention"] = _offline_retention(store, obj.name)
        out["online"] = _online(store, obj, head)
        mark = store.registry.get_watermark(f"materialize:{obj.name}")
        out["materialized_until"] = None if mark is None else from_us(mark).isoformat()
    return out
