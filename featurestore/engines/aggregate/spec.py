"""What one windowed aggregate is: a function, a window and an optional hop.

This module imports nothing heavy, so the registry, the online server and the
stream worker can describe aggregates without loading Numba or Polars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from featurestore._dtypes import FLOATS, INTEGERS, is_list
from featurestore.errors import DefinitionError

AggFunction = Literal[
    "count", "sum", "mean", "min", "max", "first", "last", "stddev", "count_distinct"
]
AGG_FUNCTIONS: tuple[str, ...] = get_args(AggFunction)

# Functions that do arithmetic on the values, so need a numeric (or bool) input.
NUMERIC_ONLY = frozenset({"sum", "mean", "stddev"})


@dataclass(frozen=True)
class WindowSpec:
    """One aggregate over a sliding window.

    ``window_us`` is the window length in microseconds (``None`` = lifetime): the
    value at time ``t`` covers events with ``t - window_us < event_ts <= t``.
    ``hop_us`` floors ``t`` to a multiple of the hop counted from the Unix epoch
    before anything else, so the value only changes on hop boundaries.

    >>> WindowSpec("sum", 3_600_000_000, hop_us=60_000_000).query_time(90_000_000)
    60000000
    """

    function: AggFunction
    window_us: int | None
    hop_us: int | None = None

    def __post_init__(self) -> None:
        if self.function not in AGG_FUNCTIONS:
            raise DefinitionError(
                "unknown aggregation function",
                obj="WindowSpec",
                field="function",
                value=self.function,
                hint=f"Use one of {', '.join(AGG_FUNCTIONS)}",
            )
        for name in ("window_us", "hop_us"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise DefinitionError(
                    "must be a positive whole number of microseconds, or None",
                    obj=f"WindowSpec({self.function})",
                    field=name,
                    value=v,
                    hint="Convert durations with featurestore._time.parse_duration_us('1h')",
                )

    def query_time(self, t_us: int) -> int:
        """The instant the value at ``t_us`` is computed for (``t_us`` floored to the hop)."""
        if self.hop_us is None:
            return t_us
        return (t_us // self.hop_us) * self.hop_us


def output_dtype(*, function: AggFunction, input_dtype: str | None, obj: str | None = None) -> str:
    """The canonical dtype of an aggregate's result (SEMANTICS: Windowed aggregations).

    ``input_dtype`` is the canonical dtype of the aggregated column (``None`` for
    ``count()`` over events). Raises ``DefinitionError`` for a function that cannot
    take that dtype, e.g. ``sum`` over strings; ``obj`` names the aggregate in it.
    """
    obj = obj or f"aggregation {function}"
    if function == "count":
        return "int64"
    if input_dtype is None:
        raise DefinitionError(
            "needs a column to aggregate; only count() may go without one",
            obj=obj,
            field="column",
        )
    numeric = input_dtype in INTEGERS or input_dtype in FLOATS or input_dtype == "bool"
    if function in NUMERIC_ONLY and not numeric:
        raise DefinitionError(
            f"cannot compute {function} of a {input_dtype} column",
            obj=obj,
            field="column",
            value=input_dtype,
            hint="Use a numeric column, or count/count_distinct/min/max/first/last",
        )
    if is_list(input_dtype) and function not in ("first", "last"):
        raise DefinitionError(
            f"cannot compute {function} of a {input_dtype} column",
            obj=obj,
            field="column",
            value=input_dtype,
            hint="Lists support count, first and last; explode the list to aggregate its items",
        )
    if function == "count_distinct":
        return "int64"
    if function == "sum":
        return "float64" if input_dtype in FLOATS else "int64"
    if function in ("mean", "stddev"):
        return "float64"
    return input_dtype
