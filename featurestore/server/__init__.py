"""The HTTP lookup server (FastAPI): ``create_app(repo)`` and ``run(repo, ...)``.

Imports FastAPI, so ``import featurestore`` never imports this package.
"""

from __future__ import annotations

from featurestore.server.app import create_app
from featurestore.server.options import ServerOptions
from featurestore.server.run import run

__all__ = ["ServerOptions", "create_app", "run"]
