"""Which client streams get in-stream content-safety enforcement, and the one analyser they share.

`StreamSafety.wrap` is the proxy's single composition point: it gets the client-bound stream (after
the usage filter, so enforcement sees exactly the events the client would) and returns it untouched
unless the caller's product is in `enforce` mode and the answer is a successful text stream (chat,
completions, Responses); then it returns `proxy.streams.enforcement.enforce(...)` around it. Monitor mode
returns the very same iterator: no extra generator, no per-chunk work.

The Content Safety client (`AzureContentSafety`, key or managed identity) is built once per process,
on the first enforced stream, and only when `CONTENT_SAFETY_ENDPOINT` is set and some product in
`CONTENT_SAFETY_MODES` enforces. It has its own aiohttp pool (not the parser's client, not the AOAI
pool), so a live stream's windows never queue behind a parser backlog or AOAI connections.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp

from proxy.streams.enforcement import TEXT_APIS, EnforcementOutcome, enforce
from shared.safety.client import AzureContentSafety, ContentSafety
from shared.safety.config import SafetyConfig
from shared.settings import Settings

if TYPE_CHECKING:
    from proxy.call import ProxyCall

log = logging.getLogger(__name__)


class StreamSafety:
    """In-stream enforcement for one process: the settings, and the analyser built on first need."""

    def __init__(self, config: SafetyConfig, analyser: ContentSafety | None = None) -> None:
        self.config = config
        #: Any product enforcing at all (with an endpoint); False makes `wrap` a no-op for everyone.
        self.active = config.enabled and any(mode == "enforce" for mode in config.modes.values())
        self._analyser = analyser
        self._owned: AzureContentSafety | None = None
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamSafety:
        """Reads (and validates) the CONTENT_SAFETY_* settings; raises ConfigurationError when they are wrong."""
        return cls(SafetyConfig.from_settings(settings))

    @classmethod
    def off(cls) -> StreamSafety:
        return cls(SafetyConfig())

    def analyser(self) -> ContentSafety:
        """The shared Content Safety client, built inside the running loop on first use."""
        if self._analyser is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60))
            self._owned = AzureContentSafety.from_config(self.config, self._session)
            self._analyser = self._owned
        return self._analyser

    def wrap(
        self, call: ProxyCall, response: aiohttp.ClientResponse, stream: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """`stream` as the client should get it: enforced for an enforcing product's text stream, else as is."""
        if not self.active or call.route.api not in TEXT_APIS or response.status != 200:
            return stream
        if response.content_type != "text/event-stream":
            return stream  # a JSON answer: post-hoc analysis covers it, nothing streams to hold back
        policy = self.config.stream_policy(call.recorder.identity.product)
        if policy.mode != "enforce":
            return stream
        recorder = call.recorder
        # Until the stream ends (it may be abandoned before enforcement reports), the exchange says so.
        recorder.enforcement = EnforcementOutcome(action="aborted").to_record()

        def on_verdict(outcome: EnforcementOutcome) -> None:
            recorder.enforcement = outcome.to_record()
            if outcome.action == "blocked":
                # The client already has its honest end; dropping the connection stops AOAI generating.
                response.close()

        return enforce(stream, api=call.route.api, analyser=self.analyser(), config=policy, on_verdict=on_verdict)

    async def aclose(self) -> None:
        if self._owned is not None:
            await self._owned.close()
            self._owned = self._analyser = None
        if self._session is not None:
            await self._session.close()
            self._session = None
