"""Feast objects -> a featurestore repo (``featurestore.toml``, ``features.py``) + report.

Each Feast object is read through its public attributes (Feast 0.60+) and becomes
our definition as source text; what cannot be carried over becomes a TODO comment
in ``features.py`` and a line in the report. The semantic differences that remain
are named per object (``report.Difference``), so a user (or a test) can find the
training rows where the two tools disagree.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from featurestore.errors import DefinitionError
from featurestore.integrations.feast import udf
from featurestore.integrations.feast.code import LINE, Raw, assign, call, comment, literal
from featurestore.integrations.feast.load import FeastRepo, load_feast_repo
from featurestore.integrations.feast.report import Difference, ImportReport

# Feast's primitive types by name (``PrimitiveFeastType.name``) -> our dtypes
DTYPES = {
    "INT32": "int32",
    "INT64": "int64",
    "FLOAT32": "float32",
    "FLOAT64": "float64",
    "STRING": "string",
    "BOOL": "bool",
    "UNIX_TIMESTAMP": "datetime",
}
# ValueType names (Entity.value_type) -> our dtypes
VALUE_TYPES = {
    "INT32": "int32",
    "INT64": "int64",
    "STRING": "string",
    "BOOL": "bool",
    "UNIX_TIMESTAMP": "datetime",
}
TTL_NOTE = "Feast keeps a row exactly ttl old in training; featurestore does not"
DROP_NOTE = (
    "Feast's file offline store leaves out a spine row whose key has rows here but none "
    "within [t - ttl, t] (e.g. before the key's first event, after its last + ttl, in a "
    "gap longer than ttl); featurestore keeps it, with nulls"
)
TIES_NOTE = (
    "rows sharing (key, event time): featurestore takes the latest created time (full "
    "ties are reported by the backfill, the last in source order wins); Feast's file "
    "offline store keeps any of them (its sort on created time is undone by an unstable "
    "sort on event time)"
)
NO_CREATED = (
    "no created column: rows repeating (key, event time) are ties, reported by our "
    "backfill (the last in source order wins); Feast's file offline store keeps any of them"
)


def feast_dtype(dtype: Any) -> str | None:
    """Our dtype name for a Feast type, or None when we have no equivalent."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str) and name in DTYPES:
        return DTYPES[name]
    base = getattr(dtype, "base_type", None)
    if type(dtype).__name__ == "Array" and base is not None:
        inner = feast_dtype(base)
        return None if inner is None or inner == "datetime" else f"list[{inner}]"
    return None


