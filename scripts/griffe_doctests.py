"""A griffe extension for the docs site: doctest lines (``>>> ...``) in docstrings
become fenced ``pycon`` blocks, so Markdown shows them as code instead of nested
block quotes. Loaded by mkdocstrings (``mkdocs.yml``, handler option ``extensions``)."""

from __future__ import annotations

from typing import Any

import griffe


def fence_doctests(text: str) -> str:
    """``text`` with each run of doctest lines (a ``>>>`` line, its ``...``
    continuations and its output up to a blank line) wrapped in a ``pycon`` fence."""
    out: list[str] = []
    in_block = False
    for line in text.splitlines():
        stripped = line.strip()
        if not in_block and stripped.startswith(">>>"):
            out += ["```pycon", stripped]
            in_block = True
        elif in_block and not stripped:
            out += ["```", ""]
            in_block = False
        else:
            out.append(stripped if in_block else line)
    if in_block:
        out.append("```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and ">>>" in docstring.value:
            docstring.value = fence_doctests(docstring.value)
