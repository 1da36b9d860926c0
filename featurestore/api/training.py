"""Training datasets: point-in-time joins over the offline store, with lineage.

A dataset records everything needed to compute it again: the registry version,
the plan hash of every view, the Delta version of every table read and the hash
of the spine. ``rebuild`` recomputes it from those pins and compares content
hashes, so "this model was trained on exactly this data" can be proven later.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from featurestore._time import utc_column
from featurestore.api.on_demand import compile_on_demand, run_on_demand
from featurestore.compile.expr import expr_from_spec
from featurestore.compile.views import FeatureRef, FeatureViewPlan, PlanIndex
from featurestore.engines.pit.join import FeatureFrame, point_in_time_join
from featurestore.errors import DataError, RequestError
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.view_specs import offline_spec

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

DATASETS = "_datasets"
LINEAGE_FORMAT = 1


def frame_hash(frame: pl.DataFrame) -> str:
    """A content hash of a frame: its columns, dtypes and values, in row order."""
    buf = io.BytesIO()
    frame.rechunk().write_ipc(buf, compression="uncompressed")
    digest = hashlib.sha256()
    digest.update(json.dumps([[n, str(t)] for n, t in frame.schema.items()]).encode())
    # The IPC stream carries the data; its framing is deterministic for one schema.
    digest.update(buf.getvalue())
    return digest.hexdigest()[:32]


def to_polars_frame(data: Any, *, what: str = "entity_df") -> pl.DataFrame:
    """A Polars DataFrame from Polars, pandas or Arrow input."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        return data.collect()
    module = type(data).__module__
    if module.startswith("pandas"):
        return pl.from_pandas(data)
    if module.startswith("pyarrow"):
        frame = pl.from_arrow(data)
        if isinstance(frame, pl.DataFrame):
            return frame
    raise RequestError(
        "must be a Polars or pandas DataFrame or an Arrow table",
        field=what,
        value=type(data).__name__,
    )


@dataclass(frozen=True)
class Lineage:
    """Everything a dataset was computed from."""

    project: str
    registry_version: int
    features: list[str]
    timestamp: str
    as_of_known_time: bool
    full_feature_names: bool
    view_plan_hashes: dict[str, str]
    table_versions: dict[str, int | None]
    spine_hash: str
    spine_rows: int
    content_hash: str = ""
    created_at: str = ""
    format: int = LINEAGE_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Lineage:
        return cls(**json.loads(text))


@dataclass
class TrainingDataset:
    """A computed training dataset and its lineage."""

    frame: pl.DataFrame
    lineage: Lineage
    seconds: float = 0.0

    def to_polars(self) -> pl.DataFrame:
        return self.frame

    def to_arrow(self) -> pa.Table:
        return self.frame.to_arrow()

    def to_pandas(self) -> pd.DataFrame:
        return self.frame.to_pandas()


def _pin_view(
    view: FeatureViewPlan,
    spine: pl.DataFrame,
    *,
    offline: DeltaOfflineStore,
    table_versions: dict[str, int | None] | None,
    versions: dict[str, int | None],
    hashes: dict[str, str],
) -> int | None:
    """Check the spine has the view's keys, and pin the table version to read (the
    lineage's on a rebuild, else the current one); record it and the plan hash."""
    name = view.name
    missing = [k for k in view.join_keys if k not in spine.columns]
    if missing:
        raise RequestError(
            f"entity_df lacks the join keys of view {name!r}",
            field="entity_df",
            value=missing,
            hint=f"add the columns {list(view.join_keys)} to the spine",
        )
    if table_versions is not None and name not in table_versions:
        raise DataError("lineage has no table version for this view", obj=name)
    pinned = table_versions[name] if table_versions is not None else offline.version(name)
    versions[name] = pinned
    hashes[name] = view.hash
    return pinned


def _no_rows(view: FeatureViewPlan, spine: pl.DataFrame) -> pl.DataFrame:
    """The rows of a view without a table yet: none, its keys typed as the spine's."""
    return offline_spec(view).empty_rows().cast({k: spine.schema[k] for k in view.join_keys})


