"""``featurestore ui``: browse the repo's catalog, lineage, freshness and history."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featurestore.cli._common import RepoOpt, console

HOST = "127.0.0.1"  # a laptop's UI has no API keys: only this machine may reach it


def ui(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 6567,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the UI in the default browser.")
    ] = False,
    repo: RepoOpt = Path("."),
) -> None:
    """Serve the web UI of this repo on 127.0.0.1 (no lookups; `serve` has it at /ui too)."""
    import uvicorn

    from featurestore.config import load_settings
    from featurestore.ui.standalone import standalone_app

    root = load_settings(repo).repo
    url = f"http://{HOST}:{port}/ui/"
    console.print(f"UI of [bold]{root}[/] at {url} (Ctrl+C stops it)", highlight=False)
    app = standalone_app(root)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=HOST, port=port, log_level="warning")