class Converter:
    """One pass over a Feast repo, writing source text and the report."""

    def __init__(self, repo: FeastRepo, out: Path) -> None:
        self.repo = repo
        self.out = out
        self.report = ImportReport(str(repo.root), str(out))
        self.blocks: list[str] = []
        self.names: dict[tuple[str, str], str] = {}  # (kind, feast name) -> variable
        self.view_features: dict[str, list[str]] = {}  # converted view -> features
        self.key_dtypes = self._key_dtypes()
        self.needs_pandas = False
        self.needs_polars = False
        self.needs_timedelta = False
        self.used: set[str] = set()

    # -- entities ------------------------------------------------------------------
    def _key_dtypes(self) -> dict[str, str]:
        """Join key dtypes: as Feast inferred them at apply, else from the source file."""
        out: dict[str, str] = {}
        keys_of = {
            e.name: list(getattr(e, "join_keys", None) or [e.join_key]) for e in self.repo.entities
        }
        for view in [*self.repo.feature_views, *self.repo.stream_views]:
            for col in getattr(view, "entity_columns", []) or []:
                dtype = feast_dtype(col.dtype)
                if dtype is not None:
                    out.setdefault(col.name, dtype)
            keys = [k for e in view.entities for k in keys_of.get(e, [])]
            missing = [k for k in keys if k not in out]
            if missing:
                src = view.stream_source or view.batch_source
                src = getattr(src, "batch_source", None) or src
                out.update(file_dtypes(self.repo.root, src, missing))
        return out

    def entities(self) -> None:
        for ent in self.repo.entities:
            name = ent.name
            if name == "__dummy":
                continue  # Feast's stand-in for entity-less views
            keys = list(getattr(ent, "join_keys", None) or [ent.join_key])
            dtypes: dict[str, str] = {}
            notes: list[str] = []
            value_type = getattr(getattr(ent, "value_type", None), "name", "UNKNOWN")
            for key in keys:
                dtype = VALUE_TYPES.get(value_type) or self.key_dtypes.get(key)
                if dtype is None:
                    dtype = "string"
                    notes.append(
                        f"the dtype of join key {key!r} is unknown to Feast here; "
                        "written as string: check it"
                    )
                dtypes[key] = dtype
            var = self._var("entity", name)
            self.used.add("Entity")
            body = call(
                "Entity",
                name=name,
                join_keys=dtypes,
                description=ent.description or None,
                tags=dict(ent.tags) or None,
                owner=ent.owner or None,
            )
            if notes:
                self.blocks.append(comment("TODO: " + "; ".join(notes)))
            self.blocks.append(assign(var, body))
            self.report.add("Entity", name, notes=notes)

    # -- sources ---------------------------------------------------------------------
    def batch_source(self, src: Any) -> tuple[str | None, list[str]]:
        """The variable of the BatchSource for a Feast FileSource (written once)."""
        key = ("source", src.name)
        if key in self.names:
            return self.names[key], []
        kind = type(src).__name__
        if kind != "FileSource":
            return None, [f"{kind} {src.name!r} has no featurestore equivalent yet"]
        notes: list[str] = []
        if getattr(src, "field_mapping", None):
            return None, [
                f"FileSource {src.name!r} renames columns (field_mapping "
                f"{dict(src.field_mapping)}): rename them in the data or with a transform"
            ]
        path = str(src.path)
        if "://" not in path and not os.path.isabs(path):
            path = os.path.relpath(self.repo.root / path, self.out)
        fmt = type(getattr(src, "file_format", None)).__name__
        file_format = "delta" if fmt == "DeltaFormat" else "parquet"
        var = self._var("source", src.name)
        self.used.add("BatchSource")
        body = call(
            "BatchSource",
            name=src.name,
            path=path,
            format=file_format,
            timestamp_field=src.timestamp_field or "event_timestamp",
            created_timestamp_field=src.created_timestamp_column or None,
            description=src.description or None,
            tags=dict(src.tags) or None,
            owner=src.owner or None,
        )
        naive = naive_columns(self.out / path if "://" not in path else None, body)
        notes = [f"FileSource -> BatchSource ({path})"]
        if naive:
            notes.append(
                f"timestamp columns without a zone {naive}: Feast reads them as UTC, "
                "featurestore rejects them; rewrite them with a zone, e.g. "
                "pl.col(c).dt.replace_time_zone('UTC')"
            )
            self.blocks.append(comment(f"TODO: write {naive} with a time zone (UTC)"))
        self.blocks.append(assign(var, body))
        self.report.add(
            "DataSource", src.name, notes=notes, differences=["naive_time"] if naive else []
        )
        return var, []

    def view_source(self, view: Any) -> tuple[str | None, list[str], list[Difference]]:
        src = view.stream_source or view.batch_source
        kind = type(src).__name__
        if kind == "PushSource":
            var, notes = self.batch_source(src.batch_source)
            if var is not None:
                self._once_push(src)
                notes.append(
                    f"PushSource {src.name!r}: push rows with `featurestore push {view.name}` "
                    "or POST /v1/push"
                )
            return var, notes, ["push"]
        if kind == "KafkaSource":
            return self.kafka_source(src, view)
        var, notes = self.batch_source(src)
        return var, notes, []

    def _once_push(self, src: Any) -> None:
        if not any(i.kind == "DataSource" and i.name == src.name for i in self.report.items):
            self.report.add(
                "DataSource",
                src.name,
                notes=["PushSource: its batch source serves the views; push per view"],
                differences=["push"],
            )

    def kafka_source(self, src: Any, view: Any) -> tuple[str | None, list[str], list[Difference]]:
        options = src.kafka_options
        fmt = type(options.message_format).__name__
        if fmt != "JsonFormat":
            note = f"KafkaSource {src.name!r}: {fmt} messages (featurestore reads JSON only)"
            self.report.add("DataSource", src.name, notes=[note], supported=False)
            return None, [note], []
        batch, notes = self.batch_source(src.batch_source)
        if batch is None:
            return None, notes, []
        schema = {k: self.key_dtypes.get(k, "string") for k in view.join_keys}
        schema[src.timestamp_field] = "datetime"
        for f in view.schema if hasattr(view, "schema") else view.features:
            dtype = feast_dtype(f.dtype)
            if dtype is not None:
                schema[f.name] = dtype
        var = self._var("source", src.name)
        self.used.add("KafkaSource")
        body = call(
            "KafkaSource",
            name=src.name,
            topic=options.topic,
            bootstrap_servers=options.kafka_bootstrap_servers,
            schema=schema,
            timestamp_field=src.timestamp_field,
            created_timestamp_field=src.created_timestamp_column or None,
            batch_source=Raw(batch),
        )
        self.blocks.append(assign(var, body))
        self.report.add("DataSource", src.name, notes=["KafkaSource (JSON) -> KafkaSource"])
        return var, notes, []

    # -- views -----------------------------------------------------------------------
    def feature_views(self) -> None:
        for view in [*self.repo.feature_views, *self.repo.stream_views]:
            self.feature_view(view)

    def feature_view(self, view: Any) -> None:
        kind = type(view).__name__
        entities = [self.names.get(("entity", e)) for e in view.entities if e != "__dummy"]
        problems: list[str] = []
        if not entities or None in entities:
            problems.append("a view without entities (or with an unconverted one)")
        if kind == "StreamFeatureView" and (getattr(view, "udf", None) or view.aggregations):
            problems.append("a stream view with a transformation or aggregations")
        source, notes, diffs = self.view_source(view)
        if source is None:
            problems.extend(notes)
        if problems:
            self._unsupported(kind, view.name, problems)
            return
        fields, dropped = [], []
        for f in view.features:
            dtype = feast_dtype(f.dtype)
            if dtype is None:
                dropped.append(f"{f.name} ({f.dtype})")
                continue
            args = {"name": f.name, "dtype": dtype}
            if f.description:
                args["description"] = f.description
            fields.append(call("Field", inline=True, **args))
        if not fields:
            self._unsupported(kind, view.name, [f"no feature of a supported type: {dropped}"])
            return
        ttl = view.ttl if view.ttl and view.ttl > timedelta(0) else None
        differences: list[Difference] = list(diffs)
        if ttl is not None:
            self.needs_timedelta = True
            differences += ["ttl_boundary", "online_ttl"]
            notes.append(TTL_NOTE)
        src = view.stream_source or view.batch_source
        batch = getattr(src, "batch_source", None) or src
        if type(batch).__name__ == "FileSource":
            differences.append("dropped_spine_rows")
            notes.append(DROP_NOTE)
        # without a created column every row repeating (key, event time) is a tie
        differences.append("created_ties")
        notes.append(TIES_NOTE if getattr(batch, "created_timestamp_column", None) else NO_CREATED)
        if dropped:
            notes.append("not carried over (no equivalent dtype): " + ", ".join(dropped))
            self.blocks.append(
                comment(f"TODO: {view.name}: Feast fields without an equivalent dtype: ")
                + comment("  " + ", ".join(dropped))
            )
        self.used.update({"FeatureView", "Field"})
        var = self._var("view", view.name)
        body = call(
            "FeatureView",
            name=view.name,
            entities=[Raw(e) for e in entities if e is not None],
            source=Raw(str(source)),
            ttl=Raw(literal(ttl)) if ttl is not None else Raw("None"),
            fields=fields,
            online=bool(view.online),
            description=view.description or None,
            tags=dict(view.tags) or None,
            owner=view.owner or None,
        )
        self.blocks.append(assign(var, body))
        self.view_features[view.name] = [f.name for f in view.features if feast_dtype(f.dtype)]
        self.report.add(kind, view.name, notes=notes, differences=differences)

    def on_demand_views(self) -> None:
        requests: dict[str, str] = {}
        for odfv in self.repo.on_demand_views:
            problems: list[str] = []
            inputs: list[str] = []
            for name in odfv.source_feature_view_projections:
                var = self.names.get(("view", name))
                if var is None:
                    problems.append(f"its source view {name!r} was not converted")
                inputs.append(var or "")
            for name, req in odfv.source_request_sources.items():
                if name not in requests:
                    requests[name] = self.request_source(req)
                inputs.append(requests[name])
            outputs = {f.name: feast_dtype(f.dtype) for f in odfv.features}
            bad = [n for n, d in outputs.items() if d is None]
            if bad:
                problems.append(f"outputs without an equivalent dtype: {bad}")
            carried = udf.carry_over(odfv) if not problems else None
            if carried is None and not problems:
                problems.append(
                    f"its {odfv.mode!r} transformation cannot be carried over automatically"
                )
            if problems or carried is None:
                source = getattr(getattr(odfv, "feature_transformation", None), "udf_string", "")
                self._unsupported("OnDemandFeatureView", odfv.name, problems, source)
                continue
            fn_name, fn_source = carried
            self.needs_pandas = self.needs_pandas or odfv.mode == "pandas"
            self.needs_polars = True
            self.blocks.append(fn_source)
            self.used.add("OnDemandFeatureView")
            var = self._var("odfv", odfv.name)
            body = call(
                "OnDemandFeatureView",
                name=odfv.name,
                inputs=[Raw(i) for i in inputs],
                outputs=outputs,
                transform=Raw(fn_name),
                description=odfv.description or None,
                tags=dict(odfv.tags) or None,
                owner=odfv.owner or None,
            )
            self.blocks.append(assign(var, body))
            self.view_features[odfv.name] = list(outputs)
            notes = [f"{odfv.mode} transformation carried over, run on a {odfv.mode} copy"]
            diffs: list[Difference] = []
            if getattr(odfv, "write_to_online_store", False):
                notes.append("Feast stored its outputs online; we compute them per request")
                diffs.append("other")
            self.report.add("OnDemandFeatureView", odfv.name, notes=notes, differences=diffs)

    def request_source(self, req: Any) -> str:
        schema = {f.name: feast_dtype(f.dtype) or "string" for f in req.schema}
        var = self._var("request", req.name)
        self.used.add("RequestSource")
        self.blocks.append(assign(var, call("RequestSource", name=req.name, schema=schema)))
        self.report.add("RequestSource", req.name)
        return var

    # -- services --------------------------------------------------------------------
    def feature_services(self) -> None:
        for svc in self.repo.feature_services:
            refs: list[str] = []
            notes: list[str] = []
            for proj in svc.feature_view_projections:
                have = self.view_features.get(proj.name)
                if have is None:
                    notes.append(f"left out view {proj.name!r} (not converted)")
                    continue
                if proj.name_alias or proj.join_key_map:
                    notes.append(f"{proj.name!r}: aliases and join key maps are not carried")
                for f in proj.features:
                    if f.name in have:
                        refs.append(f"{proj.name}:{f.name}")
                    else:
                        notes.append(f"left out {proj.name}:{f.name} (not converted)")
            if getattr(svc, "logging_config", None) is not None:
                notes.append("logging_config: set [server] feature_logging = true instead")
            if not refs:
                self._unsupported("FeatureService", svc.name, notes or ["no feature converted"])
                continue
            self.used.add("FeatureService")
            body = call(
                "FeatureService",
                name=svc.name,
                features=refs,
                description=svc.description or None,
                tags=dict(svc.tags) or None,
                owner=svc.owner or None,
            )
            self.blocks.append(assign(self._var("service", svc.name), body))
            partial = [n for n in notes if n.startswith("left out")]
            self.report.add(
                "FeatureService", svc.name, notes=notes, differences=["other"] if partial else []
            )

    def others(self) -> None:
        for obj in self.repo.others:
            self._unsupported(type(obj).__name__, obj.name, ["no featurestore equivalent"])
        listed = {i.name for i in self.report.items if i.kind == "DataSource"}
        for src in self.repo.data_sources:
            kind = type(src).__name__
            if src.name in listed or kind == "RequestSource":
                continue
            if kind == "FileSource":
                self.batch_source(src)
            else:
                self.report.add("DataSource", src.name, notes=[f"{kind}: unused"], supported=False)

    # -- helpers ---------------------------------------------------------------------
    def _unsupported(self, kind: str, name: str, problems: list[str], source: str = "") -> None:
        text = f"TODO: {kind} {name!r} was not converted: " + "; ".join(problems)
        if source:
            text += "\nFeast's definition:\n" + source.strip()
        self.blocks.append(comment(text))
        self.report.add(kind, name, notes=problems, supported=False)

    def _var(self, kind: str, name: str) -> str:
        taken = set(self.names.values())
        var = name if name.isidentifier() else "_".join(name.split("-"))
        if not var.isidentifier():
            var = f"{kind}_{abs(hash(name))}"
        while var in taken or var in {"pl", "pd", "timedelta"} or var in udf.RESERVED:
            var = f"{var}_{kind}"
        self.names[(kind, name)] = var
        return var

    def features_py(self) -> str:
        imports: list[str] = []
        if self.needs_polars:  # a carried function's annotations are never evaluated
            imports += ["from __future__ import annotations", ""]
        if self.needs_timedelta:
            imports += ["from datetime import timedelta", ""]
        if self.needs_pandas:
            imports.append("import pandas as pd")
        if self.needs_polars:
            imports.append("import polars as pl")
        if self.needs_pandas or self.needs_polars:
            imports.append("")
        imports.append(f"from featurestore import {', '.join(sorted(self.used))}")
        if len(imports[-1]) > LINE:
            names = "".join(f"    {n},\n" for n in sorted(self.used))
            imports[-1] = f"from featurestore import (\n{names})"
        head = (
            f'"""Imported from the Feast repo {self.repo.project!r} by '
            f'`featurestore import-feast`.\n\nSee FEAST_IMPORT.md for what changed."""\n\n'
        )
        body = "\n\n".join(b.rstrip("\n") + "\n" for b in self.blocks)
        return head + "\n".join(imports) + "\n\n\n" + body


