"""`python -m devhost.runtime`: the app through azure-functions-runtime, as the Functions host runs it.

    python -m devhost.runtime index [--app-dir DIR]   index and load every function; print the metadata
    python -m devhost.runtime serve [--port 7072]      serve the app through the runtime's HTTP v2 server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from devhost.runtime.front import RuntimeFront, app_dir
from devhost.runtime.worker import FunctionLoadError, FunctionsWorker


async def _index(directory: Path) -> int:
    worker = FunctionsWorker(directory)
    try:
        await worker.start()
    except FunctionLoadError as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps({"functions": [
        {"name": f.name, "function_id": f.function_id, "bindings": list(f.bindings)} for f in worker.functions.values()
    ], "http_uri": worker.http_uri}))
    return 0


class RuntimeHost:
    """ASGI app with a lifespan: start the worker, front its HTTP functions, pump Event Hub batches."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.front: RuntimeFront | None = None
        self._pump: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            from devhost.host import lifespan

            await lifespan(receive, send, self.startup, self.shutdown)
        elif scope["type"] == "http" and scope["path"] == "/_runtime/stats":
            await _json(send, runtime_stats())
        elif self.front is not None:
            await self.front(scope, receive, send)

    async def startup(self) -> None:
        from devhost.host import channel_batches
        from devhost.subscriptions import parse_subscriptions

        worker = FunctionsWorker(self.directory)
        await worker.start()
        raw = os.environ.get("LOCAL_SUBSCRIPTIONS", "")
        self.front = RuntimeFront(worker, parse_subscriptions(raw) if raw else None)
        app = sys.modules.get("function_app")
        batches = channel_batches(app.ports().channel) if app is not None and worker.by_trigger("eventHubTrigger") else None
        if batches is not None:
            self._pump = asyncio.create_task(self.front.pump(batches))

    async def shutdown(self) -> None:
        app = sys.modules.get("function_app")
        if app is not None:
            await app.drain()
            join = getattr(app.ports().channel, "join", None)
            if join is not None and self._pump is not None:
                try:
                    async with asyncio.timeout(10):
                        await join()
                except TimeoutError:
                    pass
        if self._pump is not None:
            self._pump.cancel()
        if self.front is not None:
            await self.front.aclose()
        if app is not None:
            await app.shutdown()


def runtime_stats() -> dict[str, int]:
    """What the runtime holds per invocation (its HTTP coordinator's table): flat when nothing leaks."""
    from azure_functions_runtime.http_v2 import http_coordinator

    return {"context_references": len(http_coordinator._context_references)}


async def _json(send: Any, value: Any) -> None:
    body = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devhost.runtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="index and load every function through the runtime; print the metadata")
    index.add_argument("--app-dir", type=Path, default=Path(app_dir()))
    serve = sub.add_parser("serve", help="serve the app through the runtime's HTTP v2 server")
    serve.add_argument("--app-dir", type=Path, default=Path(app_dir()))
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7072)
    serve.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    serve.add_argument("--keep-runtime-leak", action="store_true",
                       help="do not release the runtime's per-invocation HTTP entries (bench: shows the leak)")
    args = parser.parse_args(argv)
    directory = args.app_dir.resolve()
    sys.path.insert(0, str(directory))
    if args.command == "index":
        return asyncio.run(_index(directory))
    if args.keep_runtime_leak:
        import proxy.runtime_leak

        proxy.runtime_leak.release_http_invocations = lambda: False  # function_app calls it on import
    import uvicorn

    uvicorn.run(RuntimeHost(directory), host=args.host, port=args.port, loop=args.loop, http="httptools",
                log_level="warning", access_log=False, server_header=False, date_header=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
