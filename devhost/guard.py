"""The dev host's connection guard: what the Functions front end bounds in Azure, bounded here.

uvicorn's httptools protocol has no deadline for a request's headers (its keep-alive timer only
runs between requests), no limit on their size, and `limit_concurrency` answers past the bound
only once the headers are in, in plain text. A slow-loris client that trickles headers a byte at a
time therefore holds a connection and a file descriptor for as long as it likes. `GuardedHttpTools`
adds, per connection:

- a header deadline (from the first byte of a request, or from accepting the connection) after
  which the connection is answered 408 and closed;
- a bound on the bytes of one request's head (431 past it), so oversized headers never reach the app;
- a bound on open connections: one past it is answered 503 at once and closed, so descriptors stay
  free for everyone else (`/health` included).

Each refusal is an AOAI-shaped JSON error and one warning log line (at most one a second per kind,
with the count since the last line). The request body's deadline is the proxy's
(`REQUEST_BODY_TIMEOUT_SECONDS`), so it holds in Azure too; once the app has answered, a body
still arriving is not waited for (the connection is closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.settings import Settings

log = logging.getLogger("devhost.guard")

_REASONS = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class GuardLimits:
    #: Seconds a client has to send a request's whole head (request line and headers).
    header_timeout: float = 10.0
    #: Bytes a request's head may take.
    max_header_bytes: int = 65_536
    #: Open connections the host serves at once; one more is answered 503 and closed.
    max_connections: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardLimits:
        return cls(
            settings.devhost_header_timeout_seconds, settings.max_request_header_bytes, settings.devhost_max_connections
        )


def error_response(status: int, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 response carrying AOAI's error shape, closing the connection."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _RateLimitedLog:
    """One warning per kind and second at most, counting what it did not print."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) < 1.0:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        log.warning(message + (f" (and {skipped} more since the last such line)" if skipped else ""), *args)


refusals = _RateLimitedLog()


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header deadline, a head size bound and a connection bound."""

    limits = GuardLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        #: Bytes of the current request's head: as received (a guard against a head that never
        #: ends), and as parsed (the exact bound, checked once the head is complete).
        self._raw_head = 0
        self._head_bytes = 0
        self._in_head = False
        self._refused = False

    @classmethod
    def with_limits(cls, limits: GuardLimits) -> type[GuardedHttpTools]:
        """The protocol class uvicorn instantiates per connection, with these limits."""
        return type("GuardedHttpTools", (cls,), {"limits": limits})

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            refusals.warn(
                "connections",
                "connection refused: %d connections open, the bound is %d (DEVHOST_MAX_CONNECTIONS)",
                len(self.connections),
                self.limits.max_connections,
            )
            self._refuse(
                503, "ServiceUnavailable", "The gateway is serving as many connections as it can; retry shortly."
            )
            return
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._in_head and (self.cycle is None or self.cycle.response_complete):
            self._start_head()  # the first bytes of the next request on a kept-alive connection
        in_head = self._in_head
        super().data_received(data)
        # Only bytes that still belong to an unfinished head count: a read that also carries the end
        # of the head and the body after it (an upload sent in one write) is not a long head.
        if in_head and self._in_head and not self._refused:
            self._raw_head += len(data)
            if self._raw_head > 2 * self.limits.max_header_bytes:
                # Still no end of the head long past the bound: refuse without parsing more.
                self._too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        self._in_head = False
        if self._head_bytes > self.limits.max_header_bytes:
            self._too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def on_response_complete(self) -> None:
        cycle = self.cycle
        # `self.cycle` may already be the next request (a client sends it once it holds a body of
        # the announced length, before the server's last, empty body message): only the cycle that
        # completed counts.
        if cycle is not None and cycle.response_complete and cycle.more_body and not self.transport.is_closing():
            # Answered before its body ended (413, 408): the rest is not waited for.
            self.transport.close()
            return
        super().on_response_complete()

    def _start_head(self) -> None:
        self._in_head = True
        self._raw_head = 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._in_head or self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        refusals.warn(
            "header_timeout",
            "connection from %s closed: no complete request head within %.1fs (DEVHOST_HEADER_TIMEOUT_SECONDS)",
            client,
            self.limits.header_timeout,
        )
        self._refuse(
            408, "Timeout", f"The request headers did not arrive within {self.limits.header_timeout:g} seconds."
        )

    def _too_large(self) -> None:
        refusals.warn(
            "header_size",
            "request refused: its head is over %d bytes (MAX_REQUEST_HEADER_BYTES)",
            self.limits.max_header_bytes,
        )
        self._refuse(
            431,
            "RequestHeaderFieldsTooLarge",
            f"The request headers are larger than the gateway's limit of {self.limits.max_header_bytes} bytes.",
        )

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._stop_head_timer()
        self._in_head = False
        self._refused = True
        if not self.transport.is_closing():
            self.transport.write(error_response(status, code, message))
            self.transport.close()
