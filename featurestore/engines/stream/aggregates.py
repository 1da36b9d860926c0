"""The stream worker's sink for a view with windowed aggregations.

Per micro-batch, for each entity with events in it: read its aggregate record from
the online store, fold the new events into the record's slots with the code batch
materialization uses (``fold_slots``; layout and exactness in
``engines/aggregate/online.py``), and write the record back with compare-and-set.

The record is the state: nothing is kept in the worker between batches, so a
restart, a rebalance or a second worker needs no hand-over of memory.

Exactly once: each record carries *marks*, per Kafka partition the next offset not
yet folded in. Replayed events (a crash between the record write and the offset
commit, a partition that moved) are below the mark and skipped. The record as of
``T`` answers every request time ``>= T``; ``T`` is the newest event time folded
into it, so it only moves forward and a late event lands in its own tile.

One writer per entity: the events of an entity must come from one partition (a
producer keyed by the entity, as Kafka does by default for keyed records). Two
workers folding into the same record at once would lose one update; the CAS write
detects it and ``aggregate_conflicts_total`` counts it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import polars as pl

from featurestore._time import now_us
from featurestore.compile.views import FeatureViewPlan
from featurestore.config import OnlineRetention
from featurestore.engines.aggregate.online import event_states, fold_slots
from featurestore.engines.aggregate.records import Marks, Slots, decode, encode
from featurestore.engines.aggregate.view_records import (
    Inputs,
    aggregation_inputs,
    entity_codes,
    window_specs,
)
from featurestore.engines.stream.decode import OFFSET, PARTITION, RECORD_TS
from featurestore.engines.stream.flusher import OneInFlight
from featurestore.engines.stream.metrics import StreamMetrics
from featurestore.engines.stream.sinks import Replay, ViewBatch, retrying
from featurestore.errors import StreamError
from featurestore.stores.offline.spec import CREATED_TS, EVENT_TS
from featurestore.stores.online.base import OnlineStore, ReadRequest, WriteBatch
from featurestore.stores.view_specs import RECORD_COLUMN, online_schema

log = logging.getLogger("featurestore.stream")

_NO_RECORD = np.iinfo(np.int64).min


@dataclass(frozen=True)
class _Events:
    """One micro-batch of a view, as arrays: entity ``e`` has the keys of row ``e``
    of ``keys``; event ``i`` belongs to entity ``entity[i]``."""

    keys: pl.DataFrame
    entity: np.ndarray
    event_ts: np.ndarray
    created_ts: np.ndarray
    partition: np.ndarray
    offset: np.ndarray
    inputs: Inputs
    record_us: np.ndarray


class AggregateSink:
    """Folds each micro-batch into the online aggregate records of its entities.

    The read-fold-write of one batch runs on a helper thread while the loop decodes
    the next one; batches are applied one after the other, so a record is never
    read before the previous batch's write of it. A checkpoint waits for it.
    """

    def __init__(
        self,
        view: FeatureViewPlan,
        *,
        project: str,
        online: OnlineStore,
        metrics: StreamMetrics,
        retry_s: float = 30.0,
        retention: OnlineRetention | None = None,
    ) -> None:
        self.name = f"aggregates:{view.name}"
        self.view = view
        self.schema = online_schema(project, view, retention=retention)
        self.specs = window_specs(view)
        self.functions = tuple(s.function for s in self.specs)
        self.online = online
        self.metrics = metrics
        self.retry_s = retry_s
        self._inflight = OneInFlight(f"featurestore-aggregates-{view.name}")

    # ------------------------------------------------------------------ Sink

    def write(self, batch: ViewBatch) -> None:
        if batch.rows.height == 0:
            return
        events = self._arrays(batch.rows)  # Polars work on the loop thread
        self._inflight.submit(lambda: self._apply(events))

    def pending(self) -> int:
        return 0

    def checkpoint(self, replay: Replay) -> Callable[[], None] | None:
        self._inflight.wait()  # the records are written: the offsets may be committed
        return None

    def discard(self, topic: str, partitions: Collection[int]) -> None:
        return None  # nothing buffered; the new owner's replays stop at the marks

    # ------------------------------------------------------------------ work

    def _arrays(self, rows: pl.DataFrame) -> _Events:
        keys, entity = entity_codes(rows, list(self.view.join_keys))
        return _Events(
            keys=keys,
            entity=entity,
            event_ts=rows[EVENT_TS].dt.epoch("us").to_numpy(),
            created_ts=rows[CREATED_TS].dt.epoch("us").to_numpy(),
            partition=rows[PARTITION].cast(pl.Int64).to_numpy(),
            offset=rows[OFFSET].cast(pl.Int64).to_numpy(),
            inputs=aggregation_inputs(self.view, rows),
            record_us=rows[RECORD_TS].dt.epoch("us").to_numpy(),
        )

    def _read(self, keys: pl.DataFrame) -> tuple[list[str | None], list[int | None]]:
        request = ReadRequest(
            self.schema,
            entity_keys={k: keys[k].to_list() for k in self.view.join_keys},
            features=[RECORD_COLUMN],
        )
        (result,) = retrying(
            lambda: self.online.read([request]),
            what=f"online read of view {self.view.name!r}",
            budget_s=self.retry_s,
        )
        return result.features[RECORD_COLUMN], result.created_ts

    def _apply(self, ev: _Events) -> None:
        started = time.perf_counter()
        n = ev.keys.height
        texts, created = self._read(ev.keys)
        found = np.array([i for i, t in enumerate(texts) if t is not None], np.int64)
        at_old, old_slots, old_marks = decode(
            [t for t in texts if t is not None], functions=self.functions
        )
        at = np.full(n, _NO_RECORD, np.int64)
        at[found] = at_old
        mark_entity = found[np.repeat(np.arange(len(found)), np.diff(old_marks.offsets))]

        fresh = self._not_yet_folded(ev, mark_entity, old_marks)
        skipped = len(fresh) - int(fresh.sum())
        if skipped:
            self.metrics.aggregate_skipped.inc(skipped, view=self.view.name)
        if not fresh.any():
            return
        entity = ev.entity[fresh]
        ets = ev.event_ts[fresh]
        np.maximum.at(at, entity, ets)

        slots = []
        for j, spec in enumerate(self.specs):
            values, valid = ev.inputs[j]
            new = event_states(
                spec,
                entities=entity,
                event_ts=ets,
                created_ts=ev.created_ts[fresh],
                values=None if values is None else values[fresh],
                valid=None if valid is None else valid[fresh],
            )
            old = old_slots[j]
            old_entity = found[np.repeat(np.arange(len(found)), np.diff(old.offsets))]
            if len(old.pos) and old.states.dtype != new[2].dtype:
                raise StreamError(
                    f"its online records hold {old.states.dtype} states, the events give "
                    f"{new[2].dtype}",
                    obj=f"feature view {self.view.name!r}",
                    field=self.view.aggregations[j]["name"],
                    hint="Materialize the view again (or delete its online records)",
                )
            slots.append(
                fold_slots(
                    spec, at_us=at, n_entities=n, parts=[(old_entity, old.pos, old.states), new]
                )
            )
        marks = self._marks(ev, fresh, mark_entity, old_marks, n)
        touched = np.unique(entity)
        self._write(ev, touched, at, created, slots, marks)
        self.metrics.online_write_seconds.observe(time.perf_counter() - started)
        self.metrics.freshness_seconds.observe_many((now_us() - ev.record_us[fresh]) / 1e6)

    @staticmethod
    def _not_yet_folded(ev: _Events, mark_entity: np.ndarray, marks: Marks) -> np.ndarray:
        """Per event: is it at or past its entity's mark for its partition?"""
        if not len(marks.partition):
            return np.ones(len(ev.entity), bool)
        stored = pl.DataFrame(
            {"e": mark_entity, "p": marks.partition.astype(np.int64), "next": marks.next_offset}
        )
        events = pl.DataFrame({"e": ev.entity, "p": ev.partition, "o": ev.offset})
        joined = events.join(stored, on=["e", "p"], how="left", maintain_order="left")
        return joined.select(pl.col("next").is_null() | (pl.col("o") >= pl.col("next")))[
            :, 0
        ].to_numpy()

    @staticmethod
    def _marks(
        ev: _Events, fresh: np.ndarray, mark_entity: np.ndarray, old: Marks, n: int
    ) -> Marks:
        """The old marks moved past the events folded in now, per (entity, partition)."""
        both = pl.concat(
            [
                pl.DataFrame(
                    {"e": mark_entity, "p": old.partition.astype(np.int64), "next": old.next_offset}
                ),
                pl.DataFrame(
                    {"e": ev.entity[fresh], "p": ev.partition[fresh], "next": ev.offset[fresh] + 1}
                ),
            ]
        )
        merged = both.group_by(["e", "p"]).agg(pl.col("next").max()).sort(["e", "p"])
        e = merged["e"].to_numpy()
        offsets = np.searchsorted(e, np.arange(n + 1), side="left").astype(np.int64)
        return Marks(
            offsets=offsets,
            partition=merged["p"].cast(pl.Int32).to_numpy(),
            next_offset=merged["next"].to_numpy(),
        )

    def _write(
        self,
        ev: _Events,
        touched: np.ndarray,
        at: np.ndarray,
        created: list[int | None],
        slots: list[Slots],
        marks: Marks,
    ) -> None:
        texts = encode(at_us=at, slots=slots, marks=marks)
        before = np.array([-1 if c is None else c for c in created], np.int64)
        stamp = np.maximum(now_us(), before + 1)  # later than the record it replaces
        keys = ev.keys[touched]
        rows = WriteBatch(
            keys={k: keys[k] for k in self.view.join_keys},
            event_ts=at[touched],
            created_ts=stamp[touched],
            features={RECORD_COLUMN: [texts[i] for i in touched.tolist()]},
        )
        stats = retrying(
            lambda: self.online.write(self.schema, rows),
            what=f"online write of view {self.view.name!r}",
            budget_s=self.retry_s,
        )
        self.metrics.online_written.inc(stats.written, view=self.view.name)
        if stats.skipped_stale:
            self.metrics.aggregate_conflicts.inc(stats.skipped_stale, view=self.view.name)
            log.warning(
                "view %r: %d aggregate records were replaced by another writer while this "
                "worker folded events into them; are the events keyed by entity?",
                self.view.name,
                stats.skipped_stale,
            )
