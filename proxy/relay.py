"""The answer's way back: AOAI's bytes to the client as they arrive, and the one place a response ends.

`Relay.body` is the client's body: the upstream reads (each kept for the exchange), minus the injected
usage chunk, wrapped by in-stream enforcement when the product asks for it. Whatever happens (the
stream completed, AOAI broke it, the client left, enforcement stopped it, or the server never
iterated the body), `RelayResponse` calls `Relay.end` once when the response is over: the upstream
connection is released or closed, and the exchange goes to the capture writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from fastapi.responses import StreamingResponse

from proxy.call import ProxyCall
from proxy.capture import CaptureWriter
from proxy.routing.outcomes import Outcome
from proxy.routing.pool import BackendPool
from proxy.streams import usage as stream_usage
from proxy.streams.filters import StreamFilter, through
from proxy.streams.safety import StreamSafety
from proxy.upstream import UpstreamClient
from shared.errors import UpstreamBroken

log = logging.getLogger(__name__)


class Relay:
    """One response's relay: the client's body, and its end."""

    __slots__ = (
        "call",
        "resp",
        "_upstream",
        "_pool",
        "_capture",
        "_safety",
        "_completed",
        "_upstream_failed",
        "_ended",
    )

    def __init__(
        self,
        call: ProxyCall,
        resp: aiohttp.ClientResponse,
        *,
        upstream: UpstreamClient,
        pool: BackendPool,
        capture: CaptureWriter,
        safety: StreamSafety,
    ) -> None:
        self.call = call
        self.resp = resp
        self._upstream = upstream
        self._pool = pool
        self._capture = capture
        self._safety = safety
        self._completed = False
        self._upstream_failed = False
        self._ended = False
        capture.relay_started()

    async def body(self) -> AsyncIterator[bytes]:
        """The client's body. AOAI breaking the stream after its first byte raises `UpstreamBroken`,
        so the server cuts the client's connection too: a clean end would look complete."""
        call, rec = self.call, self.call.recorder
        stream = self._safety.wrap(call, self.resp, self._client_stream())
        try:
            async for chunk in stream:
                yield chunk
            if call.created_id_tap is not None:
                await call.created_id_tap.settled()  # a follow-up sent at once finds its backend
            self._completed = True
        except TimeoutError as exc:
            rec.attempts[-1].error = "stream idle timeout"
            self._upstream_broke(Outcome.failed("timeout"))
            log.warning("upstream stream idle timeout for %s", call.request_id)
            raise UpstreamBroken(call.request_id, "idle timeout") from exc
        except aiohttp.ClientError as exc:
            rec.attempts[-1].error = f"stream broken: {type(exc).__name__}"
            self._upstream_broke(Outcome.failed("connect_error"))
            log.warning("upstream stream broken for %s: %s", call.request_id, type(exc).__name__)
            raise UpstreamBroken(call.request_id, type(exc).__name__) from exc

    def end(self) -> None:
        """The response is over, however it ended: release upstream, capture once."""
        if self._ended:
            return
        self._ended = True
        rec = self.call.recorder
        rec.last_byte = rec.elapsed_ms()
        if self._completed:
            self.resp.release()
        else:
            # Not every byte reached the client: it went away (an upstream failure is recorded on
            # the attempt instead). Closing drops the connection so AOAI stops generating.
            rec.client_disconnected = rec.client_disconnected or not self._upstream_failed
            self.resp.close()
        # Finished (joined, redacted) in the capture task, off this response; a complete answer is
        # stored in the response cache first (the exchange notes whether it was).
        self._capture.submit(rec, self.call.before_capture if self._completed else None, relay=True)

    async def _upstream_chunks(self) -> AsyncIterator[bytes]:
        """AOAI's body as it arrives; each piece is kept for the exchange (bytes appended, no parsing)."""
        call, resp = self.call, self.resp
        chunks = call.recorder.chunks
        read = self._upstream.read
        if call.head:
            chunks.append(call.head)
            yield call.head
        if resp.content.at_eof():
            # The upstream leg read the whole body (an error answer; one held during failover is
            # released, and reading a released response raises): nothing more to relay.
            return
        while True:
            chunk = await read(resp)
            if not chunk:
                return
            chunks.append(chunk)
            yield chunk

    def _client_stream(self) -> AsyncIterator[bytes]:
        """The upstream bytes through the call's filters: the created-id tap (which sees what AOAI
        sent), then the usage-chunk filter. Without filters it is the upstream reads themselves (no
        generator layer, a resumption per chunk, for nothing)."""
        call = self.call
        filters: list[StreamFilter[bytes]] = []
        if call.created_id_tap is not None:
            filters.append(call.created_id_tap)
        if call.filter_usage:
            filters.append(stream_usage.UsageChunkFilter())
        source = self._upstream_chunks()
        return through(source, filters) if filters else source

    def _upstream_broke(self, outcome: Outcome) -> None:
        """A body that broke after its first byte counts against the backend's health (no retry:
        the client already has part of the answer)."""
        self._upstream_failed = True
        call = self.call
        if call.backend is not None:
            self._pool.record(call.backend, outcome, deployment=call.deployment)


class RelayResponse(StreamingResponse):
    """The relay's response: `Relay.end` runs when the response is over, whether or not the server
    iterated the body to its end (a client that leaves before the first chunk, or while the body is
    parked at a `yield`, never lets the body generator reach a `finally`).

    Cheaper than Starlette's own `__call__` per request (the profile's largest single item): the
    headers arrive pre-encoded, and on ASGI servers below spec 2.4 (uvicorn) the body is sent from
    the calling task while one plain asyncio task waits for `http.disconnect` and cancels it, where
    Starlette runs an anyio task group with two tasks. Same semantics: a disconnect cancels the
    body iteration at once, and the response then returns normally.
    """

    def __init__(self, relay: Relay, status_code: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(relay.body(), status_code=status_code)
        self.raw_headers = raw_headers  # pre-encoded, already complete: no content-type is added
        self._relay = relay

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            if scope["type"] == "http" and scope.get("asgi", {}).get("spec_version", "2.0") in _SPECS_BEFORE_2_4:
                await self._stream_until_disconnect(receive, send)
            else:
                await super().__call__(scope, receive, send)
        finally:
            self._relay.end()

    async def _stream_until_disconnect(self, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        state = {"streaming": True, "disconnected": False}

        def client_left(listener: asyncio.Task[None]) -> None:
            if listener.cancelled() or listener.exception() is not None or not state["streaming"]:
                return
            state["disconnected"] = True
            task.cancel()

        listener = asyncio.get_running_loop().create_task(self.listen_for_disconnect(receive))
        listener.add_done_callback(client_left)
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            if state["disconnected"] and task.uncancel() == 0:
                return  # the client went away: not an error, as with Starlette's task group
            raise
        finally:
            state["streaming"] = False
            listener.cancel()


#: ASGI spec versions for which Starlette listens for `http.disconnect` while streaming.
_SPECS_BEFORE_2_4 = frozenset({"2.0", "2.1", "2.2", "2.3"})
