"""One protocol for everything that reads a byte stream in pieces, in the manner of httpx's decoders.

`decode(chunk)` takes the next piece as it arrived and returns what it has for it; `flush()` returns
what it held back once the stream is over. The SSE decoder (events out), the usage-chunk filter and
the created-id tap (bytes out), the created-response watcher (an id out) and in-stream enforcement
(its run state) all follow it, so the relay composes byte filters without knowing any of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class StreamFilter(Protocol[T_co]):
    def decode(self, chunk: bytes) -> T_co: ...

    def flush(self) -> T_co: ...


async def through(source: AsyncIterator[bytes], filters: Sequence[StreamFilter[bytes]]) -> AsyncIterator[bytes]:
    """`source` passed through `filters` in order, each piece forwarded as soon as the last filter
    lets it out; at the end, what each filter held back goes through the filters after it."""
    async for chunk in source:
        for stream_filter in filters:
            chunk = stream_filter.decode(chunk)
            if not chunk:
                break
        else:
            yield chunk
    for position, stream_filter in enumerate(filters):
        tail = stream_filter.flush()
        for later in filters[position + 1 :]:
            if not tail:
                break
            tail = later.decode(tail)
        if tail:
            yield tail
