"""The failover loop with a real aiohttp upstream call against loopback servers that misbehave."""

import asyncio
import random
import socket
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.backends import parse_backends
from proxy.failover import run_failover
from proxy.policy import RoutingPolicy
from proxy.routing import BackendPool

BODY = '{"messages": [{"role": "user", "content": "héllo \\u00e9"}], "stream": true}'.encode()


@dataclass
class AiohttpAnswer:
    """What a handler's `send` might return: the response, with the first bytes (or whole error) read."""

    response: aiohttp.ClientResponse
    head: bytes

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self):
        return self.response.headers

    async def aclose(self) -> None:
        self.response.release()


@pytest.fixture
async def upstreams():
    received: dict[str, list[bytes]] = {"drop": [], "good": [], "throttle": []}

    async def drop(request):
        received["drop"].append(await request.read())
        request.transport.close()
        await asyncio.sleep(1)
        return web.Response()

    async def throttle(request):
        received["throttle"].append(await request.read())
        return web.json_response({"error": {"code": "429", "message": "Rate limit"}}, status=429, headers={"retry-after": "3"})

    async def good(request):
        received["good"].append(await request.read())
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": []}\n\n')
        await response.write(b"data: [DONE]\n\n")
        return response

    runners, urls = [], {}
    for name, handler in (("drop", drop), ("good", good), ("throttle", throttle)):
        app = web.Application()
        app.router.add_post("/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        urls[name] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        urls["dead"] = f"http://127.0.0.1:{s.getsockname()[1]}"
    yield urls, received
    for runner in runners:
        await runner.cleanup()


async def test_failover_over_real_sockets_replays_the_same_bytes(upstreams):
    urls, received = upstreams
    config = [
        {"name": "dead", "endpoint": urls["dead"], "priority": 1},
        {"name": "drop", "endpoint": urls["drop"], "priority": 2},
        {"name": "throttle", "endpoint": urls["throttle"], "priority": 3},
        {"name": "good", "endpoint": urls["good"], "priority": 4},
    ]
    backends = parse_backends(orjson.dumps([{**c, "auth": {"type": "api_key", "value": "k"}, "deployments": ["*"]} for c in config]).decode())
    pool = BackendPool(backends, policy=RoutingPolicy(max_attempts=4), rng=random.Random(0))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def send(backend):
            response = await session.post(f"{backend.endpoint}/openai/deployments/gpt-4o/chat/completions", data=BODY)
            try:
                head = await response.read() if response.status >= 400 else await response.content.readany()
            except BaseException:
                response.release()
                raise
            return AiohttpAnswer(response, head)

        result = await run_failover(send, pool, "gpt-4o")
        assert [(a.backend, a.status, a.outcome) for a in result.attempts] == [
            ("dead", None, "connect_error"),
            ("drop", None, "connect_error"),
            ("throttle", 429, "throttled"),
            ("good", 200, "served"),
        ]
        assert result.attempts[0].error.startswith("ClientConnectorError")
        assert result.attempts[1].error.startswith("ServerDisconnectedError")
        assert result.answer.head.startswith(b"data: ")
        rest = await result.answer.response.read()
        assert result.answer.head + rest == b'data: {"choices": []}\n\ndata: [DONE]\n\n'
        await result.answer.aclose()
    assert received["drop"] == received["throttle"] == received["good"] == [BODY]
    assert pool.snapshot()["throttle"]["state"] == "cooling_down"
