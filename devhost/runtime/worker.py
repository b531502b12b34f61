"""azure-functions-runtime in this process, driven with the messages the Functions host sends.

The Functions host starts the language worker, sends `WorkerInitRequest` (the runtime indexes
`function_app.py` and, for HTTP streaming, starts its web app), asks for the functions' metadata,
loads each function, then sends one `InvocationRequest` per trigger. `FunctionsWorker` does the
same with the runtime's own handlers (`azure_functions_runtime.handle_event`), so whatever the
runtime refuses in Azure it refuses here first.

One worker per process: the runtime keeps its function registry in module globals, as it does in
the real worker process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from devhost.runtime.rpc import protos

HOST_VERSION = "4.1040.0"  # the host version the dev host reports to the runtime


class FunctionLoadError(RuntimeError):
    """The runtime refused to index or load the app: the message is the runtime's own."""


@dataclass(frozen=True, slots=True)
class LoadedFunction:
    """One function as the runtime described it: id, name and raw binding metadata."""

    name: str
    function_id: str
    bindings: tuple[dict[str, Any], ...]

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if str(b.get("type", "")).endswith("Trigger"))

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])


@dataclass(frozen=True, slots=True)
class EventData:
    """One Event Hubs event as the host hands it to a function (body plus system properties)."""

    body: bytes
    sequence_number: int
    offset: int
    enqueued_time: datetime
    partition_key: str | None = None


@contextlib.contextmanager
def _capture_web_app(sink: list[Any]) -> Iterator[None]:
    """Let the runtime build its web app, but hand it to `sink` instead of starting uvicorn on it.

    The runtime looks up the extension's `WebServer` when it initialises; a plain stand-in (no
    subclass: the extension tracks the modules that subclass its types) takes its place meanwhile.
    """
    import importlib

    import azurefunctions.extensions.base as base
    import azurefunctions.extensions.http.fastapi  # noqa: F401 - registers its web module with the base

    extension = importlib.import_module(base.ModuleTrackerMeta.get_module())

    class KeepWebApp:
        def __init__(self, hostname: str, port: int, web_app: Any) -> None:
            sink.append(web_app.get_app())

        async def serve(self) -> None:
            return None

    original = getattr(extension, "WebServer")  # noqa: B009 - a module found at run time
    setattr(extension, "WebServer", KeepWebApp)  # noqa: B010
    try:
        yield
    finally:
        setattr(extension, "WebServer", original)  # noqa: B010


