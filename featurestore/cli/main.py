"""The ``featurestore`` command: the whole command tree, assembled here.

Thin: every command calls the Python API. Commands live one module per group
(``definitions``, ``registry``, ``batch``, ``online``, ``stream``, ``dataset``,
``skew``); each is registered through ``_errors.guarded``, the one place where an
error becomes a message and an exit code:

0 success; 1 invalid definitions, data or request; 2 usage error; 3 conflict or a
service that may come back (retry can help); 4 internal error; 5 skew threshold.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import typer

from featurestore._jit import skip_blas_probe
from featurestore.cli import (
    batch,
    catalog,
    dataset,
    definitions,
    feast,
    governance,
    monitor,
    online,
    push,
    registry,
    serving,
    skew,
    stream,
    ui,
)
from featurestore.cli._errors import guarded, report

app = typer.Typer(
    help="featurestore: declare features once; train and serve the same values.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _add(group: typer.Typer, fn: Callable[..., Any], name: str | None = None) -> None:
    group.command(name)(guarded(fn))


for _fn in (definitions.version, definitions.init, definitions.plan, definitions.apply):
    _add(app, _fn)

_add(registry.registry_app, registry.history, "history")
_add(registry.registry_app, registry.show, "show")
_add(registry.registry_app, registry.rollback, "rollback")
app.add_typer(registry.registry_app, name="registry")

_add(dataset.dataset_app, dataset.create, "create")
_add(dataset.dataset_app, dataset.rebuild, "rebuild")
app.add_typer(dataset.dataset_app, name="dataset")

_add(app, batch.backfill)
_add(app, batch.materialize)
_add(app, online.get)
_add(app, online.serve)
_add(app, stream.stream)
_add(app, serving.promote)
_add(app, serving.gc)
_add(app, monitor.monitor)

_add(app, push.push)
_add(app, catalog.list_objects, "list")
_add(app, catalog.describe)
_add(app, catalog.search)
_add(app, feast.import_feast, "import-feast")
_add(app, governance.access_log, "access-log")
_add(app, governance.erase)
_add(app, governance.check)
_add(governance.retention_app, governance.retention_apply, "apply")
app.add_typer(governance.retention_app, name="retention")
_add(app, ui.ui)

_add(skew.skew_app, skew.audit, "audit")
app.add_typer(skew.skew_app, name="skew")


def main() -> None:
    skip_blas_probe()  # a CLI process is featurestore's own: see featurestore._jit
    try:
        app()
    except Exception as exc:  # raised outside a command (option parsing callbacks)
        sys.exit(report(exc, as_json="--json" in sys.argv))