def _view_frames(
    index: PlanIndex,
    columns: list[tuple[FeatureRef, str]],
    spine: pl.DataFrame,
    *,
    timestamp: str,
    offline: DeltaOfflineStore,
    table_versions: dict[str, int | None] | None,
) -> tuple[list[FeatureFrame], dict[str, int | None], dict[str, str]]:
    """One ``FeatureFrame`` per view, reading the pinned table version, pruned to
    the event times the spine can use. ``columns`` pairs each feature with its
    output column name."""
    by_view: dict[str, dict[str, str]] = {}
    for ref, out in columns:
        by_view.setdefault(ref.view, {}).setdefault(ref.feature, out)
    ts = spine.select(utc_column(spine, timestamp, obj="entity_df").dt.epoch("us"))
    lo, hi = ts.min().item(), ts.max().item()
    frames: list[FeatureFrame] = []
    versions: dict[str, int | None] = {}
    hashes: dict[str, str] = {}
    outputs: list[str] = []
    for name, feat_outs in by_view.items():
        feats = list(feat_outs)
        view = index.view(name)
        if view.aggregations:
            raise RequestError(
                "aggregated views are not supported in training yet", obj=f"feature view {name!r}"
            )
        spec = offline_spec(view)
        pinned = _pin_view(
            view,
            spine,
            offline=offline,
            table_versions=table_versions,
            versions=versions,
            hashes=hashes,
        )
        outs = tuple(feat_outs.values())
        outputs.extend(outs)
        if pinned is None:
            rows = (
                _no_rows(view, spine)
                .select(
                    *view.join_keys,
                    "event_ts",
                    "created_ts",
                    *[f for f in view.features if f in feat_outs],
                )
                .lazy()
            )
        else:
            start = None if lo is None or view.ttl_us is None else lo - view.ttl_us
            end = None if hi is None else hi + 1
            rows = offline.read_view(
                spec,
                start_us=start,
                end_us=end,
                version=pinned,
                columns=[*view.join_keys, "event_ts", "created_ts", *feats],
            )
        frames.append(
            FeatureFrame(
                name=name,
                frame=rows,
                join_keys=view.join_keys,
                spine_keys=view.join_keys,
                features=tuple(feats),
                output_names=outs,
                ttl_us=view.ttl_us,
            )
        )
    clashes = sorted(
        {o for o in outputs if outputs.count(o) > 1} | {o for o in outputs if o in spine.columns}
    )
    if clashes:
        raise RequestError(
            "output column names clash",
            value=clashes,
            hint="pass full_feature_names=True to get 'view__feature' names, "
            "or rename the spine column",
        )
    return frames, versions, hashes


def _add_aggregates(
    index: PlanIndex,
    refs: list[FeatureRef],
    spine: pl.DataFrame,
    *,
    timestamp: str,
    offline: DeltaOfflineStore,
    table_versions: dict[str, int | None] | None,
    as_of_known_time: bool,
    out_name: Callable[[FeatureRef], str],
    versions: dict[str, int | None],
    hashes: dict[str, str],
) -> pl.DataFrame:
    """Windowed aggregations as of each spine row's time, over the view's stored
    events (SEMANTICS: windowed aggregations), with the batch aggregation engine."""
    from featurestore.engines.aggregate import WindowSpec, aggregate_spine
    from featurestore.engines.aggregate.view_records import events_start

    by_view: dict[str, list[FeatureRef]] = {}
    for ref in refs:
        by_view.setdefault(ref.view, []).append(ref)
    ts = spine.select(utc_column(spine, timestamp, obj="entity_df").dt.epoch("us"))
    lo, hi = ts.min().item(), ts.max().item()
    for name, group in by_view.items():
        view = index.view(name)
        pinned = _pin_view(
            view,
            spine,
            offline=offline,
            table_versions=table_versions,
            versions=versions,
            hashes=hashes,
        )
        specs = {a["name"]: a for a in view.aggregations}
        chosen = [specs[r.feature] for r in group]
        windows = [WindowSpec(a["function"], a["window_us"], a["hop_us"]) for a in chosen]
        # The first event any row's window holds (hops floor the request time first).
        start = None if lo is None else events_start(windows, end_us=lo)
        if pinned is None:
            events = _no_rows(view, spine).lazy()
        else:
            events = offline.read_view(
                offline_spec(view),
                start_us=start,
                end_us=None if hi is None else hi + 1,
                version=pinned,
            )
        aggs = []
        for ref, a, window in zip(group, chosen, windows, strict=True):
            column = a["column"]
            if isinstance(column, dict):
                column = expr_from_spec(column["expr"])
            aggs.append((out_name(ref), column, window))
        spine = aggregate_spine(
            events=events,
            spine=spine,
            keys=view.join_keys,
            aggregations=aggs,
            spine_ts=timestamp,
            as_of_known_time=as_of_known_time,
            obj=f"feature view {name!r}",
        )
    return spine


