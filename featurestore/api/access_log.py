"""The access log: who read which ``pii`` or ``sensitive`` features, for how many
entities, when and from where. One row per read, appended to the Delta table
``_access_log`` (partitioned by date), never rewritten except by ``erase``.

Like the feature logger (``api/feature_log.py``), the read path only appends a
tuple to an in-memory queue; a background thread writes batches, every
``flush_seconds`` or ``batch_rows``. A full queue drops rows and counts them
(``dropped``): a read never blocks or fails because logging did. Rows hold no
feature values and no entity keys, only counts, so erasing an entity leaves
the log as it is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from featurestore._time import now_us

if TYPE_CHECKING:
    import polars as pl


class LogWriter(Protocol):
    """The offline-store method the logger needs (``DeltaOfflineStore`` has it)."""

    def write_table(
        self,
        name: str,
        frame: pl.DataFrame,
        *,
        mode: Literal["append", "overwrite"],
        partition_by: Sequence[str] | None = None,
    ) -> Any: ...


log = logging.getLogger("featurestore.access_log")

ACCESS_LOG_TABLE = "_access_log"
ACCESS_LOG_FORMAT = 1


class Access(NamedTuple):
    at_us: int
    principal: str
    action: str  # online | training | export
    features: tuple[str, ...]
    classes: tuple[str, ...]
    entities: int
    origin: str
    request_id: str | None
    registry_version: int


class AccessLogger:
    """Queues :class:`Access` rows and appends them to ``_access_log`` in batches."""

    def __init__(
        self,
        offline: LogWriter,
        *,
        queue_size: int = 100_000,
        batch_rows: int = 5_000,
        flush_seconds: float = 2.0,
    ) -> None:
        self.offline = offline
        self.queue_size = queue_size
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.logged = self.dropped = self.written = self.failed = 0
        self._pending: deque[Access] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        self._flushing = 0
        self._thread = threading.Thread(target=self._run, name="access-logger", daemon=True)
        self._thread.start()

    def record(
        self,
        *,
        principal: str | None,
        action: str,
        features: Sequence[tuple[str, str]],
        entities: int,
        origin: str,
        request_id: str | None = None,
        registry_version: int = 0,
    ) -> None:
        """Queue one read of ``features`` (``(ref, class)`` pairs). Never raises."""
        row = Access(
            now_us(),
            principal or "(anonymous)",
            action,
            tuple(f for f, _ in features),
            tuple(c for _, c in features),
            entities,
            origin,
            request_id,
            registry_version,
        )
        with self._cond:
            if self._closed or len(self._pending) >= self.queue_size:
                self.dropped += 1
                return
            self._pending.append(row)
            self.logged += 1
            if len(self._pending) == 1:
                self._oldest = time.monotonic()
                self._cond.notify_all()  # the writer sleeps until a first row comes
            elif len(self._pending) >= self.batch_rows:
                self._cond.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Write everything queued so far; True when done within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._pending or self._busy:
                    if time.monotonic() > deadline or not self._thread.is_alive():
                        return False
                    self._cond.wait(0.05)
            finally:
                self._flushing -= 1
        return True

    def close(self, timeout: float = 30.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    _busy = False
    _oldest = 0.0

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    due = self._oldest + self.flush_seconds - time.monotonic()
                    if self._pending and (
                        self._closed
                        or self._flushing
                        or len(self._pending) >= self.batch_rows
                        or due <= 0
                    ):
                        break
                    if self._closed:
                        return
                    self._cond.wait(due if self._pending else None)
                rows = list(self._pending)
                self._pending.clear()
                self._busy = True
            try:
                self._write(rows)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(self, rows: list[Access]) -> None:
        for attempt in range(3):
            try:
                self.offline.write_table(
                    ACCESS_LOG_TABLE, access_frame(rows), mode="append", partition_by=["date"]
                )
            except Exception:
                if attempt == 2:
                    self.failed += len(rows)
                    log.warning("access log: %d rows not written", len(rows), exc_info=True)
                    return
                time.sleep(0.1 * 2**attempt)
            else:
                self.written += len(rows)
                return


def access_frame(rows: Sequence[Access]) -> pl.DataFrame:
    import polars as pl

    at = pl.Series("accessed_at", [r.at_us for r in rows], pl.Int64).cast(pl.Datetime("us", "UTC"))
    return pl.DataFrame(
        {
            "log_format": pl.Series([ACCESS_LOG_FORMAT] * len(rows), dtype=pl.Int16),
            "accessed_at": at,
            "date": at.dt.date(),
            "principal": [r.principal for r in rows],
            "action": [r.action for r in rows],
            "features": pl.Series([list(r.features) for r in rows], dtype=pl.List(pl.String)),
            "classes": pl.Series([list(r.classes) for r in rows], dtype=pl.List(pl.String)),
            "entities": pl.Series([r.entities for r in rows], dtype=pl.Int64),
            "origin": [r.origin for r in rows],
            "request_id": pl.Series([r.request_id for r in rows], dtype=pl.String),
            "registry_version": pl.Series([r.registry_version for r in rows], dtype=pl.Int64),
        }
    )


def read_access_log(
    offline: Any,
    *,
    principal: str | None = None,
    feature: str | None = None,
    since_us: int | None = None,
    limit: int | None = None,
) -> pl.DataFrame:
    """Rows of the access log, newest first, filtered (``feature`` is a
    ``"view:feature"`` reference or a view name)."""
    import polars as pl

    if not offline.exists(ACCESS_LOG_TABLE):
        return access_frame([]).drop("log_format")
    lf = offline.read_table(ACCESS_LOG_TABLE)
    if principal is not None:
        lf = lf.filter(pl.col("principal") == principal)
    if feature is not None:
        test = (
            pl.col("features").list.contains(feature)
            if ":" in feature
            else pl.col("features")
            .list.eval(pl.element().str.starts_with(f"{feature}:"))
            .list.any()
        )
        lf = lf.filter(test)
    if since_us is not None:
        lf = lf.filter(pl.col("accessed_at") >= pl.lit(since_us).cast(pl.Datetime("us", "UTC")))
    lf = lf.sort("accessed_at", descending=True).drop("log_format")
    if limit is not None:
        lf = lf.head(limit)
    return lf.collect()
