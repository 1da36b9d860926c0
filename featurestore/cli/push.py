"""``featurestore push VIEW FILE``: write a file of a view's source rows through
``FeatureStore.push`` (row transforms, online, offline; ``api/push.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featurestore.cli._common import JsonOpt, RepoOpt, console, open_store, print_json
from featurestore.errors import DataError

_READERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "ndjson"}


def _read(path: Path) -> object:
    import polars as pl

    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            "is not a file type push reads",
            obj=f"file {str(path)!r}",
            field="FILE",
            value=path.suffix or "(no suffix)",
            hint="use .parquet, .csv, .json (a list of objects or an object of lists) "
            "or .jsonl (one object per line)",
        )
    if not path.is_file():
        raise DataError(
            "does not exist", obj=f"file {str(path)!r}", field="FILE", hint="check the path"
        )
    try:
        if kind == "parquet":
            return pl.read_parquet(path)
        if kind == "csv":
            return pl.read_csv(path)  # timestamps stay text; push parses them (with a zone)
        if kind == "ndjson":
            return pl.read_ndjson(path)
        import orjson

        return orjson.loads(path.read_bytes())  # columns or records, as over HTTP
    except Exception as exc:
        raise DataError(
            f"cannot be read as {kind}: {str(exc).splitlines()[0] if str(exc) else exc!r}",
            obj=f"file {str(path)!r}",
            field="FILE",
            hint="check that the file is complete and of the type its suffix says",
        ) from exc


def push(
    view: Annotated[str, typer.Argument(help="The feature view to write to.")],
    file: Annotated[
        Path,
        typer.Argument(
            help="The view's source rows: .parquet, .csv, .json or .jsonl. Timestamps in "
            "text files are ISO-8601 with a zone."
        ),
    ],
    push_id: Annotated[
        str | None,
        typer.Option(
            "--push-id",
            help="Names this batch of rows: pushing it again writes nothing twice. "
            "Default: a new id (a re-run then counts the rows again in aggregations).",
        ),
    ] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Write rows to a feature view: row transforms, the online store and the offline table."""
    rows = _read(file)
    store = open_store(repo)
    report = store.push(view, rows, push_id=push_id)
    if as_json:
        print_json(report.to_dict())
        return
    console.print(
        f"{report.view}: {report.rows} rows pushed (push id {report.push_id}); online "
        f"{report.online_written} written, {report.online_skipped} unchanged; offline "
        f"{report.offline_written} rows added in {report.seconds:.2f}s"
    )
