"""The proxy's own answers (404, 413, 502, 504) and upstream errors passed through, each captured once."""

import json
import socket

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from devhost.simulator import SimulatorConfig, serve
from proxy.capture import CaptureWriter
from proxy.credentials import Credentials
from proxy.handler import Proxy
from proxy.upstream import Timeouts, UpstreamClient
from shared.errors import UpstreamBroken
from shared.settings import Settings
from testing.memory import memory_ports


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proxy(endpoint: str, *, deployments=("*",), timeouts=Timeouts(), max_body=1000):  # noqa: B008 - frozen
    ports = memory_ports()
    settings = Settings(
        backends_json=json.dumps(
            [
                {
                    "name": "east",
                    "endpoint": endpoint,
                    "auth": {"type": "api_key", "value": "up-key"},
                    "deployments": list(deployments),
                }
            ]
        ),
        max_request_body_bytes=max_body,
    )
    proxy = Proxy(settings, UpstreamClient(timeouts), Credentials({}), CaptureWriter(lambda: ports))
    app = Starlette(routes=[Route("/openai/{path:path}", proxy.handle, methods=["GET", "POST", "DELETE"])])
    return proxy, ports, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


async def _one_exchange(proxy, ports):
    await proxy.capture.drain()
    assert len(ports.channel.published) == 1
    return await ports.exchanges.load(ports.channel.published[0])


CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
BODY = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("path", ["/openai/deployments", "/openai/deployments/", "/openai/"])
async def test_malformed_path_is_404(path):
    proxy, ports, client = _proxy("http://127.0.0.1:1")
    r = await client.post(path, json=BODY)
    assert r.status_code == 404 and r.json()["error"]["code"] == "404"
    ex = await _one_exchange(proxy, ports)
    assert ex.gateway_error["code"] == "404" and ex.response.status == 404
    assert r.headers["x-gateway-request-id"] == ex.request_id
    await proxy.aclose()


async def test_unknown_deployment_is_404_deployment_not_found():
    proxy, ports, client = _proxy("http://127.0.0.1:1", deployments=["gpt-4o"])
    r = await client.post("/openai/deployments/other/chat/completions?api-version=2024-10-21", json=BODY)
    assert r.status_code == 404 and r.json()["error"]["code"] == "DeploymentNotFound"
    r = await client.post("/openai/v1/chat/completions", json={**BODY, "model": "nope"})
    assert r.json()["error"]["code"] == "DeploymentNotFound"
    await proxy.aclose()


async def test_oversized_body_is_413():
    proxy, ports, client = _proxy("http://127.0.0.1:1", max_body=100)
    r = await client.post(CHAT, content=b"x" * 101, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "PayloadTooLarge"
    assert (await _one_exchange(proxy, ports)).response.status == 413
    await proxy.aclose()


async def test_unreachable_backend_is_502():
    proxy, ports, client = _proxy(f"http://127.0.0.1:{_free_port()}")
    r = await client.post(CHAT, json=BODY, headers={"api-key": "client-key-777"})
    assert r.status_code == 502 and r.json()["error"]["code"] == "BadGateway"
    ex = await _one_exchange(proxy, ports)
    # No backend served: the exchange names none; the attempt names the one that was tried.
    assert ex.backend is None and ex.attempts[0].backend == "east" and ex.attempts[0].outcome == "connect_error"
    assert b"client-key-777" not in ex.to_json()
    await proxy.aclose()


async def test_backend_too_slow_is_504():
    async with serve(SimulatorConfig(ttft_ms=2000)) as sim:
        proxy, ports, client = _proxy(sim.url, timeouts=Timeouts(first_byte=0.2))
        r = await client.post(CHAT, json={**BODY, "stream": True})
        assert r.status_code == 504 and r.json()["error"]["code"] == "GatewayTimeout"
        assert (await _one_exchange(proxy, ports)).attempts[0].outcome == "timeout"
        await proxy.aclose()


async def test_a_stream_that_goes_silent_is_cut_for_the_client_after_the_idle_timeout():
    async with serve(SimulatorConfig(token_delay_ms=800)) as sim:
        proxy, ports, client = _proxy(sim.url, timeouts=Timeouts(idle=0.3))
        # Over ASGI the app raises out of the body: the server drops the client's connection.
        with pytest.raises(UpstreamBroken, match="idle timeout"):
            await client.post(CHAT, json={**BODY, "stream": True})
        ex = await _one_exchange(proxy, ports)
        assert ex.response.status == 200 and "[DONE]" not in ex.response.sse
        assert ex.attempts[0].error == "stream idle timeout" and not ex.client_disconnected
        await proxy.aclose()


async def test_upstream_errors_pass_through_unchanged_and_credentials_are_replaced():
    async with serve(SimulatorConfig(api_key="up-key")) as sim:
        proxy, ports, client = _proxy(sim.url)
        r = await client.post(
            CHAT + "&code=fn-secret",
            json=BODY,
            headers={
                "x-sim-status": "503",
                "api-key": "client-key",
                "x-functions-key": "fk",
                "x-gateway-subscription-id": "team-a",
                "aoai-evals": "preview",
            },
        )
        logged = sim.requests[-1]
        assert r.status_code == 503 and r.content == logged.response
        sent = {k.lower(): v for k, v in logged.headers.items()}
        assert sent["api-key"] == "up-key" and "x-functions-key" not in sent and "code" not in logged.query
        assert "x-gateway-subscription-id" not in sent and sent["aoai-evals"] == "preview"
        assert r.headers["apim-request-id"] == logged.response_headers["apim-request-id"]
        ex = await _one_exchange(proxy, ports)
        assert ex.response.status == 503 and ex.gateway_error is None and ex.identity.subscription_id == "team-a"
        assert ex.response.body == orjson.loads(logged.response)
        await proxy.aclose()


async def test_error_body_read_by_failover_is_relayed_unchanged():
    """Failover reads an error body whole to judge it; the client still gets exactly those bytes."""
    async with serve(SimulatorConfig()) as sim:
        proxy, ports, client = _proxy(sim.url)
        r = await client.post(CHAT, json=BODY, headers={"x-sim-status": "500"})
        assert r.status_code == 500 and r.content == sim.requests[-1].response
        ex = await _one_exchange(proxy, ports)
        assert ex.response.body == orjson.loads(sim.requests[-1].response)
        await proxy.aclose()
