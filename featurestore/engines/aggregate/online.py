"""Online aggregate records: what materialization stores per entity, and how a lookup
answers from it (SEMANTICS: Windowed aggregations).

Materializing up to ``T`` stores, per entity, one record that answers every request
time ``r >= T`` exactly for the events known then (``event_ts <= T``). It holds one
*slot* per aggregation: a sorted int64 ``pos`` array and the ``state.States`` at those
positions. What a slot keeps depends on the window:

==================  ==================================================  ===============
window              states kept                                         ``pos``
==================  ==================================================  ===============
lifetime, no hop    one state: every event <= T                         ``T``
hop ``H``           one per H-tile ``(kH, (k+1)H]`` that can still be   tile index ``k``
                    in a window ending at ``r >= T``; lifetime windows
                    fold tiles before ``floor(T/H)*H`` into one base
no hop, window w    one per event in ``(T - w, T]`` (exactness needs    ``event_ts``
                    them: the window's lower edge moves with ``r``)
==================  ==================================================  ===============

A hop must divide the window (the compiler checks it): the floored query time ``q``
is then a tile edge and so is ``q - w``, so a window is a whole number of tiles. So
a slot holds at most ``w/H + 1`` states (a 7d window with a 1h hop: 169) or, without
a hop, as many as the entity has events in one window: size such windows with care.

A lookup at ``r`` evaluates at ``q = max(r, T)`` floored to the hop: it selects the
states inside the window, folds them with ``state.combine`` in ``pos`` order and
``state.finalize``-s them, the same code batch training and the stream worker use.
A request time before ``T`` is answered as of ``T``: the record cannot go back in
time, and the newest value it has is the one for ``T``.

Floats: a lifetime or no-hop slot folds single events in (event_ts, created_ts,
input position) order, the reference's order, so sums are bit-identical to it;
tiles are summed within a tile and then across tiles, which can differ from a
straight sum in the last bits (within 1e-9 relative unless the values cancel).

Encoding: ``records.py`` (base64 text in the online store, many records per call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurestore.engines.aggregate.records import Slots, decode_one, encode
from featurestore.engines.aggregate.spec import WindowSpec
from featurestore.engines.aggregate.state import (
    States,
    combine,
    concat,
    empty,
    finalize,
    from_events,
)
from featurestore.errors import DefinitionError


def check_spec(spec: WindowSpec, *, obj: str) -> None:
    """Refuse a hop that does not divide the window: tiles could not cover it exactly."""
    if spec.hop_us is not None and spec.window_us is not None and spec.window_us % spec.hop_us:
        raise DefinitionError(
            "the hop must divide the window",
            obj=obj,
            field="hop",
            value={"window_us": spec.window_us, "hop_us": spec.hop_us},
            hint="Pick a hop that fits a whole number of times in the window, e.g. 7d with 1h",
        )


def event_positions(spec: WindowSpec, event_ts: np.ndarray) -> np.ndarray:
    """The slot position of single events: tile index, ``event_ts``, or (lifetime
    without hop) ``event_ts`` until ``fold_slots`` places them at ``T``."""
    ets = np.asarray(event_ts, np.int64)
    if spec.hop_us is not None:
        return (ets - 1) // spec.hop_us  # event_ts in (kH, (k+1)H] -> k
    return ets


def _placed(spec: WindowSpec, at: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where states at ``pos`` go in records as of ``at`` (both per state), and which
    of them a window ending at or after ``at`` can still reach (see the module doc)."""
    keep = np.ones(len(pos), bool)
    if spec.hop_us is not None:
        first_open = at // spec.hop_us  # the tile index of the floored T
        if spec.window_us is None:
            return np.maximum(pos, first_open - 1), keep  # the past folds into one base
        return pos, pos >= first_open - spec.window_us // spec.hop_us
    if spec.window_us is not None:
        return pos, pos > at - spec.window_us
    return at.copy(), keep


