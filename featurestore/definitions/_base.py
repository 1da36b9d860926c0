"""What every definition shares: a name, metadata, and a list of problems.

Constructors never raise on bad values: they record each problem, so that the
compiler can report every problem of a whole feature repo at once, each with its
file, object and field. ``obj.problems`` lists them; ``obj.check()`` raises them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from featurestore.errors import DefinitionError, DefinitionErrors

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Problems:
    """Collects the problems of one definition while it is built."""

    def __init__(self, kind: str, name: Any) -> None:
        self.obj = f"{kind} {name!r}"
        self.kind = kind
        self.items: list[DefinitionError] = []

    def add(self, message: str, *, field: str, value: Any = None, hint: str | None = None) -> None:
        self.items.append(
            DefinitionError(message, obj=self.obj, field=field, value=value, hint=hint)
        )

    def name(self, value: Any, *, what: str = "name") -> None:
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            self.add(
                "must be an identifier (letters, digits, underscores; not starting with a digit)",
                field=what,
                value=value,
            )

    def mapping(self, value: Mapping[str, Any] | None, *, what: str) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.add("must be a mapping of strings", field=what, value=value)
            return {}
        return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True, kw_only=True)
class Metadata:
    """Free-form documentation carried by every definition into the plan."""

    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    owner: str = ""

    def metadata_dict(self) -> dict[str, Any]:
        return {"description": self.description, "tags": dict(self.tags), "owner": self.owner}

    def _finish(self, problems: Problems) -> None:
        object.__setattr__(self, "tags", problems.mapping(self.tags, what="tags"))
        object.__setattr__(self, "_problems", tuple(problems.items))

    @property
    def problems(self) -> tuple[DefinitionError, ...]:
        """The problems found when this object was built (empty when valid)."""
        return getattr(self, "_problems", ())

    def check(self) -> None:
        """Raise ``DefinitionErrors`` with every problem of this object, if any."""
        if self.problems:
            raise DefinitionErrors(self.problems)
