"""A stream filter that finds the id an answer created and stores something about it.

Responses affinity (which account holds a response) and ownership (which subscription created an
object) both need the id of what an answer created: in a stream from its first events, in a JSON
answer from the whole body at its end. `IdTap` does the watching, storing in the background and the
short wait at the end of the answer; subclasses say what to store.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)

#: An answer's id is in its first events; stop looking after this many bytes.
STREAM_SCAN_BYTES = 16_384
#: How long the end of an answer waits for the write before letting the response finish.
WRITE_WAIT_SECONDS = 2.0


class IdWatcher(Protocol):
    """Finds an id in a stream's events (`decode` returns it once); `done` once it stopped looking."""

    @property
    def done(self) -> bool: ...

    def decode(self, chunk: bytes) -> str | None: ...


class IdTap:
    """Passes every chunk on unchanged; `settled` (after a complete answer) waits for the write."""

    __slots__ = ("_stream", "_chunks", "_watcher", "_scanned", "_task")

    #: What the write is, for the log line when it is slow.
    what = "an id"

    def __init__(self, stream: bool, chunks: list[bytes], watcher: IdWatcher | None) -> None:
        self._stream = stream
        #: The recorder's chunk list (a JSON answer is parsed from it at the end, never copied).
        self._chunks = chunks
        #: None for a JSON answer, and for a stream once its id is found or given up on.
        self._watcher = watcher
        self._scanned = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def watching(self) -> bool:
        """True while a stream is still being scanned for its id."""
        return self._watcher is not None

    def _store_streamed(self, found: str) -> asyncio.Task[None] | None:
        """Start storing what an id found in a stream means (in the background)."""
        raise NotImplementedError

    def _store_body(self, body: bytes) -> asyncio.Task[None] | None:
        """Start storing what a complete JSON answer created (in the background), if anything."""
        raise NotImplementedError

    def decode(self, chunk: bytes) -> bytes:
        watcher = self._watcher
        if watcher is None:
            return chunk
        found = watcher.decode(chunk)
        self._scanned += len(chunk)
        if found:
            self._task = self._store_streamed(found)
        if found or watcher.done or self._scanned >= STREAM_SCAN_BYTES:
            self._watcher = None
        return chunk

    def flush(self) -> bytes:
        return b""

    async def settled(self) -> None:
        """At the end of a complete answer: store a JSON answer's ids, then wait for the write."""
        if self._task is None and not self._stream:
            self._task = self._store_body(b"".join(self._chunks))
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), WRITE_WAIT_SECONDS)
        except TimeoutError:
            log.warning("storing %s took longer than %.1fs; finishing without it", self.what, WRITE_WAIT_SECONDS)
