"""Entity: what features describe (a driver, a customer), and how it is keyed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from featurestore.definitions._base import Metadata, Problems
from featurestore.definitions.field import Field, as_fields


@dataclass(frozen=True, kw_only=True)
class Entity(Metadata):
    """An entity with one or more typed join keys (composite keys are allowed).

    >>> driver = Entity(name="driver", join_keys={"driver_id": "int64"})
    >>> driver.key_names
    ('driver_id',)
    """

    name: str
    join_keys: Mapping[str, Any] | tuple[Field, ...]

    def __post_init__(self) -> None:
        problems = Problems("Entity", self.name)
        problems.name(self.name)
        raw = dict(self.join_keys) if isinstance(self.join_keys, Mapping) else self.join_keys
        keys = as_fields(raw, problems, what="join_keys")
        if not keys:
            problems.add(
                "needs at least one join key",
                field="join_keys",
                hint='e.g. join_keys={"driver_id": "int64"}',
            )
        for key in keys:
            if str(key.dtype).startswith("list") or key.dtype in ("float32", "float64"):
                problems.add(
                    f"join key {key.name!r} has dtype {key.dtype}, which cannot be a key",
                    field="join_keys",
                    hint="use an integer, string or date key",
                )
        object.__setattr__(self, "join_keys", keys)
        self._finish(problems)

    @property
    def keys(self) -> tuple[Field, ...]:
        return tuple(self.join_keys)  # type: ignore[arg-type]

    @property
    def key_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.keys)
