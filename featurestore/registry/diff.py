"""Field-by-field differences between two plans, and what they mean for stored data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from featurestore._classification import lower
from featurestore.compile.plan import ObjectPlan, RepoPlan

Action = Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class ObjectChange:
    kind: str
    name: str
    action: Action
    changes: tuple[FieldChange, ...] = ()
    impacts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "changes": [c.to_dict() for c in self.changes],
            "impacts": list(self.impacts),
        }


@dataclass(frozen=True)
class PlanDiff:
    base_version: int
    objects: tuple[ObjectChange, ...] = field(default_factory=tuple)
    # changes that need an approver (``apply --approved-by``): see ``_high_impact``
    high_impact: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.objects

    @property
    def impacts(self) -> list[str]:
        return [f"{o.kind} {o.name}: {i}" for o in self.objects for i in o.impacts]

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_version": self.base_version,
            "empty": self.empty,
            "objects": [o.to_dict() for o in self.objects],
            "high_impact": list(self.high_impact),
        }


def _keyed(items: list[Any]) -> dict[str, Any] | None:
    """Lists of {"name": ...} dicts compare by name, not by position."""
    if items and all(isinstance(i, Mapping) and "name" in i for i in items):
        names = [i["name"] for i in items]
        if len(set(names)) == len(names):
            return {str(n): i for n, i in zip(names, items, strict=True)}
    return None


def diff_values(old: Any, new: Any, path: str = "") -> list[FieldChange]:
    if old == new:
        return []
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        if set(old) == {"repr", "json"} and set(new) == {"repr", "json"}:
            # a Polars expression: show the readable form, not its JSON tree
            return [FieldChange(path, old["repr"], new["repr"])]
        out: list[FieldChange] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(FieldChange(sub, None, new[key]))
            elif key not in new:
                out.append(FieldChange(sub, old[key], None))
            else:
                out.extend(diff_values(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list):
        ko, kn = _keyed(old), _keyed(new)
        if ko is not None and kn is not None:
            return diff_values(ko, kn, path)
    return [FieldChange(path, old, new)]


# What serving does meanwhile (api/serving.py): only for changes that keep the served
# features, which is what a transform or aggregation change alone does.
_BLUE_GREEN = (
    "online: served from the current definition until `featurestore backfill` and "
    "`featurestore materialize` fill the new records, then switched (or `featurestore "
    "promote VIEW`); `featurestore gc` removes the old records later"
)


def _lowered(changes: list[FieldChange]) -> list[tuple[str, str, str]]:
    """(feature, old class, new class) of every feature whose class went down."""
    out = []
    for c in changes:
        parts = c.path.split(".")
        if (
            len(parts) == 4
            and parts[0] == "classification"
            and parts[1] == "features"
            and parts[3] == "class"
            and isinstance(c.old, str)
            and isinstance(c.new, str)
            and lower(c.new, c.old)
        ):
            out.append((parts[2], c.old, c.new))
    return out


def _impacts(kind: str, changes: list[FieldChange]) -> list[str]:
    out: list[str] = [
        f"classification lowered ({feat}: {old} -> {new}): needs an approver"
        for feat, old, new in _lowered(changes)
    ]
    if kind != "feature_view":
        return out
    for c in changes:
        top = c.path.split(".")[0]
        if top in ("join_keys", "entities"):
            out.append(f"entity/key change ({c.path}): needs backfill and re-materialization")
        elif top == "features" and c.path.endswith(".dtype"):
            out.append(
                f"dtype change ({c.path}: {c.old} -> {c.new}): "
                "needs backfill and re-materialization"
            )
        elif top == "features" and c.new is None:
            out.append(f"feature removed ({c.path}): consumers of it will break")
        elif top == "transform":
            out.append(f"transform change ({c.path}): needs backfill and re-materialization")
            out.append(_BLUE_GREEN)
        elif top == "aggregations":
            out.append(f"aggregation change ({c.path}): needs backfill and re-materialization")
            out.append(_BLUE_GREEN)
        elif top == "source":
            out.append(f"source change ({c.path}): needs backfill")
        elif top == "ttl_us" and c.new is not None and (c.old is None or c.new < c.old):
            out.append("TTL shrink: online values may now read as expired; training data changes")
    return list(dict.fromkeys(out))


def _served(plan: RepoPlan | None) -> set[str]:
    """The "view:feature" references some feature service of ``plan`` uses."""
    if plan is None:
        return set()
    return {str(r) for s in plan.of_kind("feature_service") for r in s.spec.get("features", ())}


def _high_impact(change: ObjectChange, old: ObjectPlan | None, served: set[str]) -> list[str]:
    """Why ``change`` needs an approver: a class lowered; a feature a service uses
    removed or retyped; the TTL or a window of an online view changed; a source
    changed."""
    out = [f"{change.kind} {change.name}: {i}" for i in change.impacts if "lowered" in i]
    if change.kind != "feature_view" or old is None:
        return out
    what = f"feature view {change.name}"
    if change.action == "removed":
        used = sorted(r for r in served if r.split(":")[0] == change.name)
        if used:
            out.append(f"{what} removed while feature services use {', '.join(used)}")
        return out
    online = bool(old.spec.get("online"))
    for c in change.changes:
        parts = c.path.split(".")
        top = parts[0]
        if top in ("features", "aggregations") and len(parts) >= 2:
            ref = f"{change.name}:{parts[1]}"
            gone = len(parts) == 2 and c.new is None
            if ref in served and (gone or parts[-1] == "dtype"):
                verb = "removed" if gone else f"retyped ({c.old} -> {c.new})"
                out.append(f"{what}: feature {ref} {verb} while a feature service uses it")
            if online and top == "aggregations" and parts[-1] in ("window_us", "hop_us"):
                out.append(f"{what}: window changed on a served view ({c.path})")
        elif top == "ttl_us" and online:
            out.append(f"{what}: TTL changed on a served view ({c.old} -> {c.new} us)")
        elif top == "source":
            out.append(f"{what}: source changed ({c.path})")
    return list(dict.fromkeys(out))


def diff_plans(old: RepoPlan | None, new: RepoPlan, *, base_version: int) -> PlanDiff:
    before: dict[tuple[str, str], ObjectPlan] = old.by_key() if old else {}
    after = new.by_key()
    out: list[ObjectChange] = []
    served = _served(old)
    high: list[str] = []
    for key in sorted(set(before) | set(after)):
        kind, name = key
        if key not in before:
            out.append(ObjectChange(kind, name, "added"))
        elif key not in after:
            impacts = (
                ("removed: its offline and online data stay until cleaned up",)
                if kind == "feature_view"
                else ()
            )
            out.append(ObjectChange(kind, name, "removed", impacts=impacts))
            high.extend(_high_impact(out[-1], before[key], served))
        elif before[key].hash != after[key].hash:
            changes = diff_values(dict(before[key].spec), dict(after[key].spec))
            out.append(
                ObjectChange(kind, name, "changed", tuple(changes), tuple(_impacts(kind, changes)))
            )
            high.extend(_high_impact(out[-1], before[key], served))
    return PlanDiff(base_version=base_version, objects=tuple(out), high_impact=tuple(high))
