"""The Numba kernels of the point-in-time join, against plain-Python references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.engines.pit import kernel
from featurestore.engines.pit import keys as key_tables

I64_MIN = np.iinfo(np.int64).min
I64_MAX = np.iinfo(np.int64).max
NO_VALID = np.empty(0, dtype=np.uint8)


def _arr(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def _codes(keys, table_keys, valid=NO_VALID) -> np.ndarray:
    table = key_tables.key_table(_arr(sorted(set(table_keys))))
    return key_tables.lookup(_arr(keys), valid=valid, table=table)


def _reference(frame, spine, ttl, known):
    """Brute force: frame rows (code, e, c), spine rows (code, t) -> chosen positions."""
    out = []
    for code, t in spine:
        best = None
        for i, (fc, e, c) in enumerate(frame):
            if code < 0 or fc != code or e > t:
                continue
            if ttl >= 0 and e <= t - ttl:
                continue
            if known and c > t:
                continue
            if best is None or (e, c, i) > best:
                best = (e, c, i)
        out.append(-1 if best is None else best[2])
    return out


def _run(frame, spine, ttl, known, n_codes, *, keyed=False, cuts_at=(), by_rows=False):
    """The kernel's choice per spine row; ``cuts_at`` splits the codes into lanes
    there (each lane gets every batch and skips other lanes' codes); ``by_rows``
    gives each batch a row lane."""
    codes = _arr([r[0] for r in frame]).reshape(-1)
    spine_codes = _arr([r[0] for r in spine]).reshape(-1)
    index = kernel.prepare_spine(spine_codes, spine_ts=_arr([r[1] for r in spine]), n_codes=n_codes)
    event = _arr([r[1] for r in frame]).reshape(-1)
    created = _arr([r[2] for r in frame]).reshape(-1)
    table = None
    if keyed:
        # Sparse keys, so a hash table: code c is key c * 2**40 - 9; -1 maps to a
        # key that is not in the table.
        table = key_tables.key_table(_arr([c * 2**40 - 9 for c in range(n_codes)]))
        assert n_codes < 2 or not table.direct
        codes = _arr([c * 2**40 - 9 if c >= 0 else 5 for c in codes.tolist()]).reshape(-1)
    # Uneven batches, out of order: each carries its offset.
    cuts = [0, len(frame) // 3, len(frame) // 3 + 1, len(frame)]
    batches = [
        (a, codes[a:b], event[a:b], created[a:b], keyed) for a, b in itertools.pairwise(cuts)
    ]
    batches.reverse()
    row_lanes = []
    if cuts_at:
        ends = [0, *cuts_at, I64_MAX]
        lanes = [kernel.Lane(a, b, batches) for a, b in itertools.pairwise(ends)]
    elif by_rows:
        # One batch per row lane: all but the first write trees of their own.
        lanes, row_lanes = [], [[b] for b in batches]
    else:
        lanes = [kernel.Lane.whole(batches)]
    chosen = kernel.point_in_time(
        lanes,
        row_lanes=row_lanes,
        spine_index=index,
        n_spine=len(spine),
        ttl_us=ttl,
        as_of_known_time=known,
        table=table,
    )
    return chosen.tolist()


# --- key tables ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("table_keys", "direct"),
    [
        ([3, 4, 5, 9], True),  # dense: array indexed by key
        ([-(2**62), 0, 7, 2**40, I64_MAX, I64_MIN], False),  # sparse: hash table
    ],
)
def test_key_table_finds_present_keys_and_only_them(table_keys, direct):
    table = key_tables.key_table(_arr(sorted(table_keys)))
    assert table.direct is direct
    probe = [*table_keys, 1, 2, 6, 10, -1, 2**41, I64_MAX - 1]
    got = key_tables.lookup(_arr(probe), valid=NO_VALID, table=table).tolist()
    rank = {k: i for i, k in enumerate(sorted(table_keys))}
    assert got == [rank.get(k, -1) for k in probe]


def test_lookup_skips_invalid_rows():
    valid = np.array([1, 0, 1], dtype=np.uint8)
    assert _codes([3, 3, 4], [3, 4], valid).tolist() == [0, -1, 1]


def test_empty_key_table_finds_nothing():
    for table_keys in ([], [5]):
        got = _codes([1, 5], table_keys).tolist()
        assert got == [-1, 0 if table_keys else -1]


@settings(max_examples=100, deadline=None)
@given(
    table_keys=st.lists(st.integers(I64_MIN, I64_MAX), max_size=60, unique=True),
    probe=st.lists(st.integers(-50, 50), max_size=60),
)
def test_lookup_matches_a_dict(table_keys, probe):
    probe = probe + table_keys[::2]
    rank = {k: i for i, k in enumerate(sorted(table_keys))}
    assert _codes(probe, table_keys).tolist() == [rank.get(k, -1) for k in probe]


# --- grouping -----------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    rows=st.lists(st.tuples(st.integers(-1, 3), st.integers(0, 6), st.integers(0, 2)), max_size=200)
)
def test_group_sort_groups_by_code_and_sorts_each_group(rows):
    # Group sizes go past the insertion-sort limit, so the merge sort runs too.
    # Read-only codes and writable rows, as _prepare_spine passes them: the same
    # compiled version, not a second one to compile.
    codes = key_tables.frozen(_arr([r[0] for r in rows]).reshape(-1))
    triples = np.array([[r[1], r[2], i] for i, r in enumerate(rows)], dtype=np.int64)
    triples = triples.reshape(-1, 3)
    starts, out = kernel.group_sort(codes, triples, 4)
    for c in range(4):
        expected = sorted((r[1], r[2], i) for i, r in enumerate(rows) if r[0] == c)
        got = [tuple(x) for x in out[starts[c] : starts[c + 1]].tolist()]
        assert got == expected


def test_merge_sort_merges_sorted_runs():
    # Three sorted runs, as date partitions read out of order leave them.
    times = [*range(20, 30), *range(0, 10), *range(10, 20)] * 2
    rows = np.array([[t, 0, i] for i, t in enumerate(times)], dtype=np.int64)
    codes = key_tables.frozen(np.zeros(len(times), dtype=np.int64))
    starts, out = kernel.group_sort(codes, rows, 1)
    assert out[:, 0].tolist() == sorted(times)
    assert starts.tolist() == [0, len(times)]


# --- the join -----------------------------------------------------------------


def test_ttl_edges_and_the_row_at_t():
    day = 86_400
    frame = [(0, 100, 100), (0, 100 + day, 100 + day)]
    # t = 100 + day: the newer row is exactly at t (in); at t = 100 + 2*day it is
    # exactly ttl old (out), and one microsecond earlier it is still in.
    spine = [(0, 100 + day), (0, 100 + 2 * day), (0, 100 + 2 * day - 1), (0, 99)]
    assert _run(frame, spine, day, False, 1) == [1, -1, 1, -1]


def test_ties_pick_created_then_last_in_input_order():
    frame = [(0, 5, 1), (0, 5, 3), (0, 5, 3), (0, 5, 2), (0, 4, 9)]
    assert _run(frame, [(0, 5), (0, 10)], -1, False, 1) == [2, 2]


def test_as_of_known_time_skips_rows_created_after_t():
    frame = [(0, 1, 1), (0, 2, 50), (0, 3, 4)]
    spine = [(0, 3), (0, 10), (0, 60), (0, 0)]
    assert _run(frame, spine, -1, True, 1) == [0, 2, 2, -1]
    assert _run(frame, spine, -1, False, 1) == [2, 2, 2, -1]
    # Known before its event time: eligible from event_ts on, as usual.
    assert _run([(0, 5, 1)], [(0, 4), (0, 5)], -1, True, 1) == [-1, 0]


def test_extreme_times_do_not_wrap_around():
    frame = [(0, I64_MAX - 1, I64_MAX - 1), (0, I64_MIN + 2, I64_MIN + 2)]
    spine = [(0, I64_MAX), (0, I64_MIN + 2), (0, 0)]
    assert _run(frame, spine, 10, False, 1) == [0, 1, -1]
    # At t = 0 the second row is I64_MAX - 2 old: inside a TTL of I64_MAX ...
    assert _run(frame, spine, I64_MAX, True, 1) == [0, 1, 1]
    # ... and exactly I64_MAX - 2 old is out for a TTL of I64_MAX - 2.
    assert _run(frame, spine, I64_MAX - 2, False, 1) == [0, 1, -1]


def test_keyed_batches_need_a_table():
    index = kernel.prepare_spine(_arr([0]), spine_ts=_arr([1]), n_codes=1)
    batch = (0, _arr([0]), _arr([0]), _arr([0]), True)
    with pytest.raises(ValueError, match="key table"):
        kernel.point_in_time(
            [kernel.Lane.whole([batch])],
            spine_index=index,
            n_spine=1,
            ttl_us=-1,
            as_of_known_time=False,
        )


def test_no_spine_or_no_frame_rows():
    assert _run([], [(0, 1)], -1, False, 1) == [-1]
    assert _run([(0, 1, 1)], [], -1, False, 1) == []
    assert _run([(0, 1, 1)], [(-1, 5)], -1, False, 1) == [-1]


@settings(max_examples=200, deadline=None)
@given(
    frame=st.lists(
        st.tuples(st.integers(-1, 3), st.integers(0, 30), st.integers(0, 40)), max_size=60
    ),
    spine=st.lists(st.tuples(st.integers(-1, 4), st.integers(-2, 45)), max_size=40),
    ttl=st.sampled_from([-1, 0, 1, 3, 10, 100]),
    known=st.booleans(),
)
def test_point_in_time_matches_brute_force(frame, spine, ttl, known):
    expected = _reference(frame, spine, ttl, known)
    assert _run(frame, spine, ttl, known, 5) == expected
    assert _run(frame, spine, ttl, known, 5, keyed=True) == expected


@settings(max_examples=100, deadline=None)
@given(
    frame=st.lists(
        st.tuples(st.integers(-1, 5), st.integers(0, 30), st.integers(0, 40)), max_size=80
    ),
    spine=st.lists(st.tuples(st.integers(-1, 6), st.integers(-2, 45)), max_size=60),
    ttl=st.sampled_from([-1, 0, 3, 100]),
    cuts=st.lists(st.integers(1, 6), min_size=1, max_size=3, unique=True),
)
def test_lanes_on_threads_match_brute_force(frame, spine, ttl, cuts):
    # Lanes own disjoint code ranges and write one shared tree at once.
    expected = _reference(frame, spine, ttl, False)
    cuts_at = tuple(sorted(cuts))
    assert _run(frame, spine, ttl, False, 7, cuts_at=cuts_at) == expected
    assert _run(frame, spine, ttl, False, 7, keyed=True, cuts_at=cuts_at) == expected
    assert _run(frame, spine, ttl, False, 7, by_rows=True) == expected
    assert _run(frame, spine, ttl, False, 7, keyed=True, by_rows=True) == expected


def test_lanes_must_own_disjoint_codes():
    index = kernel.prepare_spine(_arr([0, 1]), spine_ts=_arr([1, 1]), n_codes=2)
    lanes = [kernel.Lane(0, 2, []), kernel.Lane(1, 3, [])]
    with pytest.raises(ValueError, match="overlapping key codes"):
        kernel.point_in_time(lanes, spine_index=index, n_spine=2, ttl_us=-1, as_of_known_time=False)


def test_large_groups_match_brute_force():
    rng = np.random.default_rng(7)
    n, m = 3_000, 500
    frame = list(
        zip(
            rng.integers(-1, 3, n).tolist(),
            rng.integers(0, 1_000, n).tolist(),
            rng.integers(0, 1_200, n).tolist(),
            strict=True,
        )
    )
    spine = list(
        zip(rng.integers(0, 3, m).tolist(), rng.integers(0, 1_100, m).tolist(), strict=True)
    )
    for ttl in (-1, 50):
        for known in (False, True):
            assert _run(frame, spine, ttl, known, 3) == _reference(frame, spine, ttl, known)


def test_order_of_feature_rows_does_not_matter():
    # One hot key with many rows and many spine rows, no TTL: long ranges in the tree.
    rng = np.random.default_rng(11)
    n = 2_000
    frame = [
        (0, int(e), int(e) + int(d))
        for e, d in zip(rng.integers(0, 500, n), rng.integers(0, 3, n), strict=True)
    ]
    spine = [(0, int(t)) for t in rng.integers(0, 520, 300)]
    expected = _reference(frame, spine, -1, False)
    shuffled = rng.permutation(n)
    back = {int(new): int(old) for new, old in enumerate(shuffled)}
    got = _run([frame[i] for i in shuffled], spine, -1, False, 1)
    # The same row is chosen, except among exact ties, where input order decides.
    for want, pos, (_, t) in zip(expected, got, spine, strict=True):
        assert frame[want][1:] == frame[back[pos]][1:], t
