"""Erasure of entities: ``featurestore erase --entity user_id=123``.

Removes every row of the given entities from

- the online store: every online view keyed by one of the given keys, in every
  derivation any registry version defined (the served one, a pinned one, one not
  collected yet). A view with a composite key (``user_id, item_id``) has its full
  keys found in its offline table first, which is why online goes first;
- the offline view tables (plain and aggregated) whose join keys include one of
  the keys: one Delta DELETE, one commit, per table;
- the feature log tables ``_feature_logs/*``: rows whose key column matches.

Saved datasets (``_datasets/NAME``) are reported when their spine holds an
entity, never changed: a dataset is an immutable record of a training run; delete
or rebuild it yourself. The access log holds no values and no entity keys, so it
has nothing to erase (the record that an access happened stays).

Every step deletes what matches *now*, so a second run (or a run after a kill)
deletes only what the first did not: it converges, and a finished erasure run
again reports zeros. Delta keeps the deleted rows in the files of older versions
until they are vacuumed: ``vacuum_hours`` vacuums every table touched. The report
carries the SHA-256 of its own canonical JSON (a content hash, not a signature
with a key).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from featurestore._dtypes import INTEGERS
from featurestore.api.feature_log import LOGS_PREFIX
from featurestore.api.training import DATASETS
from featurestore.errors import DataError, RequestError
from featurestore.stores.view_specs import offline_spec, online_schema

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore
    from featurestore.compile.views import FeatureViewPlan
    from featurestore.stores.offline.delta import DeltaOfflineStore

Entities = dict[str, list[Any]]  # join key -> values to erase


@dataclass
class EraseReport:
    """What an erasure removed (or, on a dry run, would remove), per table."""

    entities: dict[str, list[Any]]
    dry_run: bool
    online: dict[str, int] = field(default_factory=dict)  # "view@schema_id" -> records
    offline: dict[str, int] = field(default_factory=dict)  # table -> rows
    feature_logs: dict[str, int] = field(default_factory=dict)  # table -> rows
    datasets: dict[str, int] = field(default_factory=dict)  # dataset -> spine rows (kept)
    vacuumed: dict[str, int] = field(default_factory=dict)  # table -> files removed
    erased_at: str = ""

    @property
    def total(self) -> int:
        return (
            sum(self.online.values()) + sum(self.offline.values()) + sum(self.feature_logs.values())
        )

    def content(self) -> dict[str, Any]:
        return {
            "entities": self.entities,
            "dry_run": self.dry_run,
            "online": self.online,
            "offline": self.offline,
            "feature_logs": self.feature_logs,
            "datasets_holding_entities": self.datasets,
            "access_log": "holds no values or entity keys: nothing to erase",
            "vacuumed_files": self.vacuumed,
            "erased_at": self.erased_at,
        }

    def to_dict(self) -> dict[str, Any]:
        """The report with ``sha256``: the hash of the canonical JSON of the rest."""
        body = self.content()
        return {**body, "sha256": content_sha256(body)}


def content_sha256(body: Mapping[str, Any]) -> str:
    """SHA-256 of ``body`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_entities(items: Sequence[str]) -> dict[str, list[str]]:
    """``["user_id=1", "user_id=2"]`` -> ``{"user_id": ["1", "2"]}``."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise RequestError(
                "is not KEY=VALUE",
                obj="erase",
                field="--entity",
                value=item,
                hint="give one join key and value per --entity, e.g. --entity user_id=123",
            )
        values = out.setdefault(key.strip(), [])
        if value.strip() not in values:
            values.append(value.strip())
    if not out:
        raise RequestError(
            "names no entity", obj="erase", field="--entity", hint="e.g. --entity user_id=123"
        )
    return out


def _views_by_version(store: FeatureStore) -> list[dict[str, FeatureViewPlan]]:
    versions = sorted(v.version for v in store.registry.history())
    if not versions:
        raise RequestError(
            "the registry has no applied version",
            obj="erase",
            hint="run `featurestore apply` first: erasure finds tables from the registry",
        )
    return [dict(store.index(v).views) for v in versions]


def typed_entities(raw: Mapping[str, Sequence[Any]], views: Iterable[FeatureViewPlan]) -> Entities:
    """Values cast to the dtype the views declare for each key."""
    dtypes: dict[str, str] = {}
    for view in views:
        dtypes.update(zip(view.join_keys, view.key_dtypes, strict=True))
    out: Entities = {}
    for key, values in raw.items():
        dtype = dtypes.get(key)
        if dtype is None:
            raise RequestError(
                "is not a join key of any feature view",
                obj="erase",
                field="--entity",
                value=key,
                hint=f"join keys: {', '.join(sorted(dtypes)) or '(none)'}",
            )
        if dtype in INTEGERS:
            try:
                out[key] = [int(v) for v in values]
            except ValueError as exc:
                raise DataError(
                    f"is not an integer ({exc})",
                    obj="erase",
                    field=key,
                    value=list(values),
                    hint=f"{key} is {dtype}",
                ) from None
        elif dtype == "string":
            out[key] = [str(v) for v in values]
        else:
            raise DataError(
                f"erasing by a {dtype} key is not supported",
                obj="erase",
                field=key,
                value=dtype,
                hint="erase by an integer or string join key",
            )
    return out


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def predicate(entities: Entities, columns: Iterable[str]) -> str | None:
    """SQL matching any of the entities over ``columns`` (None: no key column)."""
    parts = [
        f'"{key}" IN ({", ".join(_literal(v) for v in values)})'
        for key, values in entities.items()
        if key in set(columns)
    ]
    return " OR ".join(parts) if parts else None


def _matches(entities: Entities, columns: Iterable[str]) -> pl.Expr | None:
    exprs = [pl.col(k).is_in(v) for k, v in entities.items() if k in set(columns)]
    if not exprs:
        return None
    out = exprs[0]
    for e in exprs[1:]:
        out = out | e
    return out


def count_rows(offline: DeltaOfflineStore, name: str, entities: Entities) -> int:
    """Rows of table ``name`` holding any of the entities."""
    lf = offline.read_table(name)
    expr = _matches(entities, lf.collect_schema().names())
    if expr is None:
        return 0
    return int(lf.filter(expr).select(pl.len()).collect().item())


def _erase_online(
    store: FeatureStore,
    history: list[dict[str, FeatureViewPlan]],
    entities: Entities,
    report: EraseReport,
) -> None:
    from featurestore.stores.online.base import ReadRequest

    seen: set[str] = set()
    for views in history:
        for view in views.values():
            if not view.online or not set(view.join_keys) & set(entities):
                continue
            schema = online_schema(store.project, view)
            if schema.schema_id in seen:
                continue
            seen.add(schema.schema_id)
            for keys in _entity_keys(store, view, entities):
                label = f"{view.name}@{schema.schema_id}"
                if report.dry_run:
                    [got] = store.online.read([ReadRequest(schema, keys)])
                    n = sum(ev is not None for ev in got.event_ts)
                else:
                    n = store.online.delete_entities(schema, keys)
                report.online[label] = report.online.get(label, 0) + n


def _entity_keys(
    store: FeatureStore, view: FeatureViewPlan, entities: Entities
) -> list[dict[str, list[Any]]]:
    """Key columns of the view's entities to erase: the given values for a one-key
    view, else every full key its offline table holds for them."""
    keys = view.join_keys
    if len(keys) == 1:
        return [{keys[0]: list(entities[keys[0]])}]
    name = offline_spec(view).name
    if not store.offline.exists(name):
        return []
    expr = _matches(entities, keys)
    assert expr is not None  # the view has one of the keys
    found = store.offline.read_table(name).filter(expr).select(list(keys)).unique().collect()
    if found.height == 0:
        return []
    return [{k: found[k].to_list() for k in keys}]


def _erase_tables(
    offline: DeltaOfflineStore, names: Iterable[str], entities: Entities, dry_run: bool
) -> dict[str, int]:
    out: dict[str, int] = {}
    for name in names:
        if not offline.exists(name):
            continue
        columns = offline.read_table(name).collect_schema().names()
        where = predicate(entities, columns)
        if where is None:
            continue
        out[name] = (
            count_rows(offline, name, entities) if dry_run else offline.delete_rows(name, where)
        )
    return out


def erase(
    store: FeatureStore,
    entities: Mapping[str, Sequence[Any]],
    *,
    dry_run: bool = False,
    vacuum_hours: int | None = None,
) -> EraseReport:
    """Erase the entities (join key -> values, as strings or typed) everywhere."""
    history = _views_by_version(store)
    typed = typed_entities(entities, (v for views in history for v in views.values()))
    report = EraseReport(
        entities=typed,
        dry_run=dry_run,
        erased_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    # online first: a composite-key view's keys are found in its offline table
    _erase_online(store, history, typed, report)
    view_tables = sorted(
        {
            offline_spec(view).name
            for views in history
            for view in views.values()
            if set(view.join_keys) & set(typed)
        }
    )
    offline = store.offline
    report.offline = _erase_tables(offline, view_tables, typed, dry_run)
    logs = offline.tables_under(LOGS_PREFIX)
    report.feature_logs = _erase_tables(offline, logs, typed, dry_run)
    for spine in offline.tables_under(DATASETS):
        if not spine.endswith("/spine"):
            continue
        n = count_rows(offline, spine, typed)
        if n:
            report.datasets[spine.removeprefix(f"{DATASETS}/").removesuffix("/spine")] = n
    if vacuum_hours is not None and not dry_run:
        for name in [*report.offline, *report.feature_logs]:
            report.vacuumed[name] = len(offline.vacuum(name, retention_hours=vacuum_hours))
    return report
