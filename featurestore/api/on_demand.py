"""On-demand features: request-time transforms, run by the SAME code online and in
training. ``run_on_demand`` is the only place an on-demand transform executes."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from featurestore._dtypes import to_polars
from featurestore.compile.expr import expr_from_spec
from featurestore.compile.plan import ObjectPlan
from featurestore.compile.views import FeatureRef, PlanIndex
from featurestore.errors import DataError, DefinitionError, RequestError


@dataclass(frozen=True)
class OnDemandPlan:
    """One on-demand view, ready to run."""

    name: str
    outputs: tuple[tuple[str, str], ...]
    request_fields: tuple[str, ...]
    inputs: tuple[FeatureRef, ...]
    transform: Callable[[pl.DataFrame], pl.DataFrame]


def _python_function(spec: Mapping[str, Any], *, repo: Path, obj: str) -> Callable[..., Any]:
    module_name, qualname = spec["module"], spec["qualname"]
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise DefinitionError(
            f"cannot load the transform function {module_name}.{qualname}: {exc}",
            obj=obj,
            hint="run from the feature repo that defines it",
        ) from exc
    source = inspect.getsource(target)
    if hashlib.sha256(source.encode()).hexdigest()[:16] != spec["source_sha256"]:
        raise DefinitionError(
            "the transform function changed since it was applied",
            obj=obj,
            hint="run `featurestore apply` so the registry records the new version",
        )
    return target  # type: ignore[no-any-return]


def compile_on_demand(plan: ObjectPlan, index: PlanIndex, *, repo: Path) -> OnDemandPlan:
    spec = plan.spec
    obj = f"on-demand view {plan.name!r}"
    request_fields = tuple(
        f["name"] for i in spec["inputs"] if i["type"] == "request" for f in i["schema"]
    )
    views = [i["name"] for i in spec["inputs"] if i["type"] == "feature_view"]
    outputs = tuple((o["name"], o["dtype"]) for o in spec["outputs"])
    transform = spec["transform"]
    if transform["type"] == "polars":
        exprs = {e["name"]: expr_from_spec(e["expr"]) for e in transform["exprs"]}
        used = {name for e in exprs.values() for name in e.meta.root_names()}

        def run(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.select(**exprs)
    else:
        fn = _python_function(transform, repo=repo, obj=obj)
        used = None

        def run(frame: pl.DataFrame) -> pl.DataFrame:
            out = fn(frame)
            if not isinstance(out, pl.DataFrame):
                raise DataError(
                    "the transform function must return a Polars DataFrame",
                    obj=obj,
                    value=type(out).__name__,
                )
            return out

    inputs: list[FeatureRef] = []
    for name in views:
        view = index.view(name)
        for feat in view.features:
            if used is None or feat in used:
                inputs.append(FeatureRef(name, feat))
    return OnDemandPlan(plan.name, outputs, request_fields, tuple(inputs), run)


def run_on_demand(plan: OnDemandPlan, frame: pl.DataFrame) -> pl.DataFrame:
    """The outputs of ``plan`` for every row of ``frame`` (request fields and input
    features as columns, by name), cast to their declared dtypes."""
    missing = [f for f in plan.request_fields if f not in frame.columns]
    if missing:
        raise RequestError(
            "request data is missing fields",
            obj=f"on-demand view {plan.name!r}",
            field="request_data",
            value=missing,
            hint=f"send {list(plan.request_fields)} with the request",
        )
    try:
        out = plan.transform(frame)
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise DataError(
            f"on-demand transform failed: {exc}", obj=f"on-demand view {plan.name!r}"
        ) from exc
    names = [n for n, _ in plan.outputs]
    absent = [n for n in names if n not in out.columns]
    if absent:
        raise DataError(
            "the transform did not produce every declared output",
            obj=f"on-demand view {plan.name!r}",
            value=absent,
        )
    return out.select(pl.col(n).cast(to_polars(d)) for n, d in plan.outputs)
