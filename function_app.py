"""Wiring only: the Function App, its HTTP trigger (the streaming proxy) and Event Hub trigger (the parser).

Ports and the proxy are built once, lazily, inside the worker's event loop on first use.
`ports()`, `proxy()` and `shutdown()` are also what the dev host (`python -m devhost`) uses.
"""

from __future__ import annotations

import functools
import logging

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from proxy.handler import Proxy, build_proxy
from shared.ports import Ports
from shared.settings import Settings

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@functools.cache
def settings() -> Settings:
    return Settings.from_env()


@functools.cache
def ports() -> Ports:
    try:
        from shared.wiring import build_ports
    except ModuleNotFoundError:  # until the storage adapters land: in-memory, lost on exit
        logging.getLogger(__name__).warning("shared.wiring missing: exchanges are kept in memory only")
        from shared.adapters.memory import memory_ports

        return memory_ports()
    return build_ports(settings())


@functools.cache
def proxy() -> Proxy:
    return build_proxy(settings(), ports)


async def shutdown() -> None:
    """Drain pending captures and close connections (the dev host calls it on exit)."""
    if proxy.cache_info().currsize:
        await proxy().aclose()


@app.route(
    route="openai/{*path}",
    methods=[func.HttpMethod.GET, func.HttpMethod.POST, func.HttpMethod.DELETE],
    auth_level=func.AuthLevel.FUNCTION,
)
async def openai_proxy(req: Request) -> Response:
    """Every AOAI data-plane call: streamed through to the backend, captured once."""
    return await proxy().handle(req)
