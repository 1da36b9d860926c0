"""Merge semantics against a plain-Python model: last-in-source-order wins within a batch,
a later batch overwrites changed values, identical re-runs change nothing."""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.stores.offline import DeltaOfflineStore, OfflineTableSpec

T0 = dt.datetime(2024, 5, 1, 22, tzinfo=dt.UTC)  # hours 0..3 straddle two dates
SPEC = OfflineTableSpec(
    name="m",
    join_keys=("k",),
    key_dtypes=("int32",),
    features=("v", "f"),
    feature_dtypes=("int64", "float64"),
)

row = st.tuples(
    st.integers(0, 2),  # key
    st.integers(0, 3),  # event hour
    st.integers(0, 1),  # created offset (s)
    st.one_of(st.none(), st.integers(-3, 3)),
    st.sampled_from([None, 1.5, 2.0, math.nan]),
)
batches = st.lists(st.lists(row, max_size=12), min_size=1, max_size=3)


def frame_of(batch: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "k": [r[0] for r in batch],
            "event_ts": [T0 + dt.timedelta(hours=r[1]) for r in batch],
            "created_ts": [T0 + dt.timedelta(hours=r[1], seconds=r[2]) for r in batch],
            "v": [r[3] for r in batch],
            "f": [r[4] for r in batch],
        },
        schema={
            "k": pl.Int32,
            "event_ts": pl.Datetime("us", "UTC"),
            "created_ts": pl.Datetime("us", "UTC"),
            "v": pl.Int64,
            "f": pl.Float64,
        },
    )


def same(a: object, b: object) -> bool:
    """IS NOT DISTINCT FROM: null equals null, NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def as_model(frame: pl.DataFrame) -> dict[tuple, tuple]:
    out = {}
    for r in frame.iter_rows(named=True):
        out[(r["k"], r["event_ts"], r["created_ts"])] = (r["v"], r["f"])
    return out


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches)
def test_merge_matches_the_model(tmp_path: Path, data: list[list[tuple]]) -> None:
    with tempfile.TemporaryDirectory(dir=tmp_path) as root:
        store = DeltaOfflineStore(root)
        model: dict[tuple, tuple] = {}
        for batch in data:
            frame = frame_of(batch)
            latest = as_model(frame)  # dict assignment: the last row in source order wins
            inserted = sum(1 for key in latest if key not in model)
            updated = sum(
                1
                for key, vals in latest.items()
                if key in model and not all(map(same, vals, model[key]))
            )
            report = store.write_view(SPEC, frame, mode="merge")
            assert report.duplicates_dropped == len(batch) - len(latest)
            assert (report.rows_written, report.rows_updated) == (inserted, updated)
            model.update(latest)

            stored = as_model(store.read_view(SPEC).collect())
            assert stored.keys() == model.keys()
            for key, vals in model.items():
                assert all(map(same, stored[key], vals)), (key, stored[key], vals)

        version = store.version(SPEC.name)
        rerun = store.write_view(SPEC, frame_of(data[-1]), mode="merge")
        assert (rerun.rows_written, rerun.rows_updated, rerun.version) == (0, 0, version)
