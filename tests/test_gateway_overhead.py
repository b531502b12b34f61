"""`x-gateway-overhead-ms`: the time the gateway added before the first byte, on every answer."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from devhost.simulator import SimulatorConfig, serve
from proxy.capture import CaptureWriter
from proxy.credentials import Credentials
from proxy.handler import Proxy
from proxy.telemetry import OVERHEAD_HEADER, overhead_ms
from proxy.upstream import Timeouts, UpstreamClient
from shared.exchange import Attempt
from shared.settings import Settings
from testing.memory import memory_ports

CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
BODY = {"messages": [{"role": "user", "content": "hi"}]}


def _proxy(endpoint: str):
    ports = memory_ports()
    settings = Settings(
        backends_json=json.dumps(
            [
                {
                    "name": "east",
                    "endpoint": endpoint,
                    "auth": {"type": "api_key", "value": "up-key"},
                    "deployments": ["*"],
                },
            ]
        )
    )
    proxy = Proxy(settings, UpstreamClient(Timeouts()), Credentials({}), CaptureWriter(lambda: ports))
    app = Starlette(routes=[Route("/openai/{path:path}", proxy.handle, methods=["GET", "POST", "DELETE"])])
    return proxy, ports, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def test_overhead_subtracts_every_attempt_and_never_goes_negative():
    attempts = [Attempt("a", 500, 40.0, "server_error"), Attempt("b", 200, 55.5, "served")]
    assert overhead_ms(100.0, attempts) == 4.5
    assert overhead_ms(90.0, attempts) == 0.0
    assert overhead_ms(7.25, []) == 7.25


async def test_overhead_excludes_upstream_time_to_first_byte():
    """The simulator waits 300 ms before its first byte; that wait is not the gateway's."""
    async with serve(SimulatorConfig(ttft_ms=300)) as sim:
        proxy, ports, client = _proxy(sim.url)
        r = await client.post(CHAT, json={**BODY, "stream": True})
        assert r.status_code == 200
        overhead = float(r.headers[OVERHEAD_HEADER])
        assert 0.0 <= overhead < 300.0
        await proxy.aclose()


@pytest.mark.parametrize(("path", "status"), [("/openai/deployments/", 404), (CHAT, 502)])
async def test_gateway_own_answers_carry_the_overhead(path, status):
    """A malformed path (no upstream at all) and an unreachable backend (502) both say it."""
    proxy, ports, client = _proxy("http://127.0.0.1:1")
    r = await client.post(path, json=BODY)
    assert r.status_code == status
    assert float(r.headers[OVERHEAD_HEADER]) >= 0.0
    await proxy.aclose()


async def test_the_record_carries_the_header_value():
    """The usage record built from the stored exchange says what the client was told."""
    from shared.normalize.usage import normalize  # noqa: PLC0415

    async with serve(SimulatorConfig()) as sim:
        proxy, ports, client = _proxy(sim.url)
        r = await client.post(CHAT, json=BODY)
        await proxy.capture.drain()
        ex = await ports.exchanges.load(ports.channel.published[0])
        record, _ = normalize(ex)
        assert record["gateway_overhead_ms"] == float(r.headers[OVERHEAD_HEADER])
        await proxy.aclose()
