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

from devhost.runtime.host import RuntimeDevHost
from devhost.runtime.worker import FunctionLoadError, FunctionsWorker

APP_DIR = Path(__file__).resolve().parent.parent.parent


async def _index(directory: Path) -> int:
    worker = FunctionsWorker(directory)
    try:
        await worker.start()
    except FunctionLoadError as error:
        print(error, file=sys.stderr)
        return 1
    print(
        json.dumps(
            {
                "functions": [
                    {"name": f.name, "function_id": f.function_id, "bindings": list(f.bindings)}
                    for f in worker.functions.values()
                ],
                "http_uri": worker.http_uri,
            }
        )
    )
    return 0


def runtime_stats() -> dict[str, int]:
    """What grows per request when something leaks or lags: the runtime's HTTP coordinator table,
    captures not yet stored, and announced exchanges the parser has not taken yet."""
    from azure_functions_runtime.http_v2 import http_coordinator

    stats = {"context_references": len(http_coordinator._context_references)}
    app = sys.modules.get(os.environ.get("PYTHON_SCRIPT_FILE_NAME", "function_app.py").removesuffix(".py"))
    if app is not None and hasattr(app, "proxy") and app.proxy.cache_info().currsize:
        stats["captures_pending"] = app.proxy().capture.pending
    channel = app.ports().channel if app is not None and hasattr(app, "ports") else None
    if isinstance(backlog := getattr(channel, "backlog", None), int):
        stats["announced_not_parsed"] = backlog
    return stats


async def _stats_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await _json(send, runtime_stats())


async def _json(send: Any, value: Any) -> None:
    body = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devhost.runtime", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="index and load every function through the runtime; print the metadata")
    index.add_argument("--app-dir", type=Path, default=APP_DIR)
    serve = sub.add_parser("serve", help="serve the app through the runtime's HTTP v2 server")
    serve.add_argument("--app-dir", type=Path, default=APP_DIR)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7072)
    serve.add_argument(
        "--over-http",
        action="store_true",
        help="forward to the web server the runtime starts itself, as the Functions host does (two hops)",
    )
    serve.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    serve.add_argument(
        "--keep-runtime-leak",
        action="store_true",
        help="do not release the runtime's per-invocation HTTP entries (bench: shows the leak)",
    )
    args = parser.parse_args(argv)
    directory = args.app_dir.resolve()
    sys.path.insert(0, str(directory))
    if args.command == "index":
        return asyncio.run(_index(directory))
    if args.keep_runtime_leak:
        import proxy.runtime_leak

        proxy.runtime_leak.release_http_invocations = lambda: False  # function_app calls it on import
    import uvicorn

    from devhost.subscriptions import parse_subscriptions

    raw = os.environ.get("LOCAL_SUBSCRIPTIONS", "")
    host = RuntimeDevHost(
        directory,
        parse_subscriptions(raw) if raw else None,
        mounts={"/_runtime/stats": _stats_app},
        over_http=args.over_http,
    )
    uvicorn.run(
        host,
        host=args.host,
        port=args.port,
        loop=args.loop,
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
