"""The command tree itself: every command goes through the one error mapping, every
option documents itself, and the mapping gives the README's exit codes with
secrets masked (issue 15 items 6-7, issue 16 item 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from featurestore.cli import definitions
from featurestore.cli.main import app
from featurestore.errors import DataError, OnlineStoreUnavailable

runner = CliRunner()


def _commands(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):  # a group (Typer's vendored click)
            out += _commands(cmd, f"{prefix}{name} ")
        else:
            out.append((f"{prefix}{name}", cmd))
    return out


COMMANDS = _commands(typer.main.get_command(app))


def test_the_tree_has_every_command():
    names = {n for n, _ in COMMANDS}
    assert {"plan", "apply", "backfill", "materialize", "get", "serve", "stream"} <= names
    assert {"registry rollback", "dataset create", "skew audit"} <= names


@pytest.mark.parametrize(("name", "cmd"), COMMANDS, ids=[n for n, _ in COMMANDS])
def test_every_command_is_guarded_and_every_parameter_has_help(name, cmd):
    assert getattr(cmd.callback, "__featurestore_guarded__", False), name
    assert cmd.help, name
    for param in cmd.params:
        text = getattr(param, "help", None)
        assert text and text.strip(), f"{name}: {param.name} has no help text"
        assert "[" not in text, f"{name} {param.name}: rich markup would eat {text!r}"


def _help(*args: str) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_help_texts_say_what_is_true():
    serve = _help("serve")
    assert "server.host in featurestore.toml" in serve
    assert "Default: host." not in serve and "Default:  host" not in serve
    backfill = " ".join(_help("backfill").split())
    assert "default: all the data" in backfill and "default: now" not in backfill
    assert "default: now" in " ".join(_help("materialize").split())
    assert "default: all" in " ".join(_help("skew", "audit").split())
    assert "--request-time" in _help("get")
    assert "--yes" in _help("registry", "rollback")


def test_exits_a_command_raises_pass_through(monkeypatch):
    def exits(repo: Path) -> None:
        raise typer.Exit(5)

    monkeypatch.setattr(definitions, "open_store", exits)
    assert runner.invoke(app, ["plan"]).exit_code == 5


def _raise(exc: BaseException):
    def boom(repo: Path) -> None:
        raise exc

    return boom


@pytest.mark.parametrize(
    ("exc", "code", "needle"),
    [
        (DataError("bad rows", obj="view 'v'", hint="fix them"), 1, "view 'v': bad rows"),
        (OnlineStoreUnavailable("down", obj="redis://:hunter2@cache:6379/0"), 3, ":***@cache"),
        (
            FileNotFoundError(2, "No such file or directory", "/data/x.parquet"),
            1,
            "/data/x.parquet",
        ),
        (RuntimeError("driver said postgresql://u:hunter2@db/x"), 4, "internal error"),
    ],
)
def test_one_mapping_exit_codes_and_redaction(monkeypatch, exc, code, needle):
    monkeypatch.setattr(definitions, "open_store", _raise(exc))  # fault injection
    text = runner.invoke(app, ["plan"], env={"COLUMNS": "200"})
    assert text.exit_code == code
    assert needle in text.stderr and "hunter2" not in text.output + text.stderr
    assert "Traceback" not in text.stderr
    as_json = runner.invoke(app, ["plan", "--json"])
    body = json.loads(as_json.stdout)
    assert as_json.exit_code == body["exit_code"] == code
    assert "hunter2" not in as_json.stdout


def test_debug_shows_the_traceback_of_an_internal_error_redacted(monkeypatch):
    monkeypatch.setattr(definitions, "open_store", _raise(KeyError("sqlite://u:pw@h/x")))
    result = runner.invoke(app, ["plan"], env={"FEATURESTORE_DEBUG": "1"})
    assert result.exit_code == 4
    assert "Traceback" in result.stderr and "u:***@h" in result.stderr
    assert "pw@" not in result.stderr
