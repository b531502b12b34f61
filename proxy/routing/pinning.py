"""Responses API affinity at the proxy's edges: look up the pinned backend, remember created ids.

`proxy/routing/affinity.py` says *which* id matters (pure); this module does the store I/O around one call:
- before routing, `ResponsePinning.lookup` finds the backend that created the referenced response
  (a store failure is logged and falls back to normal selection: better a "not found" from
  another account than no answer);
- while the answer passes, a `CreatedIdTap` finds the new response's id: for a stream from the
  first few KB only (`response.created` is the first event), for a JSON answer from the whole body
  once it is complete. The mapping is written in the background as soon as the id is known, and
  the tap's `close` waits (briefly) for that write before the response ends, so a client that
  follows up at once finds its mapping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from proxy.routing.affinity import CreatedResponseWatcher, affinity_key, created_response_id
from shared.background import BackgroundTasks
from shared.normalize.apis import ApiRoute
from shared.ports import AffinityStore

log = logging.getLogger(__name__)

#: A stream's `response.created` event is its first; stop looking after this many bytes.
STREAM_SCAN_BYTES = 16_384
#: How long the end of a response waits for its mapping to be stored before letting it finish.
REMEMBER_WAIT_SECONDS = 2.0


class CreatedIdTap:
    """Watches one Responses API answer for the id of the response it created."""

    __slots__ = ("_pinning", "_backend", "_stream", "_chunks", "_watcher", "_scanned", "_task")

    def __init__(self, pinning: ResponsePinning, backend: str, stream: bool, chunks: list[bytes]) -> None:
        self._pinning = pinning
        self._backend = backend
        self._stream = stream
        #: The recorder's chunk list (a JSON answer is parsed from it at the end, never copied).
        self._chunks = chunks
        self._watcher: CreatedResponseWatcher | None = CreatedResponseWatcher() if stream else None
        self._scanned = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def watching(self) -> bool:
        """True while a stream is still being scanned for its id."""
        return self._watcher is not None

    def feed(self, chunk: bytes) -> None:
        """Called for each body chunk; does nothing once the stream's id is found or given up on."""
        watcher = self._watcher
        if watcher is None:
            return
        found = watcher.feed(chunk)
        self._scanned += len(chunk)
        if found:
            self._task = self._pinning.remember_soon(found, self._backend)
        if found or watcher.done or self._scanned >= STREAM_SCAN_BYTES:
            self._watcher = None

    async def close(self) -> None:
        """At the end of a complete answer: remember a JSON answer's id, wait for the write."""
        if not self._stream and self._task is None:
            found = created_response_id(b"".join(self._chunks))
            if found:
                self._task = self._pinning.remember_soon(found, self._backend)
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), REMEMBER_WAIT_SECONDS)
        except TimeoutError:
            log.warning(
                "storing a response affinity took longer than %.1fs; finishing without it", REMEMBER_WAIT_SECONDS
            )


class ResponsePinning:
    """The affinity store, with the TTL, used by the proxy (one per app)."""

    def __init__(self, store: Callable[[], AffinityStore], ttl_seconds: int) -> None:
        self._store = store
        self.ttl_seconds = ttl_seconds
        self._tasks = BackgroundTasks()

    async def lookup(self, route: ApiRoute, body: Any) -> str | None:
        """The backend that holds the response this request refers to, or None (normal selection)."""
        response_id = affinity_key(route, body)
        if response_id is None:
            return None
        try:
            return await self._store().lookup(response_id)
        except Exception as exc:  # noqa: BLE001 - a store outage must not fail the request
            log.warning("response affinity lookup failed (%s); routing normally", type(exc).__name__)
            return None

    def tap(
        self, route: ApiRoute, method: str, body: Any, status: int, content_type: str, backend: str, chunks: list[bytes]
    ) -> CreatedIdTap | None:
        """A tap for an answer that creates a stored response, else None (no per-chunk cost at all)."""
        if route.api != "responses" or method != "POST" or route.response_id or not 200 <= status < 300:
            return None
        if isinstance(body, dict) and body.get("store") is False:
            return None  # AOAI keeps no such response, so there is nothing to come back to
        stream = content_type.startswith("text/event-stream")
        if not stream and "json" not in content_type:
            return None
        return CreatedIdTap(self, backend, stream, chunks)

    def remember_soon(self, response_id: str, backend: str) -> asyncio.Task[None]:
        return self._tasks.spawn(self._remember(response_id, backend))

    async def _remember(self, response_id: str, backend: str) -> None:
        try:
            await self._store().remember(response_id, backend, self.ttl_seconds)
        except Exception as exc:  # noqa: BLE001 - losing a mapping only costs affinity, not the answer
            log.warning("storing response affinity failed: %s", type(exc).__name__)

    async def drain(self) -> None:
        await self._tasks.drain()
