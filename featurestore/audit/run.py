"""``run_audit``: replay a feature log against the offline path and explain every difference.

Steps: read the log rows; per view, recompute at each row's request time with the
current definition (one point-in-time join over all rows, plus an as-of-known-time
join over the rows whose chosen row arrived late); compare; for mismatches of views
whose definition changed since serving, recompute with the serving definition too
(grouped per view and registry version); for the mismatches still unexplained,
recompute at the online record's watermark, then at the request time shifted by the
edge tolerance (each only for the rows the previous one did not reproduce);
attribute causes (``causes.py``); count; optionally compare distributions with a
saved training dataset.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from featurestore._dtypes import to_polars
from featurestore._time import parse_duration_us, to_us
from featurestore.api.feature_log import REGISTRY_VERSION, log_table_name
from featurestore.audit.causes import Columns, explained_before_hypotheses, reproduces
from featurestore.audit.compare import (
    add_causes,
    add_outcomes,
    compares_floats,
    mismatch_rows,
    non_matching,
    summarize,
)
from featurestore.audit.distribution import compare_distributions
from featurestore.audit.logs import T_US, LogRows, read_log
from featurestore.audit.recompute import (
    OUT_CREATED,
    OUT_EVENT,
    SPINE_CAP,
    SPINE_TIME,
    ViewRecompute,
    recompute_for,
)
from featurestore.audit.report import AuditReport, FeatureResult, Thresholds
from featurestore.compile.views import FeatureViewPlan, PlanIndex
from featurestore.errors import FeatureStoreError, RequestError, VersionNotFoundError

if TYPE_CHECKING:
    from polars._typing import PolarsDataType

    from featurestore.api.store import FeatureStore

Instant = datetime | str | int


def run_audit(
    store: FeatureStore,
    *,
    start: Instant | None = None,
    end: Instant | None = None,
    feature_service: str | None = None,
    features: Sequence[str] | None = None,
    log_table: str | None = None,
    sample: float | None = None,
    training_dataset: str | None = None,
    thresholds: Thresholds | None = None,
    edge_tolerance: str | int | timedelta = "1s",
) -> AuditReport:
    """Audit the rows logged for ``feature_service`` (or the ad-hoc ``features`` list,
    or the table ``log_table``) with ``start <= request_time < end``.

    ``sample`` audits that fraction of requests. ``training_dataset`` names a saved
    dataset to compare distributions with. ``edge_tolerance`` is how close to
    ``event_ts + ttl`` a request time counts as a TTL edge.

    >>> report = run_audit(store, feature_service="driver_ranking")  # doctest: +SKIP
    >>> report.passed, report.cause_totals()["unexplained"]           # doctest: +SKIP
    """
    started = time.perf_counter()
    table = _table_name(feature_service, features, log_table)
    start_us = None if start is None else to_us(start, what="start")
    end_us = None if end is None else to_us(end, what="end")
    if start_us is not None and end_us is not None and start_us >= end_us:
        raise RequestError("start must be before end", field="start", value=start)
    tolerance = parse_duration_us(edge_tolerance)
    timings: dict[str, float] = {}
    with _stage(timings, "read_log"):
        log = read_log(store.offline, table, start_us=start_us, end_us=end_us, sample=sample)
    current_version = (
        store.pinned_version
        if store.pinned_version is not None
        else store.registry.head(fresh=True)
    )
    audit = _Audit(store, log, store.index(current_version), tolerance, timings)
    audit.run()
    with _stage(timings, "summarize"):
        results = audit.results()
    if training_dataset is not None:
        with _stage(timings, "distributions"):
            audit.add_distributions(results, training_dataset)
    frame = audit.frame
    with _stage(timings, "mismatch_rows"):
        mismatches = mismatch_rows(
            frame, audit.audited, dtypes=audit.dtypes, key_columns=audit.key_columns
        )
    return AuditReport(
        table=table,
        table_version=log.table_version,
        start_us=start_us,
        end_us=end_us,
        sample=sample,
        rows=frame.height,
        requests=frame["request_id"].n_unique() if frame.height else 0,
        current_version=current_version,
        served_versions=sorted(int(v) for v in frame[REGISTRY_VERSION].unique()),
        view_table_versions=audit.table_versions,
        features=results,
        mismatches=mismatches,
        thresholds=thresholds or Thresholds(),
        training_dataset=training_dataset,
        notes=audit.notes,
        key_columns=audit.key_columns,
        served_age=audit.served_age(),
        view_ttl_seconds={
            v: None if ttl is None else ttl / 1e6 for v, ttl in audit.view_ttls.items()
        },
        seconds=time.perf_counter() - started,
        timings=timings,
    )


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - started


def _table_name(
    feature_service: str | None, features: Sequence[str] | None, log_table: str | None
) -> str:
    given = [x for x in (feature_service, features, log_table) if x is not None]
    if len(given) != 1:
        raise RequestError(
            "give exactly one of feature_service, features or log_table",
            obj="skew audit",
            hint="e.g. --feature-service driver_ranking",
        )
    if log_table is not None:
        return log_table
    return log_table_name(
        feature_service=feature_service, features=None if features is None else list(features)
    )


class _Audit:
    """The working state of one audit: a wide frame, one column per fact."""

    def __init__(
        self,
        store: FeatureStore,
        log: LogRows,
        current: PlanIndex,
        tol: int,
        timings: dict[str, float],
    ) -> None:
        self.store = store
        self.timings = timings
        self.log = log
        self.current = current
        self.tolerance = tol
        self.refs = log.refs
        self.frame = log.frame.with_columns(
            log.has_ref(r).alias(Columns.of(r).has) for r in self.refs
        )
        self.notes: list[str] = []
        self.indexes: dict[int, PlanIndex | None] = {}
        for v in self.frame[REGISTRY_VERSION].unique().to_list():
            self.indexes[int(v)] = self._index(int(v))
        self.views: dict[str, list[str]] = {}
        for ref in self.refs:
            self.views.setdefault(Columns.of(ref).view, []).append(ref)
        self.dtypes: dict[str, str] = {}
        self.ttls: dict[str, int | None] = {}  # the TTLs causes may use (plain views)
        self.view_ttls: dict[str, int | None] = {}
        self.skipped: dict[str, str] = {}
        self.table_versions: dict[str, int | None] = {}
        self.key_columns: list[str] = []
        self.rows: dict[str, pl.DataFrame] = {}  # per view: what its recompute read
        # per (view, registry version) whose definition changed: what served
        self.served_defs: dict[tuple[str, int], tuple[FeatureViewPlan, ViewRecompute, pl.DataFrame]]
        self.served_defs = {}

    @property
    def audited(self) -> list[str]:
        return [r for r in self.refs if r not in self.skipped]

    def _index(self, version: int) -> PlanIndex | None:
        try:
            return self.store.index(version)
        except VersionNotFoundError:
            self.notes.append(
                f"registry version {version} no longer exists: definition changes since "
                "it cannot be detected for its rows"
            )
            return None

    def _served_view(self, name: str) -> FeatureViewPlan | None:
        """The view as some serving version defined it (newest first)."""
        for v in sorted(self.indexes, reverse=True):
            index = self.indexes[v]
            if index is not None and name in index.views:
                return index.views[name]
        return None

    # -- steps --------------------------------------------------------------------
    def run(self) -> None:
        with _stage(self.timings, "recompute"):
            for name, refs in self.views.items():
                self._recompute_current(name, refs)
        with _stage(self.timings, "compare"):
            self.frame = add_outcomes(self.frame, self.audited)
        with _stage(self.timings, "served_definitions"):
            for name, refs in self.views.items():
                compared = [r for r in refs if r not in self.skipped]
                if compared:
                    self._recompute_served_definitions(name, compared)
        with _stage(self.timings, "hypotheses"):
            for name, refs in self.views.items():
                compared = [r for r in refs if r not in self.skipped]
                if compared:
                    self._hypotheses(name, compared)
        with _stage(self.timings, "causes"):
            self.frame = add_causes(
                self.frame, self.audited, ttls=self.ttls, tolerance_us=self.tolerance
            )

    def _recompute_current(self, name: str, refs: list[str]) -> None:
        view = self.current.views.get(name)
        described = view or self._served_view(name)
        for ref in refs:
            feat = ref.partition(":")[2]
            source = view if view is not None and feat in view.features else described
            if source is None or feat not in source.features:
                self.skipped[ref] = "no registry version defines this feature"
                continue
            self.dtypes[ref] = dict(zip(source.features, source.feature_dtypes, strict=True))[feat]
        refs = [r for r in refs if r not in self.skipped]
        if not refs or described is None:
            return
        recompute = recompute_for(view) if view is not None else None
        problem = None
        if view is not None and recompute is None:
            problem = "no offline recompute supports this view"
        elif any(k not in self.frame.columns for k in described.join_keys):
            problem = f"the log lacks some of the join keys {list(described.join_keys)}"
        if problem is not None:
            self.skipped.update(dict.fromkeys(refs, problem))
            return
        # TTL is no cause for aggregated views (SEMANTICS, "Windowed aggregations").
        self.ttls[name] = None if described.aggregations else described.ttl_us
        self.view_ttls[name] = described.ttl_us
        self.key_columns += [k for k in described.join_keys if k not in self.key_columns]
        c0 = Columns.of(refs[0])
        n = self.frame.height
        feats = [r.partition(":")[2] for r in refs]
        now_feats = [f for f in feats if view is not None and f in view.features]
        full = known = None
        if view is None or recompute is None:
            self.notes.append(f"view {name!r} is not in the current registry version")
        else:
            version = self.store.offline.version(name) if self.store.offline.exists(name) else None
            self.table_versions[name] = version
            both = recompute.from_offline(
                view,
                self._spine(view),
                features=now_feats,
                offline=self.store.offline,
                table_version=version,
                margin_us=self.tolerance,
            )
            full, known = both.full, both.known
            if both.rows is not None:
                self.rows[name] = both.rows
        columns: list[pl.Series] = []
        for ref, feat in zip(refs, feats, strict=True):
            c = Columns.of(ref)
            dtype = to_polars(self.dtypes[ref])
            if full is not None and known is not None and feat in now_feats:
                columns += [full[feat].alias(c.full), known[feat].alias(c.known)]
            else:
                columns += [_nulls(c.full, n, dtype), _nulls(c.known, n, dtype)]
            columns += [_nulls(c.old_full, n, dtype), _nulls(c.old_known, n, dtype)]
        if full is not None and known is not None:
            columns += [
                full[OUT_EVENT].alias(c0.full_event),
                full[OUT_CREATED].alias(c0.full_created),
                known[OUT_EVENT].alias(c0.known_event),
            ]
        else:
            columns += [
                _nulls(c0.full_event, n, pl.Int64),
                _nulls(c0.full_created, n, pl.Int64),
                _nulls(c0.known_event, n, pl.Int64),
            ]
        changed = {
            v: index is not None
            and name in index.views
            and (view is None or index.views[name].hash != view.hash)
            for v, index in self.indexes.items()
        }
        columns.append(
            self.frame[REGISTRY_VERSION]
            .replace_strict(changed, default=False, return_dtype=pl.Boolean)
            .alias(c0.changed)
        )
        columns.append(pl.Series(c0.old_ok, np.ones(n, dtype=bool)))
        self.frame = self.frame.with_columns(columns)

    def _spine(self, view: FeatureViewPlan) -> pl.DataFrame:
        utc = pl.Datetime("us", "UTC")
        return self.frame.select(
            *[
                pl.col(k).cast(to_polars(d), strict=False)
                for k, d in zip(view.join_keys, view.key_dtypes, strict=True)
            ],
            pl.col(T_US).cast(utc).alias(SPINE_TIME),
        )

    def _recompute_served_definitions(self, name: str, refs: list[str]) -> None:
        """For mismatching rows served by a definition that has changed since, the
        value that definition gives today, recomputed from the batch source."""
        c0 = Columns.of(refs[0])
        any_mismatch = pl.any_horizontal(non_matching(r) for r in refs)
        wanted = self.frame.select(pl.col(c0.changed) & any_mismatch).to_series()
        if not wanted.any():
            return
        updates: dict[str, pl.Series] = {
            col: self.frame[col]
            for r in refs
            for col in (Columns.of(r).old_full, Columns.of(r).old_known)
        }
        old_ok = self.frame[c0.old_ok]
        for version in sorted(self.indexes):
            index = self.indexes[version]
            rows = np.flatnonzero((wanted & (self.frame[REGISTRY_VERSION] == version)).to_numpy())
            if not rows.size or index is None:
                continue
            old = index.views[name]
            recompute = recompute_for(old)
            feats = [r.partition(":")[2] for r in refs if r.partition(":")[2] in old.features]
            if recompute is None:
                old_ok = old_ok.scatter(rows, False)
                continue
            spine = self._spine(old)[rows]
            try:
                both = recompute.from_source(
                    old, spine, features=feats, repo=self.store.repo, margin_us=self.tolerance
                )
            except FeatureStoreError as exc:
                self.notes.append(
                    f"view {name!r} as of registry version {version} could not be "
                    f"recomputed from its source ({exc}); its mismatches count as "
                    "definition changes"
                )
                old_ok = old_ok.scatter(rows, False)
                continue
            if both.rows is not None:
                self.served_defs[(name, version)] = (old, recompute, both.rows)
            for ref in refs:
                feat, c = ref.partition(":")[2], Columns.of(ref)
                if feat in feats:
                    updates[c.old_full] = updates[c.old_full].scatter(rows, both.full[feat])
                    updates[c.old_known] = updates[c.old_known].scatter(rows, both.known[feat])
        self.frame = self.frame.with_columns([*updates.values(), old_ok])

    def _hypotheses(self, name: str, refs: list[str]) -> None:
        """Recompute the still unexplained mismatches of view ``name`` at the online
        record's watermark, then those still unexplained at the request time shifted
        by the tolerance (``causes.py`` names a cause only when one reproduces).
        Rows served by a definition that changed since are recomputed with it."""
        c0 = Columns.of(refs[0])
        rows = self._pending(refs, c0.stale_ok)
        for part, view, recompute, data in self._definitions(name, rows):
            cap = self._watermarks(refs, part)
            r = self.frame[T_US].gather(part).to_numpy()
            spine = self._spine(view)[part].with_columns(
                pl.Series(SPINE_TIME, np.maximum(r, cap) if view.aggregations else r).cast(
                    pl.Datetime("us", "UTC")
                ),
                pl.Series(SPINE_CAP, cap),
            )
            self._put(view, recompute, data, spine, part, refs, c0.stale_ok, "stale")
        if self.tolerance <= 0:
            return
        rows = self._pending(refs, c0.shift_ok)
        shift = timedelta(microseconds=self.tolerance)
        for part, view, recompute, data in self._definitions(name, rows):
            base = self._spine(view)[part]
            t = base[SPINE_TIME]
            spine = pl.concat([base.with_columns(t - shift), base.with_columns(t + shift)])
            self._put(view, recompute, data, spine, part, refs, c0.shift_ok, "early", "later")

    def _definitions(
        self, name: str, rows: np.ndarray
    ) -> Iterator[tuple[np.ndarray, FeatureViewPlan, ViewRecompute, pl.DataFrame]]:
        """``rows`` by the definition that served them: the serving one where it
        changed since and could be recomputed, else the current one."""
        if not rows.size:
            return
        versions = self.frame[REGISTRY_VERSION].gather(rows).to_numpy()
        changed = self.frame[Columns.of(name + ":").changed].gather(rows).to_numpy()
        rest = np.ones(rows.size, dtype=bool)
        for (view_name, version), (old, served, data) in self.served_defs.items():
            mine = changed & (versions == version) & (view_name == name)
            if mine.any():
                rest &= ~mine
                yield rows[mine], old, served, data
        view = self.current.views.get(name)
        current = None if view is None else recompute_for(view)
        if rest.any() and view is not None and current is not None and name in self.rows:
            yield rows[rest], view, current, self.rows[name]

    def _pending(self, refs: list[str], flag: str) -> np.ndarray:
        """Rows where some feature mismatches and no cause so far reproduces it."""
        pending = []
        for ref in refs:
            c = Columns.of(ref)
            f = compares_floats(self.frame, c)
            done = explained_before_hypotheses(c, is_float=f)
            if c.stale_ok in self.frame.columns:
                done |= pl.col(c.stale_ok) & reproduces(c, c.stale, is_float=f)
            pending.append(non_matching(ref) & ~done)
        mask = self.frame.select(pl.any_horizontal(pending)).to_series()
        return np.flatnonzero(mask.to_numpy())

    def _watermarks(self, refs: list[str], rows: np.ndarray) -> np.ndarray:
        """Per row: the served record's event time; without a record, the newest
        event time the view served up to that request time (none: no rows at all)."""
        served = pl.max_horizontal(pl.col(Columns.of(r).served_ts) for r in refs).dt.epoch("us")
        own = self.frame.select(served).to_series()
        cap = own.gather(rows)
        if cap.null_count():
            seen = (
                self.frame.select(pl.col(T_US), served.alias("ts"))
                .with_row_index("i")
                .sort(T_US)
                .with_columns(pl.col("ts").cum_max().max().over(T_US))
                .sort("i")["ts"]
            )
            cap = cap.fill_null(seen.gather(rows))
        return cap.fill_null(np.iinfo(np.int64).min).to_numpy()

    def _put(
        self,
        view: FeatureViewPlan,
        recompute: ViewRecompute,
        data: pl.DataFrame,
        spine: pl.DataFrame,
        rows: np.ndarray,
        refs: list[str],
        flag: str,
        *kinds: str,
    ) -> None:
        """Recompute ``spine`` (``len(kinds)`` stacked copies of ``rows``) and scatter
        the values into the hypothesis columns ``kinds`` of each feature; mark the
        rows in ``flag``."""
        refs = [r for r in refs if r.partition(":")[2] in view.features]
        feats = [r.partition(":")[2] for r in refs]
        values = recompute.hypothesis(view, spine, data, features=feats)
        updates = []
        for ref, feat in zip(refs, feats, strict=True):
            c = Columns.of(ref)
            for i, kind in enumerate(kinds):
                part = values[feat].slice(i * rows.size, rows.size)
                base = self._column(getattr(c, kind), self.frame.schema[c.full])
                updates.append(base.scatter(rows, part.cast(base.dtype)))
        updates.append(self._column(flag, pl.Boolean).scatter(rows, True))
        self.frame = self.frame.with_columns(updates)

    def _column(self, name: str, dtype: PolarsDataType) -> pl.Series:
        """A hypothesis column: made (null, False for flags) the first time it is
        needed, so audits whose mismatches are all explained early carry none."""
        if name in self.frame.columns:
            return self.frame[name]
        if dtype == pl.Boolean:
            return pl.Series(name, np.zeros(self.frame.height, dtype=bool))
        return _nulls(name, self.frame.height, dtype)

    # -- results ------------------------------------------------------------------
    def served_age(self) -> dict[str, dict[str, float]]:
        """Per view: how old the served records were at request time (seconds)."""
        exprs = []
        for name, refs in self.views.items():
            ts = pl.max_horizontal(pl.col(Columns.of(r).served_ts) for r in refs)
            age = (pl.col(T_US) - ts.dt.epoch("us")).cast(pl.Float64) / 1e6
            exprs += [
                age.quantile(0.5).alias(f"{name}|p50"),
                age.quantile(0.99).alias(f"{name}|p99"),
                age.max().alias(f"{name}|max"),
            ]
        if not exprs or not self.frame.height:
            return {}
        row = self.frame.select(exprs).row(0, named=True)
        out: dict[str, dict[str, float]] = {}
        for key, value in row.items():
            if value is not None:
                view, _, stat = key.partition("|")
                out.setdefault(view, {})[stat] = float(value)
        return out

    def results(self) -> list[FeatureResult]:
        counted = {r.feature: r for r in summarize(self.frame, self.audited, dtypes=self.dtypes)}
        out = []
        for ref in self.refs:
            if ref in counted:
                out.append(counted[ref])
            else:
                rows = int(self.frame[Columns.of(ref).has].sum())
                dtype = self.dtypes.get(ref, "unknown")
                out.append(FeatureResult(ref, dtype, rows, skipped=self.skipped[ref]))
        return out

    def add_distributions(self, results: list[FeatureResult], name: str) -> None:
        from featurestore.api.training import load_lineage, load_saved

        lineage = load_lineage(name, offline=self.store.offline)
        data, _ = load_saved(name, offline=self.store.offline)
        in_dataset = set(lineage.features)
        for result in results:
            ref = result.feature
            if ref not in in_dataset:
                self.notes.append(f"{ref} is not in training dataset {name!r}")
                continue
            view, _, feat = ref.partition(":")
            column = f"{view}__{feat}" if lineage.full_feature_names else feat
            c = Columns.of(ref)
            served = self.frame.filter(pl.col(c.has))[c.served]
            result.distribution = compare_distributions(
                data[column], served, dtype=self.dtypes.get(ref, result.dtype)
            )


def _nulls(name: str, n: int, dtype: PolarsDataType) -> pl.Series:
    return pl.Series(name, [None], dtype).gather(np.zeros(n, dtype=np.int64))
