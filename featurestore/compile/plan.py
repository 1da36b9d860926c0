"""The compiled plan: frozen, JSON-serialisable, content-hashed.

One ``ObjectPlan`` per definition. Its ``spec`` is plain JSON (enums as strings,
durations in microseconds, Polars expressions as their JSON form plus a readable
string), so plans can be printed, diffed, stored in the registry and executed by
any engine without the user's Python code (except Python-function on-demand
transforms, which name their function and hash its source).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PLAN_FORMAT = 1

Kind = Literal[
    "entity",
    "batch_source",
    "kafka_source",
    "request_source",
    "feature_view",
    "on_demand_feature_view",
    "feature_service",
]
KINDS: tuple[Kind, ...] = (
    "entity",
    "batch_source",
    "kafka_source",
    "request_source",
    "feature_view",
    "on_demand_feature_view",
    "feature_service",
)


def canonical_json(value: Any) -> str:
    """Stable JSON text: sorted keys, no whitespace. Hashes are taken over this."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ObjectPlan:
    """The compiled form of one definition."""

    kind: Kind
    name: str
    spec: Mapping[str, Any]
    hash: str = field(default="")

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(
                self,
                "hash",
                content_hash({"kind": self.kind, "name": self.name, "spec": self.spec}),
            )

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "hash": self.hash, "spec": self.spec}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ObjectPlan:
        plan = cls(kind=data["kind"], name=data["name"], spec=data["spec"])
        if data.get("hash") and data["hash"] != plan.hash:
            raise ValueError(f"plan of {plan.kind} {plan.name!r} does not match its hash")
        return plan


@dataclass(frozen=True)
class RepoPlan:
    """Every object of a project, compiled. Objects are kept sorted by (kind, name)."""

    project: str
    objects: tuple[ObjectPlan, ...]

    def __post_init__(self) -> None:
        order = {k: i for i, k in enumerate(KINDS)}
        object.__setattr__(
            self, "objects", tuple(sorted(self.objects, key=lambda o: (order[o.kind], o.name)))
        )

    @property
    def hash(self) -> str:
        return content_hash([o.hash for o in self.objects])

    def __iter__(self) -> Iterator[ObjectPlan]:
        return iter(self.objects)

    def by_key(self) -> dict[tuple[str, str], ObjectPlan]:
        return {o.key: o for o in self.objects}

    def get(self, kind: Kind, name: str) -> ObjectPlan | None:
        return self.by_key().get((kind, name))

    def of_kind(self, kind: Kind) -> list[ObjectPlan]:
        return [o for o in self.objects if o.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "project": self.project,
            "hash": self.hash,
            "objects": [o.to_dict() for o in self.objects],
        }

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RepoPlan:
        if data.get("format") != PLAN_FORMAT:
            raise ValueError(f"unsupported plan format {data.get('format')!r}")
        return cls(
            project=data["project"], objects=tuple(ObjectPlan.from_dict(o) for o in data["objects"])
        )