async def _listening(uri: str, timeout: float = 20) -> None:
    """The runtime starts its web server as a task: wait until it accepts connections."""
    host, port = uri.rsplit("/", 1)[-1].rsplit(":", 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            if loop.time() > deadline:
                raise FunctionLoadError(f"the runtime's HTTP server at {uri} did not start") from None
            await asyncio.sleep(0.02)
        else:
            writer.close()
            return


def failure(result: Any) -> str | None:
    """The runtime's message for a failed `StatusResult`, or None when it succeeded."""
    if result.status == protos().StatusResult.Success:
        return None
    return result.exception.message or "failed without a message"


class FunctionsWorker:
    """The runtime, initialised on one app directory, with its functions indexed and loaded."""

    def __init__(self, app_dir: Path, host: str = "127.0.0.1") -> None:
        from azure_functions_runtime import handle_event

        self.app_dir = app_dir
        self.host = host
        self._events = handle_event
        self._protos = protos()
        self.functions: dict[str, LoadedFunction] = {}
        #: The runtime's HTTP v2 address (`HttpUri` capability); None when no function streams HTTP.
        self.http_uri: str | None = None
        #: The runtime's HTTP v2 ASGI app, when `start(serve_http=False)` kept it instead of serving it.
        self.http_app: Any = None

    def _message(self, **content: Any) -> SimpleNamespace:
        return SimpleNamespace(
            request=self._protos.StreamingMessage(request_id=os.urandom(16).hex(), **content),
            properties={"host": self.host, "protos": self._protos},
        )

    async def start(self, *, serve_http: bool = True) -> None:
        """Init (indexing), metadata and one load per function, refusing as the host would.

        With `serve_http` False the runtime's HTTP v2 web app is built as usual but not served:
        it is kept as `http_app` for a caller that serves it in front of its own ASGI layer.
        """
        p = self._protos
        if str(self.app_dir) not in sys.path:
            sys.path.insert(0, str(self.app_dir))  # the worker imports the script from the app's folder
        web_apps: list[Any] = []
        with contextlib.ExitStack() as stack:
            if not serve_http:
                stack.enter_context(_capture_web_app(web_apps))
            init = await self._events.worker_init_request(
                self._message(
                    worker_init_request=p.WorkerInitRequest(
                        host_version=HOST_VERSION,
                        function_app_directory=str(self.app_dir),
                        worker_directory=str(self.app_dir),
                    )
                )
            )
        if (error := failure(init.result)) is not None:
            raise FunctionLoadError(error)
        self.http_uri = init.capabilities.get("HttpUri") or None
        self.http_app = web_apps[0] if web_apps else None
        if self.http_uri and serve_http:
            await _listening(self.http_uri)
        metadata = await self._events.functions_metadata_request(
            self._message(
                functions_metadata_request=p.FunctionsMetadataRequest(function_app_directory=str(self.app_dir))
            )
        )
        if (error := failure(metadata.result)) is not None:
            raise FunctionLoadError(error)
        if not metadata.function_metadata_results:
            raise FunctionLoadError(f"no functions indexed in {self.app_dir}")
        for meta in metadata.function_metadata_results:
            loaded = await self._events.function_load_request(
                self._message(function_load_request=p.FunctionLoadRequest(function_id=meta.function_id, metadata=meta))
            )
            if (error := failure(loaded.result)) is not None:
                raise FunctionLoadError(f"cannot load {meta.name}: {error}")
            self.functions[meta.name] = LoadedFunction(
                meta.name, meta.function_id, tuple(json.loads(raw) for raw in meta.raw_bindings)
            )

    def by_trigger(self, trigger_type: str) -> list[LoadedFunction]:
        return [f for f in self.functions.values() if f.trigger_type == trigger_type]

    def invocation(
        self,
        function: LoadedFunction,
        data: Any,
        trigger_metadata: Mapping[str, Any] | None = None,
        *,
        invocation_id: str | None = None,
        traceparent: str = "",
    ) -> SimpleNamespace:
        """One `InvocationRequest` message, as the host would send it (`run` delivers it)."""
        p = self._protos
        request = p.InvocationRequest(
            invocation_id=invocation_id or os.urandom(16).hex(),
            function_id=function.function_id,
            input_data=[p.ParameterBinding(name=function.trigger["name"], data=data)],
            trigger_metadata=dict(trigger_metadata or {}),
            trace_context=p.RpcTraceContext(trace_parent=traceparent),
        )
        return self._message(invocation_request=request)

    async def run(self, message: SimpleNamespace) -> Any:
        """Deliver an `invocation` message; returns the runtime's `InvocationResponse`."""
        return await self._events.invocation_request(message)

    async def invoke(
        self, function: LoadedFunction, data: Any, trigger_metadata: Mapping[str, Any] | None = None
    ) -> Any:
        """One `InvocationRequest`, delivered; returns the runtime's `InvocationResponse`."""
        return await self.run(self.invocation(function, data, trigger_metadata))

    def http_invocation(
        self,
        function: LoadedFunction,
        invocation_id: str,
        *,
        method: str,
        url: str,
        route_params: Mapping[str, str],
        traceparent: str = "",
    ) -> SimpleNamespace:
        """The invocation half of an HTTP v2 call: the body and the answer go through the web app."""
        http = self._protos.RpcHttp(method=method, url=url, params=dict(route_params))
        return self.invocation(
            function, self._protos.TypedData(http=http), invocation_id=invocation_id, traceparent=traceparent
        )

    async def invoke_event_hub(
        self, function: LoadedFunction, events: Sequence[EventData], partition_id: str = "0"
    ) -> Any:
        """A batch as the host delivers it to a `cardinality: many` function."""
        p = self._protos
        data = p.TypedData(collection_bytes=p.CollectionBytes(bytes=[e.body for e in events]))
        return await self.invoke(function, data, event_hub_metadata(events, function.trigger, partition_id))

    async def invoke_timer(self, function: LoadedFunction) -> Any:
        """A timer firing, as the host sends it (the `TimerInfo` JSON the timer converter reads)."""
        p = self._protos
        info = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": None, "IsPastDue": False}
        return await self.invoke(function, p.TypedData(json=json.dumps(info)))


def event_hub_metadata(events: Iterable[EventData], trigger: Mapping[str, Any], partition_id: str) -> dict[str, Any]:
    """The trigger metadata the host sends with a batch: per-event arrays and the partition context."""
    p = protos()
    events = list(events)

    def as_json(value: Any) -> Any:
        return p.TypedData(json=json.dumps(value))

    def iso(t: datetime) -> str:
        return t.astimezone(UTC).isoformat().replace("+00:00", "Z")

    system = [
        {
            "SequenceNumber": e.sequence_number,
            "Offset": e.offset,
            "PartitionKey": e.partition_key,
            "EnqueuedTimeUtc": iso(e.enqueued_time),
        }
        for e in events
    ]
    return {
        "SystemPropertiesArray": as_json(system),
        "SequenceNumberArray": as_json([e.sequence_number for e in events]),
        "OffsetArray": as_json([str(e.offset) for e in events]),
        "PartitionKeyArray": as_json([e.partition_key for e in events]),
        "EnqueuedTimeUtcArray": as_json([iso(e.enqueued_time) for e in events]),
        "PropertiesArray": as_json([{} for _ in events]),
        "PartitionContext": as_json(
            {
                "ConsumerGroup": str(trigger.get("consumerGroup", "$Default")),
                "EventHubName": str(trigger.get("eventHubName", "")),
                "PartitionId": partition_id,
            }
        ),
    }