def compute_dataset(
    *,
    index: PlanIndex,
    project: str,
    registry_version: int,
    offline: DeltaOfflineStore,
    entity_df: Any,
    features: Sequence[str] | None = None,
    feature_service: str | None = None,
    timestamp: str = "event_timestamp",
    as_of_known_time: bool = False,
    full_feature_names: bool = False,
    table_versions: dict[str, int | None] | None = None,
    repo: Path | None = None,
) -> TrainingDataset:
    started = time.perf_counter()
    spine = to_polars_frame(entity_df)
    if timestamp not in spine.columns:
        raise RequestError(
            "entity_df has no timestamp column",
            field=timestamp,
            hint=f"columns: {spine.columns}; pass timestamp='your_column'",
        )
    refs = index.resolve(list(features) if features is not None else None, feature_service)

    def out_name(ref: FeatureRef) -> str:
        return f"{ref.view}__{ref.feature}" if full_feature_names else ref.feature

    aggregated = [r for r in refs if r.view in index.views and index.view(r.view).aggregations]
    plain = [r for r in refs if r.view not in index.on_demand and r not in aggregated]
    od_groups: dict[str, list[FeatureRef]] = {}
    for r in refs:
        if r.view in index.on_demand:
            od_groups.setdefault(r.view, []).append(r)
    od_plans = [
        (compile_on_demand(index.on_demand[n], index, repo=repo or Path(".")), group)
        for n, group in od_groups.items()
    ]
    columns = [(r, out_name(r)) for r in plain]
    where = dict(columns)
    for odp, _ in od_plans:
        for ref in odp.inputs:
            if ref not in where:
                where[ref] = f"__fs_input__{ref.view}__{ref.feature}"
                columns.append((ref, where[ref]))
    frames, versions, hashes = _view_frames(
        index,
        columns,
        spine,
        timestamp=timestamp,
        offline=offline,
        table_versions=table_versions,
    )
    result = point_in_time_join(
        spine, timestamp=timestamp, views=frames, as_of_known_time=as_of_known_time
    )
    if aggregated:
        result = _add_aggregates(
            index,
            aggregated,
            result,
            timestamp=timestamp,
            offline=offline,
            table_versions=table_versions,
            as_of_known_time=as_of_known_time,
            out_name=out_name,
            versions=versions,
            hashes=hashes,
        )
    for odp, group in od_plans:
        # The same function the online path runs, over the point-in-time values.
        inputs = result.select(
            *[pl.col(f) for f in odp.request_fields if f in result.columns],
            *[pl.col(where[ref]).alias(ref.feature) for ref in odp.inputs],
        )
        out = run_on_demand(odp, inputs)
        result = result.with_columns(out.get_column(r.feature).alias(out_name(r)) for r in group)
        hashes[odp.name] = index.on_demand[odp.name].hash
    hidden = [c for c in result.columns if c.startswith("__fs_input__")]
    if hidden:
        result = result.drop(hidden)
    lineage = Lineage(
        project=project,
        registry_version=registry_version,
        features=[str(r) for r in refs],
        timestamp=timestamp,
        as_of_known_time=as_of_known_time,
        full_feature_names=full_feature_names,
        view_plan_hashes=hashes,
        table_versions=versions,
        spine_hash=frame_hash(spine),
        spine_rows=spine.height,
        content_hash=frame_hash(result),
        created_at=datetime.now(UTC).isoformat(),
    )
    return TrainingDataset(result, lineage, time.perf_counter() - started)


def save_dataset(
    dataset: TrainingDataset, name: str, *, offline: DeltaOfflineStore, spine: pl.DataFrame
) -> Lineage:
    """Write the dataset, its spine and its lineage to the offline store."""
    base = f"{DATASETS}/{name}"
    data_report = offline.write_table(f"{base}/data", dataset.frame, mode="overwrite")
    spine_report = offline.write_table(f"{base}/spine", spine, mode="overwrite")
    lineage = Lineage(
        **{
            **asdict(dataset.lineage),
            "extra": {
                **dataset.lineage.extra,
                "data_table_version": data_report.version,
                "spine_table_version": spine_report.version,
            },
        }
    )
    offline.write_table(
        f"{base}/lineage", pl.DataFrame({"lineage": [lineage.to_json()]}), mode="overwrite"
    )
    return lineage


def load_lineage(name: str, *, offline: DeltaOfflineStore) -> Lineage:
    base = f"{DATASETS}/{name}"
    if not offline.exists(f"{base}/lineage"):
        raise RequestError(
            "no saved dataset of this name",
            obj=f"dataset {name!r}",
            hint="save one with dataset.save(name) or `featurestore dataset create`",
        )
    text = offline.read_table(f"{base}/lineage").collect()["lineage"][0]
    return Lineage.from_json(text)


def load_saved(name: str, *, offline: DeltaOfflineStore) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(data, spine) of a saved dataset, at the versions it was saved with."""
    lineage = load_lineage(name, offline=offline)
    base = f"{DATASETS}/{name}"
    data = offline.read_table(
        f"{base}/data", version=lineage.extra.get("data_table_version")
    ).collect()
    spine = offline.read_table(
        f"{base}/spine", version=lineage.extra.get("spine_table_version")
    ).collect()
    return data, spine