def fold_slots(
    spec: WindowSpec,
    *,
    at_us: np.ndarray,
    n_entities: int,
    parts: Sequence[tuple[np.ndarray, np.ndarray, States]],
) -> Slots:
    """The slots of entities ``0..n_entities-1`` as of ``at_us[e]`` from pieces.

    Each part is ``(entity, pos, states)``, one row per state; parts come in time
    order (a record's old slots before a micro-batch's events) and so do the states
    of one (entity, pos) inside a part. States at the same place are combined in
    that order, states no window can reach any more are dropped. Batch
    materialization (``build_slots``) and the stream worker both build records here.
    """
    check_spec(spec, obj=f"aggregation {spec.function}")
    parts = [p for p in parts if len(p[0])] or list(parts[:1])
    ent = np.concatenate([p[0] for p in parts]).astype(np.int64, copy=False)
    at = np.asarray(at_us, np.int64)[ent]
    pos, keep = _placed(spec, at, np.concatenate([p[1] for p in parts]).astype(np.int64))
    states = concat([p[2] for p in parts])
    rows = np.flatnonzero(keep)
    rows = rows[np.lexsort((rows, pos[rows], ent[rows]))]  # stable: time order kept
    e, p = ent[rows], pos[rows]
    if spec.window_us is None and spec.hop_us is None:
        groups, n_groups = e, n_entities  # one state per entity, also without events
        g_ent = np.arange(n_entities, dtype=np.int64)
        g_pos = np.asarray(at_us, np.int64).copy()
    else:
        new = np.ones(len(rows), bool)
        new[1:] = (e[1:] != e[:-1]) | (p[1:] != p[:-1])
        groups = np.cumsum(new) - 1
        n_groups = int(new.sum())
        g_ent, g_pos = e[new], p[new]
    folded = combine(states.take(rows), groups=groups, n_groups=n_groups)
    offsets = np.searchsorted(g_ent, np.arange(n_entities + 1), side="left").astype(np.int64)
    return Slots(offsets, g_pos.astype(np.int64), folded)


def event_states(
    spec: WindowSpec,
    *,
    entities: np.ndarray,
    event_ts: np.ndarray,
    created_ts: np.ndarray,
    values: np.ndarray | None,
    valid: np.ndarray | None = None,
    until_us: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, States]:
    """One state per event, in (entity, event_ts, created_ts, input position) order,
    as a ``fold_slots`` part. ``until_us`` (per event) leaves out later events."""
    ent = np.asarray(entities, np.int64)
    ets = np.asarray(event_ts, np.int64)
    cts = np.asarray(created_ts, np.int64)
    ok = np.ones(len(ent), bool) if valid is None else np.asarray(valid, bool)
    rows = np.arange(len(ent)) if until_us is None else np.flatnonzero(ets <= until_us)
    rows = rows[np.lexsort((rows, cts[rows], ets[rows], ent[rows]))]
    states = from_events(
        spec.function,
        groups=np.arange(len(rows), dtype=np.int64),
        n_groups=len(rows),
        values=None if values is None else np.asarray(values)[rows],
        valid=ok[rows],
        event_ts=ets[rows],
        created_ts=cts[rows],
    )
    return ent[rows], event_positions(spec, ets[rows]), states


def build_slots(
    spec: WindowSpec,
    *,
    at_us: int,
    entities: np.ndarray,
    n_entities: int,
    event_ts: np.ndarray,
    created_ts: np.ndarray,
    values: np.ndarray | None,
    valid: np.ndarray | None = None,
) -> Slots:
    """The slots of every entity (codes ``0..n_entities-1``) as of ``at_us``.

    Events may come in any order; later ones than ``at_us`` are left out. Exact
    (event_ts, created_ts) ties of first/last go by value (``state.combine``), as
    everywhere else, so the order does not change the answer.
    """
    part = event_states(
        spec,
        entities=entities,
        event_ts=event_ts,
        created_ts=created_ts,
        values=values,
        valid=valid,
        until_us=np.full(len(entities), at_us, np.int64),
    )
    at = np.full(n_entities, at_us, np.int64)
    return fold_slots(spec, at_us=at, n_entities=n_entities, parts=[part])


