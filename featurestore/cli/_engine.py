"""The ``--engine`` options of batch commands, and the store they open."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from featurestore.cli._common import open_store

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore

EngineOpt = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="Where the job runs: 'local' (this process) or 'ray' (Ray Core tasks; "
        "install the ray extra). Default: the engine type in featurestore.toml.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="With --engine ray: 'auto' (a running cluster), 'ray://host:10001' (Ray "
        "Client), or unset to start a local cluster.",
    ),
]
PartitionsOpt = Annotated[
    int | None,
    typer.Option(
        "--partitions",
        min=1,
        help="Key partitions to cut the job into (default: 1 locally, 2x the cluster's "
        "CPUs on Ray).",
    ),
]


@contextmanager
def engine_store(
    repo: Path, engine: str | None, ray_address: str | None, partitions: int | None
) -> Iterator[FeatureStore]:
    """The repo's store running batch jobs on the engine the options name (else the
    config's); the executor is closed when the command ends."""
    if engine is None and ray_address is None and partitions is None:
        store = open_store(repo)
        try:
            yield store
        finally:
            store.close()
        return
    from featurestore.api.store import FeatureStore
    from featurestore.config import load_settings
    from featurestore.engines.executor import make_executor

    configured = load_settings(repo).config.engine
    executor = make_executor(
        engine or configured.type,
        ray_address=ray_address or configured.ray_address,
        partitions=partitions or configured.partitions,
    )
    store = FeatureStore(repo, executor=executor)
    try:
        yield store
    finally:
        store.close()
        executor.close()
