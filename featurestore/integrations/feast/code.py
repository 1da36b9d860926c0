"""Python source for definitions, laid out the way ``ruff format`` leaves it.

Every call is written one argument per line with a trailing comma (ruff keeps such
a call exploded), strings in double quotes, so the generated ``features.py`` reads
like hand-written code and stays unchanged under the formatter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

INDENT = "    "
LINE = 88  # ruff and black default: the output repo has no config of ours


@dataclass(frozen=True)
class Raw:
    """Source text written as it is (a variable name, an expression)."""

    text: str


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple[tuple[str, Any], ...]
    inline: bool = False  # a short call on one line, e.g. Field(name=..., dtype=...)


def call(func: str, *, inline: bool = False, **kwargs: Any) -> Call:
    return Call(func, tuple((k, v) for k, v in kwargs.items() if v is not None), inline)


def literal(value: Any, depth: int = 0) -> str:
    """``value`` as Python source at indentation ``depth``."""
    pad = INDENT * (depth + 1)
    end = INDENT * depth
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Call):
        if value.inline or not value.args:
            return f"{value.func}({', '.join(f'{k}={literal(v)}' for k, v in value.args)})"
        inner = "".join(f"{pad}{k}={literal(v, depth + 1)},\n" for k, v in value.args)
        return f"{value.func}(\n{inner}{end})"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool | int | float) or value is None:
        return repr(value)
    if isinstance(value, timedelta):
        return _timedelta(value)
    if isinstance(value, dict):
        items = [f"{literal(k)}: {literal(v, depth + 1)}" for k, v in value.items()]
        one = "{" + ", ".join(items) + "}"
        if len(one) + len(pad) + 20 <= LINE and "\n" not in one:
            return one
        return "{\n" + "".join(f"{pad}{i},\n" for i in items) + end + "}"
    if isinstance(value, list | tuple):
        items = [literal(v, depth + 1) for v in value]
        one = "[" + ", ".join(items) + "]"
        if len(one) + len(pad) + 20 <= LINE and "\n" not in one:
            return one
        return "[\n" + "".join(f"{pad}{i},\n" for i in items) + end + "]"
    raise TypeError(f"cannot write {type(value).__name__} as source")


def _timedelta(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if value.microseconds or seconds * 1_000_000 != round(value.total_seconds() * 1e6):
        return f"timedelta(microseconds={round(value.total_seconds() * 1e6)})"
    for unit, size in (("days", 86_400), ("hours", 3_600), ("minutes", 60)):
        if seconds % size == 0:
            return f"timedelta({unit}={seconds // size})"
    return f"timedelta(seconds={seconds})"


def assign(name: str, value: Any) -> str:
    return f"{name} = {literal(value)}\n"


def comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.splitlines())
