"""PSI, KS and null rates on samples small enough to check by hand or by brute force."""

from __future__ import annotations

import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.audit.distribution import FLOOR, compare_distributions


def brute_ks(a: list[float], b: list[float]) -> float:
    points = sorted(set(a) | set(b))
    return max(
        abs(sum(v <= x for v in a) / len(a) - sum(v <= x for v in b) / len(b)) for x in points
    )


floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(st.lists(floats, min_size=1, max_size=60), st.lists(floats, min_size=1, max_size=60))
def test_ks_is_the_largest_gap_between_the_empirical_distributions(a, b):
    d = compare_distributions(pl.Series(a), pl.Series(b), dtype="float64")
    assert d.ks == pytest.approx(brute_ks(a, b), abs=1e-12)
    assert sum(x.training for x in d.bins) == pytest.approx(1.0)
    assert sum(x.served for x in d.bins) == pytest.approx(1.0)
    assert d.psi is not None and d.psi >= 0


def test_identical_samples_have_no_drift():
    values = pl.Series([float(i % 37) for i in range(1000)])
    d = compare_distributions(values, values.shuffle(seed=1), dtype="float64")
    assert (d.psi, d.ks, d.null_rate_change) == (0.0, 0.0, 0.0)
    assert len(d.bins) == 10


def test_decile_bins_from_training_and_psi_by_hand():
    training = pl.Series(list(range(100)), dtype=pl.Int64)  # deciles: 9, 19, ..., 89
    served = pl.Series([5] * 50 + [95] * 50, dtype=pl.Int64)
    d = compare_distributions(training, served, dtype="int64")
    assert [b.label for b in d.bins][:2] == ["<= 9", "(9, 19]"]
    assert [b.training for b in d.bins] == [0.1] * 10
    assert [b.served for b in d.bins] == [0.5] + [0.0] * 8 + [0.5]
    expected = 2 * (0.5 - 0.1) * math.log(0.5 / 0.1) + 8 * (FLOOR - 0.1) * math.log(FLOOR / 0.1)
    assert d.psi == pytest.approx(expected)
    assert d.ks == pytest.approx(0.45)  # at 94: 95% of training, 50% of served


def test_categories_by_value_with_unseen_values_in_other():
    training = pl.Series(["a", "a", "b", "b", None])
    served = pl.Series(["a", "b", "b", "c", None, None])
    d = compare_distributions(training, served, dtype="string")
    shares = {b.label: (b.training, b.served) for b in d.bins}
    assert shares == {"a": (0.5, 0.25), "b": (0.5, 0.5), "(other)": (0.0, 0.25)}
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - FLOOR) * math.log(0.25 / FLOOR)
    assert d.psi == pytest.approx(expected)
    assert d.ks is None
    assert (d.null_rate_training, d.null_rate_served) == (0.2, pytest.approx(2 / 6))


def test_nan_has_its_own_bin_and_dates_are_ordered():
    d = compare_distributions(
        pl.Series([1.0, 2.0, math.nan]), pl.Series([1.0, math.nan, math.nan]), dtype="float64"
    )
    assert d.bins[-1].label == "NaN"
    assert (d.bins[-1].training, d.bins[-1].served) == (pytest.approx(1 / 3), pytest.approx(2 / 3))
    dates = pl.Series(["2024-01-01", "2024-06-01"]).str.to_date()
    d = compare_distributions(dates, dates, dtype="date")
    assert d.kind == "numeric" and d.psi == 0.0 and "2024-01-01" in d.bins[0].label


def test_lists_are_not_binned_and_empty_sides_give_no_psi():
    lists = pl.Series([[1, 2], [3]])
    d = compare_distributions(lists, lists, dtype="list[int64]")
    assert (d.kind, d.psi) == ("unsupported", None)
    d = compare_distributions(pl.Series([1.0, 2.0]), pl.Series([None], dtype=pl.Float64),
                              dtype="float64")  # fmt: skip
    assert d.psi is None and d.ks is None and d.null_rate_served == 1.0
