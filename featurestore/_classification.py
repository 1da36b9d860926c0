"""Data classes of features, lowest to strictest: ``public`` < ``internal`` <
``sensitive`` < ``pii``.

A leaf: definitions validate against it, the compiler derives inherited classes
with it, the policy grants by it. ``sensitive`` and ``pii`` reads are written to
the access log (``api/access_log.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

Classification = Literal["public", "internal", "sensitive", "pii"]
CLASSIFICATIONS: tuple[str, ...] = get_args(Classification)  # lowest first
DEFAULT_CLASSIFICATION = "internal"
LOGGED = frozenset({"sensitive", "pii"})  # reads of these are access-logged
RANK = {c: i for i, c in enumerate(CLASSIFICATIONS)}


def is_classification(value: object) -> bool:
    return isinstance(value, str) and value in RANK


def strictest(classes: Iterable[str], default: str | None = None) -> str | None:
    """The strictest of ``classes`` (``default`` when there are none).

    >>> strictest(["public", "pii", "internal"])
    'pii'
    """
    found = [c for c in classes if c in RANK]
    return max(found, key=RANK.__getitem__) if found else default


def lower(a: str, b: str) -> bool:
    """Whether class ``a`` is lower (less strict) than ``b``."""
    return RANK.get(a, 0) < RANK.get(b, 0)
