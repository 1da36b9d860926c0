"""Training vs serving distributions: PSI, the two-sample KS statistic, null rates.

Binning is fixed so that numbers compare across runs:

- numeric features (integers, floats, dates, datetimes): the edges are the training
  values' deciles (edge k is the smallest training value with at least k/10 of the
  values at or below it; equal edges merged), bins closed on the right, with an
  open bin at each end; NaN gets a bin of its own when either side has one;
- every other dtype (strings, booleans, lists): one bin per training value, for
  the ``MAX_CATEGORIES - 1`` most frequent (ties by value), and one "(other)" bin
  for the rest and for values only seen in serving.

PSI = sum over bins of (served - training) * ln(served / training), with shares
floored at ``FLOOR`` so that an empty bin does not make it infinite. Nulls are
left out of the bins and reported as null rates instead. KS is the largest gap
between the two empirical distribution functions (numeric features only, NaN left
out).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import polars as pl

from featurestore._dtypes import NUMERIC
from featurestore.audit.report import Bin, Distribution

BINS = 10
MAX_CATEGORIES = 20
FLOOR = 1e-4
ORDERED = NUMERIC | {"date", "datetime"}


def compare_distributions(training: pl.Series, served: pl.Series, *, dtype: str) -> Distribution:
    """``served`` (what the model saw, nulls included) against ``training``."""
    null_t = training.null_count() / training.len() if training.len() else 0.0
    null_s = served.null_count() / served.len() if served.len() else 0.0
    t, s = training.drop_nulls(), served.drop_nulls()
    if dtype in ORDERED:
        bins, ks = _numeric(t, s)
        kind = "numeric"
    else:
        try:
            bins, ks = _categorical(t, s), None
            kind = "categorical"
        except pl.exceptions.PolarsError:  # values that cannot be grouped
            bins, ks, kind = [], None, "unsupported"
    psi = _psi(bins) if bins and t.len() and s.len() else None
    return Distribution(kind, training.len(), served.len(), psi, ks, null_t, null_s, bins)


def _psi(bins: list[Bin]) -> float:
    total = 0.0
    for b in bins:
        p, q = max(b.training, FLOOR), max(b.served, FLOOR)
        total += (q - p) * math.log(q / p)
    return total


def _as_float(values: pl.Series) -> np.ndarray:
    if values.dtype.is_temporal():
        values = values.to_physical()
    return values.cast(pl.Float64).to_numpy()


def _numeric(t: pl.Series, s: pl.Series) -> tuple[list[Bin], float | None]:
    tv, sv = _as_float(t), _as_float(s)
    t_nan, s_nan = np.isnan(tv), np.isnan(sv)
    tv, sv = tv[~t_nan], sv[~s_nan]
    if tv.size:
        qs = np.quantile(tv, np.arange(1, BINS) / BINS, method="inverted_cdf")
        edges = np.unique(qs)
    else:
        edges = np.empty(0)
    # side="left": a value equal to an edge falls in the bin that edge closes.
    t_bins = np.bincount(np.searchsorted(edges, tv, side="left"), minlength=edges.size + 1)
    s_bins = np.bincount(np.searchsorted(edges, sv, side="left"), minlength=edges.size + 1)
    n_t = tv.size + int(t_nan.sum())
    n_s = sv.size + int(s_nan.sum())
    labels = _edge_labels(edges, t.dtype)
    bins = [
        Bin(label, float(a) / n_t if n_t else 0.0, float(b) / n_s if n_s else 0.0)
        for label, a, b in zip(labels, t_bins, s_bins, strict=True)
    ]
    if t_nan.any() or s_nan.any():
        bins.append(
            Bin("NaN", t_nan.sum() / n_t if n_t else 0.0, s_nan.sum() / n_s if n_s else 0.0)
        )
    return bins, _ks(tv, sv)


def _ks(tv: np.ndarray, sv: np.ndarray) -> float | None:
    if not tv.size or not sv.size:
        return None
    a, b = np.sort(tv), np.sort(sv)
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def _edge_labels(edges: np.ndarray, dtype: pl.DataType) -> list[str]:
    shown = [_show(e, dtype) for e in edges]
    if not shown:
        return ["all"]
    labels = [f"<= {shown[0]}"]
    labels += [f"({lo}, {hi}]" for lo, hi in itertools.pairwise(shown)]
    labels.append(f"> {shown[-1]}")
    return labels


def _show(value: float, dtype: pl.DataType) -> str:
    if dtype.is_temporal():
        return str(pl.Series([int(value)]).cast(dtype)[0])
    return f"{value:.6g}"


def _categorical(t: pl.Series, s: pl.Series) -> list[Bin]:
    if not t.len():
        return []
    t = t.alias("value")
    t_counts = t.value_counts(sort=True, name="n")
    # Deterministic order among equal counts: the value's text.
    t_counts = t_counts.with_columns(pl.col("value").cast(pl.String).alias("label")).sort(
        ["n", "label"], descending=[True, False]
    )
    top = t_counts.head(MAX_CATEGORIES - 1)
    labels = top["label"].to_list()
    s_labels = s.cast(pl.String)
    s_counts = dict(s_labels.value_counts().iter_rows())
    n_t, n_s = t.len(), s.len()
    bins = [
        Bin(str(label), int(n) / n_t, s_counts.get(label, 0) / n_s if n_s else 0.0)
        for label, n in zip(labels, top["n"].to_list(), strict=True)
    ]
    rest_t = n_t - int(top["n"].sum())
    rest_s = n_s - sum(s_counts.get(label, 0) for label in labels)
    if rest_t or rest_s:
        bins.append(Bin("(other)", rest_t / n_t if n_t else 0.0, rest_s / n_s if n_s else 0.0))
    return bins
