"""The worked example of docs/semantics.md, executed."""

from datetime import UTC, datetime

import polars as pl
import pytest

from featurestore.engines.pit.join import FeatureFrame, point_in_time_join

DAY = 86_400_000_000


def ts(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC)


ROWS = pl.DataFrame(
    {
        "driver_id": [1001, 1001, 1001],
        "event_ts": [ts(1, 10), ts(2, 10), ts(2, 10)],
        "created_ts": [ts(1, 10, 5), ts(2, 10, 5), ts(3, 9)],
        "conv_rate": [0.50, None, 0.70],
    }
)


@pytest.mark.parametrize(
    ("t", "as_of_known", "expected"),
    [
        (ts(1, 9, 59), False, None),
        (ts(1, 10), False, 0.50),
        (ts(2, 12), False, 0.70),
        (ts(2, 12), True, None),
        (ts(4, 10), False, None),
    ],
)
def test_worked_example(t, as_of_known, expected):
    spine = pl.DataFrame({"driver_id": [1001], "t": [t]})
    view = FeatureFrame(
        name="driver_hourly_stats",
        frame=ROWS,
        join_keys=("driver_id",),
        spine_keys=("driver_id",),
        features=("conv_rate",),
        output_names=("conv_rate",),
        ttl_us=2 * DAY,
    )
    out = point_in_time_join(spine, timestamp="t", views=[view], as_of_known_time=as_of_known)
    assert out["conv_rate"].to_list() == [expected]
