"""Field: a named, typed column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from featurestore._classification import CLASSIFICATIONS, is_classification
from featurestore._dtypes import normalize_dtype
from featurestore.definitions._base import Problems


@dataclass(frozen=True, kw_only=True)
class Field:
    """A column with a dtype: a Polars dtype (``pl.Float64``), a Python type or a
    canonical name (``"float64"``, ``"list[int64]"``).

    ``classification`` (``"public"``, ``"internal"``, ``"sensitive"``, ``"pii"``;
    default: the view's, else the project's) says what the values are; a derived
    feature declared lower than the inputs it reads gives ``classification_reason``.

    >>> Field(name="conv_rate", dtype="float64").dtype
    'float64'
    """

    name: str
    dtype: Any
    description: str = ""
    classification: str | None = None
    classification_reason: str = ""

    def __post_init__(self) -> None:
        problems = Problems("Field", self.name)
        problems.name(self.name)
        check_classification(self.classification, problems)
        try:
            object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        except ValueError as exc:
            problems.add(str(exc), field="dtype", value=self.dtype)
        object.__setattr__(self, "_problems", tuple(problems.items))

    @property
    def problems(self) -> tuple[Any, ...]:
        return getattr(self, "_problems", ())


def check_classification(value: Any, problems: Problems, *, what: str = "classification") -> None:
    """Record a problem unless ``value`` is None or one of the classes."""
    if value is not None and not is_classification(value):
        problems.add(
            "is not a classification",
            field=what,
            value=value,
            hint=f"use one of {', '.join(CLASSIFICATIONS)}",
        )


def as_fields(value: Any, problems: Problems, *, what: str) -> tuple[Field, ...]:
    """Fields from a sequence of ``Field`` or a mapping ``{name: dtype}``; problems
    of the fields are recorded against the owning object."""
    if value is None:
        return ()
    if isinstance(value, dict):
        fields = tuple(Field(name=k, dtype=v) for k, v in value.items())
    elif isinstance(value, list | tuple) and all(isinstance(f, Field) for f in value):
        fields = tuple(value)
    else:
        problems.add("must be a list of Field or a mapping {name: dtype}", field=what, value=value)
        return ()
    seen: set[str] = set()
    for f in fields:
        for p in f.problems:
            problems.add(
                p.message, field=f"{what}[{f.name!r}].{p.field}", value=p.value, hint=p.hint
            )
        if f.name in seen:
            problems.add("is declared twice", field=f"{what}[{f.name!r}]")
        seen.add(f.name)
    return fields
