"""Stream usage injection: ask AOAI for the usage chunk the client did not ask for, and hide it.

Streamed chat completions and legacy completions carry token usage only when
`stream_options.include_usage` is set (api version 2024-09-01-preview or later, or the v1 surface). The parser wants exact usage, so the proxy
sets the flag upstream and drops the one usage-only chunk (`choices: []` with `usage`) from what the
client receives: the client gets exactly the events it would have got without the gateway, while
the stored `response.sse` keeps the chunk.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from shared.normalize.apis import ApiRoute, version_at_least
from shared.normalize.sse import SSEDecoder, SSEEvent

#: First dated api-version that accepts `stream_options`.
MIN_API_VERSION = "2024-09-01-preview"

#: The APIs whose streams end with a usage-only chunk when asked (`choices: []` and `usage`).
APIS = frozenset({"chat.completions", "completions"})

# Cheap byte tests before any JSON parsing: every chunk of an include_usage stream has
# `"usage":null`, only the usage chunk has an empty choices list AND a usage object.
_EMPTY_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')


def should_inject(route: ApiRoute, query: Mapping[str, str], body: Any) -> bool:
    """True for a streamed (chat) completion on a version that supports it, without include_usage."""
    if route.api not in APIS or not isinstance(body, dict) or body.get("stream") is not True:
        return False
    if route.surface == "deployments" and not version_at_least(query.get("api-version"), MIN_API_VERSION):
        return False
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        return False  # leave a malformed request for AOAI to reject as it would
    return not (options or {}).get("include_usage")


def inject(body: dict[str, Any]) -> bytes | None:
    """The request body with `stream_options.include_usage: true` (other options kept); None when
    the body cannot be written back (nested deeper than orjson writes): it then goes as sent."""
    options = dict(body.get("stream_options") or {})
    options["include_usage"] = True
    try:
        return orjson.dumps({**body, "stream_options": options})
    except TypeError:
        return None


def _has_empty_choices(raw: bytes) -> bool:
    """`"choices": []` somewhere in the event: anchored matches at each `"choices"` (a substring
    search), cheaper per event than scanning with the regex, and rare chunks have it at all."""
    at = raw.find(b'"choices"')
    while at != -1:
        if _EMPTY_CHOICES.match(raw, at):
            return True
        at = raw.find(b'"choices"', at + 9)
    return False


def is_usage_chunk(event: SSEEvent) -> bool:
    """The usage-only chunk: `choices: []` and a `usage` object (JSON verified after a byte test)."""
    raw = event.raw
    if event.data is None or not _has_empty_choices(raw) or not _USAGE_OBJECT.search(raw):
        return False
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and payload.get("choices") == [] and isinstance(payload.get("usage"), dict)


def _last_boundary(data: bytes | bytearray) -> int:
    """Where the last whole block of an LF-only stream ends in `data`, which starts at a block
    boundary (0: none ends). A blank line ends a block, and one at the very start is a block."""
    cut = data.rfind(b"\n\n") + 2
    if cut >= 2:
        return cut
    return 1 if data[:1] == b"\n" else 0


class UsageChunkFilter:
    """Incremental filter: bytes in as they arrive, the bytes to forward out (usage chunk removed).

    Whole events pass byte for byte; a partial event waits for its end (at most one event). Events
    are only decoded where a piece holds an empty `choices` list: every other piece of an LF-only
    stream (all of AOAI's) is split at its last blank line and forwarded as it came. A stream with a
    CR in it goes through the SSE decoder from there on, which knows every line ending.
    """

    __slots__ = ("_held", "_decoder", "_started", "removed")

    def __init__(self) -> None:
        self._held = bytearray()  # the start of an event whose blank line has not come yet
        self._decoder: SSEDecoder | None = None
        self._started = False  # a block was forwarded (a BOM can only come before)
        self.removed = 0

    def decode(self, chunk: bytes) -> bytes:
        if self._decoder is not None:
            return self._keep(self._decoder.decode(chunk))
        if b"\r" in chunk:
            self._decoder = SSEDecoder(mid_stream=self._started)
            start, self._held = bytes(self._held), bytearray()
            return self._keep(self._decoder.decode(start + chunk))
        held = self._held
        ready: bytes
        if held:
            held += chunk
            cut = _last_boundary(held)
            if not cut:
                return b""
            ready = bytes(held[:cut])
            del held[:cut]
        else:
            cut = _last_boundary(chunk)
            if not cut:
                held += chunk
                return b""
            ready = chunk if cut == len(chunk) else chunk[:cut]
            if cut < len(chunk):
                held += chunk[cut:]
        started, self._started = self._started, True
        found = _EMPTY_CHOICES.search(ready)
        if found is None:
            return ready
        # Whole blocks without a CR: the ones before the block with the match pass as they are (a
        # burst can hold a hundred), the rest is read by a fresh decoder as the stream's own would.
        block = ready.rfind(b"\n\n", 0, found.start()) + 2
        block = block if block >= 2 else 0
        decoder = SSEDecoder(mid_stream=started or block > 0)
        return ready[:block] + self._keep(decoder.decode(ready[block:]))

    def flush(self) -> bytes:
        if self._decoder is None:
            if not self._held:
                return b""
            self._decoder = SSEDecoder(mid_stream=self._started)
            start, self._held = bytes(self._held), bytearray()
            return self._keep(self._decoder.decode(start) + self._decoder.flush())
        return self._keep(self._decoder.flush())

    def _keep(self, events: list[SSEEvent]) -> bytes:
        if not events:
            return b""
        if len(events) == 1:
            event = events[0]
            if is_usage_chunk(event):
                self.removed += 1
                return b""
            return event.raw
        kept = []
        for event in events:
            if is_usage_chunk(event):
                self.removed += 1
            else:
                kept.append(event.raw)
        return b"".join(kept)
