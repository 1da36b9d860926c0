"""Finding things: ``list``, ``describe`` and ``search`` over the registry head.

The data comes from ``featurestore.api.catalog``; this module only prints it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from featurestore._time import format_duration_us
from featurestore.cli._common import JsonOpt, RepoOpt, console, err_console, open_store, print_json

if TYPE_CHECKING:
    from featurestore.api.catalog import CatalogEntry
    from featurestore.api.store import FeatureStore
    from featurestore.compile import RepoPlan


class Group(StrEnum):
    entities = "entities"
    sources = "sources"
    views = "views"
    services = "services"


KindOpt = Annotated[
    Group | None,
    typer.Option("--kind", help="Only this kind of object: entities, sources, views or services."),
]


def _head_plan(store: FeatureStore) -> tuple[int, RepoPlan]:
    from featurestore.compile import RepoPlan

    head = store.registry.head(fresh=True)
    plan = store.registry.snapshot(head).plan if head else RepoPlan(store.project, ())
    return head, plan


def _empty_note(head: int) -> None:
    if head == 0:
        err_console.print(
            "The registry is empty: run `featurestore apply` to register the definitions.",
            highlight=False,
        )


def _table(entries: list[CatalogEntry], *, title: str, matched: list[str] | None = None) -> Table:
    table = Table("kind", "name", "owner", "tags", "description", "summary", title=title)
    if matched is not None:
        table.add_column("matched")
    for i, e in enumerate(entries):
        row = [
            e.kind,
            e.name,
            e.owner,
            ", ".join(f"{k}={v}" for k, v in e.tags.items()),
            e.description,
            e.summary,
        ]
        if matched is not None:
            row.append(matched[i])
        table.add_row(*row)
    return table


def list_objects(
    kind: Annotated[
        Group | None,
        typer.Argument(help="What to list: entities, sources, views or services; default: all."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag", help="Only objects with this tag: key=value, or a bare key (repeatable)."
        ),
    ] = None,
    owner: Annotated[
        str | None, typer.Option("--owner", help="Only objects of this owner (any case).")
    ] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """List registered entities, sources, views and services with owner and tags."""
    from featurestore.api.catalog import list_entries, parse_tags

    store = open_store(repo)
    head, plan = _head_plan(store)
    entries = list_entries(
        plan, group=kind.value if kind else None, tags=parse_tags(tag or []), owner=owner
    )
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    _empty_note(head)
    if head and not entries:
        console.print(
            f"Nothing matches at registry version {head}; `featurestore list` shows everything.",
            highlight=False,
        )
        return
    if entries:
        console.print(_table(entries, title=f"registry version {head}"))


def search(
    text: Annotated[
        str, typer.Argument(help="Text to find in names, descriptions, owners, tags, features.")
    ],
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Find registered objects by name, description, owner, tag or feature name."""
    from featurestore.api.catalog import search as find_text

    store = open_store(repo)
    head, plan = _head_plan(store)
    hits = find_text(plan, text)
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    _empty_note(head)
    if head and not hits:
        console.print(f"Nothing registered mentions {text!r}.", highlight=False, markup=False)
        return
    if hits:
        console.print(
            _table(
                [h.entry for h in hits],
                title=f"{len(hits)} found for {text!r}",
                matched=[", ".join(h.matched) for h in hits],
            )
        )


def _line(label: str, value: Any) -> None:
    console.print(f"  [bold]{label}:[/] ", end="", highlight=False)
    console.print(str(value), highlight=False, markup=False, soft_wrap=True)


def _print_definition(kind: str, spec: dict[str, Any]) -> None:
    if kind == "feature_view":
        cols = spec["aggregations"] or spec["features"]
        for c in cols:
            if "function" in c:
                window = (
                    "lifetime" if c["window_us"] is None else format_duration_us(c["window_us"])
                )
                hop = "" if not c.get("hop_us") else f", hop {format_duration_us(c['hop_us'])}"
                what = f"{c['function']}({c['column'] or '*'}) over {window}{hop}"
                _line(f"aggregation {c['name']}", what)
            else:
                _line(f"feature {c['name']}", c["dtype"])
        for t in spec["transform"]:
            _line(f"transform {t['name']}", t["expr"]["repr"])
        _line("source", f"{spec['source']['name']} ({spec['source']['type']})")
        return
    for key, value in spec.items():
        if key == "transform" and isinstance(value, dict) and "exprs" in value:
            for t in value["exprs"]:
                _line(f"transform {t['name']}", t["expr"]["repr"])
            continue
        _line(key, _plain(value))


def _plain(value: Any) -> str:
    """A spec value as a person reads it: lists of names joined, the rest as JSON."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value) or "-"
    if isinstance(value, list) and all(isinstance(v, dict) and "name" in v for v in value):
        return ", ".join(f"{v['name']}:{v['dtype']}" if "dtype" in v else v["name"] for v in value)
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def describe(
    name: Annotated[str, typer.Argument(help="Name of a registered object (see `list`).")],
    kind: KindOpt = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Show one object: definition, owner and tags, tables, online state, lineage, runs."""
    from featurestore.api.catalog import describe as describe_object

    info = describe_object(open_store(repo), name, group=kind.value if kind else None)
    if as_json:
        print_json(info)
        return
    console.print(
        f"[bold]{info['kind']} {info['name']}[/] (registry version {info['registry_version']}, "
        f"hash {info['hash']})",
        highlight=False,
    )
    _line("description", info["description"] or "-")
    _line("owner", info["owner"] or "-")
    _line("tags", ", ".join(f"{k}={v}" for k, v in info["tags"].items()) or "-")
    _line("summary", info["summary"])
    _line("changed in registry versions", ", ".join(map(str, info["changed_in_versions"])))
    console.print("[bold]definition[/]")
    _print_definition(info["kind"], info["definition"])
    console.print("[bold]lineage[/]")
    _line("reads", ", ".join(info["lineage"]["reads"]) or "-")
    _line("used by", ", ".join(info["lineage"]["used_by"]) or "-")
    if "offline" not in info:
        return
    off = info["offline"]
    console.print("[bold]offline table[/]")
    _line("table", off["table"])
    _line("retention", off["retention"])
    if not off["exists"]:
        _line("state", "not created yet: run `featurestore backfill`")
    else:
        for key in ("version", "rows", "files", "size_bytes", "last_commit", "last_operation"):
            _line(key.replace("_", " "), off[key])
        if "event_time_range" in off:
            _line("event times", " to ".join(off["event_time_range"]))
    on = info["online"]
    console.print("[bold]online[/]")
    _line("served online", "yes" if on["online"] else "no (offline only)")
    _line("store", on["store"])
    _line("retention", f"{on['retention']} (set by {on['retention_setting']})")
    _line("served from registry version", on["served_from_version"])
    if on["pending_definition"]:
        _line("pending", "a newer definition waits for its records (`featurestore promote`)")
    _line(
        "materialized until",
        info["materialized_until"] or "never: run `featurestore materialize`",
    )
