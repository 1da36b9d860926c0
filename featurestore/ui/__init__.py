"""The web UI: the catalog, a view's page, lineage, history, freshness and skew.

Server-rendered Jinja2 templates with a little JavaScript (``static/ui.js``: live
filtering of the catalog, highlighting in the lineage graph), chosen so that a
small team keeps one Python code path: each page's data is a function over the
same API the CLI calls (``api.catalog``, the registry, the stores), and each page
has a JSON twin under ``/ui/api/``. Every asset ships in this package; nothing is
fetched from the internet. See docs/ui.md.

Modules: ``app`` (routes, auth, errors), ``access`` (what an API key may see),
``catalog_data``, ``view_data`` (a view, freshness, its chart), ``objects`` (other
objects, saved datasets), ``lineage``, ``history``, ``skew``.

>>> from featurestore.ui import create_ui          # doctest: +SKIP
>>> app.mount("/ui", create_ui(store))              # doctest: +SKIP
"""

from featurestore.ui.app import create_ui

__all__ = ["create_ui"]
