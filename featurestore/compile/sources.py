"""Reading a batch source's schema: cheap (a Parquet footer, a Delta log), and the
one place that turns "cannot read it" into an error naming the source and the file.

The compiler reads schemas to check definitions; batch commands read them before
any work, so that a missing or corrupt source file is one clear error rather than a
traceback from inside a scan.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from featurestore.errors import DataError


def resolve(path: str, repo: Path) -> str:
    """A source path as the engines read it: relative paths are under the repo."""
    if "://" in path or Path(path).is_absolute():
        return path
    return str(repo / path)


def is_local_file(path: str) -> bool:
    return "://" not in path and Path(path).is_file()


def read_source_schema(batch: Mapping[str, Any], *, repo: Path) -> dict[str, Any]:
    """The Polars schema of a batch source spec (``type: batch``), or a ``DataError``
    naming the source, its path and the fix."""
    import polars as pl

    path = resolve(str(batch["path"]), repo)
    options = dict(batch.get("storage_options") or {}) or None
    obj = f"BatchSource {batch['name']!r}"
    if "://" not in path and not any(c in path for c in "*?[") and not Path(path).exists():
        raise DataError(
            f"the source file does not exist: {path}",
            obj=obj,
            field="path",
            value=batch["path"],
            hint="check the path in the definition (relative paths start at the repo), "
            "or create the data first",
        )
    try:
        if batch["format"] == "parquet":
            return dict(pl.scan_parquet(path, storage_options=options).collect_schema())
        return dict(pl.scan_delta(path, storage_options=options).collect_schema())
    except Exception as exc:  # not there, not Parquet/Delta, no credentials
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if is_local_file(path):
            message = f"the source file cannot be read as {batch['format']}: {reason}"
            hint = "replace the file with a valid one, or point path at one"
        else:
            message = f"cannot read the batch source: {reason}"
            hint = "check the path in the definition, that the data exists and any credentials"
        raise DataError(
            message,
            obj=obj,
            field="path",
            value=batch["path"],
            hint=hint,
        ) from exc
