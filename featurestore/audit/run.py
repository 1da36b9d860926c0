"""``run_audit``: replay a feature log against the offline path and explain every difference.

Steps: read the log rows; per view, recompute at each row's request time with the
current definition (one point-in-time join over all rows, plus an as-of-known-time
join over the rows whose chosen row arrived late); compare; for mismatches of views
whose definition changed since serving, recompute with the serving definition too
(grouped per view and registry version); attribute causes (``causes.py``); count;
optionally compare distributions with a saved training dataset.
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
from featurestore.audit.causes import Columns
from featurestore.audit.compare import (
    add_causes,
    add_outcomes,
    mismatch_rows,
    non_matching,
    summarize,
)
from featurestore.audit.distribution import compare_distributions
from featurestore.audit.logs import T_US, LogRows, read_log
from featurestore.audit.recompute import (
    OUT_CREATED,
    OUT_EDGE,
    OUT_EVENT,
    SPINE_TIME,
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
        self.ttls: dict[str, int | None] = {}
        self.skipped: dict[str, str] = {}
        self.table_versions: dict[str, int | None] = {}
        self.key_columns: list[str] = []

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
        self.ttls[name] = described.ttl_us
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
            )
            full, known = both.full, both.known
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
                full[OUT_EDGE].alias(c0.edge),
            ]
        else:
            columns += [
                _nulls(c0.full_event, n, pl.Int64),
                _nulls(c0.full_created, n, pl.Int64),
                _nulls(c0.known_event, n, pl.Int64),
                pl.Series(c0.edge, np.zeros(n, dtype=bool)),
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
                both = recompute.from_source(old, spine, features=feats, repo=self.store.repo)
            except FeatureStoreError as exc:
                self.notes.append(
                    f"view {name!r} as of registry version {version} could not be "
                    f"recomputed from its source ({exc}); its mismatches count as "
                    "definition changes"
                )
                old_ok = old_ok.scatter(rows, False)
                continue
            for ref in refs:
                feat, c = ref.partition(":")[2], Columns.of(ref)
                if feat in feats:
                    updates[c.old_full] = updates[c.old_full].scatter(rows, both.full[feat])
                    updates[c.old_known] = updates[c.old_known].scatter(rows, both.known[feat])
        self.frame = self.frame.with_columns([*updates.values(), old_ok])

    # -- results ------------------------------------------------------------------
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
