"""The upstream leg: one pooled aiohttp session, timeouts, and which headers cross in each direction.

Requests to AOAI carry the client's headers minus its credentials, hop-by-hop headers and the
gateway's own `x-gateway-*`; responses carry AOAI's status and headers back, minus hop-by-hop ones.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp

from shared.redaction import is_secret_header
from shared.settings import Settings

#: RFC 9110 connection-specific headers, plus ones the proxy recomputes (host, content-length).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
#: Not forwarded upstream: the session asks for identity encoding so stored bodies are readable,
#: and the host's forwarding headers describe the client, not the gateway's call.
_REQUEST_DROP = HOP_BY_HOP | {
    "accept-encoding",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-original-url",
    "x-arr-log-id",
    "x-arr-ssl",
    "x-ms-invocation-id",
    "x-site-deployment-id",
    "was-default-hostname",
    "disguised-host",
    "x-appservice-proto",
    "x-waws-unencoded-url",
    "client-ip",
    "x-client-ip",
    "x-client-port",
    "max-forwards",
}
#: Not returned to the client: the body is re-framed (chunked) and already decoded.
_RESPONSE_DROP = HOP_BY_HOP | {"content-encoding"}


def upstream_request_headers(client_headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Client headers worth forwarding: no credentials, no hop-by-hop, no `x-gateway-*`."""
    out: dict[str, str] = {}
    for name, value in client_headers:
        key = name.lower()
        if key in _REQUEST_DROP or is_secret_header(key) or key.startswith("x-gateway-"):
            continue
        out[key] = value
    return out


def client_response_headers(upstream_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """AOAI's response headers for the client (x-ratelimit-*, retry-after*, apim-request-id, x-ms-*...)."""
    return [(k, v) for k, v in upstream_headers if k.lower() not in _RESPONSE_DROP]


#: The declared defaults (shared/settings.py), so each timeout's default is written once.
_DEFAULTS = Settings()

#: Upper bound of one read from the backend's body (see `UpstreamClient.read`).
READ_BYTES = 16_384


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = _DEFAULTS.upstream_connect_timeout
    first_byte: float = _DEFAULTS.upstream_first_byte_timeout
    idle: float = _DEFAULTS.upstream_idle_timeout
    total: float = _DEFAULTS.upstream_total_timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> Timeouts:
        return cls(
            connect=settings.upstream_connect_timeout,
            first_byte=settings.upstream_first_byte_timeout,
            idle=settings.upstream_idle_timeout,
            total=settings.upstream_total_timeout,
        )


class UpstreamClient:
    """Owns the one shared `aiohttp.ClientSession` (created lazily inside the running loop)."""

    def __init__(self, timeouts: Timeouts, max_connections: int = _DEFAULTS.upstream_max_connections) -> None:
        self.timeouts = timeouts
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=self._max_connections,
                ttl_dns_cache=300,
                keepalive_timeout=60,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # First byte and idle are enforced by `send` and `read`; the total bounds the call.
                timeout=aiohttp.ClientTimeout(total=self.timeouts.total, sock_connect=self.timeouts.connect),
                auto_decompress=True,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                raise_for_status=False,
                # One session serves every client: a cookie one AOAI answer set must never ride
                # on another client's request (and the proxy forwards Set-Cookie untouched).
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: list[tuple[str, str]],
        body: bytes,
    ) -> aiohttp.ClientResponse:
        """Send one request and wait for the response headers (first-byte timeout).

        Raises `asyncio.TimeoutError` on timeout and `aiohttp.ClientError` when unreachable.
        """
        async with asyncio.timeout(self.timeouts.first_byte):
            return await self.session.request(
                method, url, headers=headers, params=params, data=body or None, allow_redirects=False
            )

    async def read(self, response: aiohttp.ClientResponse) -> bytes:
        """The next piece of the body as it arrives (b"" at the end), with the idle timeout.

        At most READ_BYTES at a time: when the backend is faster than the client (a burst of
        events already buffered), the first piece still goes out at once instead of after the
        whole burst has been filtered and copied (the bench saw 55 KB first reads, ~1 ms).
        What has already arrived is taken without arming the timer (a timer per read was ~4%
        of a stream's CPU under load, when the next piece is nearly always there already).
        """
        content = response.content
        chunk = content.read_nowait(READ_BYTES)
        if chunk or content.at_eof():
            return chunk
        async with asyncio.timeout(self.timeouts.idle):
            return await content.read(READ_BYTES)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
