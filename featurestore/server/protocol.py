"""uvicorn's httptools protocol with a deadline on the request line and headers.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) but sets no
limit on a request whose headers trickle in: a client sending one header byte a
second holds a connection (and a file descriptor) forever. This protocol closes
a connection whose request line and headers have not all arrived within
``header_timeout`` seconds of its first byte (or of the connection, for the first
request). The body has its own deadline in ``asgi.LookupEndpoint``.

uvicorn builds the protocol in each worker process from its class alone, so the
deadline comes from the environment (``run()`` sets it from the options).
"""

from __future__ import annotations

import asyncio
import os

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_ENV = "FEATURESTORE_HEADER_TIMEOUT_SECONDS"
DEFAULT_HEADER_TIMEOUT = 10.0


def header_timeout() -> float:
    raw = os.environ.get(HEADER_TIMEOUT_ENV)
    try:
        value = float(raw) if raw else DEFAULT_HEADER_TIMEOUT
    except ValueError:
        value = DEFAULT_HEADER_TIMEOUT
    return value if value > 0 else DEFAULT_HEADER_TIMEOUT


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes connections stuck before the end of the headers."""

    _header_timer: asyncio.TimerHandle | None = None
    _header_timeout: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        if self._header_timeout is None:
            self._header_timeout = header_timeout()
        self._header_timer = self.loop.call_later(self._header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expire(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()
