"""Blue/green definition changes: which definition of each view serves online.

A change to a view's transform, source, features or aggregations gives it a new
derivation, and with it a new online schema id: the records of the old derivation stay
where they are, and the new ones do not exist until something materializes them.
Serving the head's definition at once would answer MISSING for every entity (issue 16).

So ``apply`` pins such a view to the registry version it came from, in the same
transaction (``Registry.apply(keep_serving=...)``): online lookups keep reading the old
derivation's records while ``materialize`` (or the stream) fills the new ones; a full
materialization of the view promotes it (or ``featurestore promote VIEW`` does), and
from then on lookups read the new records. ``featurestore gc`` later deletes the
records no served derivation reads. Training always uses the head's definition.

A pin is only taken when the old derivation can answer for the new definition: the
view serves the same feature names and dtypes. A change of the served schema (a new
feature, a new dtype) switches at once, as before.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

from featurestore.compile.plan import RepoPlan
from featurestore.compile.views import FeatureViewPlan, PlanIndex
from featurestore.stores.online.base import OnlineViewSchema
from featurestore.stores.view_specs import derivation_hash, online_schema, served_schema


def _same_served_schema(a: FeatureViewPlan, b: FeatureViewPlan) -> bool:
    sa, sb = served_schema("_", a), served_schema("_", b)
    return (sa.join_keys, sa.key_dtypes, sa.features, sa.feature_dtypes) == (
        sb.join_keys,
        sb.key_dtypes,
        sb.features,
        sb.feature_dtypes,
    )


def can_serve_old(before: FeatureViewPlan, after: FeatureViewPlan) -> bool:
    """Whether ``after`` should keep being served from ``before``'s records: both
    online, a new derivation, the same served features and dtypes."""
    return (
        before.online
        and after.online
        and derivation_hash(before) != derivation_hash(after)
        and _same_served_schema(before, after)
    )


def keep_serving(old: RepoPlan, new: RepoPlan) -> list[str]:
    """The views of ``new`` that stay served from ``old``'s definition after an apply."""
    before, after = PlanIndex(old).views, PlanIndex(new).views
    return sorted(
        name for name, view in after.items() if name in before and can_serve_old(before[name], view)
    )


def serving_index(
    index: PlanIndex,
    *,
    version: int,
    pins: Mapping[str, int],
    index_at: Callable[[int], PlanIndex],
) -> PlanIndex:
    """``index`` (the registry at ``version``) with every pinned view replaced by its
    definition at the pinned version. The index is copied, never changed: training
    keeps reading the head's definitions from the original."""
    swaps: dict[str, FeatureViewPlan] = {}
    for name, at in pins.items():
        current = index.views.get(name)
        if current is None or at >= version:
            continue
        old = index_at(at).views.get(name)
        if old is not None and can_serve_old(old, current):
            swaps[name] = old
    if not swaps:
        return index
    served = copy.copy(index)
    served.views = {**index.views, **swaps}
    return served


def served_pins(
    index: PlanIndex, pins: Mapping[str, int], version: int
) -> tuple[tuple[str, int], ...]:
    """The pins that change what ``index`` serves, as a hashable cache key."""
    return tuple(sorted((v, at) for v, at in pins.items() if v in index.views and at < version))


def unserved_schemas(
    *,
    project: str,
    versions: Sequence[tuple[int, float]],
    index_at: Callable[[int], PlanIndex],
    pins: Mapping[str, int],
    now_s: float,
    grace_s: float,
) -> list[OnlineViewSchema]:
    """Online schemas no served definition reads any more, replaced more than
    ``grace_s`` ago: what ``featurestore gc`` deletes. ``versions`` are the registry's
    (version, applied at in seconds), oldest first; the last one is the head."""
    if not versions:
        return []
    head = versions[-1][0]
    served: set[str] = set()
    head_index = index_at(head)
    for view in serving_index(
        head_index, version=head, pins=pins, index_at=index_at
    ).views.values():
        served.add(online_schema(project, view).schema_id)
    # schema id -> (schema, when a later version stopped using it)
    seen: dict[str, OnlineViewSchema] = {}
    replaced_at: dict[str, float] = {}
    previous: dict[str, str] = {}
    for version, applied_s in versions:
        current: dict[str, str] = {}
        for name, view in index_at(version).views.items():
            if not view.online:
                continue
            schema = online_schema(project, view)
            seen.setdefault(schema.schema_id, schema)
            current[name] = schema.schema_id
        for name, schema_id in previous.items():
            if current.get(name) != schema_id:
                replaced_at.setdefault(schema_id, applied_s)
        for schema_id in current.values():
            replaced_at.pop(schema_id, None)  # in use again (a rollback)
        previous = current
    return [
        seen[sid]
        for sid, at in sorted(replaced_at.items())
        if sid not in served and now_s - at >= grace_s
    ]
