"""The benchmark's floor: a passthrough on the gateway's own stack, doing nothing else.

Served by the same dev host over the same Functions runtime (`python -m devhost serve --app
bench.bare_app`), behind the same front door and key check, with one shared aiohttp session to the
first backend of GATEWAY_BACKENDS: no routing, capture, usage injection, redaction or records.
What the gateway spends per request beyond this arm is the gateway's own work.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import AsyncIterator

import aiohttp
import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response
from fastapi.responses import StreamingResponse

from proxy import gc_policy

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@functools.cache
def _backend() -> tuple[str, str]:
    entry = json.loads(os.environ["GATEWAY_BACKENDS"])[0]
    return entry["endpoint"].rstrip("/"), entry["auth"]["value"]


@functools.cache
def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)


@app.route(
    route="openai/{*path}", methods=[func.HttpMethod.GET, func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION
)
async def passthrough(req: Request) -> Response:
    endpoint, key = _backend()
    upstream = await _session().request(
        req.method,
        f"{endpoint}/openai/{req.path_params['path']}",
        params=list(req.query_params.multi_items()),
        headers={"api-key": key, "content-type": req.headers.get("content-type", "application/json")},
        data=await req.body(),
    )
    headers = {"content-type": upstream.headers.get("content-type", "application/json")}
    if "content-length" in upstream.headers:
        headers["content-length"] = upstream.headers["content-length"]

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_any():
                yield chunk
        finally:
            upstream.release()

    return StreamingResponse(body(), status_code=upstream.status, headers=headers)


gc_policy.freeze_loaded_heap()  # the same collector settings as the gateway (function_app.py)


async def shutdown() -> None:
    if _session.cache_info().currsize:
        await _session().close()
