"""The UI's routes: server-rendered pages under ``/ui`` and their data as JSON.

``create_ui(store, auth=...)`` builds an app to mount at ``/ui`` (``featurestore
serve`` mounts it next to the lookup routes; ``featurestore ui`` serves it alone).
Every page is a GET that reads through the Python API (``api.catalog``, the
registry, the stores) in a worker thread: the UI writes nothing. A JSON twin of
each page lives under ``/ui/api/``. Assets are files of this package
(``static/``); the Content-Security-Policy lets a page load nothing from elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape

from featurestore import __version__
from featurestore.errors import FeatureStoreError
from featurestore.server.auth import Authenticator
from featurestore.server.errors import Unauthorized, status_for
from featurestore.ui import catalog_data, history, lineage, objects, skew, view_data
from featurestore.ui.access import COOKIE, EVERYTHING, Visibility, visibility

if TYPE_CHECKING:
    from featurestore.api.store import FeatureStore

HERE = Path(__file__).parent
PREFIX = "/ui"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
)
NAV = (
    ("catalog", "Catalog", "/ui/"),
    ("lineage", "Lineage", "/ui/lineage"),
    ("freshness", "Freshness", "/ui/freshness"),
    ("history", "History", "/ui/history"),
    ("skew", "Skew", "/ui/skew"),
)

_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _headers() -> dict[str, str]:
    return {
        "content-security-policy": CSP,
        "x-content-type-options": "nosniff",
        "referrer-policy": "same-origin",
        "cache-control": "no-store",
    }


def create_ui(store: FeatureStore, *, auth: Authenticator | None = None) -> FastAPI:
    """The UI of ``store``; with ``auth`` (enabled), every page needs an API key."""
    ui = FastAPI(title="featurestore UI", docs_url=None, redoc_url=None, openapi_url=None)
    ui.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    auth_on = auth is not None and auth.enabled

    def who(request: Request) -> Visibility:
        if not auth_on or auth is None:
            return EVERYTHING
        header = request.headers.get("authorization")
        cookie = request.cookies.get(COOKIE)
        raw = header if header is not None else (f"Bearer {cookie}" if cookie else None)
        key = auth.check(None if raw is None else raw.encode())
        _, plan = catalog_data.head_plan(store)
        return visibility(auth, key, plan)

    def page(request: Request, template: str, section: str, data: dict[str, Any]) -> Response:
        html = _env.get_template(template).render(
            nav=NAV,
            section=section,
            project=store.project,
            version=__version__,
            auth_on=auth_on,
            d=data,
            path=request.url.path,
        )
        return HTMLResponse(html, headers=_headers())

    def both(path: str, template: str, section: str, build: Callable[..., dict[str, Any]]) -> None:
        """A page at ``/ui{path}`` and its JSON at ``/ui/api{path}``."""

        def html_route(request: Request) -> Response:
            data = build(request, who(request))
            return page(request, template, section, data)

        def json_route(request: Request) -> Response:
            data = build(request, who(request))
            return JSONResponse(_jsonable(data), headers=_headers())

        ui.add_api_route(path, html_route, methods=["GET"], include_in_schema=False)
        api = "/api" + (path if path != "/" else "/catalog")
        ui.add_api_route(api, json_route, methods=["GET"], include_in_schema=False)

    both(
        "/",
        "catalog.html",
        "catalog",
        lambda r, v: catalog_data.catalog(store, v, query=r.query_params.get("q", "")),
    )
    both(
        "/views/{name}",
        "view.html",
        "catalog",
        lambda r, v: view_data.view_page(
            store, v, r.path_params["name"], feature=r.query_params.get("feature")
        ),
    )
    both(
        "/objects/{kind}/{name}",
        "object.html",
        "catalog",
        lambda r, v: objects.object_page(store, v, r.path_params["kind"], r.path_params["name"]),
    )
    both(
        "/datasets/{name}",
        "dataset.html",
        "lineage",
        lambda r, v: objects.dataset_page(store, v, r.path_params["name"]),
    )
    both("/lineage", "lineage.html", "lineage", lambda r, v: _lineage(store, v))
    both("/history", "history.html", "history", lambda r, v: history.history(store, v))
    both("/freshness", "freshness.html", "freshness", lambda r, v: view_data.freshness(store, v))
    both("/skew", "skew.html", "skew", lambda r, v: skew.skew(store, v))
    both(
        "/skew/runs/{run_id}",
        "skew_run.html",
        "skew",
        lambda r, v: skew.saved_run(store, v, r.path_params["run_id"]),
    )

    @ui.get("/skew-report.css", include_in_schema=False)
    def report_css() -> Response:
        from featurestore.audit.html import REPORT_CSS

        return Response(REPORT_CSS, media_type="text/css", headers=_headers())

    @ui.get("/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        if not auth_on:
            return RedirectResponse(f"{PREFIX}/", status_code=303)
        nxt = _safe_next(request.query_params.get("next"))
        return page(request, "login.html", "", {"next": nxt, "error": ""})

    @ui.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        key = (form.get("key") or [""])[0].strip()
        nxt = _safe_next((form.get("next") or [""])[0])
        if auth is None or not auth_on:
            return RedirectResponse(nxt, status_code=303)
        try:
            auth.check(f"Bearer {key}".encode())
        except Unauthorized as exc:
            response = page(request, "login.html", "", {"next": nxt, "error": exc.message})
            response.status_code = 401
            return response
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(
            COOKIE,
            key,
            httponly=True,
            samesite="strict",
            path=PREFIX,
            secure=request.url.scheme == "https",
        )
        return response

    @ui.get("/logout", include_in_schema=False)
    def logout() -> Response:
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    @ui.exception_handler(FeatureStoreError)
    async def error(request: Request, exc: FeatureStoreError) -> Response:
        status = status_for(exc)
        is_api = request.url.path.startswith(f"{PREFIX}/api/")
        headers = _headers()
        if isinstance(exc, Unauthorized):
            headers.update(exc.headers)
            if not is_api:
                target = quote(
                    request.url.path + (f"?{request.url.query}" if request.url.query else "")
                )
                return RedirectResponse(f"{PREFIX}/login?next={target}", status_code=303)
        if is_api:
            return JSONResponse(exc.to_dict(), status_code=status, headers=headers)
        response = page(request, "error.html", "", {"status": status, "error": exc.to_dict()})
        response.status_code = status
        return response

    return ui


def _lineage(store: FeatureStore, vis: Visibility) -> dict[str, Any]:
    data = lineage.graph(store, vis)
    return {**data, "layout": lineage.layout(data)}


def _safe_next(value: str | None) -> str:
    """Only a path of the UI: a login must not redirect elsewhere."""
    if value and value.startswith(f"{PREFIX}/") and not value.startswith("//"):
        return value
    return f"{PREFIX}/"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
