"""The UI on its own, for a laptop: ``featurestore ui``.

Only the pages and their JSON (no lookup, push or metrics routes), no API keys,
and bound to 127.0.0.1 by the CLI: whoever can reach it is on this machine.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse

from featurestore import __version__
from featurestore.api.store import FeatureStore
from featurestore.ui.app import PREFIX, create_ui


def standalone_app(repo: str | Path) -> FastAPI:
    store = FeatureStore(repo)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    app = FastAPI(
        title="featurestore UI",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    app.mount(PREFIX, create_ui(store))
    return app
