"""Definitions -> validated ``RepoPlan``. Every problem is collected, none is fatal
until the end, so a user sees all of them at once with file, object and field."""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurestore._dtypes import INTEGERS, compatible, from_polars, to_polars
from featurestore.compile.classification import Classifier, Problem
from featurestore.compile.columns import key_name_problem, view_column_problems
from featurestore.compile.discover import Found, discover
from featurestore.compile.expr import expr_to_spec, output_schema
from featurestore.compile.plan import Kind, ObjectPlan, RepoPlan
from featurestore.compile.sources import is_local_file, read_source_schema, resolve
from featurestore.definitions import (
    BatchSource,
    Entity,
    FeatureService,
    FeatureView,
    KafkaSource,
    OnDemandFeatureView,
    RequestSource,
)
from featurestore.errors import DataError, DefinitionError, DefinitionErrors

_KIND_OF: dict[type, Kind] = {
    Entity: "entity",
    BatchSource: "batch_source",
    KafkaSource: "kafka_source",
    RequestSource: "request_source",
    FeatureView: "feature_view",
    OnDemandFeatureView: "on_demand_feature_view",
    FeatureService: "feature_service",
}


@dataclass
class CompileResult:
    plan: RepoPlan
    warnings: list[str] = field(default_factory=list)


def _fields(fields: Any) -> list[dict[str, str]]:
    return [{"name": f.name, "dtype": f.dtype} for f in fields]


def batch_source_spec(src: BatchSource) -> dict[str, Any]:
    return {
        "type": "batch",
        "name": src.name,
        "path": src.path,
        "format": src.format,
        "timestamp_field": src.timestamp_field,
        "created_timestamp_field": src.created_timestamp_field,
        "storage_options": dict(src.storage_options),
    }


def source_spec(src: BatchSource | KafkaSource) -> dict[str, Any]:
    if isinstance(src, BatchSource):
        return batch_source_spec(src)
    return {
        "type": "kafka",
        "name": src.name,
        "topic": src.topic,
        "bootstrap_servers": src.bootstrap_servers,
        "value_format": src.value_format,
        "schema": _fields(src.fields),
        "timestamp_field": src.timestamp_field,
        "created_timestamp_field": src.created_timestamp_field,
        "consumer_options": dict(src.consumer_options),
        "batch_source": batch_source_spec(src.batch_source),
    }


def _python_function_spec(fn: Any) -> dict[str, Any]:
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):
        source = repr(fn)
    return {
        "type": "python",
        "module": getattr(fn, "__module__", ""),
        "qualname": getattr(fn, "__qualname__", repr(fn)),
        "source_sha256": hashlib.sha256(source.encode()).hexdigest()[:16],
    }


def aggregation_dtype(function: str, input_dtype: Any) -> str:
    """The output dtype of an aggregation (SEMANTICS: windowed aggregations)."""
    if function in ("count", "count_distinct"):
        return "int64"
    if function in ("mean", "stddev"):
        return "float64"
    try:
        found = from_polars(input_dtype) if input_dtype is not None else "float64"
    except ValueError:
        found = "float64"
    if function == "sum":
        return "int64" if found in INTEGERS or found == "bool" else "float64"
    return found


def _canonical_or_none(dtype: Any) -> str | None:
    try:
        return from_polars(dtype) if dtype is not None else None
    except ValueError:
        return None


