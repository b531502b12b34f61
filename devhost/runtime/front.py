"""The Functions host's part in front of the runtime: route, key, invocation, forward to `HttpUri`.

For each HTTP call the host matches the route, checks the key, starts an `InvocationRequest` and
forwards the request to the runtime's own web server with `x-ms-invocation-id`; the runtime pairs
the two and streams the function's response back. This front does the same over loopback, so the
runtime's HTTP v2 path (its coordinator, the FastAPI extension's web app and its uvicorn server) is
exactly what serves the app. Event Hub batches from the local channel are invoked the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aiohttp

from devhost.host import Receive, Scope, Send, compile_route
from devhost.runtime.worker import EventData, FunctionsWorker, LoadedFunction
from devhost.subscriptions import Subscription, authorize_raw
from shared.errors import GatewayError, NotFound

log = logging.getLogger("devhost.runtime")

_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"host"}


class RuntimeFront:
    """ASGI app: the host's HTTP front for a started `FunctionsWorker`, plus its Event Hub pump."""

    def __init__(self, worker: FunctionsWorker, subscriptions: Mapping[str, Subscription] | None) -> None:
        assert worker.http_uri, "the runtime did not start its HTTP v2 server"
        self.worker = worker
        self.subscriptions = dict(subscriptions) if subscriptions is not None else None
        self.routes = [
            (compile_route(str(f.trigger.get("route") or f.name)), frozenset(m.upper() for m in f.trigger.get("methods") or ["GET", "POST"]), f)
            for f in worker.by_trigger("httpTrigger")
        ]
        self._session: aiohttp.ClientSession | None = None
        self._sequence = 0

    async def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=False)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        for pattern, methods, function in self.routes:
            m = pattern.match(path)
            if m is None:
                continue
            if scope["method"] not in methods:
                await _send_error(send, GatewayError("The method is not allowed for this resource."), 405)
                return
            headers = scope["headers"]
            if self.subscriptions is not None:
                client = scope.get("client")
                try:
                    headers = authorize_raw(self.subscriptions, headers, client[0] if client else None)
                except GatewayError as error:
                    await _send_error(send, error)
                    return
            await self._invoke_http(function, scope, receive, send, headers, m.groupdict())
            return
        await _send_error(send, NotFound(f"Resource not found: {path}"))

    async def _invoke_http(
        self, function: LoadedFunction, scope: Scope, receive: Receive, send: Send,
        headers: list[tuple[bytes, bytes]], params: dict[str, str],
    ) -> None:
        invocation_id = str(uuid.uuid4())
        query = scope.get("query_string", b"").decode("latin-1")
        target = self.worker.http_uri + scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        traceparent = next((v.decode("latin-1") for k, v in headers if k == b"traceparent"), "")
        invocation = asyncio.create_task(self.worker.invoke_http(
            function, invocation_id, method=scope["method"], url=target, route_params=params, traceparent=traceparent))
        forward = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in _HOP_BY_HOP]
        forward.append(("x-ms-invocation-id", invocation_id))
        body_read = asyncio.Event()
        forwarding = asyncio.create_task(self._forward(invocation_id, target, scope["method"], forward, _body(receive, body_read), send))
        watcher = asyncio.create_task(_client_left(receive, body_read))
        try:
            await asyncio.wait({forwarding, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The host closes its connection to the worker when the client leaves: the runtime's
            # server then cancels the function's body, and the proxy its upstream call.
            for task in (forwarding, watcher):
                task.cancel()
            await asyncio.gather(forwarding, watcher, return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                result = await asyncio.wait_for(invocation, 30)
                if result.result.status != self.worker._protos.StatusResult.Success:
                    log.error("invocation %s of %s failed: %s", invocation_id, function.name, result.result.exception.message)

    async def _forward(self, invocation_id: str, target: str, method: str, headers: list[tuple[str, str]], body: Any, send: Send) -> None:
        session = await self.session()
        started = False
        try:
            async with session.request(method, target, headers=headers, data=body, allow_redirects=False,
                                       skip_auto_headers=("User-Agent", "Content-Type")) as answer:
                raw = [(k, v) for k, v in answer.raw_headers if k.lower() not in _HOP_BY_HOP]
                await send({"type": "http.response.start", "status": answer.status, "headers": raw})
                started = True
                async for chunk in answer.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("invocation %s: the runtime's web server broke off: %s", invocation_id, exc)
            if not started:
                await _send_error(send, GatewayError("The function host could not reach the worker."), 502)

    async def pump(self, batches: Any) -> None:
        """Feed every Event Hub function each batch of request ids from the local channel."""
        functions = self.worker.by_trigger("eventHubTrigger")
        async for ids in batches():
            events = []
            for rid in ids:
                self._sequence += 1
                events.append(EventData(rid.encode() if isinstance(rid, str) else rid, self._sequence,
                                        self._sequence * 1024, datetime.now(UTC), None))
            for function in functions:
                result = await self.worker.invoke_event_hub(function, events)
                if result.result.status != self.worker._protos.StatusResult.Success:
                    log.error("event hub function %s failed on a batch of %d: %s",
                              function.name, len(events), result.result.exception.message)


async def _body(receive: Receive, done: asyncio.Event) -> Any:
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if body := message.get("body"):
                yield body
            if not message.get("more_body"):
                return
    finally:
        done.set()


async def _client_left(receive: Receive, body_read: asyncio.Event) -> None:
    """Returns when the client disconnects (listening only once the request body was read)."""
    await body_read.wait()
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_error(send: Send, error: GatewayError, status: int | None = None) -> None:
    body = error.to_bytes()
    await send({"type": "http.response.start", "status": status or error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def app_dir() -> str:
    """Where function_app.py lives (the repository root)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
