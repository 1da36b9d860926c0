"""The aggregation kernels cut into parts on threads (``engines/_parallel``) give the
brute-force reference's answers: parts forced small (2, 3, 5 of them) on inputs of
every layout the sorted path meets (sorted by key and time, runs sorted by key as the
offline store writes them, shuffled), every function, hops, as-of-known-time, nulls,
and the direct-sum threshold at 0, 2 and 64."""

from __future__ import annotations

import numpy as np
import pytest

from featurestore.engines import _parallel
from featurestore.engines.aggregate import _sorted
from featurestore.engines.aggregate.kernels import aggregate_asof
from featurestore.engines.aggregate.reference import reference_aggregate
from featurestore.engines.aggregate.spec import AGG_FUNCTIONS, WindowSpec
from tests.unit.engines.test_aggregate_kernels import same

WINDOWS = ((None, None), (10, None), (25, 7), (3, None))


def _case(rng: np.random.Generator, layout: str) -> dict[str, object]:
    n, n_keys = int(rng.integers(50, 400)), int(rng.integers(1, 30))
    keys = rng.integers(-1, n_keys + 3, n)  # some codes no query asks for
    ets = rng.integers(0, 60, n)
    if layout == "sorted":
        order = np.lexsort((ets, keys))
    elif layout == "runs":  # date partitions, each sorted by key and time
        order = np.lexsort((ets, keys, ets // 20))
    else:
        order = np.arange(n)
    keys, ets = keys[order], ets[order]
    same_time = rng.random() < 0.5
    created = ets if same_time else ets + rng.choice([0, 0, 1, 5], n)
    floats = rng.random() < 0.5
    values = rng.integers(-40, 40, n) / 4 if floats else rng.integers(-1000, 1000, n)
    n_queries = int(rng.integers(1, 80))
    return {
        "event_keys": keys,
        "event_ts": ets,
        "created_ts": created,
        "values": values,
        "valid": rng.random(n) < 0.9 if rng.random() < 0.5 else None,
        "query_keys": rng.integers(-1, n_keys, n_queries),
        "query_ts": rng.integers(-5, 70, n_queries),
        "specs": [WindowSpec(f, w, h) for f in AGG_FUNCTIONS for w, h in WINDOWS],
        "as_of_known_time": bool(rng.random() < 0.3),
    }


@pytest.mark.parametrize("parts", [2, 3, 5])
@pytest.mark.parametrize("layout", ["sorted", "runs", "shuffled"])
def test_parts_on_threads_match_the_reference(monkeypatch, parts: int, layout: str) -> None:
    monkeypatch.setattr(_parallel, "threads", lambda: parts)
    monkeypatch.setattr(_parallel, "MIN_PART", 16)
    monkeypatch.setattr(_sorted, "MIN_SLOTS", 8)
    rng = np.random.default_rng(parts * 10 + len(layout))
    for _ in range(4):
        case = _case(rng, layout)
        want = reference_aggregate(**case)
        n = len(case["event_keys"])  # type: ignore[arg-type]
        for direct_max in (64, 0, 2):
            got = aggregate_asof(**case, direct_max=direct_max, strategy="sorted")
            for spec, (values, ok), (ref_values, ref_ok) in zip(
                case["specs"], got, want, strict=True
            ):
                assert ok.tolist() == list(ref_ok), spec
                for a, b, present in zip(values.tolist(), ref_values, ref_ok, strict=True):
                    if present:
                        assert same(a, b, exact=direct_max >= n), (spec, a, b)


def test_cuts_follow_threads_and_the_smallest_part(monkeypatch) -> None:
    monkeypatch.setattr(_parallel, "threads", lambda: 4)
    assert _parallel.cuts(10, 1).tolist() == [0, 2, 5, 8, 10]
    assert _parallel.cuts(10, 4).tolist() == [0, 5, 10]  # two parts of >= 4
    assert _parallel.cuts(3, 4).tolist() == [0, 3]  # one part at least
    assert _parallel.cuts(0).tolist() == [0, 0]


def test_an_error_in_a_part_is_raised_after_every_part_finished() -> None:
    done: list[int] = []

    def kernel(a: int, b: int) -> int:
        if a == 1:
            raise ValueError("part 1 failed")
        done.append(a)
        return a

    with pytest.raises(ValueError, match="part 1 failed"):
        _parallel.run(kernel, np.arange(4))
    assert sorted(done) == [0, 2]  # parts (0, 1) and (2, 3) ran to the end
