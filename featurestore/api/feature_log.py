"""Feature logging: what the server answered, row by row, into Delta tables.

The skew audit replays these rows against the offline path, so the log records
exactly what a model saw: per (request, entity) the typed entity keys and, per
feature, the value, its status and its event time, with the request time and the
registry version that served it.

The request path only appends a reference to the response to an in-memory queue
(bounded in rows); a background thread batches rows and appends them to
``_feature_logs/<service>`` (or, for ad-hoc feature lists, one
``_feature_logs/_adhoc_<hash>`` per set of views: every list over the same views
shares it), partitioned by request date. An ad-hoc table has a stable schema: the
columns of every feature of its views, null where a request did not ask for one
(issue 15: one table per distinct list made 127 tables out of 127 requests).
When the queue is full the rows are dropped and counted; ``log`` never blocks and never raises.

Row layout, version :data:`LOG_FORMAT` (stored in every row, ``log_format``)::

    log_format        int16     layout version
    request_id        string    the caller's id (or a generated one)
    entity_index      int32     position of the entity in the request
    request_time      datetime  UTC, microseconds: the time statuses were decided at
    request_date      date      partition column (UTC date of request_time)
    registry_version  int64     the registry version that served
    feature_service   string    null for an ad-hoc feature list
    features          string    JSON list of the "view:feature" references served
                                (an ad-hoc table also has columns for the others)
    <join keys>       typed     as the views declare them
    <view>__<feature>            typed value (null unless PRESENT)
    <view>__<feature>__status    string: PRESENT | MISSING | EXPIRED
    <view>__<feature>__event_ts  datetime: the served row's event time, null if MISSING

Columns are named by feature reference, not by the response's output names, so a
table's schema does not depend on ``full_feature_names``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from featurestore._dtypes import to_polars
from featurestore.errors import DefinitionError

if TYPE_CHECKING:
    import polars as pl

    from featurestore.api.online import LookupPlan, OnlineResponse
    from featurestore.compile.views import PlanIndex

log = logging.getLogger("featurestore.feature_log")

LOG_FORMAT = 1
LOGS_PREFIX = "_feature_logs"
FORMAT = "log_format"
REQUEST_ID = "request_id"
ENTITY_INDEX = "entity_index"
REQUEST_TIME = "request_time"
REQUEST_DATE = "request_date"
REGISTRY_VERSION = "registry_version"
FEATURE_SERVICE = "feature_service"
FEATURES = "features"
META_COLUMNS = (
    FORMAT,
    REQUEST_ID,
    ENTITY_INDEX,
    REQUEST_TIME,
    REQUEST_DATE,
    REGISTRY_VERSION,
    FEATURE_SERVICE,
    FEATURES,
)
STATUS_SUFFIX = "__status"
EVENT_TS_SUFFIX = "__event_ts"
# A service name is used as a table name segment as is only when it cannot confuse
# Delta's "key=value" partition directories or the offline store's name rules.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def value_column(ref: str) -> str:
    """The log column holding the value of feature reference ``"view:feature"``."""
    view, _, feature = ref.partition(":")
    return f"{view}__{feature}"


def status_column(ref: str) -> str:
    return value_column(ref) + STATUS_SUFFIX


def event_ts_column(ref: str) -> str:
    return value_column(ref) + EVENT_TS_SUFFIX


def log_table_name(
    *, feature_service: str | None = None, features: Sequence[str] | None = None
) -> str:
    """The offline table a feature service's (or an ad-hoc list's) rows are logged to.

    >>> log_table_name(feature_service="driver_ranking")
    '_feature_logs/driver_ranking'
    >>> log_table_name(features=["v:b", "v:a"]) == log_table_name(features=["v:a"])
    True

    Ad-hoc lists share the table of their set of views (the part before ``:``).
    """
    if (feature_service is None) == (features is None):
        raise DefinitionError(
            "give either feature_service or features, not both or neither",
            obj="feature log",
            hint="a log table belongs to one feature service or one ad-hoc feature list",
        )
    if feature_service is not None:
        if _PLAIN_NAME.fullmatch(feature_service):
            return f"{LOGS_PREFIX}/{feature_service}"
        return f"{LOGS_PREFIX}/service_{_digest(feature_service)}"
    assert features is not None  # checked above; narrows the type for mypy
    views = sorted({ref.partition(":")[0] for ref in features})
    return f"{LOGS_PREFIX}/_adhoc_{_digest(json.dumps(views))}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is logged at sampling ``rate``: a pure function of the id, so
    every process (and a later audit) agrees, and a request is logged whole or not."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2.0**64


class LogWriter(Protocol):
    """The one offline-store method the logger needs (``DeltaOfflineStore`` has it)."""

    def write_table(
        self,
        name: str,
        frame: pl.DataFrame,
        *,
        mode: Literal["append", "overwrite"],
        partition_by: Sequence[str] | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class LogLayout:
    """How one (registry version, feature list) is logged: table, columns and dtypes."""

    table: str
    keys: tuple[str, ...]
    key_dtypes: tuple[str, ...]
    outputs: tuple[str | None, ...]  # response output name per column; None: not asked for
    refs: tuple[str, ...]  # "view:feature" per column
    dtypes: tuple[str, ...]  # canonical dtype per column
    served: tuple[str, ...] = ()  # the references the response holds, in response order

    @classmethod
    def from_plan(
        cls, plan: LookupPlan, *, feature_service: str | None, features: Sequence[str] | None
    ) -> LogLayout:
        adhoc = feature_service is None
        key_dtypes: dict[str, str] = {}
        outputs: list[str | None] = []
        refs: list[str] = []
        dtypes: list[str] = []
        served: list[str] = []

        def add(
            view: str, names: Sequence[str], types: Sequence[str], asked: dict[str, str]
        ) -> None:
            # a service logs what it serves; an ad-hoc list every feature of its views
            for feat, dtype in zip(names, types, strict=True):
                out = asked.get(feat)
                if out is None and not adhoc:
                    continue
                outputs.append(out)
                refs.append(f"{view}:{feat}")
                dtypes.append(dtype)

        for v in plan.views:
            key_dtypes.update(zip(v.schema.join_keys, v.schema.key_dtypes, strict=True))
            # None: read only as an input of an on-demand view
            asked = {f: o for f, o in zip(v.features, v.outputs, strict=True) if o is not None}
            if not asked:
                continue
            served.extend(f"{v.schema.view}:{f}" for f in asked)
            add(v.schema.view, v.schema.features, v.schema.feature_dtypes, asked)
        for od in plan.on_demand:
            asked = dict(zip(od.features, od.outputs, strict=True))
            served.extend(f"{od.plan.name}:{f}" for f in asked)
            names, types = zip(*od.plan.outputs, strict=True) if od.plan.outputs else ((), ())
            add(od.plan.name, names, types, asked)
        table = log_table_name(
            feature_service=feature_service,
            features=None if feature_service is not None else (features or served),
        )
        layout = cls(
            table,
            plan.join_keys,
            tuple(key_dtypes[k] for k in plan.join_keys),
            tuple(outputs),
            tuple(refs),
            tuple(dtypes),
            tuple(served),
        )
        columns = [*META_COLUMNS, *layout.keys]
        for ref in refs:
            columns += [value_column(ref), status_column(ref), event_ts_column(ref)]
        clashes = sorted({c for c in columns if columns.count(c) > 1})
        if clashes:
            raise DefinitionError(
                "feature or key names clash with feature-log columns",
                obj=f"feature log {table!r}",
                value=clashes,
                hint=f"rename them; {', '.join(META_COLUMNS)} and names ending in "
                f"{STATUS_SUFFIX} or {EVENT_TS_SUFFIX} are taken",
            )
        return layout


class _Item(NamedTuple):
    """One queued response. A tuple: built on the request path, so it must be cheap."""

    response: OnlineResponse
    rows: int
    request_id: str
    feature_service: str | None
    features: tuple[str, ...] | None
    full_feature_names: bool
    plan: LookupPlan | None
    seq: int


class FeatureLogger:
    """Logs served responses to the offline store in the background.

    ``index`` maps a registry version to its :class:`PlanIndex` (``store.index``); it
    is only called from the writer thread, and only when ``log`` is not given the
    lookup plan. ``queue_size`` and ``batch_rows`` count rows (entities), not
    requests. ``sample_rates`` maps feature service names to the fraction of
    requests logged (``default_sample_rate`` for the others and for ad-hoc lists).

    Counters, all in rows: ``logged`` (queued), ``sampled_out``, ``dropped`` (queue
    full, or logger closed), ``written_rows``, ``failed_rows`` (given up after
    ``write_attempts`` failed writes); ``written_batches`` and ``write_errors``
    count table writes. :meth:`stats` returns them all, for metrics.

    >>> logger = FeatureLogger(store.offline, project=store.project,
    ...                        index=store.index)               # doctest: +SKIP
    >>> logger.log(store.get_online_features({"driver_id": [1001]},
    ...            feature_service="driver_ranking"),
    ...            feature_service="driver_ranking", request_id="r1")  # doctest: +SKIP
    >>> logger.close()                                             # doctest: +SKIP
    """

    def __init__(
        self,
        offline: LogWriter,
        *,
        project: str,
        index: Callable[[int], PlanIndex] | None = None,
        queue_size: int = 100_000,
        batch_rows: int = 10_000,
        flush_seconds: float = 5.0,
        sample_rates: Mapping[str, float] | None = None,
        default_sample_rate: float = 1.0,
        write_attempts: int = 3,
        warn_every_seconds: float = 60.0,
    ) -> None:
        rates = dict(sample_rates or {})
        for name, rate in [*rates.items(), ("default_sample_rate", default_sample_rate)]:
            if not 0.0 <= rate <= 1.0:
                raise DefinitionError(
                    "sample rate must be between 0 and 1",
                    obj="feature logger",
                    field=name,
                    value=rate,
                )
        for name, value in (
            ("queue_size", queue_size),
            ("batch_rows", batch_rows),
            ("write_attempts", write_attempts),
        ):
            if value < 1:
                raise DefinitionError("must be at least 1", obj="feature logger", field=name)
        if flush_seconds <= 0:
            raise DefinitionError(
                "must be positive", obj="feature logger", field="flush_seconds", value=flush_seconds
            )
        self.offline = offline
        self.project = project
        self.index = index
        self.queue_size = queue_size
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self.sample_rates = rates
        self.default_sample_rate = default_sample_rate
        self.write_attempts = write_attempts
        self.warn_every_seconds = warn_every_seconds
        self.logged = self.sampled_out = self.dropped = 0
        self.written_rows = self.failed_rows = self.written_batches = self.write_errors = 0
        self._pending: deque[_Item] = deque()
        self._pending_rows = 0
        self._oldest = 0.0  # monotonic time the oldest pending item was queued
        self._seq = self._done_seq = self._flush_to = 0
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        self._layouts: dict[tuple[Any, ...], LogLayout] = {}
        self._last_warning: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="feature-logger", daemon=True)
        self._thread.start()

    # -- the request path ---------------------------------------------------------
    def log(
        self,
        response: OnlineResponse,
        *,
        feature_service: str | None = None,
        features: Sequence[str] | None = None,
        full_feature_names: bool = False,
        request_id: str | None = None,
        plan: LookupPlan | None = None,
    ) -> None:
        """Queue ``response`` for logging. Never blocks, never raises.

        Pass the same ``feature_service`` or ``features`` (and ``full_feature_names``)
        the lookup was made with; ``plan`` (the lookup plan that served it) saves the
        writer thread from resolving it again.
        """
        try:
            rid = request_id if request_id is not None else uuid.uuid4().hex
            rows = len(next(iter(response.entities.values()))) if response.entities else 0
            if rows == 0:
                return
            rate = (
                self.sample_rates.get(feature_service, self.default_sample_rate)
                if feature_service is not None
                else self.default_sample_rate
            )
            keep = sampled(rid, rate)
            with self._cond:
                if not keep:
                    self.sampled_out += rows
                    return
                if self._closed or self._pending_rows + rows > self.queue_size:
                    self.dropped += rows
                    overloaded = True
                else:
                    overloaded = False
                    self._seq += 1
                    wake = not self._pending  # the writer sleeps until a first row comes
                    if wake:
                        self._oldest = time.monotonic()
                    self._pending.append(
                        _Item(
                            response,
                            rows,
                            rid,
                            feature_service,
                            None if features is None else tuple(features),
                            full_feature_names,
                            plan,
                            self._seq,
                        )
                    )
                    self._pending_rows += rows
                    self.logged += rows
                    if wake or self._pending_rows >= self.batch_rows:
                        self._cond.notify_all()
            if overloaded:
                self._warn("dropped", "feature log queue full or closed: %d rows dropped so far")
        except Exception:  # the request must not fail because logging did
            self._warn("log_error", "feature logger could not queue a response", exc_info=True)

    # -- control ------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Write every row queued before this call; True when done within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._seq
            self._flush_to = max(self._flush_to, target)
            self._cond.notify_all()
            while self._done_seq < target:
                if not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
        return True

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, stop the writer thread and refuse (count as dropped) later rows."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> FeatureLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "logged": self.logged,
                "sampled_out": self.sampled_out,
                "dropped": self.dropped,
                "queued": self._pending_rows,
                "written_rows": self.written_rows,
                "failed_rows": self.failed_rows,
                "written_batches": self.written_batches,
                "write_errors": self.write_errors,
            }

    # -- the writer thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    due = self._oldest + self.flush_seconds - time.monotonic()
                    if self._pending and (
                        self._closed
                        or self._pending_rows >= self.batch_rows
                        or self._flush_to > self._done_seq
                        or due <= 0
                    ):
                        break
                    if self._closed:
                        return
                    self._cond.wait(due if self._pending else None)
                items = list(self._pending)
                self._pending.clear()
                self._pending_rows = 0
            try:
                self._write(items)
            except Exception as exc:  # the writer thread must outlive any one batch
                self._give_up(sum(i.rows for i in items), "unexpected error", exc)
            finally:
                with self._cond:
                    self._done_seq = items[-1].seq
                    self._cond.notify_all()

    def _write(self, items: list[_Item]) -> None:
        groups: dict[LogLayout, list[_Item]] = {}
        for item in items:
            try:
                layout = self._layout(item)
            except Exception as exc:
                self._give_up(item.rows, "cannot resolve the features of a logged response", exc)
                continue
            groups.setdefault(layout, []).append(item)
        import polars as pl

        by_table: dict[str, list[pl.DataFrame]] = {}
        for layout, group in groups.items():
            try:
                frame = _build_frame(layout, group)
            except Exception as exc:
                self._give_up(sum(i.rows for i in group), "cannot build log rows", exc)
                continue
            by_table.setdefault(layout.table, []).append(frame)
        for table, frames in by_table.items():
            frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
            self._append(table, frame)

    def _append(self, table: str, frame: pl.DataFrame) -> None:
        for attempt in range(self.write_attempts):
            try:
                self.offline.write_table(table, frame, mode="append", partition_by=[REQUEST_DATE])
            except Exception as exc:
                with self._cond:
                    self.write_errors += 1
                if attempt == self.write_attempts - 1:
                    self._give_up(frame.height, f"cannot append to {table!r}", exc)
                    return
                time.sleep(min(0.1 * 2**attempt, 2.0))
            else:
                with self._cond:
                    self.written_rows += frame.height
                    self.written_batches += 1
                return

    def _layout(self, item: _Item) -> LogLayout:
        version = item.response.registry_version
        key = (version, item.feature_service, item.features, item.full_feature_names)
        layout = self._layouts.get(key)
        if layout is None:
            plan = item.plan
            if plan is None:
                if self.index is None:
                    raise DefinitionError(
                        "the logger was given no lookup plan and no index to resolve one",
                        obj="feature logger",
                        hint="pass index=store.index to FeatureLogger, or plan= to log()",
                    )
                from featurestore.api.online import build_lookup_plan

                plan = build_lookup_plan(
                    self.index(version),
                    project=self.project,
                    registry_version=version,
                    features=item.features,
                    feature_service=item.feature_service,
                    full_feature_names=item.full_feature_names,
                )
            layout = LogLayout.from_plan(
                plan, feature_service=item.feature_service, features=item.features
            )
            if len(self._layouts) > 1_000:  # distinct lists come from clients: bound them
                self._layouts.clear()
            self._layouts[key] = layout
        return layout

    def _give_up(self, rows: int, what: str, exc: Exception) -> None:
        with self._cond:
            self.failed_rows += rows
        self._warn("failed", f"feature log: {what}; {rows} rows lost: {exc}")

    def _warn(self, kind: str, message: str, *, exc_info: bool = False) -> None:
        """Log a warning at most once per ``warn_every_seconds`` per kind: an overloaded
        logger must not flood the server's log."""
        now = time.monotonic()
        last = self._last_warning.get(kind)
        if last is not None and now - last < self.warn_every_seconds:
            return
        self._last_warning[kind] = now
        if "%d" in message:
            log.warning(message, self.dropped)
        else:
            log.warning(message, exc_info=exc_info)


