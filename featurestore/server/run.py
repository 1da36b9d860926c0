"""Start the server with uvicorn: ``run(repo, host=..., port=..., workers=...)``.

Several workers are separate processes that each import the app from
``featurestore.server.run:app_from_env``; the repo, the pinned version and the
metrics directory reach them through the environment.

Run it by hand with ``python -m featurestore.server --repo DIR --port 6566``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from featurestore.errors import DefinitionError
from featurestore.server.metrics import METRICS_DIR_ENV

REPO_ENV = "FEATURESTORE_REPO"
VERSION_ENV = "FEATURESTORE_REGISTRY_VERSION"
FACTORY = "featurestore.server.run:app_from_env"


def app_from_env() -> FastAPI:
    """The app for ``FEATURESTORE_REPO`` (uvicorn factory for worker processes)."""
    from featurestore.server.app import create_app

    repo = os.environ.get(REPO_ENV)
    if not repo:
        raise DefinitionError(
            "is not set", obj="environment", field=REPO_ENV, hint="set it to the feature repo"
        )
    pinned = os.environ.get(VERSION_ENV)
    return create_app(repo, registry_version=int(pinned) if pinned else None)


def run(
    repo: str | Path,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    registry_version: int | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the repo until interrupted. Unset arguments come from ``[server]`` config.

    Blocks; returns after SIGINT/SIGTERM once the workers have stopped.
    """
    import uvicorn

    from featurestore.config import load_settings
    from featurestore.server.options import ServerOptions
    from featurestore.server.protocol import HEADER_TIMEOUT_ENV, HeaderTimeoutProtocol

    settings = load_settings(repo)
    server = settings.config.server
    options = ServerOptions.from_settings(settings)
    os.environ[HEADER_TIMEOUT_ENV] = str(options.header_timeout_seconds)
    os.environ[REPO_ENV] = str(settings.repo)
    if registry_version is not None:
        os.environ[VERSION_ENV] = str(registry_version)
    else:
        os.environ.pop(VERSION_ENV, None)
    # a fresh directory per start: counts from an earlier run must not be summed in
    metrics_dir = tempfile.mkdtemp(prefix="featurestore-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir
    extra: dict[str, Any] = {}
    if "timeout_worker_healthcheck" in inspect.signature(uvicorn.Config).parameters:
        # a worker importing Polars and the registry on a busy 2-core machine can
        # take several seconds to answer uvicorn's health ping; 5 s killed some
        extra["timeout_worker_healthcheck"] = 60
    try:
        uvicorn.run(
            FACTORY,
            factory=True,
            host=host or server.host,
            port=port if port is not None else server.port,
            workers=workers or server.workers,
            access_log=False,  # our own structured, sampled access log replaces it
            log_level=log_level,
            proxy_headers=False,
            # timeouts (docs/operations.md): headers by the protocol, the body by the
            # lookup endpoint, idle keep-alive connections by uvicorn
            http=HeaderTimeoutProtocol,
            timeout_keep_alive=max(1, round(options.keep_alive_seconds)),
            **extra,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve online features over HTTP.")
    parser.add_argument("--repo", default=".", help="feature repo directory")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--registry-version", type=int, default=None)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    run(
        args.repo,
        host=args.host,
        port=args.port,
        workers=args.workers,
        registry_version=args.registry_version,
        log_level=args.log_level,
    )


if __name__ == "__main__":
    main()