def file_dtypes(root: Path, src: Any, columns: list[str]) -> dict[str, str]:
    """Our dtypes of ``columns`` in a local Parquet FileSource (empty when unknown)."""
    from featurestore._dtypes import from_polars

    path = getattr(src, "path", None)
    if type(src).__name__ != "FileSource" or not path or "://" in str(path):
        return {}
    import polars as pl

    try:
        schema = pl.read_parquet_schema(str(root / str(path)))
    except (OSError, pl.exceptions.PolarsError):
        return {}
    out = {}
    for c in columns:
        if c in schema:
            try:
                out[c] = from_polars(schema[c])
            except ValueError:
                continue
    return out


def naive_columns(path: Path | None, source: Any) -> list[str]:
    """The source's time columns stored without a zone (local Parquet files only)."""
    if path is None or not path.exists():
        return []
    import pyarrow as pa
    import pyarrow.dataset as ds

    try:
        schema = ds.dataset(str(path), format="parquet").schema
    except (OSError, pa.ArrowInvalid):
        return []
    args = dict(source.args)
    wanted = [
        c
        for c in (args.get("timestamp_field"), args.get("created_timestamp_field"))
        if isinstance(c, str)
    ]
    return [
        c
        for c in wanted
        if c in schema.names
        and pa.types.is_timestamp(schema.field(c).type)
        and schema.field(c).type.tz is None
    ]


