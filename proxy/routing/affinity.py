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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from shared.normalize.apis import ApiRoute
from shared.normalize.sse import SSEDecoder, SSEEvent

_LIFECYCLE_EVENTS = frozenset({"response.created", "response.queued", "response.in_progress"})
#: `response.created` is the first event; give up after a few others (a stream with no id, or an error).
_MAX_EVENTS_SCANNED = 4


def affinity_key(route: ApiRoute, body: Any) -> str | None:
    """The response id whose backend should serve this request, or None for normal selection.

    `body` is the parsed JSON request body (or None).
    """
    if route.api != "responses":
        return None
    if route.response_id:
        return route.response_id
    if isinstance(body, Mapping):
        previous = body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            return previous
    return None


def _response_id(obj: Any) -> str | None:
    if isinstance(obj, Mapping) and obj.get("object") == "response":
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

    def feed(self, chunk: bytes) -> str | None:
        """Returns the id once, on the chunk that completes the event carrying it."""
        if self.done:
            return None
        for event in self._decoder.feed(chunk):
            found = response_id_from_event(event)
            if found:
                self.response_id = found
                return found
            if event.data is not None:
                self._seen += 1
                if self._seen >= _MAX_EVENTS_SCANNED:
                    return None
        return None