class _Compiler:
    def __init__(self, repo: Path, project: str, default_classification: str | None = None) -> None:
        self.repo = repo
        self.project = project
        self.classifier = Classifier(default_classification)
        self.errors: list[DefinitionError] = []
        self.warnings: list[str] = []
        self.files: dict[tuple[str, str], str] = {}
        self.view_dtypes: dict[str, dict[str, str]] = {}
        self.schemas: dict[tuple[str, str, str], dict[str, Any] | None] = {}

    def err(
        self,
        message: str,
        *,
        file: str,
        obj: str,
        field: str | None = None,
        value: Any = None,
        hint: str | None = None,
    ) -> None:
        self.errors.append(
            DefinitionError(message, file=file, obj=obj, field=field, value=value, hint=hint)
        )

    # -- sources ---------------------------------------------------------------
    def read_schema(self, src: BatchSource, *, file: str) -> dict[str, Any] | None:
        """The Polars schema of a batch source, or None when it cannot be read now.

        Read once per source: views sharing a source share the answer (and any error).
        """
        key = (src.name, src.path, str(src.format))
        if key not in self.schemas:
            self.schemas[key] = self._read_schema(src, file=file)
        return self.schemas[key]

    def _read_schema(self, src: BatchSource, *, file: str) -> dict[str, Any] | None:
        try:
            return read_source_schema(batch_source_spec(src), repo=self.repo)
        except DataError as exc:
            if is_local_file(resolve(src.path, self.repo)):
                # There, but not readable (truncated, not Parquet): every backfill would fail.
                self.err(
                    exc.message,
                    file=self.files.get(("batch_source", src.name), file),
                    obj=f"BatchSource {src.name!r}",
                    field="path",
                    value=src.path,
                    hint=exc.hint,
                )
            else:  # not created yet, or not reachable from here (credentials)
                self.warnings.append(f"BatchSource {src.name!r}: schema not checked: {exc.message}")
            return None

    # -- feature views -----------------------------------------------------------
    def feature_view(self, fv: FeatureView, file: str) -> dict[str, Any]:
        obj = f"FeatureView {fv.name!r}"
        src = fv.source
        batch = src if isinstance(src, BatchSource) else src.batch_source
        schema = self.read_schema(batch, file=file)
        read_from_file = schema is not None
        if schema is None and isinstance(src, KafkaSource):
            # The history is not readable now: check against the stream's declared
            # schema; the stream worker stamps created_ts itself when events lack it.
            schema = {f.name: to_polars(f.dtype) for f in src.fields}
            if batch.created_timestamp_field:
                schema.setdefault(batch.created_timestamp_field, to_polars("datetime"))
        transform_specs = [
            {"name": k, "expr": expr_to_spec(v)} for k, v in (fv.transform or {}).items()
        ]
        if schema is not None:
            ts_col = batch.timestamp_field
            for what, col in (
                ("timestamp_field", ts_col),
                ("created_timestamp_field", batch.created_timestamp_field),
            ):
                if col is not None and col not in schema:
                    self.err(
                        f"source has no column {col!r}",
                        file=file,
                        obj=obj,
                        field=f"source.{what}",
                        hint=f"columns: {', '.join(schema)}",
                    )
                elif col is not None and read_from_file:
                    self._check_timestamp(schema[col], file=file, obj=obj, what=what)
            full, expr_errors = output_schema(schema, fv.transform or {})
            for name, text in expr_errors.items():
                self.err(
                    f"row transform is invalid: {text}",
                    file=file,
                    obj=obj,
                    field=f"transform[{name!r}]",
                    value=str((fv.transform or {})[name]),
                    hint="fix the expression; it must use columns of the source",
                )
            for key in fv.join_keys:
                self._check_column(
                    full,
                    key.name,
                    key.dtype,
                    file=file,
                    obj=obj,
                    what=f"entities (join key {key.name!r})",
                )
            for f in fv.fields:
                if f.name in expr_errors:
                    continue  # already reported as a bad transform
                self._check_column(
                    full, f.name, f.dtype, file=file, obj=obj, what=f"fields[{f.name!r}]"
                )
            for agg in fv.aggregations:
                if isinstance(agg.column, str) and agg.column not in full:
                    self.err(
                        f"aggregation column {agg.column!r} is not in the source or transform",
                        file=file,
                        obj=obj,
                        field=f"aggregations[{agg.name!r}].column",
                        hint=f"columns: {', '.join(full)}",
                    )
        full_schema = full if schema is not None else {}
        if fv.aggregations and fv.ttl_us is not None:
            # SEMANTICS: the window alone says which events count, in training and
            # online alike; a TTL would make online values expire where training
            # still has them (a skew the audit could only call unexplained).
            self.err(
                "a TTL does not apply to windowed aggregations",
                file=file,
                obj=obj,
                field="ttl",
                value=fv.ttl,
                hint="give ttl=None; each aggregation's window says which events count, "
                "and [online_store] retention how long records are kept",
            )
        aggs = []
        for agg in fv.aggregations:
            if agg.hop_us and agg.window_us and agg.window_us % agg.hop_us:
                # Online records keep hop-sized tiles; a window that is not a whole
                # number of tiles could not be answered exactly from them.
                self.err(
                    "the hop must divide the window",
                    file=file,
                    obj=obj,
                    field=f"aggregations[{agg.name!r}].hop",
                    value={"window": agg.window, "hop": agg.hop},
                    hint="pick a hop that fits a whole number of times in the window",
                )
            column: Any
            if agg.column is None or isinstance(agg.column, str):
                column = agg.column
                input_dtype = full_schema.get(agg.column) if agg.column else None
            else:
                column = {"expr": expr_to_spec(agg.column)}
                input_dtype = None
            aggs.append(
                {
                    "name": agg.name,
                    "column": column,
                    "function": agg.function,
                    "window_us": agg.window_us,
                    "hop_us": agg.hop_us,
                    "dtype": aggregation_dtype(agg.function, input_dtype),
                    # The stored events keep the column in this dtype (view_specs).
                    "input_dtype": _canonical_or_none(input_dtype),
                }
            )
        self.view_dtypes[fv.name] = (
            {a["name"]: a["dtype"] for a in aggs} if aggs else {f.name: f.dtype for f in fv.fields}
        )
        for ent in fv.entities:
            if ("entity", ent.name) not in self.files:
                self.err(
                    f"uses entity {ent.name!r}, which is not declared at module level",
                    file=file,
                    obj=obj,
                    field="entities",
                    hint="assign the Entity to a module-level name in the repo",
                )
        spec = {
            "entities": [e.name for e in fv.entities],
            "join_keys": _fields(fv.join_keys),
            "source": source_spec(src),
            "ttl_us": fv.ttl_us,
            "features": _fields(fv.fields),
            "transform": transform_specs,
            "aggregations": aggs,
            "online": fv.online,
            "metadata": fv.metadata_dict(),
        }
        spec["classification"], problems = self.classifier.feature_view(fv)
        self._classification_problems(problems, file=file, obj=obj)
        for where, message, hint in view_column_problems(spec):
            self.err(message, file=file, obj=obj, field=where, hint=hint)
        return spec

    def _check_timestamp(self, dtype: Any, *, file: str, obj: str, what: str) -> None:
        """The rule of ``_time.utc_column``, which every backfill applies: a tz-aware
        datetime column (SEMANTICS: Time)."""
        import polars as pl

        if not isinstance(dtype, pl.Datetime):
            self.err(
                f"timestamp column has dtype {dtype}, not a datetime",
                file=file,
                obj=obj,
                field=f"source.{what}",
                hint="store it as a tz-aware datetime (e.g. "
                "pl.col(c).str.to_datetime().dt.replace_time_zone('UTC')) or name another column",
            )
        elif dtype.time_zone is None:
            self.err(
                "timestamp column is naive (no time zone)",
                file=file,
                obj=obj,
                field=f"source.{what}",
                hint="write it with a time zone, e.g. .dt.replace_time_zone('UTC') "
                "if the values are UTC",
            )

    def _check_column(
        self, schema: dict[str, Any], name: str, dtype: str, *, file: str, obj: str, what: str
    ) -> None:
        if name not in schema:
            self.err(
                f"column {name!r} is neither in the source nor made by the transform",
                file=file,
                obj=obj,
                field=what,
                hint=f"columns: {', '.join(schema)}",
            )
            return
        try:
            found = from_polars(schema[name])
        except ValueError:
            found = str(schema[name])
        if not compatible(dtype, found):
            self.err(
                f"declared dtype {dtype} does not match the source dtype {found}",
                file=file,
                obj=obj,
                field=what,
                value=found,
                hint=f"declare it as {found!r} or cast it in the transform",
            )

    # -- the rest ----------------------------------------------------------------
    def on_demand(
        self, odfv: OnDemandFeatureView, file: str, views: dict[str, FeatureView]
    ) -> dict[str, Any]:
        obj = f"OnDemandFeatureView {odfv.name!r}"
        inputs = []
        schema: dict[str, Any] = {}
        for item in odfv.inputs:
            if isinstance(item, RequestSource):
                inputs.append(
                    {"type": "request", "name": item.name, "schema": _fields(item.fields)}
                )
                schema.update({f.name: to_polars(f.dtype) for f in item.fields})
            else:
                if item.name not in views:
                    self.err(
                        f"input view {item.name!r} is not declared at module level",
                        file=file,
                        obj=obj,
                        field="inputs",
                    )
                inputs.append({"type": "feature_view", "name": item.name})
                for fname, dtype in self.view_dtypes.get(item.name, {}).items():
                    schema[fname] = to_polars(dtype)
        if callable(odfv.transform) and not isinstance(odfv.transform, dict):
            transform: Any = _python_function_spec(odfv.transform)
        else:
            assert isinstance(odfv.transform, dict)
            transform = {
                "type": "polars",
                "exprs": [{"name": k, "expr": expr_to_spec(v)} for k, v in odfv.transform.items()],
            }
            out, errors = output_schema(schema, odfv.transform)
            for name, text in errors.items():
                self.err(
                    f"transform is invalid: {text}",
                    file=file,
                    obj=obj,
                    field=f"transform[{name!r}]",
                    value=str(odfv.transform[name]),
                )
            for f in odfv.outputs:
                if f.name in out and f.name not in errors:
                    found = from_polars(out[f.name])
                    if not compatible(f.dtype, found):
                        self.err(
                            f"declared dtype {f.dtype} but the expression gives {found}",
                            file=file,
                            obj=obj,
                            field=f"outputs[{f.name!r}]",
                            hint=f"declare {found!r} or add .cast(...) to the expression",
                        )
        classification, problems = self.classifier.on_demand(odfv)
        self._classification_problems(problems, file=file, obj=obj)
        return {
            "inputs": inputs,
            "outputs": _fields(odfv.outputs),
            "transform": transform,
            "metadata": odfv.metadata_dict(),
            "classification": classification,
        }

    def _classification_problems(self, problems: list[Problem], *, file: str, obj: str) -> None:
        for where, message, value, hint in problems:
            self.err(message, file=file, obj=obj, field=where, value=value, hint=hint)

    def service(
        self, svc: FeatureService, file: str, features_of: dict[str, tuple[str, ...]]
    ) -> dict[str, Any]:
        obj = f"FeatureService {svc.name!r}"
        for ref in svc.refs:
            view, feat = ref.split(":")
            if view not in features_of:
                self.err(
                    f"references unknown view {view!r}",
                    file=file,
                    obj=obj,
                    field="features",
                    value=ref,
                    hint=f"known views: {', '.join(sorted(features_of)) or '(none)'}",
                )
            elif feat not in features_of[view]:
                self.err(
                    f"view {view!r} has no feature {feat!r}",
                    file=file,
                    obj=obj,
                    field="features",
                    value=ref,
                    hint=f"its features: {', '.join(features_of[view])}",
                )
        return {"features": list(svc.refs), "metadata": svc.metadata_dict()}

    def check_names(self, item: Found) -> None:
        """Names end up in feature references ("view:feature") and online store keys.
        The definitions insist on identifiers; this guards objects built around them."""
        o = item.obj
        kind = type(o).__name__
        names = [("name", o.name)]
        names += [(f"features[{n!r}]", n) for n in getattr(o, "feature_names", ())]
        for where, name in names:
            why = key_name_problem(name) if isinstance(name, str) else "is not a string"
            if why:
                self.err(
                    f"name {why}",
                    file=item.file,
                    obj=f"{kind} {o.name!r}",
                    field=where,
                    value=name,
                    hint="use letters, digits and underscores",
                )

    def run(self, found: list[Found]) -> RepoPlan:
        why = key_name_problem(self.project)
        if why:
            self.err(
                f"project name {why}",
                file="featurestore.toml",
                obj=f"project {self.project!r}",
                field="project.name",
                hint="use letters, digits, '_' or '-'",
            )
        by_key: dict[tuple[str, str], Found] = {}
        for item in found:
            kind = _KIND_OF[type(item.obj)]
            for p in item.obj.problems:
                self.errors.append(
                    DefinitionError(
                        p.message,
                        file=item.file,
                        obj=p.obj,
                        field=p.field,
                        value=p.value,
                        hint=p.hint,
                    )
                )
            key = (kind, item.obj.name)
            if key in by_key and by_key[key].obj is not item.obj:
                self.err(
                    f"name is used twice (also in {by_key[key].file})",
                    file=item.file,
                    obj=f"{type(item.obj).__name__} {item.obj.name!r}",
                    field="name",
                    hint="names are unique per kind; rename one",
                )
                continue
            by_key[key] = item
            self.files[key] = item.file
        views = {n: f.obj for (k, n), f in by_key.items() if k == "feature_view"}
        odfvs = {n: f.obj for (k, n), f in by_key.items() if k == "on_demand_feature_view"}
        for name in set(views) & set(odfvs):
            self.err(
                "a FeatureView and an OnDemandFeatureView share this name",
                file=by_key[("on_demand_feature_view", name)].file,
                obj=f"OnDemandFeatureView {name!r}",
                field="name",
                hint="feature references are 'view:feature', so view names must be unique",
            )
        features_of = {n: v.feature_names for n, v in {**views, **odfvs}.items()}
        plans = []
        order: dict[str, int] = {k: i for i, k in enumerate(_KIND_OF.values())}
        for (_, name), item in sorted(by_key.items(), key=lambda kv: order[kv[0][0]]):
            if item.obj.problems:
                continue
            self.check_names(item)
            o = item.obj
            spec: dict[str, Any]
            if isinstance(o, Entity):
                spec = {"join_keys": _fields(o.keys), "metadata": o.metadata_dict()}
            elif isinstance(o, BatchSource | KafkaSource):
                spec = {**source_spec(o), "metadata": o.metadata_dict()}
            elif isinstance(o, RequestSource):
                spec = {"schema": _fields(o.fields), "metadata": o.metadata_dict()}
            elif isinstance(o, FeatureView):
                spec = self.feature_view(o, item.file)
            elif isinstance(o, OnDemandFeatureView):
                spec = self.on_demand(o, item.file, views)
            else:
                spec = self.service(o, item.file, features_of)
            plans.append(ObjectPlan(kind=_KIND_OF[type(o)], name=name, spec=spec))
        if self.errors:
            raise DefinitionErrors(self.errors)
        return RepoPlan(project=self.project, objects=tuple(plans))


def compile_definitions(
    found: list[Found], *, repo: Path, project: str, default_classification: str | None = None
) -> CompileResult:
    """Compile already-discovered definitions (tests and notebooks use this)."""
    compiler = _Compiler(repo, project, default_classification)
    plan = compiler.run(found)
    return CompileResult(plan=plan, warnings=compiler.warnings)


def compile_repo(
    repo: str | Path, *, project: str, default_classification: str | None = None
) -> CompileResult:
    """Discover, validate and compile the feature repo at ``repo``.

    ``default_classification`` is the project's class for features that declare
    none (``[project] classification``; default ``"internal"``). Raises
    ``DefinitionErrors`` with every problem found (import failures included).
    """
    path = Path(repo).resolve()
    found, problems = discover(path)
    compiler = _Compiler(path, project, default_classification)
    compiler.errors.extend(problems)
    plan = compiler.run(found)
    return CompileResult(plan=plan, warnings=compiler.warnings)
