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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from featurestore._time import utc_column
from featurestore.api.on_demand import compile_on_demand, run_on_demand
from featurestore.api.partitioned import ViewRead, join_partitioned
from featurestore.compile.expr import expr_from_spec
from featurestore.compile.views import FeatureRef, FeatureViewPlan, PlanIndex
from featurestore.engines.executor import Executor
from featurestore.engines.pit.join import FeatureFrame, point_in_time_join
from featurestore.errors import DataError, RequestError
from featurestore.stores.offline.delta import DeltaOfflineStore
from featurestore.stores.offline.spec import OfflineTableSpec
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
    push_keys: bool = False,
    rows: Mapping[str, pl.DataFrame] | None = None,
) -> tuple[list[FeatureFrame], dict[str, int | None], dict[str, str]]:
    """One ``FeatureFrame`` per view, reading the pinned table version, pruned to
    the event times the spine can use (and, with ``push_keys``, to the spine's
    entities: a partition's task reads only its keys). ``columns`` pairs each
    feature with its output column name."""
    by_view: dict[str, dict[str, str]] = {}
    for ref, out in columns:
        by_view.setdefault(ref.view, {}).setdefault(ref.feature, out)
    ts = spine.select(utc_column(spine, timestamp, obj="entity_df").dt.epoch("us"))
    lo, hi = ts.min().item(), ts.max().item()
    frames: list[FeatureFrame] = []
    versions: dict[str, int | None] = {}
    hashes: dict[str, str] = {}
    outputs: list[str] = []
    frame: pl.LazyFrame
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
            frame = (
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
            start, end, cols = plain_read_range(view, feats, lo, hi)
            frame = _read(
                offline,
                spec,
                start,
                end,
                keys=spine.select(view.join_keys) if push_keys else None,
                version=pinned,
                columns=cols,
                rows=rows,
            )
        frames.append(
            FeatureFrame(
                name=name,
                frame=frame,
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


ReadRange = tuple[int | None, int | None, list[str] | None]


def plain_read_range(
    view: FeatureViewPlan, feats: Sequence[str], lo: int | None, hi: int | None
) -> ReadRange:
    """(start, end, columns) of a plain view's rows that spine times in [lo, hi] can
    use: the TTL before the first, up to the last."""
    start = None if lo is None or view.ttl_us is None else lo - view.ttl_us
    end = None if hi is None else hi + 1
    return start, end, [*view.join_keys, "event_ts", "created_ts", *feats]


def _chosen_aggregations(view: FeatureViewPlan, group: Sequence[FeatureRef]) -> list[Any]:
    specs = {a["name"]: a for a in view.aggregations}
    return [specs[r.feature] for r in group]


def aggregate_read_range(
    view: FeatureViewPlan, group: Sequence[FeatureRef], lo: int | None, hi: int | None
) -> ReadRange:
    """(start, end, all columns) of the events the windows of ``group`` need for
    spine times in [lo, hi]: from the first event any row's window holds (hops floor
    the request time first)."""
    from featurestore.engines.aggregate import WindowSpec
    from featurestore.engines.aggregate.view_records import events_start

    chosen = _chosen_aggregations(view, group)
    windows = [WindowSpec(a["function"], a["window_us"], a["hop_us"]) for a in chosen]
    start = None if lo is None else events_start(windows, end_us=lo)
    return start, None if hi is None else hi + 1, None


def _read(
    offline: DeltaOfflineStore,
    spec: OfflineTableSpec,
    start: int | None,
    end: int | None,
    *,
    keys: pl.DataFrame | None,
    version: int,
    columns: list[str] | None,
    rows: Mapping[str, pl.DataFrame] | None,
) -> pl.LazyFrame:
    """A view's rows in [start, end) from the pinned table, or from ``rows`` (the
    rows a partition's task received from the map side of a shuffle, which hold at
    least those)."""
    if rows is None or spec.name not in rows:
        return offline.read_view(
            spec, start_us=start, end_us=end, keys=keys, version=version, columns=columns
        )
    frame = rows[spec.name].lazy()
    ts = pl.col("event_ts").dt.epoch("us")
    if start is not None:
        frame = frame.filter(ts >= start)
    if end is not None:
        frame = frame.filter(ts < end)
    return frame.select(columns) if columns is not None else frame


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
    push_keys: bool = False,
    rows: Mapping[str, pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """Windowed aggregations as of each spine row's time, over the view's stored
    events (SEMANTICS: windowed aggregations), with the batch aggregation engine."""
    from featurestore.engines.aggregate import WindowSpec, aggregate_spine

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
        chosen = _chosen_aggregations(view, group)
        windows = [WindowSpec(a["function"], a["window_us"], a["hop_us"]) for a in chosen]
        if pinned is None:
            events = _no_rows(view, spine).lazy()
        else:
            start, end, _ = aggregate_read_range(view, group, lo, hi)
            events = _read(
                offline,
                offline_spec(view),
                start,
                end,
                keys=spine.select(view.join_keys) if push_keys else None,
                version=pinned,
                columns=None,
                rows=rows,
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


def _output_name(full_feature_names: bool, ref: FeatureRef) -> str:
    return f"{ref.view}__{ref.feature}" if full_feature_names else ref.feature


def _join_features(
    spine: pl.DataFrame,
    *,
    index: PlanIndex,
    columns: list[tuple[FeatureRef, str]],
    aggregated: list[FeatureRef],
    timestamp: str,
    offline: DeltaOfflineStore,
    as_of_known_time: bool,
    full_feature_names: bool,
    table_versions: dict[str, int | None] | None,
    push_keys: bool = False,
    rows: Mapping[str, pl.DataFrame] | None = None,
    aggregate_names: Mapping[FeatureRef, str] | None = None,
) -> tuple[pl.DataFrame, dict[str, int | None], dict[str, str]]:
    """The point-in-time features and the windowed aggregations of ``spine``, with
    the table versions read and the plan hashes: the work of one partition (or of
    the whole spine). Module-level and picklable, so a Ray task can run it."""
    frames, versions, hashes = _view_frames(
        index,
        columns,
        spine,
        timestamp=timestamp,
        offline=offline,
        table_versions=table_versions,
        push_keys=push_keys,
        rows=rows,
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
            out_name=(
                aggregate_names.__getitem__
                if aggregate_names is not None
                else partial(_output_name, full_feature_names)
            ),
            versions=versions,
            hashes=hashes,
            push_keys=push_keys,
            rows=rows,
        )
    return result, versions, hashes


def _partition_keys(index: PlanIndex, names: list[str]) -> list[str]:
    """The keys to cut the spine by (sorted): the first view's; views keyed the
    same way are shuffled to the partitions, others are read by each task with its
    keys pushed down."""
    return sorted(index.view(names[0]).join_keys)


def _join_partitioned(
    join: partial[tuple[pl.DataFrame, dict[str, int | None], dict[str, str]]],
    spine: pl.DataFrame,
    *,
    executor: Executor,
    table_versions: dict[str, int | None] | None,
) -> tuple[pl.DataFrame, dict[str, int | None], dict[str, str]]:
    """``join`` per key partition of ``spine`` on ``executor``, every task reading
    the table versions pinned here, the output in the spine's order."""
    index: PlanIndex = join.keywords["index"]
    columns: list[tuple[FeatureRef, str]] = join.keywords["columns"]
    aggregated: list[FeatureRef] = join.keywords["aggregated"]
    names = list(dict.fromkeys([r.view for r, _ in columns] + [r.view for r in aggregated]))
    if not names:
        return join(spine, table_versions=table_versions)
    offline: DeltaOfflineStore = join.keywords["offline"]
    versions: dict[str, int | None] = {}
    hashes: dict[str, str] = {}
    for name in names:  # pinned once, for every task: one snapshot per table
        _pin_view(
            index.view(name),
            spine,
            offline=offline,
            table_versions=table_versions,
            versions=versions,
            hashes=hashes,
        )
    keys = _partition_keys(index, names)
    # The views keyed by the partition keys are read once, by the map side of a
    # shuffle, over the whole spine's range (api/partitioned.py).
    timestamp: str = join.keywords["timestamp"]
    ts = spine.select(utc_column(spine, timestamp, obj="entity_df").dt.epoch("us"))
    lo, hi = ts.min().item(), ts.max().item()
    feats: dict[str, list[str]] = {}
    for ref, _ in columns:
        feats.setdefault(ref.view, [])
        if ref.feature not in feats[ref.view]:
            feats[ref.view].append(ref.feature)
    groups: dict[str, list[FeatureRef]] = {}
    for ref in aggregated:
        groups.setdefault(ref.view, []).append(ref)
    reads: dict[str, ViewRead] = {}
    for name in names:
        view = index.view(name)
        pinned = versions[name]
        if pinned is None or sorted(view.join_keys) != keys:
            continue
        start, end, cols = (
            aggregate_read_range(view, groups[name], lo, hi)
            if name in groups
            else plain_read_range(view, feats[name], lo, hi)
        )
        reads[name] = ViewRead(
            offline_spec(view), pinned, start, end, tuple(cols) if cols is not None else None
        )
    result = join_partitioned(
        partial(join, table_versions=versions),
        spine,
        executor=executor,
        keys=keys,
        reads=reads,
        offline=offline,
    )
    return result, versions, hashes


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
    executor: Executor | None = None,
) -> TrainingDataset:
    """The spine with every requested feature as of each row's ``timestamp``.

    With an ``executor`` of more than one partition, the spine is cut by a stable
    hash of the join keys (``engines.executor.partition``) and each piece is joined
    by a task that reads only its entities' rows of the tables pinned here; the
    pieces are put back in the spine's order. The result is the same, row for row.
    """
    started = time.perf_counter()
    spine = to_polars_frame(entity_df)
    if timestamp not in spine.columns:
        raise RequestError(
            "entity_df has no timestamp column",
            field=timestamp,
            hint=f"columns: {spine.columns}; pass timestamp='your_column'",
        )
    refs = index.resolve(list(features) if features is not None else None, feature_service)

    out_name = partial(_output_name, full_feature_names)

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
    aggregate_names = {r: out_name(r) for r in aggregated}
    where = {**dict(columns), **aggregate_names}
    for odp, _ in od_plans:
        for ref in odp.inputs:
            if ref not in where:
                where[ref] = f"__fs_input__{ref.view}__{ref.feature}"
                if ref.view in index.views and index.view(ref.view).aggregations:
                    # an on-demand input from a windowed aggregation: the aggregation
                    # engine computes it, under its hidden input name
                    aggregated.append(ref)
                    aggregate_names[ref] = where[ref]
                else:
                    columns.append((ref, where[ref]))
    join = partial(
        _join_features,
        index=index,
        columns=columns,
        aggregated=aggregated,
        aggregate_names=aggregate_names,
        timestamp=timestamp,
        offline=offline,
        as_of_known_time=as_of_known_time,
        full_feature_names=full_feature_names,
    )
    if executor is not None and executor.partitions > 1 and spine.height > 1:
        result, versions, hashes = _join_partitioned(
            join, spine, executor=executor, table_versions=table_versions
        )
    else:
        result, versions, hashes = join(spine, table_versions=table_versions)
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
