"""The offline store: one Delta Lake table per feature view, plus generic named tables.

A view table holds the join keys, ``event_ts``, ``created_ts``, the features and the
partition column ``event_date`` (UTC date of ``event_ts``), so a time-range read only
opens the files of the dates it needs. Every write sorts its rows by (keys, event_ts,
created_ts), the order the point-in-time join reads fastest.

Each write is one Delta commit (a merge adds a second, purely cosmetic re-sort commit):
a writer killed half way leaves orphan files that no version references, and readers
keep seeing the previous version.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from featurestore.errors import FeatureStoreError, OfflineStoreConflictError, OfflineStoreError
from featurestore.stores.offline import _rewrite
from featurestore.stores.offline._prepare import prepare_generic_frame
from featurestore.stores.offline._schema import restore_exprs, stored_dtypes, to_storage_arrow
from featurestore.stores.offline._views import read_view_frame, write_view_rows
from featurestore.stores.offline.spec import OfflineTableSpec, WriteReport

T = TypeVar("T")

# A name is one or more "/"-separated segments, so later features can group their tables
# ("datasets/train_v3", "logs/served"); no "..", no absolute paths, nothing to escape.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=-]*(/[A-Za-z0-9_][A-Za-z0-9_.=-]*)*")
COMMIT_ATTEMPTS = 6


class DeltaOfflineStore:
    """Delta Lake tables under ``root``: a local directory or any URI deltalake accepts
    (``s3://bucket/prefix``, ``gs://...``, ``az://...``), with ``storage_options``
    passed through unchanged (credentials, endpoint, region).

    Concurrent writers are safe where the object store honours ``If-None-Match`` on
    PUT, which deltalake 1.x commits with (AWS S3, MinIO, R2); deltalake 1.x has no
    DynamoDB lock for stores without it. See docs/s3.md.
    """

    def __init__(self, root: str, *, storage_options: dict[str, str] | None = None) -> None:
        self._remote = "://" in root and not root.startswith("file://")
        self.root = (
            root.rstrip("/") if self._remote else os.path.abspath(root.removeprefix("file://"))
        )
        self.storage_options = dict(storage_options) if storage_options else None

    def __repr__(self) -> str:
        return f"DeltaOfflineStore({self.root!r})"

    # ------------------------------------------------------------------ tables

    def table_uri(self, name: str) -> str:
        """Where the table ``name`` lives."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise OfflineStoreError(
                "is not a valid table name",
                obj="offline store",
                field="name",
                value=name,
                hint="Use letters, digits, '_', '-', '.', '=' in segments separated by '/'",
            )
        if self._remote:
            return f"{self.root}/{name}"
        return os.path.join(self.root, *name.split("/"))

    def exists(self, name: str) -> bool:
        with self._errors(name, "checking for the table"):
            return DeltaTable.is_deltatable(self.table_uri(name), self.storage_options)

    def tables_under(self, prefix: str) -> list[str]:
        """Names of the Delta tables under ``prefix``, sorted: local directories are
        walked, object stores (S3 and the like) listed, with ``storage_options``."""
        base = self.table_uri(prefix)
        marker = "/_delta_log/"
        if not self._remote:
            found = []
            for dirpath, dirnames, _ in os.walk(base):
                if "_delta_log" in dirnames:
                    found.append(os.path.relpath(dirpath, self.root).replace(os.sep, "/"))
                    dirnames.clear()
            return sorted(found)
        from deltalake.fs import DeltaStorageHandler
        from pyarrow import fs

        with self._errors(prefix, "listing the tables"):
            listing = fs.PyFileSystem(DeltaStorageHandler(base, self.storage_options))
            paths = [
                info.path
                for info in listing.get_file_info(fs.FileSelector("", recursive=True))
                if marker in f"/{info.path}"
            ]
        tables = {f"/{p}".split(marker)[0].strip("/") for p in paths}
        return sorted(f"{prefix}/{t}" if t else prefix for t in tables)

    def version(self, name: str) -> int | None:
        """The current Delta version of ``name``, None if there is no such table."""
        table = self._open(name)
        return None if table is None else table.version()

    def history(self, name: str, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Delta commit history, newest first; empty if there is no such table."""
        table = self._open(name)
        if table is None:
            return []
        with self._errors(name, "reading the history"):
            return table.history(limit)

    # ------------------------------------------------------------------ views

    def write_view(
        self,
        spec: OfflineTableSpec,
        frame: pl.DataFrame,
        *,
        mode: Literal["append", "merge", "replace"],
        time_range: tuple[int, int] | None = None,
    ) -> WriteReport:
        """Store ``frame``'s rows in the view's table.

        - ``append`` adds the rows.
        - ``merge`` inserts the rows the table does not hold yet, so writing the same
          rows again changes nothing. A plain view's row is identified by (join keys,
          event_ts, created_ts), and a changed value is updated in place; an
          aggregated view's (``spec.event_log``) by its ``RECORD_ID``, which every row
          must carry.
        - ``replace`` makes the rows with ``start_us <= event_ts < end_us``
          (``time_range``) exactly the frame's, in one commit: what a backfill does, so
          re-runs, overlapping ranges and corrected sources all leave the source's
          rows, each once, and two equal events stay two rows. Every row of the frame
          must lie in the range.

        The table is created (empty, by exactly one of any racing writers) on first
        use. See :class:`WriteReport` for what is counted. Raises ``DataError`` for
        frames that break the spec, ``OfflineStoreError`` when storage fails
        (``retryable`` set for lost commit races that persisted through the retries).
        """
        if mode not in ("append", "merge", "replace"):
            raise OfflineStoreError(
                "unknown write mode",
                obj=f"view {spec.name!r}",
                field="mode",
                value=mode,
                hint="Use mode='append', 'merge' or 'replace'",
            )
        started = time.perf_counter()
        uri = self.table_uri(spec.name)
        with self._errors(spec.name, f"{mode} into the view table"):
            outcome = write_view_rows(
                spec,
                frame,
                uri=uri,
                mode=mode,
                time_range=time_range,
                storage_options=self.storage_options,
                open_table=lambda: self._open(spec.name),
                before_create=lambda: self._check_free(spec.name),
                retry=lambda fn: self._with_retries(spec.name, fn),
            )
        counts = outcome.counts
        return WriteReport(
            rows_written=counts.inserted,
            rows_updated=counts.updated,
            duplicates_dropped=outcome.duplicates_dropped,
            version=counts.version,
            seconds=time.perf_counter() - started,
            null_keys_dropped=outcome.null_keys_dropped,
            rows_replaced=counts.replaced,
        )

    def read_view(
        self,
        spec: OfflineTableSpec,
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        keys: pl.DataFrame | None = None,
        version: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.LazyFrame:
        """The view's rows with ``start_us <= event_ts < end_us`` (UTC microseconds),
        restricted to the entities in ``keys`` (a frame holding the join key columns),
        at table ``version`` (default: the version current now, pinned at this call).

        Columns default to keys, event_ts, created_ts and features, in declared dtypes.
        The filters are pushed into the scan, so files of other dates, and files whose
        key statistics exclude every wanted key, are not read. Row order is unspecified.
        """
        table = self._open_required(spec.name, version)
        with self._errors(spec.name, "reading the view table"):
            return read_view_frame(
                spec, table, start_us=start_us, end_us=end_us, keys=keys, columns=columns
            )

    # ------------------------------------------------------------------ generic tables

    def write_table(
        self,
        name: str,
        frame: pl.DataFrame,
        *,
        mode: Literal["append", "overwrite"],
        partition_by: Sequence[str] | None = None,
    ) -> WriteReport:
        """Write a generic table (saved datasets, logs). Every dtype round-trips through
        :meth:`read_table`; datetimes must be tz-aware and are stored in UTC.
        ``append`` adds columns it has not seen before; ``overwrite`` replaces data
        and schema in one commit (older versions stay readable until vacuumed).
        """
        if mode not in ("append", "overwrite"):
            raise OfflineStoreError(
                "unknown write mode",
                obj=f"table {name!r}",
                field="mode",
                value=mode,
                hint="Use mode='append' or mode='overwrite'",
            )
        started = time.perf_counter()
        uri = self.table_uri(name)
        prepared, dtypes = prepare_generic_frame(name, frame)
        data = to_storage_arrow(prepared, dtypes)

        def attempt() -> int:
            table = self._open(name)
            if table is None:
                self._check_free(name)
            # Writing through the DeltaTable object leaves it at the version committed.
            write_deltalake(
                table if table is not None else uri,
                data,
                mode=mode,
                partition_by=list(partition_by) if partition_by else None,
                schema_mode="merge" if mode == "append" else "overwrite",
                storage_options=self.storage_options,
            )
            return (table or self._open_required(name, None)).version()

        with self._errors(name, f"{mode} into the table"):
            version = self._with_retries(name, attempt)
        return WriteReport(
            rows_written=prepared.height,
            rows_updated=0,
            duplicates_dropped=0,
            version=version,
            seconds=time.perf_counter() - started,
        )

    def read_table(self, name: str, *, version: int | None = None) -> pl.LazyFrame:
        """A generic table at ``version`` (default: current), dtypes as written."""
        table = self._open_required(name, version)
        with self._errors(name, "reading the table"):
            lf = pl.scan_delta(table)
            casts = restore_exprs(lf.collect_schema(), stored_dtypes(table))
            return lf.with_columns(casts) if casts else lf

    # ------------------------------------------------------------------ maintenance

    def compact(self, name: str) -> dict[str, Any]:
        """Merge the small files of each date partition.

        View tables are rewritten sorted (partitions with more than one file only), so
        compaction keeps the order the point-in-time join relies on; other tables use
        deltalake's ``optimize.compact``. Returns counts of what was rewritten.
        """
        table = self._open_required(name, None)
        with self._errors(name, "compacting"):
            sort_by = _rewrite.view_sort_by(table)
            if sort_by is None:
                return dict(table.optimize.compact())
            files = _rewrite.partition_files(table)
            done = skipped = 0
            for dates in _rewrite.batches_of_dates(files, only_multi_file=True):
                snapshot = self._open_required(name, None)
                ok = _rewrite.rewrite_sorted(
                    snapshot, dates=dates, sort_by=sort_by, storage_options=self.storage_options
                )
                done, skipped = (done + len(dates), skipped) if ok else (done, skipped + 1)
            return {
                "partitions_rewritten": done,
                "batches_skipped_on_conflict": skipped,
                "files_before": files.height,
                "version": self._open_required(name, None).version(),
            }

    def vacuum(self, name: str, *, retention_hours: int = 168, dry_run: bool = False) -> list[str]:
        """Delete files no version newer than ``retention_hours`` references, and
        orphans left by killed writers. Time travel to older versions stops working
        for the files removed. Returns the files deleted (or that would be).

        A short retention can delete the not yet committed files of a writer that is
        running right now (its commit then fails); keep the default unless no one
        writes. Vacuum itself adds two commits (start and end) to the history.
        """
        table = self._open_required(name, None)
        with self._errors(name, "vacuuming"):
            return table.vacuum(
                retention_hours=retention_hours,
                dry_run=dry_run,
                enforce_retention_duration=False,
                full=True,
            )

    def delete_rows(self, name: str, predicate: str) -> int:
        """Delete the rows matching ``predicate`` (a SQL boolean expression over the
        table's columns, e.g. ``"user_id IN (1, 2)"``) in one commit; returns how many
        were deleted. Nothing matches: no commit, 0. Older versions keep the rows until
        :meth:`vacuum` removes their files."""
        table = self._open_required(name, None)

        def attempt() -> int:
            table.update_incremental()
            return int(table.delete(predicate)["num_deleted_rows"])

        with self._errors(name, "deleting rows"):
            return self._with_retries(name, attempt)

    # ------------------------------------------------------------------ internals

    def _open(self, name: str, version: int | None = None) -> DeltaTable | None:
        uri = self.table_uri(name)
        with self._errors(name, "opening the table"):
            try:
                return DeltaTable(uri, version=version, storage_options=self.storage_options)
            except TableNotFoundError:
                return None

    def _open_required(self, name: str, version: int | None) -> DeltaTable:
        latest = self._open(name)
        if latest is None:
            raise OfflineStoreError(
                "has no offline table yet",
                obj=f"table {name!r}",
                value=self.table_uri(name),
                hint="Materialize or backfill it first, or check the offline store root",
            )
        if version is None:
            return latest
        if not 0 <= version <= latest.version():
            raise OfflineStoreError(
                f"has no version {version}",
                obj=f"table {name!r}",
                field="version",
                value=version,
                hint=f"Versions run from 0 to {latest.version()}",
            )
        with self._errors(name, f"opening version {version}"):
            try:
                latest.load_as_version(version)
            except DeltaError as exc:
                raise OfflineStoreError(
                    f"cannot load version {version}: {exc}",
                    obj=f"table {name!r}",
                    field="version",
                    value=version,
                    hint="Its log or files may have been vacuumed or cleaned up",
                ) from exc
        return latest

    def _check_free(self, name: str) -> None:
        """Refuse to create a table inside another table, or around other tables, where
        vacuum of one would delete the other's files."""
        parts = name.split("/")
        for i in range(1, len(parts)):
            if self.exists("/".join(parts[:i])):
                raise OfflineStoreError(
                    f"would be created inside the table {'/'.join(parts[:i])!r}",
                    obj=f"table {name!r}",
                    hint="Pick a name that is not under an existing table's name",
                )
        if not self._remote:
            for dirpath, dirnames, _ in os.walk(self.table_uri(name)):
                if "_delta_log" in dirnames:
                    raise OfflineStoreError(
                        f"would contain the existing table at {dirpath!r}",
                        obj=f"table {name!r}",
                        hint="Pick a name that is not a prefix of an existing table's name",
                    )

    def _with_retries(self, name: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` again when it loses a commit race.

        Appends never conflict logically, and merges and range replaces are idempotent,
        so re-running the whole step against the newer snapshot is always safe.
        """
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                return fn()
            except CommitFailedError as exc:
                if attempt == COMMIT_ATTEMPTS - 1:
                    raise OfflineStoreConflictError(
                        f"lost {COMMIT_ATTEMPTS} commit races to concurrent writers: {exc}",
                        obj=f"table {name!r}",
                        hint="Retry later; another process is writing the same partitions",
                    ) from exc
                time.sleep(0.05 * 2**attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _errors(self, name: str, action: str) -> Iterator[None]:
        """Map deltalake, Arrow and OS failures to ``OfflineStoreError`` naming the table."""
        try:
            yield
        except FeatureStoreError:
            raise
        except CommitFailedError as exc:
            raise OfflineStoreConflictError(
                f"{action} lost a commit race: {exc}",
                obj=f"table {name!r}",
                hint="Retry; another writer committed first",
            ) from exc
        except (DeltaError, pa.ArrowException, OSError) as exc:
            raise OfflineStoreError(
                f"{action} failed: {exc}",
                obj=f"table {name!r}",
                value=self.table_uri(name),
                hint="Check the path, the storage_options and the table's schema",
            ) from exc
