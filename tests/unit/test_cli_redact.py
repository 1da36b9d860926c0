"""``featurestore._redact``: the one rule for secrets in messages, used by errors,
the registry and the CLI (issue 15 item 7)."""

from __future__ import annotations

import pytest

from featurestore._redact import redact_text, redact_url
from featurestore.errors import DefinitionError, DefinitionErrors, RegistryError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg://bob:s3cret@db:5432/f", "postgresql+psycopg://bob:***@db:5432/f"),
        ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
        ("x postgresql://u:p@ss@host/db y", "x postgresql://u:***@host/db y"),
        ("rediss://h:6380/0?password=pw&db=1", "rediss://h:6380/0?password=***&db=1"),
        ("s3://bucket/p?aws_secret_access_key=k", "s3://bucket/p?aws_secret_access_key=***"),
        # Nothing secret: unchanged.
        ("postgresql://bob@db/f", "postgresql://bob@db/f"),
        ("sqlite:////tmp/registry.db", "sqlite:////tmp/registry.db"),
        ("view 'a:b' has key=1", "view 'a:b' has key=1"),
    ],
)
def test_redact_text(text, expected):
    assert redact_text(text) == expected
    assert redact_url(text) == expected


def test_errors_render_and_serialise_redacted():
    err = RegistryError(
        "cannot open postgresql://bob:s3cret@db/f",
        obj="registry postgresql://bob:s3cret@db/f",
        value="postgresql://bob:s3cret@db/f",
        hint="check postgresql://bob:s3cret@db/f",
    )
    assert "s3cret" not in str(err)
    assert "s3cret" not in repr(err.to_dict())
    many = DefinitionErrors([DefinitionError("x", obj="redis://:s3cret@h/0")])
    assert "s3cret" not in str(many) and "s3cret" not in repr(many.to_dict())
