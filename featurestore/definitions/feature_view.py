"""FeatureView, Aggregation and OnDemandFeatureView."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, get_args

from featurestore._time import parse_duration_us
from featurestore.definitions._base import Metadata, Problems
from featurestore.definitions.entity import Entity
from featurestore.definitions.field import Field, as_fields, check_classification
from featurestore.definitions.sources import BatchSource, KafkaSource, RequestSource

AggregationFunction = Literal[
    "count", "sum", "mean", "min", "max", "first", "last", "stddev", "count_distinct"
]
AGGREGATION_FUNCTIONS: tuple[str, ...] = get_args(AggregationFunction)


def _is_expr(value: Any) -> bool:
    # Duck-typed so that defining features does not import Polars.
    return type(value).__name__ == "Expr" and type(value).__module__.startswith("polars")


def _duration(value: Any, problems: Problems, *, what: str) -> int | None:
    """Microseconds of a positive duration; ``None`` for None/"lifetime"."""
    if value is None or (isinstance(value, str) and value.lower() == "lifetime"):
        return None
    try:
        us = parse_duration_us(value)
    except ValueError as exc:
        problems.add(str(exc), field=what, value=value)
        return None
    if us <= 0:
        problems.add(
            "must be a positive duration",
            field=what,
            value=value,
            hint="e.g. '1h', '7d' or timedelta(days=1)",
        )
        return None
    return us


@dataclass(frozen=True, kw_only=True)
class Aggregation:
    """A windowed aggregation of an event column.

    ``window`` is a duration (``"1h"``, ``"7d"``, a ``timedelta``) or ``"lifetime"``;
    ``hop`` (optional) tiles time: the query time is floored to a multiple of it.
    ``column=None`` with ``function="count"`` counts events. ``classification``
    defaults to the strictest class of what it reads; a lower one needs
    ``classification_reason``.

    >>> Aggregation(name="trips_1h", column="fare", function="sum", window="1h").window_us
    3600000000
    """

    name: str
    column: Any
    function: AggregationFunction
    window: str | timedelta | int | None
    hop: str | timedelta | int | None = None
    classification: str | None = None
    classification_reason: str = ""

    def __post_init__(self) -> None:
        problems = Problems("Aggregation", self.name)
        problems.name(self.name)
        check_classification(self.classification, problems)
        if self.function not in AGGREGATION_FUNCTIONS:
            problems.add(
                "unknown function",
                field="function",
                value=self.function,
                hint=f"use one of {', '.join(AGGREGATION_FUNCTIONS)}",
            )
        if self.column is None and self.function != "count":
            problems.add("needs a column", field="column", hint="only count() may omit the column")
        if self.column is not None and not (isinstance(self.column, str) or _is_expr(self.column)):
            problems.add(
                "must be a column name or a Polars expression", field="column", value=self.column
            )
        window_us = _duration(self.window, problems, what="window")
        hop_us = _duration(self.hop, problems, what="hop")
        if window_us is not None and hop_us is not None and hop_us > window_us:
            problems.add("hop must not exceed the window", field="hop", value=self.hop)
        object.__setattr__(self, "_window_us", window_us)
        object.__setattr__(self, "_hop_us", hop_us)
        object.__setattr__(self, "_problems", tuple(problems.items))

    @property
    def problems(self) -> tuple[Any, ...]:
        return getattr(self, "_problems", ())

    @property
    def window_us(self) -> int | None:
        """The window in microseconds, ``None`` for lifetime."""
        return self._window_us  # type: ignore[attr-defined,no-any-return]

    @property
    def hop_us(self) -> int | None:
        return self._hop_us  # type: ignore[attr-defined,no-any-return]


@dataclass(frozen=True, kw_only=True)
class FeatureView(Metadata):
    """Features of one or more entities, computed from one source.

    - ``fields``: the features, as source columns or columns made by ``transform``.
    - ``transform``: row transforms, ``{output_column: polars_expression}``, evaluated
      on each source row before anything else (the same code in batch and stream).
    - ``aggregations``: windowed aggregations over the (transformed) events; when
      given, they are the view's features.
    - ``ttl``: how long a value stays valid; ``None`` means forever.
    - ``classification``: the default class of its features (else the project's).
    """

    name: str
    entities: Sequence[Entity]
    source: BatchSource | KafkaSource
    ttl: str | timedelta | int | None
    fields: Any = ()
    transform: Mapping[str, Any] | None = None
    aggregations: Sequence[Aggregation] = ()
    online: bool = True
    classification: str | None = None

    def __post_init__(self) -> None:
        problems = Problems("FeatureView", self.name)
        problems.name(self.name)
        check_classification(self.classification, problems)
        entities = tuple(self.entities) if isinstance(self.entities, list | tuple) else ()
        if not entities or not all(isinstance(e, Entity) for e in entities):
            problems.add(
                "must be a non-empty list of Entity", field="entities", value=self.entities
            )
            entities = tuple(e for e in entities if isinstance(e, Entity))
        if not isinstance(self.source, BatchSource | KafkaSource):
            problems.add("must be a BatchSource or KafkaSource", field="source", value=self.source)
        if self.ttl is None:
            ttl_us = None
        else:
            ttl_us = _duration(self.ttl, problems, what="ttl")
        fields = as_fields(self.fields, problems, what="fields")
        transform = dict(self.transform or {})
        for out, expr in transform.items():
            problems.name(out, what=f"transform[{out!r}]")
            if not _is_expr(expr):
                problems.add(
                    "must be a Polars expression",
                    field=f"transform[{out!r}]",
                    value=expr,
                    hint='e.g. transform={"fare_per_km": pl.col("fare") / pl.col("km")}',
                )
        aggs = tuple(self.aggregations)
        for agg in aggs:
            if not isinstance(agg, Aggregation):
                problems.add("must be a list of Aggregation", field="aggregations", value=agg)
                continue
            for p in agg.problems:
                problems.add(
                    p.message,
                    field=f"aggregations[{agg.name!r}].{p.field}",
                    value=p.value,
                    hint=p.hint,
                )
        aggs = tuple(a for a in aggs if isinstance(a, Aggregation))
        if not fields and not aggs:
            problems.add(
                "declares no features",
                field="fields",
                hint="give fields=[Field(...)] or aggregations=[Aggregation(...)]",
            )
        object.__setattr__(self, "entities", entities)
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "transform", transform)
        object.__setattr__(self, "aggregations", aggs)
        object.__setattr__(self, "_ttl_us", ttl_us)
        self._finish(problems)

    @property
    def ttl_us(self) -> int | None:
        return self._ttl_us  # type: ignore[attr-defined,no-any-return]

    @property
    def join_keys(self) -> tuple[Field, ...]:
        return tuple(k for e in self.entities for k in e.keys)

    @property
    def feature_names(self) -> tuple[str, ...]:
        if self.aggregations:
            return tuple(a.name for a in self.aggregations)
        return tuple(f.name for f in self.fields)


@dataclass(frozen=True, kw_only=True)
class OnDemandFeatureView(Metadata):
    """Features computed at request time from request data and looked-up features.

    ``inputs`` are ``RequestSource``s and ``FeatureView``s; the transform sees one
    column per request field and per input feature (by feature name). ``transform``
    is either ``{output: polars_expression}`` (vectorised) or a Python function
    ``f(pl.DataFrame) -> pl.DataFrame`` returning the output columns. The very same
    code runs online and in training. An output inherits the strictest class of
    the inputs it reads unless its ``Field`` declares a lower one with a reason.
    """

    name: str
    inputs: Sequence[RequestSource | FeatureView]
    outputs: Any
    transform: Mapping[str, Any] | Callable[..., Any]
    classification: str | None = None

    def __post_init__(self) -> None:
        problems = Problems("OnDemandFeatureView", self.name)
        problems.name(self.name)
        check_classification(self.classification, problems)
        inputs = tuple(self.inputs) if isinstance(self.inputs, list | tuple) else ()
        if not inputs or not all(isinstance(i, RequestSource | FeatureView) for i in inputs):
            problems.add(
                "must be a non-empty list of RequestSource or FeatureView",
                field="inputs",
                value=self.inputs,
            )
            inputs = tuple(i for i in inputs if isinstance(i, RequestSource | FeatureView))
        outputs = as_fields(self.outputs, problems, what="outputs")
        if not outputs:
            problems.add("declares no outputs", field="outputs")
        transform: Mapping[str, Any] | Callable[..., Any]
        if isinstance(self.transform, Mapping):
            transform = dict(self.transform)
            for out, expr in transform.items():
                if not _is_expr(expr):
                    problems.add(
                        "must be a Polars expression", field=f"transform[{out!r}]", value=expr
                    )
            missing = sorted({f.name for f in outputs} - set(transform))
            if missing:
                problems.add(
                    "declared outputs have no expression", field="transform", value=missing
                )
        elif callable(self.transform):
            transform = self.transform
        else:
            problems.add(
                "must be a mapping of Polars expressions or a function",
                field="transform",
                value=self.transform,
            )
            transform = {}
        object.__setattr__(self, "inputs", inputs)
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "transform", transform)
        self._finish(problems)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.outputs)


@dataclass(frozen=True, kw_only=True)
class FeatureService(Metadata):
    """A named set of features a model uses: ``"view:feature"`` references, or whole
    views (every feature of the view).

    >>> FeatureService(name="svc", features=["driver_stats:conv_rate"]).features
    ('driver_stats:conv_rate',)
    """

    name: str
    features: Sequence[str | FeatureView | OnDemandFeatureView] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        problems = Problems("FeatureService", self.name)
        problems.name(self.name)
        refs: list[str] = []
        items = self.features if isinstance(self.features, list | tuple) else ()
        if not items:
            problems.add("must list at least one feature", field="features", value=self.features)
        for item in items:
            if isinstance(item, FeatureView | OnDemandFeatureView):
                refs.extend(f"{item.name}:{f}" for f in item.feature_names)
            elif isinstance(item, str) and item.count(":") == 1 and all(item.split(":")):
                refs.append(item)
            else:
                problems.add(
                    "is not a feature reference",
                    field="features",
                    value=item,
                    hint="use 'view_name:feature_name' or a FeatureView object",
                )
        object.__setattr__(self, "features", tuple(refs))
        self._finish(problems)

    @property
    def refs(self) -> tuple[str, ...]:
        """The feature references, ``"view:feature"``, views expanded."""
        return tuple(str(r) for r in self.features)