def _window(spec: WindowSpec, pos: np.ndarray, *, at_us: int, request_us: int) -> slice:
    """The states of a slot inside the window ending at the request time."""
    q = spec.query_time(max(request_us, at_us))
    if spec.hop_us is not None:
        hi = q // spec.hop_us  # tiles k with (k + 1) * H <= q
        lo = None if spec.window_us is None else hi - spec.window_us // spec.hop_us
        stop = int(np.searchsorted(pos, hi, side="left"))
        start = 0 if lo is None else int(np.searchsorted(pos, lo, side="left"))
        return slice(start, stop)
    if spec.window_us is None:
        return slice(0, len(pos))
    start = int(np.searchsorted(pos, q - spec.window_us, side="right"))
    return slice(start, int(np.searchsorted(pos, q, side="right")))


def evaluate(
    spec: WindowSpec,
    slots: Sequence[tuple[np.ndarray, States] | None],
    *,
    at_us: Sequence[int | None],
    request_us: int,
    dtype: Any = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """The value at ``request_us`` of each entity's slot, as ``finalize`` gives it.

    ``slots[i]`` is entity ``i``'s ``(pos, states)`` (None: no record, which
    finalizes as no events) and ``at_us[i]`` the time its record was built for.
    ``dtype`` is the state dtype used for entities without a record.
    """
    parts: list[States] = []
    groups: list[np.ndarray] = []
    for i, (slot, at) in enumerate(zip(slots, at_us, strict=True)):
        if slot is None or at is None:
            continue
        pos, states = slot
        window = _window(spec, pos, at_us=at, request_us=request_us)
        if window.stop > window.start:
            parts.append(states.take(np.arange(window.start, window.stop)))
            groups.append(np.full(window.stop - window.start, i, np.int64))
    if not parts:
        return finalize(empty(spec.function, dtype=dtype, n=len(slots)))
    folded = combine(concat(parts), groups=np.concatenate(groups), n_groups=len(slots))
    return finalize(folded)


# -- encoding (records.py) --------------------------------------------------------


def encode_records(*, at_us: int, slots: Sequence[Slots], n_entities: int) -> list[str]:
    """One encoded record (base64 text) per entity as of ``at_us``, holding every
    aggregation's slot and no stream marks (format: ``records.py``)."""
    return encode(at_us=np.full(n_entities, at_us, np.int64), slots=slots)


def decode_record(
    text: str, *, functions: Sequence[str]
) -> tuple[int, list[tuple[np.ndarray, States]]]:
    """``(T, [(pos, states) per aggregation])`` of one encoded record."""
    return decode_one(text, functions=functions)


def _python_values(values: np.ndarray, valid: np.ndarray, *, dtype: str) -> list[Any]:
    out = values.tolist()
    convert: Any = None
    if dtype in ("date", "datetime"):
        from featurestore.stores.online.columns import FROM_PHYSICAL

        convert = FROM_PHYSICAL[dtype]
    for i, ok in enumerate(valid.tolist()):
        if not ok:
            out[i] = None
        elif convert is not None:
            out[i] = convert(out[i])
    return out


@dataclass(frozen=True)
class AggregateReader:
    """Answers a view's aggregated features from its encoded records (lookup side).

    ``functions`` lists every aggregation of the view in record order; ``features``
    maps each wanted feature to ``(slot index, WindowSpec, output dtype)``.
    """

    functions: tuple[str, ...]
    features: dict[str, tuple[int, WindowSpec, str]]

    def values(
        self, records: Sequence[str | None], *, at_us: Sequence[int | None], request_us: int
    ) -> dict[str, list[Any]]:
        """Per feature, one Python value per record (None = null) at ``request_us``.

        A missing record (None) counts no events: ``count`` gives 0, the rest null.
        """
        decoded = [
            None if text is None or at is None else decode_one(text, functions=self.functions)
            for text, at in zip(records, at_us, strict=True)
        ]
        stamps = [None if d is None else d[0] for d in decoded]
        out: dict[str, list[Any]] = {}
        for name, (j, spec, dtype) in self.features.items():
            slots = [None if d is None else d[1][j] for d in decoded]
            vals, ok = evaluate(spec, slots, at_us=stamps, request_us=request_us)
            out[name] = _python_values(vals, ok, dtype=dtype)
        return out
