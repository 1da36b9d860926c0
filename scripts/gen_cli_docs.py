"""The CLI reference page, generated from the Typer app ``featurestore.cli.main.app``.

The docs build calls ``render()`` (``scripts/mkdocs_hooks.py``), so the page always
matches the installed commands. Run it by hand to see the page:

    .venv/bin/python scripts/gen_cli_docs.py > cli.md
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

PROG = "featurestore"


def _context(command: Any, name: str, parent: Any | None) -> Any:
    return command.context_class(command, info_name=name, parent=parent)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _arguments(command: Any, ctx: Any) -> list[str]:
    rows = []
    for param in command.get_params(ctx):
        if param.param_type_name != "argument":
            continue
        required = "required" if param.required else f"default: `{param.default}`"
        help_text = _escape(getattr(param, "help", None) or "")
        rows.append(f"| `{(param.name or '').upper()}` | {help_text} {required} |")
    return rows


def _options(command: Any, ctx: Any) -> list[str]:
    rows = []
    for param in command.get_params(ctx):
        if param.param_type_name != "option" or getattr(param, "hidden", False):
            continue
        record = param.get_help_record(ctx)
        if record is None or record[0] == "--help":
            continue
        names, help_text = record
        rows.append(f"| `{_escape(names)}` | {_escape(help_text)} |")
    return rows


def _command_section(command: Any, path: list[str], ctx: Any, level: int) -> list[str]:
    title = " ".join(path)
    lines = [f"{'#' * level} `{title}`", ""]
    help_text = inspect.cleandoc(command.help or command.short_help or "")
    if help_text:
        lines += [help_text, ""]
    lines += ["```text", command.get_usage(ctx).strip(), "```", ""]
    arguments = _arguments(command, ctx)
    if arguments:
        lines += ["| argument | description |", "|---|---|", *arguments, ""]
    options = _options(command, ctx)
    if options:
        lines += ["| option | description |", "|---|---|", *options, ""]
    return lines


def _walk(group: Any, path: list[str], ctx: Any, level: int) -> list[str]:
    lines: list[str] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or getattr(command, "hidden", False):
            continue
        sub_ctx = _context(command, name, ctx)
        sub_path = [*path, name]
        if hasattr(command, "list_commands"):  # a group: its help, then its commands
            lines += [f"{'#' * level} `{' '.join(sub_path)}`", ""]
            help_text = inspect.cleandoc(command.help or "")
            if help_text:
                lines += [help_text, ""]
            lines += _walk(command, sub_path, sub_ctx, level + 1)
        else:
            lines += _command_section(command, sub_path, sub_ctx, level)
    return lines


def commands() -> list[str]:
    """Every command path of the CLI, e.g. ``["apply", "skew audit", ...]``."""
    import typer.main

    from featurestore.cli.main import app

    root = typer.main.get_command(app)
    out: list[str] = []

    def visit(group: Any, path: list[str], ctx: Any) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if command is None or getattr(command, "hidden", False):
                continue
            if hasattr(command, "list_commands"):
                visit(command, [*path, name], _context(command, name, ctx))
            else:
                out.append(" ".join([*path, name]))

    visit(root, [], _context(root, PROG, None))
    return out


def render() -> str:
    """The CLI reference as Markdown: one section per command, options in a table."""
    import typer.main

    from featurestore.cli.main import app

    root = typer.main.get_command(app)
    ctx = _context(root, PROG, None)
    lines = [
        "# CLI reference",
        "",
        "<!-- generated from featurestore.cli.main.app by scripts/gen_cli_docs.py -->",
        "",
        inspect.cleandoc(root.help or ""),
        "",
        "Exit codes: `0` success · `1` invalid definitions, data or request · `2` usage "
        "error · `3` conflict or a service that may come back (a retry can help) · `4` "
        "internal error · `5` skew audit threshold exceeded.",
        "",
        *_walk(root, [PROG], ctx, 2),
    ]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
