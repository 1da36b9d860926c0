"""What any offline store offers: the protocol the batch engine, training and audit use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import polars as pl

    from featurestore.stores.offline.spec import OfflineTableSpec, WriteReport


@runtime_checkable
class OfflineStore(Protocol):
    """Versioned tables of feature rows (per view) and generic named tables."""

    def table_uri(self, name: str) -> str: ...

    def exists(self, name: str) -> bool: ...

    def version(self, name: str) -> int | None: ...

    def history(self, name: str, *, limit: int | None = None) -> list[dict[str, Any]]: ...

    def write_view(
        self,
        spec: OfflineTableSpec,
        frame: pl.DataFrame,
        *,
        mode: Literal["append", "merge", "replace"],
        time_range: tuple[int, int] | None = None,
    ) -> WriteReport: ...

    def read_view(
        self,
        spec: OfflineTableSpec,
        *,
        start_us: int | None = None,
        end_us: int | None = None,
        keys: pl.DataFrame | None = None,
        version: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.LazyFrame: ...

    def write_table(
        self,
        name: str,
        frame: pl.DataFrame,
        *,
        mode: Literal["append", "overwrite"],
        partition_by: Sequence[str] | None = None,
    ) -> WriteReport: ...

    def read_table(self, name: str, *, version: int | None = None) -> pl.LazyFrame: ...