def _build_frame(layout: LogLayout, items: Sequence[_Item]) -> pl.DataFrame:
    """The log rows of ``items`` (all of ``layout``), typed per :data:`LOG_FORMAT`."""
    import numpy as np
    import polars as pl

    counts = np.fromiter((i.rows for i in items), dtype=np.int64, count=len(items))
    total = int(counts.sum())
    which = np.repeat(np.arange(len(items)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    times = np.fromiter((i.response.request_time_us for i in items), np.int64, len(items))
    utc = pl.Datetime("us", "UTC")
    request_time = pl.Series(REQUEST_TIME, times[which]).cast(utc)
    columns: list[pl.Series] = [
        pl.Series(FORMAT, np.full(total, LOG_FORMAT, dtype=np.int16)),
        pl.Series(REQUEST_ID, [i.request_id for i in items], pl.String).gather(which),
        pl.Series(ENTITY_INDEX, (np.arange(total) - starts).astype(np.int32)),
        request_time,
        request_time.dt.date().alias(REQUEST_DATE),
        pl.Series(
            REGISTRY_VERSION,
            np.fromiter((i.response.registry_version for i in items), np.int64, len(items)),
        ).gather(which),
        pl.Series(FEATURE_SERVICE, [i.feature_service for i in items], pl.String).gather(which),
        pl.Series(FEATURES, [json.dumps(list(layout.served))], pl.String).gather(
            np.zeros(total, np.int64)
        ),
    ]
    for key, dtype in zip(layout.keys, layout.key_dtypes, strict=True):
        columns.append(_typed(key, [i.response.entities[key] for i in items], dtype))
    for out, ref, dtype in zip(layout.outputs, layout.refs, layout.dtypes, strict=True):
        if out is None:  # an ad-hoc table's column this list did not ask for
            columns.append(pl.Series(value_column(ref), [None] * total, to_polars(dtype)))
            columns.append(pl.Series(status_column(ref), [None] * total, pl.String))
            columns.append(pl.Series(event_ts_column(ref), [None] * total, utc))
            continue
        columns.append(_typed(value_column(ref), [i.response.values[out] for i in items], dtype))
        columns.append(
            _typed(status_column(ref), [i.response.statuses[out] for i in items], "string")
        )
        stamps = _typed(event_ts_column(ref), [i.response.event_ts[out] for i in items], "int64")
        columns.append(stamps.cast(utc))
    return pl.DataFrame(columns)


def _typed(name: str, parts: Sequence[Sequence[Any]], dtype: str) -> pl.Series:
    import polars as pl

    values = list(itertools.chain.from_iterable(parts))
    target = to_polars(dtype)
    try:
        return pl.Series(name, values, dtype=target, strict=True)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
        # e.g. an int in a float column: cast what can be cast exactly, the rest is null
        return pl.Series(name, values, dtype=target, strict=False)


__all__ = [
    "LOGS_PREFIX",
    "LOG_FORMAT",
    "META_COLUMNS",
    "FeatureLogger",
    "LogLayout",
    "event_ts_column",
    "log_table_name",
    "sampled",
    "status_column",
    "value_column",
]
