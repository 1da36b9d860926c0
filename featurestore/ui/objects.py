"""Pages of the other objects (entity, source, service) and of a saved dataset."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from featurestore.api.catalog import GROUPS, describe
from featurestore.errors import RequestError, UnknownFeatureError
from featurestore.ui.access import Visibility
from featurestore.ui.catalog_data import columns, head_plan, object_url
from featurestore.ui.view_data import known

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore

_GROUP_OF = {kind: group for group, kinds in GROUPS.items() for kind in kinds}


def object_page(store: FeatureStore, vis: Visibility, kind: str, name: str) -> dict[str, Any]:
    group = _GROUP_OF.get(kind)
    if group is None:
        raise UnknownFeatureError(
            "is not a kind of object",
            obj=f"kind {kind!r}",
            hint=f"use one of: {', '.join(sorted(_GROUP_OF))}",
        )
    known(store, vis, name, group=group)
    info = describe(store, name, group=group)
    info["lineage"] = {
        k: [
            {"text": x, "url": object_url(*x.split(" ", 1))}
            for x in v
            if vis.sees(*x.split(" ", 1))
        ]
        for k, v in info["lineage"].items()
    }
    _, plan = head_plan(store)
    obj = plan.get(info["kind"], name)  # type: ignore[arg-type]
    info["columns"] = columns(obj) if obj is not None else []
    return info


def dataset_page(store: FeatureStore, vis: Visibility, name: str) -> dict[str, Any]:
    from featurestore.api.training import load_lineage

    try:
        lineage = load_lineage(name, offline=store.offline)
    except RequestError as exc:
        raise UnknownFeatureError(exc.message, obj=exc.obj, hint=exc.hint) from None
    if not all(vis.sees_ref(ref) for ref in lineage.features):
        raise UnknownFeatureError(
            "no saved dataset of this name",
            obj=f"dataset {name!r}",
            hint="the lineage page lists the datasets this API key may see",
        )
    views = list(dict.fromkeys(ref.split(":")[0] for ref in lineage.features))
    return {
        "name": name,
        "lineage": asdict(lineage),
        "views": [{"name": v, "url": f"/ui/views/{v}"} for v in views],
        "rebuild": f"featurestore dataset rebuild {name}",
    }
