"""Delta writes from tasks: each task writes Parquet files, the driver commits once.

A job (one backfill, one dataset) has a ``job_id``. Its tasks write their rows as
Parquet files into the table's directory, named ``part-<job_id>-<task>-<uuid>``, and
return the Delta *add actions* describing them (path, size, partition values, column
statistics for file skipping). No task touches the log. The driver then commits every
add action in **one** transaction (``DeltaTable.create_write_transaction``), carrying
the job id in the commit metadata and as a Delta application transaction
(``txn``: app id ``featurestore:<job_id>``). So:

- a job that fails (a task raises, a worker dies past its retries, the driver is
  killed) commits nothing: the table stays at its old version, and the files its tasks
  wrote are orphans no version references, removed by :func:`remove_orphans` (called
  on the failure path, and safe to call any time later);
- a re-run of a committed job id commits nothing (the ``txn`` is in the log) and
  removes the files the re-run wrote;
- a retried task writes new files under a new uuid; only the attempt whose result
  reaches the driver is committed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, Transaction

from featurestore.engines.executor.base import Executor
from featurestore.errors import OfflineStoreError

APP_PREFIX = "featurestore:"
JOB_KEY = "featurestore.job_id"


@dataclass(frozen=True)
class TableTarget:
    """Where a job writes: a Delta table's URI, its partition columns, the object
    store options, and the Arrow schema every task's rows must have (checked in the
    task, before any file is written). Picklable, so it travels to the tasks."""

    uri: str
    partition_by: tuple[str, ...] = ()
    storage_options: dict[str, str] | None = field(default=None, hash=False)
    schema: pa.Schema | None = field(default=None, hash=False)

    def filesystem(self) -> pafs.FileSystem:
        """The table directory as a pyarrow filesystem (paths relative to it)."""
        handler = DeltaStorageHandler(self.uri, self.storage_options)
        return pafs.PyFileSystem(handler)


def _stat_value(value: Any, *, upper: bool) -> Any:
    """A min/max statistic as Delta's JSON holds it. Timestamps are kept to the
    millisecond, rounded outward, so the bound stays a bound."""
    if isinstance(value, datetime):
        ms = value.replace(microsecond=value.microsecond // 1000 * 1000)
        if upper and ms != value:
            ms += timedelta(milliseconds=1)
        return ms.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value if len(value) <= 32 else None  # a cut max would not bound
    if isinstance(value, float) and value != value:  # NaN: no bound
        return None
    return value


def file_stats(data: pa.Table) -> str:
    """Delta's per-file statistics: row count, nulls, and min/max of the columns whose
    type skipping can use (numbers, dates, timestamps, short strings)."""
    import json

    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name, column in zip(data.column_names, data.columns, strict=True):
        nulls[name] = column.null_count
        kind = column.type
        usable = (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_date(kind)
            or pa.types.is_timestamp(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
        )
        if not usable or column.null_count == len(column):
            continue
        bounds = pc.min_max(column).as_py()
        lo = _stat_value(bounds["min"], upper=False)
        hi = _stat_value(bounds["max"], upper=True)
        if lo is not None and hi is not None:
            mins[name], maxs[name] = lo, hi
    return json.dumps(
        {"numRecords": data.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    )


def _partition_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def write_part(target: TableTarget, data: pa.Table, *, job_id: str, task: int) -> list[AddAction]:
    """Write ``data`` (in the table's storage schema, partition columns included) as
    one Parquet file per partition value; the add actions to commit."""
    if target.schema is not None and not data.schema.equals(target.schema):
        raise OfflineStoreError(
            "a task's rows do not have the table's schema",
            obj=f"table {target.uri!r}",
            value=str(data.schema),
            hint=f"produce rows with the schema {target.schema}",
        )
    fs = target.filesystem()
    keys = list(target.partition_by)
    groups: list[tuple[dict[str, str | None], pa.Table]] = []
    if keys and data.num_rows:
        distinct = data.select(keys).group_by(keys).aggregate([]).to_pylist()
        for combo in distinct:
            mask = None
            for k, v in combo.items():
                cond = pc.is_null(data[k]) if v is None else pc.equal(data[k], v)
                mask = cond if mask is None else pc.and_(mask, cond)
            values = {k: _partition_value(v) for k, v in combo.items()}
            groups.append((values, data.filter(mask).drop_columns(keys)))
    elif data.num_rows:
        groups.append(({}, data))
    adds: list[AddAction] = []
    for values, rows in groups:
        directory = "/".join(
            f"{k}={'__HIVE_DEFAULT_PARTITION__' if v is None else v}" for k, v in values.items()
        )
        name = f"part-{job_id}-{task:05d}-{uuid.uuid4().hex}.snappy.parquet"
        path = f"{directory}/{name}" if directory else name
        with fs.open_output_stream(path) as sink:
            pq.write_table(rows, sink, compression="snappy")
        size = fs.get_file_info(path).size
        adds.append(
            AddAction(
                path=path,
                size=int(size or 0),
                partition_values=values,
                modification_time=int(time.time() * 1000),
                data_change=True,
                stats=file_stats(rows),
            )
        )
    return adds


def committed(table: DeltaTable, job_id: str) -> bool:
    """Whether the job id's transaction is already in the table's log."""
    return table.transaction_version(APP_PREFIX + job_id) is not None


def remove_orphans(target: TableTarget, job_id: str, *, keep: Sequence[str] = ()) -> list[str]:
    """Delete the files of ``job_id`` that the current table version does not
    reference (and that are not in ``keep``); the paths removed."""
    fs = target.filesystem()
    try:
        table = DeltaTable(target.uri, storage_options=target.storage_options)
        live = set(pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist())
    except Exception:
        live = set()
    live |= set(keep)
    marker = f"part-{job_id}-"
    removed: list[str] = []
    for info in fs.get_file_info(pafs.FileSelector("", recursive=True)):
        path = info.path.lstrip("/")
        if info.type == pafs.FileType.File and marker in path and path not in live:
            fs.delete_file(path)
            removed.append(path)
    return removed


def commit_job(
    target: TableTarget,
    adds: Sequence[AddAction],
    *,
    job_id: str,
    mode: Literal["append", "overwrite"] = "append",
    partition_filters: list[tuple[str, str, Any]] | None = None,
) -> int | None:
    """Commit every add action of the job in one transaction; the new table version,
    or None when the job was committed before (its re-run's files are removed). On a
    failed commit the job's files are removed and the error is raised."""
    table = DeltaTable(target.uri, storage_options=target.storage_options)
    if committed(table, job_id):
        remove_orphans(target, job_id)
        return None
    props = CommitProperties(
        custom_metadata={JOB_KEY: job_id},
        app_transactions=[Transaction(app_id=APP_PREFIX + job_id, version=1)],
    )
    try:
        table.create_write_transaction(
            list(adds),
            mode=mode,
            schema=table.schema(),  # files follow the table's schema; never change it here
            partition_by=list(target.partition_by) or None,
            partition_filters=partition_filters,
            commit_properties=props,
        )
    except Exception as exc:
        remove_orphans(target, job_id)
        raise OfflineStoreError(
            f"the job's commit failed ({type(exc).__name__}: {exc}); the table is unchanged",
            obj=f"table {target.uri!r}",
            field="job_id",
            value=job_id,
            hint="run the job again: its files were removed",
        ) from exc
    table.update_incremental()
    for entry in table.history(32):  # ours, not a racing writer's later commit
        if entry.get(JOB_KEY) == job_id and "version" in entry:
            return int(entry["version"])
    return table.version()


def _write_task(
    numbered: tuple[int, Any],
    *,
    target: TableTarget,
    produce: Callable[[Any], pa.Table],
    job_id: str,
) -> list[AddAction]:
    task, item = numbered
    return write_part(target, produce(item), job_id=job_id, task=task)


def run_write_job(
    executor: Executor,
    target: TableTarget,
    produce: Callable[[Any], pa.Table],
    items: Sequence[Any],
    *,
    job_id: str,
    mode: Literal["append", "overwrite"] = "append",
    partition_filters: list[tuple[str, str, Any]] | None = None,
) -> int | None:
    """``produce`` each item's rows in a task that writes them; one commit at the end
    (see the module docstring). ``produce`` must be picklable (module-level, or a
    ``functools.partial`` of one) and return rows in the table's storage schema."""
    table = DeltaTable(target.uri, storage_options=target.storage_options)
    if committed(table, job_id):
        return None
    task = partial(_write_task, target=target, produce=produce, job_id=job_id)
    try:
        results = executor.map(task, list(enumerate(items)))
    except BaseException:
        remove_orphans(target, job_id)
        raise
    adds = [add for result in results for add in result]
    return commit_job(target, adds, job_id=job_id, mode=mode, partition_filters=partition_filters)
