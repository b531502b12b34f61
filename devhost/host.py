"""The dev host: serves a FunctionApp's HTTP routes with uvicorn and runs its Event Hub functions in-process.

Routes, methods and triggers are read from the app (`app.get_functions()`), never restated here.
HTTP requests are matched against each route template (`openai/{*path}`), checked against the local
subscription keys as APIM would, and handed to the user function as a Starlette `Request` with
`path_params`, exactly as the Functions Python worker does. Event Hub functions are fed batches of
request ids from the local event channel as `func.EventHubEvent` lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import azure.functions as func
from starlette.requests import Request
from starlette.responses import Response

from devhost.guard import GuardedHttpTools, GuardLimits
from devhost.subscriptions import Subscription, authorize_raw
from shared.errors import ErrorResponse, MethodNotAllowed, NotFound
from shared.settings import Settings

log = logging.getLogger("devhost")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def load_settings_file(path: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, str]:
    """Put a local.settings.json file's `Values` into the environment, as Core Tools does.

    Variables already set in the environment win (so a shell or CI can override a file value).
    Returns the values that were applied.
    """
    if not path.is_file():
        return {}
    from devhost.startup import read_settings_file  # file:line:column when it is not JSON

    values = read_settings_file(path)
    applied = {}
    for name, value in values.items():
        if name not in environ:
            environ[name] = str(value)
            applied[name] = str(value)
    return applied


# --------------------------------------------------------------------------------------- routes
_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?\??\}")


def compile_route(template: str) -> re.Pattern[str]:
    """A Functions route template (`openai/{*path}`, `items/{id:int}`) as a regex over the URL path."""
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m[2]}>.*)" if m[1] else f"(?P<{m[2]}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("^/" + "".join(out).lstrip("/") + "$")


@dataclass(frozen=True, slots=True)
class HttpRoute:
    name: str
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    arg_name: str
    #: The user function (called directly), or the runtime's `LoadedFunction` (invoked through it).
    function: Any


@dataclass(frozen=True, slots=True)
class EventHubFunction:
    name: str
    arg_name: str
    many: bool
    function: Callable[..., Any]


@functools.cache
def indexed(app: func.FunctionApp) -> tuple[Any, ...]:
    """`app.get_functions()`, once: the library refuses a second call on the same app (it treats
    the names it saw the first time as duplicates), and the host, the dev host and tests all ask."""
    app.functions_bindings = None  # the runtime may have indexed it already in this process
    return tuple(app.get_functions())


def _value(v: Any) -> str:
    return str(getattr(v, "value", v))


def http_routes(app: func.FunctionApp, route_prefix: str = "") -> list[HttpRoute]:
    routes = []
    for fn in indexed(app):
        trigger = fn.get_trigger().get_dict_repr()
        if trigger.get("type") != "httpTrigger":
            continue
        template = "/".join(
            p for p in (route_prefix.strip("/"), (trigger.get("route") or fn.get_function_name()).strip("/")) if p
        )
        methods = frozenset(_value(m).upper() for m in trigger.get("methods") or ["GET", "POST"])
        routes.append(
            HttpRoute(
                fn.get_function_name(),
                template,
                compile_route(template),
                methods,
                trigger["name"],
                fn.get_user_function(),
            )
        )
    return routes


def event_hub_functions(app: func.FunctionApp) -> list[EventHubFunction]:
    found = []
    for fn in indexed(app):
        trigger = fn.get_trigger().get_dict_repr()
        if trigger.get("type") == "eventHubTrigger":
            many = _value(trigger.get("cardinality", "many")).lower() == "many"
            found.append(EventHubFunction(fn.get_function_name(), trigger["name"], many, fn.get_user_function()))
    return found


async def _call(function: Callable[..., Any], arg_name: str, value: Any) -> Any:
    result = function(**{arg_name: value})
    return await result if inspect.isawaitable(result) else result


# --------------------------------------------------------------------------------------- timers
def timer_interval(schedule: str) -> float:
    """Seconds between runs of a six-field NCRONTAB schedule of the forms the app uses
    (`0 */N * * * *`: every N minutes; `*/N * * * * *`: every N seconds); else once a minute."""
    fields = schedule.split()
    if len(fields) == 6:
        seconds, minutes = fields[0], fields[1]
        if seconds.startswith("*/") and seconds[2:].isdigit() and minutes == "*":
            return float(seconds[2:])
        if seconds.isdigit() and minutes.startswith("*/") and minutes[2:].isdigit():
            return 60.0 * int(minutes[2:])
    return 60.0


def timer_functions(app: func.FunctionApp) -> list[tuple[str, float, Callable[[], Awaitable[Any]]]]:
    """(name, interval, run once) for each timer-triggered function of the app (direct calls)."""
    found: list[tuple[str, float, Callable[[], Awaitable[Any]]]] = []
    for fn in indexed(app):
        trigger = fn.get_trigger().get_dict_repr()
        if trigger.get("type") == "timerTrigger":
            function, arg = fn.get_user_function(), trigger["name"]

            async def run(function: Callable[..., Any] = function, arg: str = arg) -> None:
                await _call(function, arg, func.TimerRequest(past_due=False))

            found.append((fn.get_function_name(), timer_interval(str(trigger.get("schedule", ""))), run))
    return found


def start_timers(timers: list[tuple[str, float, Callable[[], Awaitable[Any]]]]) -> list[asyncio.Task[None]]:
    """Run each timer function on its schedule, as the Functions host does (first run after one
    interval: the app's timers do not ask to run on start-up)."""

    async def every(name: str, interval: float, run: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await run()
            except Exception:
                log.exception("timer function %s failed", name)

    return [asyncio.get_running_loop().create_task(every(*timer)) for timer in timers]


# --------------------------------------------------------------------------------------- event pump
BatchSource = Callable[[], AsyncIterator[list[str]]]


def channel_batches(channel: Any, max_batch_size: int = 100) -> BatchSource | None:
    """How to consume the local event channel, or None when the channel cannot be consumed here."""
    consume = getattr(channel, "batches", None)
    if consume is None:
        return None
    return lambda: consume(max_batch_size)


async def pump(functions: list[EventHubFunction], batches: BatchSource) -> None:
    """Feed every Event Hub function each batch of request ids, as the Functions host would."""
    async for ids in batches():
        events = [func.EventHubEvent(body=rid.encode(), partition_key=rid) for rid in ids]
        for fn in functions:
            try:
                if fn.many:
                    await _call(fn.function, fn.arg_name, events)
                else:
                    for event in events:
                        await _call(fn.function, fn.arg_name, event)
            except Exception:
                log.exception("event hub function %s failed on a batch of %d", fn.name, len(events))


# --------------------------------------------------------------------------------------- ASGI app
class DevHost:
    """ASGI app: the function app's HTTP routes behind local subscription keys, plus its lifecycle."""

    def __init__(
        self,
        module: ModuleType,
        subscriptions: Mapping[str, Subscription] | None,
        *,
        route_prefix: str = "",
        mounts: Mapping[str, Callable[[Scope, Receive, Send], Awaitable[None]]] | None = None,
    ) -> None:
        self.module = module
        #: Path prefix -> ASGI app the dev host serves besides the function routes (the dashboard).
        self.mounts = dict(mounts or {})
        self.app: func.FunctionApp = module.app
        self.routes = http_routes(self.app, route_prefix)
        self.event_functions = event_hub_functions(self.app)
        self.timers = timer_functions(self.app)
        self._timer_tasks: list[asyncio.Task[None]] = []
        #: None: no key check (requests go in as they come, like `func start`).
        self.subscriptions = dict(subscriptions) if subscriptions is not None else None
        self._pump: asyncio.Task[None] | None = None
        #: The serving event loop (set at start-up), for callers on other threads (tests, tools).
        self.loop: asyncio.AbstractEventLoop | None = None

    def call(self, coro: Awaitable[Any], timeout: float = 30) -> Any:
        """Run a coroutine on the serving loop from another thread and return its result."""
        assert self.loop is not None, "the dev host is not running"
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, self.startup, self.shutdown)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = await front_door(
            scope, receive, send, mounts=self.mounts, routes=self.routes, subscriptions=self.subscriptions
        )
        if found is None:
            return
        route, scope, params = found
        scope = {**scope, "path_params": params}
        response = await _call(route.function, route.arg_name, Request(scope, receive))
        await response(scope, receive, send)

    async def run_timers(self) -> None:
        """Run every timer-triggered function once now (tools, tests)."""
        for _, _, run in self.timers:
            await run()

    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._timer_tasks = start_timers(self.timers)
        if not self.event_functions:
            log.info("no Event Hub-triggered function registered: exchanges are stored, not parsed")
            return
        batches = app_batches(self.module)
        if batches is not None:
            self._pump = asyncio.create_task(pump(self.event_functions, batches))

    async def shutdown(self) -> None:
        for task in self._timer_tasks:
            task.cancel()
        await stop_app(self.module, self._pump)


def app_batches(module: Any) -> BatchSource | None:
    """How to consume the app's local event channel, or None (logged) when it cannot be here."""
    ports = getattr(module, "ports", None)
    batches = channel_batches(ports().channel) if ports else None
    if batches is None:
        log.warning("the event channel cannot be consumed in-process: Event Hub functions will not run")
    return batches


async def stop_app(module: Any, pump_task: asyncio.Task[None] | None) -> None:
    """Finish captures, let the Event Hub functions handle what was announced, then close the app."""
    drain = getattr(module, "drain", None)
    if drain is not None:
        await drain()
    if pump_task is not None:
        join = getattr(module.ports().channel, "join", None)
        if join is not None:
            try:
                async with asyncio.timeout(10):
                    await join()
            except TimeoutError:
                log.warning("shutting down with announced exchanges not yet parsed")
        pump_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump_task
    stop = getattr(module, "shutdown", None)
    if stop is not None:
        await stop()


async def front_door(
    scope: Scope,
    receive: Receive,
    send: Send,
    *,
    mounts: Mapping[str, Callable[[Scope, Receive, Send], Awaitable[None]]],
    routes: list[HttpRoute],
    subscriptions: dict[str, Subscription] | None,
) -> tuple[HttpRoute, Scope, dict[str, str]] | None:
    """What happens before a function runs: the host's routing and APIM's key check.

    Returns the route, the scope with the identity headers APIM would set, and the route
    parameters; or None when it answered itself (a mount, 404, 405, 401)."""
    path = scope["path"]
    if "//" in path:
        # An endpoint configured with a trailing slash sends `//openai/...`; AOAI serves it.
        path = re.sub("/{2,}", "/", path)
        scope = {**scope, "path": path}
    for prefix, mounted in mounts.items():
        if path == prefix or path.startswith(prefix + "/"):
            await mounted(scope, receive, send)
            return None
    for route in routes:
        m = route.pattern.match(path)
        if m is None:
            continue
        if scope["method"] not in route.methods:
            refused = MethodNotAllowed("The method is not allowed for this resource.")
            _note_refused(path, refused)
            await _error(refused)(scope, receive, send)
            return None
        if subscriptions is not None:
            client = scope.get("client")
            try:
                headers = authorize_raw(
                    subscriptions, scope["headers"], client[0] if client else None, scope.get("query_string", b"")
                )
            except ErrorResponse as error:
                _note_refused(path, error)
                await _error(error)(scope, receive, send)
                return None
            scope = {**scope, "headers": headers}
        return route, scope, m.groupdict()
    not_found = NotFound(f"Resource not found: {path}")
    _note_refused(path, not_found)
    await _error(not_found)(scope, receive, send)
    return None


#: Requests the front door answers itself never reach the gateway (no usage record): they are
#: logged here, in the record's terms, so the dev host's terminal shows them too.
front_log = logging.getLogger("devhost.front_door")
_DEPLOYMENT = re.compile(r"/deployments/([^/]+)/")


def _note_refused(path: str, error: ErrorResponse) -> None:
    if front_log.isEnabledFor(logging.INFO):
        found = _DEPLOYMENT.search(path)
        usage = {
            "status_code": error.status,
            "error_code": error.code,
            "deployment": found[1] if found else None,
            "api": path,
        }
        front_log.info("%s %s", error.status, path, extra={"usage_record": usage})


async def lifespan(
    receive: Receive, send: Send, startup: Callable[[], Awaitable[None]], shutdown: Callable[[], Awaitable[None]]
) -> None:
    """ASGI lifespan: a failed start-up is reported to the server (which then stops) with its reason."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await startup()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return


def _error(error: ErrorResponse, status: int | None = None) -> Response:
    return Response(error.to_bytes(), status_code=status or error.status, media_type="application/json")


# --------------------------------------------------------------------------------------- server
@dataclass(slots=True)
class RunningHost:
    """A dev host serving on a background thread (tests, benchmarks)."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def server_config(host_app: DevHost, host: str, port: int, log_level: str = "warning") -> Any:
    import uvicorn

    return uvicorn.Config(
        host_app,
        host=host,
        port=port,
        loop="uvloop",
        # httptools with the deadlines and bounds the Functions front end has in Azure (devhost/guard.py).
        http=GuardedHttpTools.with_limits(GuardLimits.from_settings(Settings.from_env())),
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        # AOAI's own `date` and `server` headers pass through; uvicorn must not add a second pair.
        server_header=False,
        date_header=False,
    )


def run_in_thread(host_app: DevHost, host: str = "127.0.0.1", port: int = 0) -> RunningHost:
    """Start uvicorn on a thread (port 0: any free port) and wait until it listens."""
    import uvicorn

    server = uvicorn.Server(server_config(host_app, host, port))
    thread = threading.Thread(target=server.run, name="devhost", daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        if not thread.is_alive():
            raise RuntimeError("the dev host failed to start")
        threading.Event().wait(0.02)
    else:
        raise RuntimeError("the dev host did not start in time")
    sock = server.servers[0].sockets[0].getsockname()
    return RunningHost(url=f"http://{sock[0]}:{sock[1]}", server=server, thread=thread)
