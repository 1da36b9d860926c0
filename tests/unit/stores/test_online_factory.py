"""open_online_store: URLs, options, and a light import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from featurestore.errors import DefinitionError
from featurestore.stores.online import (
    MemoryOnlineStore,
    OnlineStore,
    SqliteOnlineStore,
    open_online_store,
)


def test_memory_and_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_online_store("memory://"), MemoryOnlineStore)
    absolute = open_online_store(f"sqlite:///{tmp_path}/a/online.db?timeout_s=1.5")
    assert isinstance(absolute, SqliteOnlineStore) and absolute.path == f"{tmp_path}/a/online.db"
    absolute.close()
    monkeypatch.chdir(tmp_path)
    relative = open_online_store("sqlite:///rel.db")
    assert isinstance(relative, SqliteOnlineStore) and relative.path == "rel.db"
    relative.close()
    assert (tmp_path / "rel.db").exists()
    in_memory = open_online_store("sqlite://")
    assert isinstance(in_memory, SqliteOnlineStore) and in_memory.path == ":memory:"
    in_memory.close()


def test_redis_url_options_reach_the_store() -> None:
    store = open_online_store("redis://127.0.0.1:1/3?timeout_s=0.25&chunk_size=10&in_flight=2")
    assert isinstance(store, OnlineStore)
    assert (store.chunk_size, store.in_flight) == (10, 2)  # type: ignore[attr-defined]
    store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://x", "unknown online store URL scheme"),
        ("memory://?timeout_s=1", "unknown option 'timeout_s'"),
        ("redis://localhost?chunk_size=big", "option 'chunk_size' must be an integer"),
    ],
)
def test_bad_urls_say_what_to_use(url: str, message: str) -> None:
    with pytest.raises(DefinitionError, match=message):
        open_online_store(url)


def test_importing_the_package_does_not_import_redis() -> None:
    code = (
        "import sys, featurestore.stores.online as o; o.open_online_store('memory://'); "
        "print(sorted(m for m in ('redis', 'polars', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
