"""Each feature's data class, in the plan: declared, defaulted or inherited.

A feature declared with ``classification=`` has that class. Otherwise it takes
the default (the view's ``classification``, else the project's), raised to the
strictest class of the columns it reads when it is derived: a row transform, an
aggregation or an on-demand output. A derived feature may be declared *lower*
than what it reads (a hash of an e-mail, a count over many users) only with a
``classification_reason``; the plan records the inherited class and the reason
next to the declared one, so ``plan`` shows the lowering and its why.

What a derived feature reads is found from its Polars expressions
(``meta.root_names``); a Python on-demand function reads every input. Source
columns that are not declared as fields carry no class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from featurestore._classification import DEFAULT_CLASSIFICATION, lower, strictest
from featurestore.definitions import FeatureView, Field, OnDemandFeatureView, RequestSource

# (field path, message, value, hint) of one problem, reported by the compiler
Problem = tuple[str, str, Any, str]


def _roots(expr: Any) -> list[str]:
    try:
        return [str(n) for n in expr.meta.root_names()]
    except Exception:  # not an expression we can read: it reads nothing we know of
        return []


def _entry(
    declared: str | None,
    reason: str,
    inherited: str | None,
    inputs: Iterable[str],
    default: str,
    *,
    where: str,
    problems: list[Problem],
) -> dict[str, Any]:
    inputs = sorted(set(inputs))
    if declared is None:
        if inherited is None:
            return {"class": default, "origin": "default"}
        return {
            "class": strictest([inherited, default]),
            "origin": "inherited",
            "inputs": inputs,
        }
    entry: dict[str, Any] = {"class": declared, "origin": "declared"}
    if inherited is not None and lower(declared, inherited):
        if not reason.strip():
            problems.append(
                (
                    f"{where}.classification",
                    f"is declared {declared!r}, lower than {inherited!r} of what it reads "
                    f"({', '.join(inputs)})",
                    declared,
                    "give classification_reason='why it is safe' (hashed, aggregated over "
                    "many entities...) or declare the inherited class",
                )
            )
        entry.update(inherited=inherited, inputs=inputs, reason=reason.strip())
    return entry


class Classifier:
    """Classifies the features of each view; on-demand views read the classes of
    the views compiled before them (the compiler compiles views first)."""

    def __init__(self, project_default: str | None = None) -> None:
        self.project_default = project_default or DEFAULT_CLASSIFICATION
        self.view_classes: dict[str, dict[str, str]] = {}

    def feature_view(self, fv: FeatureView) -> tuple[dict[str, Any], list[Problem]]:
        default = fv.classification or self.project_default
        fields: dict[str, Field] = {f.name: f for f in fv.fields}
        transform = dict(fv.transform or {})
        problems: list[Problem] = []
        memo: dict[str, tuple[str | None, set[str]]] = {}

        def column_class(name: str, seen: frozenset[str]) -> tuple[str | None, set[str]]:
            """The class a column carries into what reads it, and the declared
            columns it comes from."""
            if name in memo:
                return memo[name]
            f = fields.get(name)
            if f is not None and (f.classification is not None or name not in transform):
                out: tuple[str | None, set[str]] = (f.classification or default, {name})
            elif name in transform and name not in seen:
                out = _read(_roots(transform[name]), seen | {name})
            else:
                out = (None, set())
            memo[name] = out
            return out

        def _read(columns: Iterable[str], seen: frozenset[str]) -> tuple[str | None, set[str]]:
            classes, inputs = [], set()
            for col in columns:
                c, src = column_class(col, seen)
                if c is not None:
                    classes.append(c)
                    inputs |= src
            return strictest(classes), inputs

        features: dict[str, Any] = {}
        if fv.aggregations:
            for agg in fv.aggregations:
                inputs: set[str]
                if agg.column is None:
                    inherited, inputs = None, set()
                elif isinstance(agg.column, str):
                    inherited, inputs = _read([agg.column], frozenset())
                else:
                    inherited, inputs = _read(_roots(agg.column), frozenset())
                features[agg.name] = _entry(
                    agg.classification,
                    agg.classification_reason,
                    inherited,
                    inputs,
                    default,
                    where=f"aggregations[{agg.name!r}]",
                    problems=problems,
                )
        else:
            for f in fv.fields:
                if f.name in transform:
                    inherited, inputs = _read(_roots(transform[f.name]), frozenset({f.name}))
                else:
                    inherited, inputs = None, set()
                features[f.name] = _entry(
                    f.classification,
                    f.classification_reason,
                    inherited,
                    inputs,
                    default,
                    where=f"fields[{f.name!r}]",
                    problems=problems,
                )
        self.view_classes[fv.name] = {n: e["class"] for n, e in features.items()}
        return {"default": default, "features": features}, problems

    def on_demand(self, odfv: OnDemandFeatureView) -> tuple[dict[str, Any], list[Problem]]:
        default = odfv.classification or self.project_default
        known: dict[str, tuple[str, str]] = {}  # column -> (class, "view:feature" or field)
        for item in odfv.inputs:
            if isinstance(item, RequestSource):
                for f in item.fields:
                    if f.classification is not None:
                        known[f.name] = (f.classification, f"{item.name}.{f.name}")
            else:
                for name, c in self.view_classes.get(item.name, {}).items():
                    known[name] = (c, f"{item.name}:{name}")
        problems: list[Problem] = []
        features: dict[str, Any] = {}
        exprs: Mapping[str, Any] = odfv.transform if isinstance(odfv.transform, Mapping) else {}
        for f in odfv.outputs:
            reads = _roots(exprs[f.name]) if f.name in exprs else list(known)
            hits = [known[c] for c in reads if c in known]
            features[f.name] = _entry(
                f.classification,
                f.classification_reason,
                strictest(c for c, _ in hits),
                (src for _, src in hits),
                default,
                where=f"outputs[{f.name!r}]",
                problems=problems,
            )
        return {"default": default, "features": features}, problems


def classes_of(spec: Mapping[str, Any]) -> dict[str, str]:
    """Feature name -> class from a compiled view spec (``{}`` for a plan compiled
    before classes existed: its features count as the default)."""
    block = spec.get("classification") or {}
    return {str(n): str(e["class"]) for n, e in (block.get("features") or {}).items()}


def default_of(spec: Mapping[str, Any]) -> str:
    block = spec.get("classification") or {}
    return str(block.get("default") or DEFAULT_CLASSIFICATION)
