"""The failover loop with a real aiohttp upstream call against loopback servers that misbehave."""

import asyncio
import random
import socket

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.routing.backends import parse_backends
from proxy.routing.failover import read_answer, run_failover
from proxy.routing.policy import RoutingPolicy
from proxy.routing.pool import BackendPool

BODY = '{"messages": [{"role": "user", "content": "héllo \\u00e9"}], "stream": true}'.encode()


@pytest.fixture
async def upstreams():
    received: dict[str, list[bytes]] = {"drop": [], "good": [], "throttle": [], "missing": []}

    async def missing(request):
        received["missing"].append(await request.read())
        return web.json_response(
            {
                "error": {
                    "code": "DeploymentNotFound",
                    "message": "The API deployment for this resource does not exist.",
                }
            },
            status=404,
        )

    async def drop(request):
        received["drop"].append(await request.read())
        request.transport.close()
        await asyncio.sleep(1)
        return web.Response()

    async def throttle(request):
        received["throttle"].append(await request.read())
        return web.json_response(
            {"error": {"code": "429", "message": "Rate limit"}}, status=429, headers={"retry-after": "3"}
        )

    async def good(request):
        received["good"].append(await request.read())
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'data: {"choices": []}\n\n')
        await response.write(b"data: [DONE]\n\n")
        return response

    runners, urls = [], {}
    for name, handler in (("drop", drop), ("good", good), ("throttle", throttle), ("missing", missing)):
        app = web.Application()
        app.router.add_post("/{tail:.*}", handler)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
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
    backends = parse_backends(
        orjson.dumps([{**c, "auth": {"type": "api_key", "value": "k"}, "deployments": ["*"]} for c in config]).decode()
    )
    pool = BackendPool(backends, policy=RoutingPolicy(max_attempts=4), rng=random.Random(0))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def send(backend):
            response = await session.post(f"{backend.endpoint}/openai/deployments/gpt-4o/chat/completions", data=BODY)
            return await read_answer(response)

        result = await run_failover(send, pool, "gpt-4o")
        assert [(a.backend, a.status, a.outcome) for a in result.attempts] == [
            ("dead", None, "connect_error"),
            ("drop", None, "connect_error"),
            ("throttle", 429, "throttled"),
            ("good", 200, "served"),
        ]
        assert result.attempts[0].error.startswith("ClientConnectorError")
        assert result.attempts[1].error.startswith("ServerDisconnectedError")
        assert result.answer.head == b""  # a good answer's body is left for the handler to stream
        assert await result.answer.response.read() == b'data: {"choices": []}\n\ndata: [DONE]\n\n'
        await result.answer.aclose()
    assert received["drop"] == received["throttle"] == received["good"] == [BODY]
    assert pool.snapshot()["throttle"]["state"] == "cooling_down"


async def test_final_429_passes_through_with_its_body_and_404_deployment_not_found_fails_over(upstreams):
    urls, received = upstreams
    config = [
        {"name": "missing", "endpoint": urls["missing"], "priority": 1},
        {"name": "throttle", "endpoint": urls["throttle"], "priority": 2},
    ]
    backends = parse_backends(
        orjson.dumps([{**c, "auth": {"type": "managed_identity"}, "deployments": ["*"]} for c in config]).decode()
    )
    pool = BackendPool(backends)
    async with aiohttp.ClientSession() as session:

        async def send(backend):
            return await read_answer(await session.post(f"{backend.endpoint}/openai/v1/responses", data=BODY))

        result = await run_failover(send, pool, "gpt-4o")
    assert [(a.backend, a.status, a.outcome) for a in result.attempts] == [
        ("missing", 404, "deployment_not_found"),
        ("throttle", 429, "served"),
    ]
    assert result.answer.status == 429 and result.answer.headers["retry-after"] == "3"
    assert orjson.loads(result.answer.head) == {"error": {"code": "429", "message": "Rate limit"}}
    assert received["missing"] == received["throttle"] == [BODY]
