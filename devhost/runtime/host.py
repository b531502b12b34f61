"""The dev host playing the Functions host over azure-functions-runtime, in this process.

The runtime indexes and loads the app (`FunctionsWorker`); this host does what the Functions host
does in Azure: it matches each request to an HTTP function's route, checks the local subscription
key as APIM would, starts the `InvocationRequest` and hands the request, marked with
`x-ms-invocation-id`, to the runtime's HTTP v2 web app, which pairs the two and runs the function.
Event Hub batches from the local channel are delivered as invocations with the host's trigger
metadata.

Two ways to reach the runtime's web app: in this process (the default: the runtime's FastAPI app
is served by the dev host's own uvicorn, one hop, cheap), or `over_http` to the web server the
runtime starts itself, as the Functions host forwards over loopback (two hops, the runtime's own
uvicorn in the path).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

from devhost.host import (
    HttpRoute,
    Receive,
    Scope,
    Send,
    app_batches,
    compile_route,
    front_door,
    lifespan,
    start_timers,
    stop_app,
    timer_interval,
)
from devhost.runtime import emulation
from devhost.runtime.worker import EventData, FunctionsWorker, LoadedFunction, failure
from devhost.subscriptions import Subscription
from shared.errors import ErrorResponse

log = logging.getLogger("devhost.runtime")

_HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"host"}
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RuntimeDevHost:
    """ASGI app: the app's functions, run by azure-functions-runtime, behind local subscription keys."""

    def __init__(
        self,
        app_dir: Path,
        subscriptions: Mapping[str, Subscription] | None,
        *,
        mounts: Mapping[str, ASGIApp] | None = None,
        over_http: bool = False,
    ) -> None:
        self.app_dir = app_dir
        #: CPU spent on the host's part of requests (`devhost/runtime/emulation.py`).
        self.emulation = emulation.EmulationClock()
        #: Path prefix -> ASGI app the dev host serves besides the function routes (the dashboard).
        self.mounts: dict[str, ASGIApp] = {emulation.PATH: self.emulation, **(mounts or {})}
        #: None: no key check (requests go in as they come, like `func start`).
        self.subscriptions = dict(subscriptions) if subscriptions is not None else None
        self.over_http = over_http
        self.worker: FunctionsWorker | None = None
        self.routes: list[HttpRoute] = []
        #: The app's module as the runtime imported it (its `ports`, `drain`, `shutdown`).
        self.module: ModuleType | None = None
        #: The serving event loop (set at start-up), for callers on other threads (tests, tools).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._pump: asyncio.Task[None] | None = None
        self._timer_tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._sequence = 0

    def call(self, coro: Awaitable[Any], timeout: float = 30) -> Any:
        """Run a coroutine on the serving loop from another thread and return its result."""
        assert self.loop is not None, "the dev host is not running"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self.startup, self.shutdown)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    # ------------------------------------------------------------------------------- lifecycle
    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        script = os.environ.get("PYTHON_SCRIPT_FILE_NAME", "function_app.py")
        stem = Path(script).stem
        # A new worker process indexes a freshly imported app; the dev host starts the worker again
        # in the same process (tests), so the app's library forgets the names it indexed before.
        previous = sys.modules.get(stem)
        if previous is not None and hasattr(previous, "app"):
            previous.app.functions_bindings = None
        self.worker = worker = FunctionsWorker(self.app_dir)
        await worker.start(serve_http=self.over_http)
        self.module = sys.modules[stem]
        # The runtime logs three INFO lines per invocation (about 90 µs of CPU per request here); in
        # Azure the host's log levels filter them. The dev host keeps its warnings and errors.
        from azure_functions_runtime.logging import logger as runtime_logger

        runtime_logger.setLevel(logging.WARNING)
        self.routes = [
            HttpRoute(
                f.name,
                template,
                compile_route(template),
                frozenset(m.upper() for m in f.trigger.get("methods") or ["GET", "POST"]),
                f.trigger["name"],
                f,
            )
            for f in worker.by_trigger("httpTrigger")
            for template in [str(f.trigger.get("route") or f.name)]
        ]
        self._timer_tasks = start_timers(
            [
                (f.name, timer_interval(str(f.trigger.get("schedule", ""))), functools.partial(self._run_timer, f))
                for f in worker.by_trigger("timerTrigger")
            ]
        )
        functions = worker.by_trigger("eventHubTrigger")
        log.info("functions: %s", ", ".join(f"{f.name} ({f.trigger_type})" for f in worker.functions.values()))
        if not functions:
            log.info("no Event Hub-triggered function registered: exchanges are stored, not parsed")
            return
        batches = app_batches(self.module)
        if batches is not None:
            self._pump = asyncio.create_task(self._pump_batches(functions, batches))

    async def _run_timer(self, function: LoadedFunction) -> None:
        assert self.worker is not None
        result = await self.worker.invoke_timer(function)
        if (error := failure(result.result)) is not None:
            raise RuntimeError(f"timer function {function.name} failed: {error}")

    async def run_timers(self) -> None:
        """Run every timer-triggered function once now, through the runtime (tools, tests)."""
        assert self.worker is not None
        for function in self.worker.by_trigger("timerTrigger"):
            await self._run_timer(function)

    async def shutdown(self) -> None:
        """Finish captures, let the Event Hub functions handle what was announced, then close."""
        for task in self._timer_tasks:
            task.cancel()
        if self.module is not None:
            await stop_app(self.module, self._pump)
        if self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------------------- HTTP
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self.emulation.now()
        found = await front_door(
            scope, receive, send, mounts=self.mounts, routes=self.routes, subscriptions=self.subscriptions
        )
        if found is not None:  # a request it lets through never waited on the way (no yield to time across)
            self.emulation.requests += 1
            route, scope, params = found
            await self._invoke_http(route.function, scope, receive, send, scope["headers"], params, started)

    async def _invoke_http(
        self,
        function: LoadedFunction,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
        params: dict[str, str],
        started: int,
    ) -> None:
        """`started`: the emulation clock when the host took the request; it stops once the
        invocation is started (no yield on the way), before the runtime's web app runs."""
        assert self.worker is not None
        invocation_id = str(uuid.UUID(bytes=os.urandom(16), version=4))
        query = scope.get("query_string", b"").decode("latin-1")
        url = (
            (self.worker.http_uri or "http://127.0.0.1")
            + scope["raw_path"].decode("latin-1")
            + (f"?{query}" if query else "")
        )
        traceparent = next((v.decode("latin-1") for k, v in headers if k == b"traceparent"), "")
        message = self.worker.http_invocation(
            function, invocation_id, method=scope["method"], url=url, route_params=params, traceparent=traceparent
        )
        invocation = asyncio.create_task(self.worker.run(message))
        self.emulation.add(started)
        try:
            if self.over_http:
                await self._forward(invocation_id, url, scope, receive, send, headers)
            else:
                marked = {**scope, "headers": [*headers, (b"x-ms-invocation-id", invocation_id.encode())]}
                try:
                    await self.worker.http_app(marked, receive, send)
                except Exception:  # noqa: BLE001 - the runtime's server answered 500 already
                    log.exception("invocation %s of %s raised", invocation_id, function.name)
        finally:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                result = await asyncio.wait_for(invocation, 30)
                if (error := failure(result.result)) is not None:
                    log.error("invocation %s of %s failed: %s", invocation_id, function.name, error)

    async def _forward(
        self,
        invocation_id: str,
        url: str,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """As the Functions host does: the request to the runtime's own web server, the answer back."""
        forward = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers if k not in _HOP_BY_HOP]
        forward.append(("x-ms-invocation-id", invocation_id))
        body_read = asyncio.Event()
        forwarding = asyncio.create_task(
            self._relay(invocation_id, url, scope["method"], forward, _body(receive, body_read), send)
        )
        watcher = asyncio.create_task(_client_left(receive, body_read))
        try:
            await asyncio.wait({forwarding, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # The host closes its connection to the worker when the client leaves: the runtime's
            # server then cancels the function's body, and the proxy its upstream call.
            for task in (forwarding, watcher):
                task.cancel()
            await asyncio.gather(forwarding, watcher, return_exceptions=True)

    async def _relay(
        self, invocation_id: str, url: str, method: str, headers: list[tuple[str, str]], body: Any, send: Send
    ) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=False
            )
        started = False
        try:
            async with self._session.request(
                method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                skip_auto_headers=("User-Agent", "Content-Type"),
            ) as answer:
                raw = [(k, v) for k, v in answer.raw_headers if k.lower() not in _HOP_BY_HOP]
                await send({"type": "http.response.start", "status": answer.status, "headers": raw})
                started = True
                async for chunk in answer.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("invocation %s: the runtime's web server broke off: %s", invocation_id, exc)
            if not started:
                await _send_error(send, ErrorResponse("The function host could not reach the worker."), 502)

    # ------------------------------------------------------------------------------- Event Hubs
    async def _pump_batches(self, functions: list[LoadedFunction], batches: Any) -> None:
        """Feed every Event Hub function each batch of request ids, as the Functions host would."""
        assert self.worker is not None
        async for ids in batches():
            events = []
            for rid in ids:
                self._sequence += 1
                events.append(
                    EventData(
                        rid.encode() if isinstance(rid, str) else rid,
                        self._sequence,
                        self._sequence * 1024,
                        datetime.now(UTC),
                        None,
                    )
                )
            for function in functions:
                result = await self.worker.invoke_event_hub(function, events)
                if (error := failure(result.result)) is not None:
                    log.error("event hub function %s failed on a batch of %d: %s", function.name, len(events), error)


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


async def _send_error(send: Send, error: ErrorResponse, status: int | None = None) -> None:
    body = error.to_bytes()
    await send(
        {
            "type": "http.response.start",
            "status": status or error.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
