"""Secrets out of messages and logs: passwords in URLs, secret query parameters.

A leaf (imports nothing of featurestore), so that errors, stores, the registry and
the CLI share one rule. ``redact_url`` is for a value known to be a URL;
``redact_text`` scrubs every URL inside free text (a driver's error message, a
traceback) and is what the error types and the CLI apply to everything they print.

>>> redact_url("postgresql+psycopg://bob:s3cret@db:5432/features")
'postgresql+psycopg://bob:***@db:5432/features'
>>> redact_text("cannot open redis://:pw@cache:6379/0?password=x&db=1 (refused)")
'cannot open redis://:***@cache:6379/0?password=***&db=1 (refused)'
"""

from __future__ import annotations

import re

MASK = "***"

# scheme://userinfo@ where userinfo holds a ':' (user:password, or :password).
# Greedy up to the last '@' of the token, so that a raw '@' in a password is hidden too.
_USERINFO = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s:@/'\"]*):(?P<secret>[^\s'\"]*)@"
)
# ?password=... &token=... in query strings (libpq, Redis and cloud URLs take these).
_SECRET_PARAM = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_.\-]*(?:password|passwd|secret|token|api[_-]?key)"
    r"[A-Za-z0-9_.\-]*)=)(?P<value>[^&;\s'\"#]*)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """``text`` with the password of every URL and every secret query value masked."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['key']}{MASK}", text)


def redact_url(url: str) -> str:
    """The URL without its password or secret query values, for messages and logs."""
    return redact_text(url)


__all__ = ["MASK", "redact_text", "redact_url"]
