"""On-demand features: request-time transforms, run by the SAME code online and in
training. ``run_on_demand`` is the only place an on-demand transform executes."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from featurestore._dtypes import FLOATS, INTEGERS, is_list, list_inner, to_polars
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
    request_dtypes: tuple[str, ...] = ()  # aligned with request_fields


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
    request_schema = [f for i in spec["inputs"] if i["type"] == "request" for f in i["schema"]]
    request_fields = tuple(f["name"] for f in request_schema)
    request_dtypes = tuple(f["dtype"] for f in request_schema)
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
    return OnDemandPlan(plan.name, outputs, request_fields, tuple(inputs), run, request_dtypes)


def check_request_data(
    plan: OnDemandPlan, request_data: Mapping[str, Sequence[Any]], n: int
) -> dict[str, pl.Series]:
    """The request fields of ``plan`` as typed columns, checked value by value
    against their declared dtypes before any work (a 4xx naming the field, not a
    failed cast deep in a transform)."""
    import polars as pl

    missing = [f for f in plan.request_fields if f not in request_data]
    if missing:
        raise RequestError(
            "request data is missing fields",
            obj=f"on-demand view {plan.name!r}",
            field="request_data",
            value=missing,
            hint=f"send {list(plan.request_fields)} with the request",
        )
    out = {}
    for name, dtype in zip(plan.request_fields, plan.request_dtypes, strict=True):
        column = request_data[name]
        if len(column) != n:
            raise RequestError(
                f"request data has {len(column)} values, not one per entity ({n})",
                obj=f"on-demand view {plan.name!r}",
                field=f"request_data.{name}",
            )
        for i, value in enumerate(column):
            if value is not None and not _fits(value, dtype):
                raise RequestError(
                    f"is not a {dtype} value",
                    obj=f"on-demand view {plan.name!r}",
                    field=f"request_data.{name}[{i}]",
                    value=type(value).__name__ if isinstance(value, list | dict) else value,
                    hint=f"the request source declares {name!r} as {dtype}",
                )
        try:
            out[name] = pl.Series(name, list(column), dtype=to_polars(dtype), strict=True)
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as exc:
            raise RequestError(
                f"cannot be read as {dtype}: {exc}",
                obj=f"on-demand view {plan.name!r}",
                field=f"request_data.{name}",
                hint=f"the request source declares {name!r} as {dtype}",
            ) from None
    return out


def _fits(value: Any, dtype: str) -> bool:
    """Whether one request value is a scalar (or flat list) of ``dtype``."""
    if is_list(dtype):
        inner = list_inner(dtype)
        return isinstance(value, list) and all(v is None or _fits(v, inner) for v in value)
    if isinstance(value, list | dict):
        return False
    if dtype == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if dtype in INTEGERS:
        if not isinstance(value, int):
            return False
        bits = int(dtype.removeprefix("u").removeprefix("int"))
        low, high = (
            (0, 2**bits - 1) if dtype.startswith("u") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )
        return low <= value <= high
    if dtype in FLOATS:
        return isinstance(value, int | float)
    if dtype == "string":
        return isinstance(value, str)
    return isinstance(value, str | int)  # date, datetime: left to the typed column


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
