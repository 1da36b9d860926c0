"""The versioned registry on SQLAlchemy: SQLite (default) or PostgreSQL.

Every ``apply`` writes one new registry version in one transaction: either all of
its object revisions land or none do. Two racing applies that started from the
same version cannot both win: the version number is part of the primary key, so
the loser's insert fails and it gets ``RegistryConflictError``.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from featurestore._redact import redact_url
from featurestore.compile.plan import ObjectPlan, RepoPlan
from featurestore.errors import (
    RegistryConflictError,
    RegistryError,
    RegistryUnavailable,
    VersionNotFoundError,
)
from featurestore.registry import schema
from featurestore.registry.diff import PlanDiff, diff_plans


@dataclass(frozen=True)
class VersionInfo:
    version: int
    created_at: datetime
    author: str
    message: str
    operation: str
    plan_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "author": self.author,
            "message": self.message,
            "operation": self.operation,
            "plan_hash": self.plan_hash,
        }


@dataclass(frozen=True)
class Snapshot:
    """The whole registry of a project at one version (immutable, cacheable)."""

    version: int
    plan: RepoPlan


@dataclass(frozen=True)
class ApplyResult:
    version: int
    created: bool
    diff: PlanDiff


def _default_author() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# Words of driver messages for a database that may come back (psycopg, sqlite3).
_TRANSIENT = (
    "connection refused",
    "timeout",
    "timed out",
    "could not connect",
    "server closed",
    "connection reset",
    "terminating connection",
    "database is locked",
    "could not translate host name",
    "no route to host",
)


def unavailable(exc: OperationalError, *, url: str, doing: str) -> RegistryError:
    """A typed error for a failed registry operation, its URL without the password.

    Retryable when the driver says the database is unreachable or busy; not when it
    refused us (wrong password, no such database), which a retry cannot fix."""
    reason = str(exc.orig).strip() or type(exc.orig).__name__
    where = f"registry {redact_url(url)}"
    if any(word in reason.lower() for word in _TRANSIENT):
        return RegistryUnavailable(
            f"{doing} failed: {reason}",
            obj=where,
            hint="check that the registry database is running and reachable, then retry",
        )
    return RegistryError(
        f"{doing} failed: {reason}",
        obj=where,
        hint="check [registry] url in featurestore.toml (or FEATURESTORE_REGISTRY_URL)",
    )


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE so
    that writers queue instead of failing half-way."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's BEGIN below be the only one
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


class Registry:
    """Versioned plans of one project.

    >>> reg = Registry("sqlite:///:memory:", project="demo")  # doctest: +SKIP
    """

    def __init__(self, url: str, *, project: str, head_cache_seconds: float = 1.0) -> None:
        self.url = url
        self.project = project
        self.head_cache_seconds = head_cache_seconds
        self.engine = make_engine(url)
        self._snapshots: dict[int, Snapshot] = {}
        self._head: tuple[float, int] | None = None
        self._lock = threading.Lock()
        try:
            schema.metadata.create_all(self.engine)
        except OperationalError as exc:
            raise unavailable(exc, url=url, doing="opening the registry") from exc
        except IntegrityError:
            # Another process created the tables at the same moment (PostgreSQL
            # catalog race); they exist now.
            pass

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _reading(self, doing: str) -> Iterator[Connection]:
        """A connection whose driver failures become typed, redacted errors."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise unavailable(exc, url=self.url, doing=doing) from exc

    # -- reading ---------------------------------------------------------------
    def head(self, *, fresh: bool = False) -> int:
        """The newest version (0 when nothing was applied). Cached briefly."""
        now = time.monotonic()
        if not fresh and self._head and now - self._head[0] < self.head_cache_seconds:
            return self._head[1]
        with self._reading("reading the head version") as conn:
            value = self._head_in(conn)
        self._head = (now, value)
        return value

    def _head_in(self, conn: Connection) -> int:
        q = sa.select(sa.func.max(schema.versions.c.version)).where(
            schema.versions.c.project == self.project
        )
        return int(conn.execute(q).scalar() or 0)

    def snapshot(self, version: int | None = None) -> Snapshot:
        """The registry at ``version`` (default: the head). Snapshots are cached."""
        version = self.head() if version is None else version
        with self._lock:
            cached = self._snapshots.get(version)
        if cached is not None:
            return cached
        with self._reading("reading a registry version") as conn:
            snap = self._snapshot_in(conn, version)
        with self._lock:
            self._snapshots[version] = snap
        return snap

    def _snapshot_in(self, conn: Connection, version: int) -> Snapshot:
        if version < 0 or (
            version > 0
            and not conn.execute(
                sa.select(schema.versions.c.version).where(
                    schema.versions.c.project == self.project, schema.versions.c.version == version
                )
            ).first()
        ):
            raise VersionNotFoundError(
                "no such registry version",
                obj=f"project {self.project!r}",
                value=version,
                hint="see `featurestore registry history`",
            )
        o = schema.objects.c
        latest = (
            sa.select(o.kind, o.name, sa.func.max(o.revision).label("rev"))
            .where(o.project == self.project, o.registry_version <= version)
            .group_by(o.kind, o.name)
            .subquery()
        )
        rows = conn.execute(
            sa.select(o.plan_json, o.removed)
            .join_from(
                schema.objects,
                latest,
                sa.and_(
                    o.kind == latest.c.kind, o.name == latest.c.name, o.revision == latest.c.rev
                ),
            )
            .where(o.project == self.project)
        ).all()
        objs = tuple(ObjectPlan.from_dict(json.loads(r.plan_json)) for r in rows if not r.removed)
        return Snapshot(version=version, plan=RepoPlan(project=self.project, objects=objs))

    def history(self) -> list[VersionInfo]:
        v = schema.versions.c
        with self._reading("reading the history") as conn:
            rows = conn.execute(
                sa.select(schema.versions).where(v.project == self.project).order_by(v.version)
            ).all()
        return [
            VersionInfo(r.version, r.created_at, r.author, r.message, r.operation, r.plan_hash)
            for r in rows
        ]

    def object_history(self, kind: str, name: str) -> list[dict[str, Any]]:
        """Every revision of one object: registry version, hash, removed."""
        o = schema.objects.c
        with self._reading("reading an object's history") as conn:
            rows = conn.execute(
                sa.select(o.revision, o.registry_version, o.hash, o.removed)
                .where(o.project == self.project, o.kind == kind, o.name == name)
                .order_by(o.revision)
            ).all()
        return [dict(r._mapping) for r in rows]

    def diff(self, plan: RepoPlan, *, base_version: int | None = None) -> PlanDiff:
        """What ``apply(plan)`` would change, against ``base_version`` (default head)."""
        base = self.head(fresh=True) if base_version is None else base_version
        old = self.snapshot(base).plan if base > 0 else None
        return diff_plans(old, plan, base_version=base)

    # -- writing ---------------------------------------------------------------
    def apply(
        self,
        plan: RepoPlan,
        *,
        expected_version: int | None = None,
        message: str = "",
        author: str | None = None,
        operation: str = "apply",
        keep_serving: Callable[[RepoPlan, RepoPlan], Collection[str]] | None = None,
    ) -> ApplyResult:
        """Make ``plan`` the new head. No change -> no new version.

        ``expected_version`` is the head the caller planned against; if another apply
        landed since, this raises ``RegistryConflictError`` and writes nothing.
        ``keep_serving(old, new)`` names views whose online serving stays on the old
        head's definition (blue/green): they are pinned in the same transaction, so no
        reader ever sees the new head without its pins. A view already pinned keeps
        its older pin (the records of that derivation are the ones that exist).
        """
        if plan.project != self.project:
            raise RegistryError(
                "plan belongs to another project",
                obj=f"project {self.project!r}",
                value=plan.project,
            )
        try:
            with self.engine.begin() as conn:
                head = self._head_in(conn)
                if expected_version is not None and head != expected_version:
                    raise RegistryConflictError(
                        f"the registry moved from version {expected_version} to {head} "
                        "since this plan was made",
                        obj=f"project {self.project!r}",
                        hint="run `featurestore plan` again, review, then apply",
                    )
                old = self._snapshot_in(conn, head).plan if head else None
                diff = diff_plans(old, plan, base_version=head)
                if diff.empty:
                    return ApplyResult(version=head, created=False, diff=diff)
                version = head + 1
                conn.execute(
                    schema.versions.insert().values(
                        project=self.project,
                        version=version,
                        created_at=datetime.now(UTC),
                        author=author or _default_author(),
                        message=message,
                        operation=operation,
                        plan_hash=plan.hash,
                    )
                )
                self._write_objects(conn, old, plan, version)
                if keep_serving is not None and old is not None:
                    self._pin_in(conn, keep_serving(old, plan), head)
        except IntegrityError as exc:
            raise RegistryConflictError(
                "another apply created the same registry version first",
                obj=f"project {self.project!r}",
                hint="run `featurestore plan` again, review, then apply",
            ) from exc
        except OperationalError as exc:
            raise unavailable(exc, url=self.url, doing="writing (nothing was written)") from exc
        self._head = None
        return ApplyResult(version=version, created=True, diff=diff)

    def _write_objects(
        self, conn: Connection, old: RepoPlan | None, new: RepoPlan, version: int
    ) -> None:
        before = old.by_key() if old else {}
        after = new.by_key()
        o = schema.objects.c
        rows = []
        for key in set(before) | set(after):
            if key in before and key in after and before[key].hash == after[key].hash:
                continue
            kind, name = key
            rev = (
                conn.execute(
                    sa.select(sa.func.max(o.revision)).where(
                        o.project == self.project, o.kind == kind, o.name == name
                    )
                ).scalar()
                or 0
            )
            obj = after.get(key) or before[key]
            rows.append(
                {
                    "project": self.project,
                    "kind": kind,
                    "name": name,
                    "revision": rev + 1,
                    "registry_version": version,
                    "hash": obj.hash,
                    "plan_json": json.dumps(obj.to_dict(), sort_keys=True),
                    "removed": key not in after,
                }
            )
        if rows:
            conn.execute(schema.objects.insert(), rows)

    def rollback(
        self, *, to_version: int, expected_version: int | None = None, author: str | None = None
    ) -> ApplyResult:
        """A new version whose objects equal those of ``to_version``."""
        target = self.snapshot(to_version).plan
        return self.apply(
            target,
            expected_version=expected_version,
            author=author,
            message=f"rollback to version {to_version}",
            operation="rollback",
        )

    # -- blue/green serving pins ------------------------------------------------
    def serving_pins(self) -> dict[str, int]:
        """View -> the registry version whose definition of it is served online."""
        p = schema.serving_pins.c
        with self._reading("reading the serving pins") as conn:
            rows = conn.execute(
                sa.select(p.view, p.version).where(p.project == self.project)
            ).all()
        return {str(view): int(version) for view, version in rows}

    def _pin_in(self, conn: Connection, views: Collection[str], version: int) -> None:
        p = schema.serving_pins.c
        pinned = set(
            conn.execute(sa.select(p.view).where(p.project == self.project)).scalars()
        )
        now = datetime.now(UTC)
        for view in sorted(set(views) - pinned):
            conn.execute(
                schema.serving_pins.insert().values(
                    project=self.project, view=view, version=version, pinned_at=now
                )
            )

    def promote(self, view: str) -> int | None:
        """Serve ``view`` from the head's definition from now on; returns the version
        it was pinned to (None if it was not pinned)."""
        p = schema.serving_pins.c
        try:
            with self.engine.begin() as conn:
                version = conn.execute(
                    sa.select(p.version).where(p.project == self.project, p.view == view)
                ).scalar()
                conn.execute(
                    schema.serving_pins.delete().where(p.project == self.project, p.view == view)
                )
        except OperationalError as exc:
            raise unavailable(exc, url=self.url, doing="promoting a view") from exc
        return None if version is None else int(version)

    # -- watermarks (materialization progress) ---------------------------------
    def get_watermark(self, name: str) -> int | None:
        w = schema.watermarks.c
        with self._reading("reading a watermark") as conn:
            value = conn.execute(
                sa.select(w.value_us).where(w.project == self.project, w.name == name)
            ).scalar()
        return None if value is None else int(value)

    def set_watermark(self, name: str, value_us: int) -> None:
        w = schema.watermarks.c
        now = datetime.now(UTC)
        try:
            with self.engine.begin() as conn:
                updated = conn.execute(
                    schema.watermarks.update()
                    .where(w.project == self.project, w.name == name)
                    .values(value_us=value_us, updated_at=now)
                ).rowcount
                if not updated:
                    conn.execute(
                        schema.watermarks.insert().values(
                            project=self.project, name=name, value_us=value_us, updated_at=now
                        )
                    )
        except OperationalError as exc:
            raise unavailable(exc, url=self.url, doing="writing a watermark") from exc