def featurestore_toml(repo: FeastRepo, report: ImportReport) -> str:
    """Our config: the project, and the stores Feast's config names where we have one."""
    lines = ["[project]", f'name = "{repo.project}"', ""]
    online = getattr(repo.config, "online_store", None)
    kind = getattr(online, "type", None) or type(online).__name__
    if kind == "redis" or type(online).__name__ == "RedisOnlineStoreConfig":
        conn = str(getattr(online, "connection_string", "localhost:6379")).split(",")[0]
        lines += ["[online_store]", f'url = "redis://{conn}/0"', ""]
        report.add("Config", "online_store", notes=[f"Feast redis -> redis://{conn}/0"])
    else:
        lines += [
            f"# Feast's online store was {kind!r}: featurestore defaults to an embedded",
            '# SQLite store; set [online_store] url = "redis://host:6379/0" for Redis.',
            "",
        ]
        report.add("Config", "online_store", notes=[f"{kind} -> embedded default"])
    registry = getattr(repo.config, "registry", None)
    if registry is not None and getattr(registry, "registry_type", "") == "sql":
        lines += ["[registry]", f'url = "{registry.path}"', ""]
        report.add("Config", "registry", notes=["sql registry -> [registry] url"])
    else:
        report.add("Config", "registry", notes=["file registry -> embedded SQLite registry"])
    return "\n".join(lines)


def import_feast_repo(path: str | Path, out: str | Path) -> ImportReport:
    """Write a featurestore repo at ``out`` equivalent to the Feast repo at ``path``:
    ``featurestore.toml``, ``features.py``, and ``FEAST_IMPORT.md`` / ``.json`` (the
    report, also returned)."""
    repo = load_feast_repo(path)
    target = Path(out).resolve()
    if (target / "features.py").exists() or (target / "featurestore.toml").exists():
        raise DefinitionError(
            "already holds a feature repo",
            obj=f"output directory {str(target)!r}",
            field="--out",
            hint="give an empty or new directory",
        )
    target.mkdir(parents=True, exist_ok=True)
    conv = Converter(repo, target)
    conv.entities()
    conv.feature_views()
    conv.on_demand_views()
    conv.feature_services()
    conv.others()
    toml = featurestore_toml(repo, conv.report)
    (target / "featurestore.toml").write_text(toml)
    (target / "features.py").write_text(conv.features_py())
    (target / "FEAST_IMPORT.md").write_text(conv.report.to_markdown())
    (target / "FEAST_IMPORT.json").write_text(conv.report.to_json())
    return conv.report
