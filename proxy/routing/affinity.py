"""Responses API session affinity: send follow-ups to the AOAI account that holds the response.

A stored response lives only on the account that created it, so a request that refers to one
(`previous_response_id` in the body, or GET/DELETE `/responses/{id}` and its sub-resources) must go
there. The handler looks the id up in the `AffinityStore` port and passes the backend name to
`BackendPool.plan(..., pinned=name)`; after a new response is created it calls
`remember(response_id, backend.name, policy.affinity_ttl_seconds)` with the id found here.

Choices:
- A missing or expired mapping (or one naming a backend that is no longer configured for the
  deployment) falls back to normal selection; that account answers "not found" if it lacks it.
- A pinned backend gets the request even while it cools down from a 429 or its circuit is open,
  and there is no failover: no other account could answer, so the client gets that account's own
  answer (a 429 with its `retry-after`, say) rather than a misleading "response not found".

The pure part says *which* id matters; `ResponsePinning` and `CreatedIdTap` do the store I/O around one call:
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
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from proxy.streams.id_tap import IdTap
from shared.background import BackgroundTasks
from shared.normalize.apis import ApiRoute
from shared.normalize.sse import SSEDecoder, SSEEvent
from shared.ports import AffinityStore

log = logging.getLogger(__name__)

_LIFECYCLE_EVENTS = frozenset({"response.created", "response.queued", "response.in_progress"})
#: `response.created` is the first event; give up after a few others (a stream with no id, or an error).
_MAX_EVENTS_SCANNED = 4


def affinity_key(route: ApiRoute, body: Any) -> str | None:
    """The response id whose backend should serve this request, or None for normal selection.

    `body` is the parsed JSON request body (or None).
    """
    if route.api in ("files", "batches"):
        # A file or batch lives on the account that created it; a batch is created from a file there.
        if route.object_id:
            return route.object_id
        if route.api == "batches" and isinstance(body, Mapping) and isinstance(body.get("input_file_id"), str):
            return body["input_file_id"] or None
        return None
    if route.api != "responses":
        return None
    if route.response_id:
        return route.response_id
    if isinstance(body, Mapping):
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            return previous
    return None


#: Stored objects whose follow-ups must reach the account that holds them.
_PINNED_OBJECTS = frozenset({"response", "file", "batch"})


def _response_id(obj: Any) -> str | None:
    if isinstance(obj, Mapping) and obj.get("object") in _PINNED_OBJECTS:
        rid = obj.get("id")
        if isinstance(rid, str) and rid:
            return rid
    return None


def created_response_id(body: bytes | str) -> str | None:
    """The id of the response a non-stream Responses API answer created (`{"object": "response", "id"}`)."""
    try:
        return _response_id(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def response_id_from_event(event: SSEEvent) -> str | None:
    """The response id carried by a stream's lifecycle event (`response.created` first, or
    `response.queued` / `response.in_progress`, which carry the same `response` object), else None.
    """
    if event.data is None or not event.data.startswith("{"):
        return None
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or payload.get("type") not in _LIFECYCLE_EVENTS:
        return None
    return _response_id(payload.get("response"))


class CreatedResponseWatcher:
    """Finds the created response id in a Responses API stream as chunks pass by.

    Decodes only the first few events (`response.created` is the first), then stops looking, so it
    costs nothing for the rest of the stream. For handlers that do not already decode the stream.
    """

    __slots__ = ("_decoder", "response_id", "_seen")

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self.response_id: str | None = None
        self._seen = 0

    @property
    def done(self) -> bool:
        return self.response_id is not None or self._seen >= _MAX_EVENTS_SCANNED

    def decode(self, chunk: bytes) -> str | None:
        """Returns the id once, on the chunk that completes the event carrying it."""
        if self.done:
            return None
        for event in self._decoder.decode(chunk):
            found = response_id_from_event(event)
            if found:
                self.response_id = found
                return found
            if event.data is not None:
                self._seen += 1
                if self._seen >= _MAX_EVENTS_SCANNED:
                    return None
        return None

    def flush(self) -> None:
        """Nothing is held back: an event cut off at the end carries no usable id."""
        return None


class CreatedIdTap(IdTap):
    """Watches one Responses API answer for the id of the response it created and remembers which
    account holds it (a stream filter; `settled` waits for the mapping's write at the end)."""

    __slots__ = ("_pinning", "_backend")
    what = "a response affinity"

    def __init__(self, pinning: ResponsePinning, backend: str, stream: bool, chunks: list[bytes]) -> None:
        super().__init__(stream, chunks, CreatedResponseWatcher() if stream else None)
        self._pinning = pinning
        self._backend = backend

    def _store_streamed(self, found: str) -> asyncio.Task[None] | None:
        return self._pinning.remember_soon(found, self._backend)

    def _store_body(self, body: bytes) -> asyncio.Task[None] | None:
        found = created_response_id(body)
        return self._pinning.remember_soon(found, self._backend) if found else None


class ResponsePinning:
    """The affinity store, with the TTL, used by the proxy (one per app)."""

    def __init__(self, store: Callable[[], AffinityStore], ttl_seconds: int) -> None:
        self._store = store
        self.ttl_seconds = ttl_seconds
        self._tasks = BackgroundTasks()
        #: Mappings being written (response id -> backend): a follow-up sent as soon as a stream's
        #: last event arrived, before the write is done, is routed by them.
        self._remembering: dict[str, str] = {}

    async def lookup(self, route: ApiRoute, body: Any) -> str | None:
        """The backend that holds the response this request refers to, or None (normal selection)."""
        response_id = affinity_key(route, body)
        if response_id is None:
            return None
        if response_id in self._remembering:
            return self._remembering[response_id]
        try:
            return await self._store().lookup(response_id)
        except Exception as exc:  # noqa: BLE001 - a store outage must not fail the request
            log.warning("response affinity lookup failed (%s); routing normally", type(exc).__name__)
            return None

    def tap(
        self, route: ApiRoute, method: str, body: Any, status: int, content_type: str, backend: str, chunks: list[bytes]
    ) -> CreatedIdTap | None:
        """A tap for an answer that creates a stored response, else None (no per-chunk cost at all)."""
        if method != "POST" or not 200 <= status < 300:
            return None
        if route.api in ("files", "batches"):
            # An upload or a new batch: remember where it lives (a JSON answer with its id).
            return None if route.object_id else CreatedIdTap(self, backend, False, chunks)
        if route.api != "responses" or route.response_id:
            return None
        if isinstance(body, dict) and body.get("store") is False:
            return None  # AOAI keeps no such response, so there is nothing to come back to
        stream = content_type.startswith("text/event-stream")
        if not stream and "json" not in content_type:
            return None
        return CreatedIdTap(self, backend, stream, chunks)

    def remember_soon(self, response_id: str, backend: str) -> asyncio.Task[None]:
        self._remembering[response_id] = backend
        task: asyncio.Task[None] = self._tasks.spawn(self._remember(response_id, backend))

        def written(_: asyncio.Task[None]) -> None:
            if self._remembering.get(response_id) == backend:
                del self._remembering[response_id]

        task.add_done_callback(written)
        return task

    async def _remember(self, response_id: str, backend: str) -> None:
        try:
            await self._store().remember(response_id, backend, self.ttl_seconds)
        except Exception as exc:  # noqa: BLE001 - losing a mapping only costs affinity, not the answer
            log.warning("storing response affinity failed: %s", type(exc).__name__)

    async def drain(self) -> None:
        await self._tasks.drain()
