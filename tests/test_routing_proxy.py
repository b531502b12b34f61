"""Routing through the real proxy: several simulator instances on loopback behind one `Proxy`.

Each test starts its own simulators (real HTTP upstream), drives the proxy in-process over ASGI,
and checks what the client got, what each simulator logged, and the stored exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from devhost.simulator import SimulatorConfig, serve
from parser.handler import handle_batch
from proxy.capture import CaptureWriter
from proxy.credentials import Credentials
from proxy.handler import Proxy
from proxy.routing.backends import parse_backends
from proxy.routing.policy import RoutingPolicy
from proxy.routing.pool import BackendPool
from proxy.upstream import Timeouts, UpstreamClient
from shared.errors import UpstreamBroken
from shared.settings import Settings
from testing.memory import MemoryAffinityStore, memory_ports

UPSTREAM_KEY = "upstream-SECRET-key-5150"
CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
V1_CHAT = "/openai/v1/chat/completions"
RESPONSES = "/openai/v1/responses"
MESSAGES = [{"role": "user", "content": "Say hi in three languages, please: é ü 漢"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, proxy: Proxy, ports: Any, client: httpx.AsyncClient) -> None:
        self.proxy, self.ports, self.client = proxy, ports, client

    async def exchange(self, response: httpx.Response):
        await self.proxy.capture.drain()
        return await self.ports.exchanges.load(response.headers["x-gateway-request-id"])

    async def chat(self, *, stream: bool = False, headers: dict[str, str] | None = None, path: str = CHAT, **body: Any):
        return await self.client.post(
            path, json={"messages": MESSAGES, "stream": stream, **body}, headers=headers or {}
        )


@contextlib.asynccontextmanager
async def simulators(*configs: SimulatorConfig):
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(serve(c)) for c in configs]


@contextlib.asynccontextmanager
async def gateway(backends: list[dict], *, seed: int = 0, affinity_clock=None, **settings: Any):
    items = [{"auth": {"type": "api_key", "value": UPSTREAM_KEY}, "deployments": ["*"], **b} for b in backends]
    config = Settings(backends_json=json.dumps(items), **settings)
    ports = memory_ports()
    if affinity_clock is not None:
        ports.affinity = MemoryAffinityStore(affinity_clock)
    pool = BackendPool(
        parse_backends(config.backends_json), policy=RoutingPolicy.from_settings(config), rng=random.Random(seed)
    )
    proxy = Proxy(
        config,
        UpstreamClient(Timeouts(connect=2, first_byte=10, idle=10)),
        Credentials({}),
        CaptureWriter(lambda: ports),
        pool=pool,
        affinity=lambda: ports.affinity,
    )
    app = Starlette(routes=[Route("/openai/{path:path}", proxy.handle, methods=["GET", "POST", "DELETE"])])
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=30
        ) as client:
            yield Gateway(proxy, ports, client)
    finally:
        await proxy.aclose()


def _moved_on(ex) -> list[tuple[str, int | None, str]]:
    return [(a.backend, a.status, a.outcome) for a in ex.attempts]


# ----------------------------------------------------------------------------------- failover


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_failover_on_status_replays_the_same_bytes(status):
    bad = SimulatorConfig(throttle_rate=1.0) if status == 429 else SimulatorConfig(fail_statuses=(status,))
    async with simulators(bad, SimulatorConfig()) as (a, b):
        async with gateway(
            [{"name": "a", "endpoint": a.url, "priority": 1}, {"name": "b", "endpoint": b.url, "priority": 2}]
        ) as gw:
            raw = orjson.dumps({"messages": MESSAGES, "temperature": 0.25, "user": "ü"})
            r = await gw.client.post(CHAT, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
            assert r.headers["x-gateway-backend"] == "b" and r.headers["x-gateway-attempts"] == "2"
            assert r.content == b.requests[-1].response  # b's answer, untouched
            assert [x.status for x in a.requests] == [status] and len(b.requests) == 1
            assert a.requests[0].body == b.requests[0].body == raw  # replayed exactly
            reason = "throttled" if status == 429 else "server_error"
            ex = await gw.exchange(r)
            assert _moved_on(ex) == [("a", status, reason), ("b", 200, "served")]
            assert ex.backend == "b" and ex.response.status == 200


async def test_failover_of_a_stream_sends_the_same_injected_body_to_both():
    async with simulators(SimulatorConfig(fail_statuses=(503,)), SimulatorConfig()) as (a, b):
        async with gateway(
            [{"name": "a", "endpoint": a.url, "priority": 1}, {"name": "b", "endpoint": b.url, "priority": 2}]
        ) as gw:
            r = await gw.chat(stream=True)
            assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
            assert a.requests[0].body == b.requests[0].body
            assert orjson.loads(b.requests[0].body)["stream_options"] == {"include_usage": True}
            assert r.headers["x-gateway-backend"] == "b" and r.headers["x-gateway-attempts"] == "2"


async def test_failover_on_a_dead_port():
    async with simulators(SimulatorConfig()) as (b,):
        async with gateway(
            [
                {"name": "dead", "endpoint": f"http://127.0.0.1:{_free_port()}", "priority": 1},
                {"name": "b", "endpoint": b.url, "priority": 2},
            ]
        ) as gw:
            r = await gw.chat()
            assert r.status_code == 200 and r.headers["x-gateway-backend"] == "b"
            ex = await gw.exchange(r)
            assert _moved_on(ex) == [("dead", None, "connect_error"), ("b", 200, "served")]
            assert "ClientConnectorError" in ex.attempts[0].error
            assert gw.proxy.pool.snapshot()["dead"]["recent_failures"] == 1


async def test_failover_on_404_deployment_not_found_but_not_on_other_404s():
    async with simulators(SimulatorConfig(deployments=["something-else"]), SimulatorConfig()) as (a, b):
        async with gateway(
            [{"name": "a", "endpoint": a.url, "priority": 1}, {"name": "b", "endpoint": b.url, "priority": 2}]
        ) as gw:
            r = await gw.chat()
            assert r.status_code == 200 and r.headers["x-gateway-backend"] == "b"
            assert a.requests[0].status == 404
            ex = await gw.exchange(r)
            assert _moved_on(ex) == [("a", 404, "deployment_not_found"), ("b", 200, "served")]
            # A 404 for a stored response that does not exist is the client's answer, not a reason to move on.
            r = await gw.client.get("/openai/v1/responses/resp_missing")
            assert r.status_code == 404 and r.headers["x-gateway-attempts"] == "1"


async def test_bad_request_is_not_retried():
    async with simulators(SimulatorConfig(), SimulatorConfig()) as (a, b):
        async with gateway(
            [{"name": "a", "endpoint": a.url, "priority": 1}, {"name": "b", "endpoint": b.url, "priority": 2}]
        ) as gw:
            r = await gw.chat(messages=[{"role": "user", "content": "SIMULATE_CONTENT_FILTER"}])
            assert r.status_code == 400 and r.json()["error"]["code"] == "content_filter"
            assert len(a.requests) == 1 and not b.requests and r.headers["x-gateway-attempts"] == "1"


async def test_no_retry_after_the_first_streamed_byte():
    async with simulators(SimulatorConfig(), SimulatorConfig()) as (a, b):
        async with gateway(
            [{"name": "a", "endpoint": a.url, "priority": 1}, {"name": "b", "endpoint": b.url, "priority": 2}]
        ) as gw:
            # The client's body is aborted, not ended: over ASGI the app raises out of the body (the
            # server then drops the connection; the dev host e2e test shows what a client sees).
            with pytest.raises(UpstreamBroken, match="ClientPayloadError"):
                await gw.chat(stream=True, headers={"x-sim-drop-after": "2", "x-gateway-request-id": "cut-1"})
            assert a.requests[0].dropped and not b.requests  # nothing spliced in from another backend
            await gw.proxy.capture.drain()
            ex = await gw.ports.exchanges.load("cut-1")
            assert ex.backend == "a" and ex.response.status == 200 and not ex.client_disconnected
            # The exchange keeps exactly the bytes a sent before it hung up.
            assert ex.response.sse.encode() == a.requests[0].response and "[DONE]" not in ex.response.sse
            assert len(ex.attempts) == 1 and ex.attempts[0].outcome == "served"
            assert ex.attempts[0].error.startswith("stream broken")
            # The break counts against a's health (no retry, but the pool knows).
            assert gw.proxy.pool.snapshot()["a"]["recent_failures"] == 1


# ----------------------------------------------------------------------------------- cooldowns


async def test_a_throttled_backend_is_not_called_before_its_retry_time():
    async with simulators(SimulatorConfig(throttle_rate=1.0, retry_after_ms=300), SimulatorConfig()) as (a, b):
        async with gateway(
            [{"name": "a", "endpoint": a.url, "priority": 1}, {"name": "b", "endpoint": b.url, "priority": 2}]
        ) as gw:
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.3
            statuses = []
            while loop.time() < end:
                statuses.append((await gw.chat()).status_code)
                await asyncio.sleep(0.01)
            assert set(statuses) == {200}
            arrivals = [x.received for x in a.requests]
            gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
            assert all(x.status == 429 for x in a.requests)
            assert 3 <= len(arrivals) <= 6 and min(gaps) >= 0.3, gaps
            assert len(b.requests) == len(statuses) and len(statuses) > 3 * len(arrivals)


async def test_every_backend_cooling_down_gives_429_with_when_the_first_is_free():
    async with simulators(
        SimulatorConfig(throttle_rate=1.0, retry_after_ms=2000), SimulatorConfig(throttle_rate=1.0, retry_after_ms=4000)
    ) as (a, b):
        async with gateway([{"name": "a", "endpoint": a.url}, {"name": "b", "endpoint": b.url}]) as gw:
            first = await gw.chat()
            # Both answered 429: the client gets the real answer of the one free soonest.
            assert first.status_code == 429 and first.headers["x-gateway-attempts"] == "2"
            assert first.headers["x-gateway-backend"] == "a" and first.headers["retry-after-ms"] == "2000"
            assert first.content == a.requests[0].response  # relayed whole, and the relay ended there:
            relayed = await gw.exchange(first)  # no read of the released answer, no break counted
            assert [x.error for x in relayed.attempts] == [None, None] and not relayed.client_disconnected
            assert gw.proxy.pool.snapshot()["a"]["recent_failures"] == 0
            second = await gw.chat()
            assert second.status_code == 429 and second.json()["error"]["code"] == "429"
            assert second.headers["retry-after"] == "2" and 1000 < int(second.headers["retry-after-ms"]) <= 2000
            assert second.headers["x-gateway-attempts"] == "0" and "x-gateway-backend" not in second.headers
            assert len(a.requests) == len(b.requests) == 1  # nobody was called
            ex = await gw.exchange(second)
            assert ex.attempts == [] and ex.gateway_error["code"] == "429" and ex.response.status == 429
            assert ex.response.headers["retry-after"] == "2"
            # The gateway's own 429 still ends as one usage record: no backend served, no attempt.
            await handle_batch([ex.request_id.encode()], gw.ports)
            record = await gw.ports.records.get(ex.request_id)
            assert record["status_code"] == 429 and record["backend"] is None and record["attempts"] == 0
            # Another deployment is not affected: AOAI quotas are per deployment.
            assert gw.proxy.pool.retry_after("gpt-4o-mini") is None


async def test_circuit_opens_after_repeated_failures_and_health_shows_it():
    async with simulators(SimulatorConfig(fail_statuses=(500,)), SimulatorConfig()) as (a, b):
        async with gateway(
            [{"name": "a", "endpoint": a.url, "priority": 1}, {"name": "b", "endpoint": b.url, "priority": 2}],
            circuit_failures=2,
            circuit_cooldown_seconds=60,
        ) as gw:
            for _ in range(5):
                assert (await gw.chat()).status_code == 200
            assert len(a.requests) == 2 and len(b.requests) == 5
            state = gw.proxy.pool.snapshot()
            assert state["a"]["state"] == "circuit_open" and state["a"]["until"]
            assert state["b"]["state"] == "healthy"
            assert UPSTREAM_KEY not in orjson.dumps(state).decode()


# ----------------------------------------------------------------------------------- selection


async def test_weights_are_respected_within_a_priority():
    async with simulators(SimulatorConfig(), SimulatorConfig(), SimulatorConfig()) as sims:
        weights = {"w1": 1, "w2": 2, "w5": 5}
        config = [{"name": n, "endpoint": s.url, "weight": w} for (n, w), s in zip(weights.items(), sims, strict=False)]
        async with gateway(config, seed=7) as gw:
            total = 800
            gate = asyncio.Semaphore(16)

            async def one() -> str:
                async with gate:
                    r = await gw.chat(max_tokens=4)
                    assert r.status_code == 200
                    return r.headers["x-gateway-backend"]

            served = await asyncio.gather(*(one() for _ in range(total)))
            for (name, weight), sim in zip(weights.items(), sims, strict=False):
                share = served.count(name) / total
                assert abs(share - weight / 8) < 0.05, (name, share)
                assert len(sim.requests) == served.count(name)


async def test_priority_order_is_kept():
    async with simulators(SimulatorConfig(), SimulatorConfig(), SimulatorConfig()) as (a, b, c):
        config = [
            {"name": "a", "endpoint": a.url, "priority": 1},
            {"name": "b", "endpoint": b.url, "priority": 2, "weight": 50},
            {"name": "c", "endpoint": c.url, "priority": 3, "weight": 50},
        ]
        async with gateway(config) as gw:
            for _ in range(20):
                assert (await gw.chat()).headers["x-gateway-backend"] == "a"
            assert len(a.requests) == 20 and not b.requests and not c.requests
    # With the first priority throttled, the second takes everything and the third nothing.
    async with simulators(
        SimulatorConfig(throttle_rate=1.0, retry_after_ms=60_000), SimulatorConfig(), SimulatorConfig()
    ) as (a, b, c):
        config = [
            {"name": "a", "endpoint": a.url, "priority": 1},
            {"name": "b", "endpoint": b.url, "priority": 2},
            {"name": "c", "endpoint": c.url, "priority": 3, "weight": 50},
        ]
        async with gateway(config) as gw:
            for _ in range(20):
                assert (await gw.chat()).headers["x-gateway-backend"] == "b"
            assert len(a.requests) == 1 and len(b.requests) == 20 and not c.requests


async def test_one_deployment_under_different_names_per_account():
    # a throttles every call, but only for a millisecond: each request tries a, then b.
    async with simulators(
        SimulatorConfig(throttle_rate=1.0, retry_after_ms=1, deployments=["gpt-4o-prod-east"]),
        SimulatorConfig(deployments=["gpt-4o-global"]),
    ) as (a, b):
        config = [
            {
                "name": "a",
                "endpoint": a.url,
                "priority": 1,
                "deployments": [],
                "deployment_map": {"gpt-4o": "gpt-4o-prod-east"},
            },
            {
                "name": "b",
                "endpoint": b.url,
                "priority": 2,
                "deployments": [],
                "deployment_map": {"gpt-4o": "gpt-4o-global"},
            },
        ]
        async with gateway(config) as gw:
            # Deployment in the path.
            r = await gw.chat()
            assert r.status_code == 200 and r.headers["x-gateway-backend"] == "b"
            assert a.requests[0].path == "/openai/deployments/gpt-4o-prod-east/chat/completions"
            assert b.requests[0].path == "/openai/deployments/gpt-4o-global/chat/completions"
            assert a.requests[0].body == b.requests[0].body
            # Deployment in the body (v1): only `model` differs between what each account receives.
            await asyncio.sleep(0.01)
            r = await gw.chat(path=V1_CHAT, model="gpt-4o", stream=True)
            assert r.status_code == 200 and r.headers["x-gateway-backend"] == "b"
            sent_a, sent_b = orjson.loads(a.requests[1].body), orjson.loads(b.requests[1].body)
            assert sent_a.pop("model") == "gpt-4o-prod-east" and sent_b.pop("model") == "gpt-4o-global"
            assert sent_a == sent_b and sent_a["stream_options"] == {"include_usage": True}
            # The stored request is the client's: the public name.
            ex = await gw.exchange(r)
            assert ex.request.body["model"] == "gpt-4o"
            # A name no account serves is the gateway's 404.
            r = await gw.chat(path=V1_CHAT, model="gpt-4o-prod-east")
            assert r.status_code == 404 and r.json()["error"]["code"] == "DeploymentNotFound"


async def test_an_unmapped_v1_body_is_forwarded_byte_for_byte():
    async with simulators(SimulatorConfig()) as (a,):
        async with gateway([{"name": "a", "endpoint": a.url}]) as gw:
            raw = b'{"model":"gpt-4o",  "messages":[{"role":"user","content":"hi \\u00e9"}]}'
            r = await gw.client.post(V1_CHAT, content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 200 and a.requests[0].body == raw


# ----------------------------------------------------------------------------------- affinity


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_responses_follow_ups_are_pinned_to_the_account_that_created_them():
    clock = Clock()
    async with simulators(SimulatorConfig(seed=1), SimulatorConfig(seed=2)) as (a, b):
        sims = {"a": a, "b": b}
        async with gateway(
            [{"name": "a", "endpoint": a.url}, {"name": "b", "endpoint": b.url}],
            seed=3,
            affinity_clock=clock,
            responses_affinity_ttl_seconds=600,
        ) as gw:
            for stream in (False, True):
                r = await gw.client.post(RESPONSES, json={"model": "gpt-4o", "input": "hello", "stream": stream})
                assert r.status_code == 200
                owner = r.headers["x-gateway-backend"]
                if stream:
                    created = next(json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:"))
                    response_id = created["response"]["id"]
                else:
                    response_id = r.json()["id"]
                assert gw.ports.affinity.entries[response_id][0] == owner
                chain = response_id
                for _ in range(6):  # the other simulator would answer 400: it has no such response
                    r = await gw.client.post(
                        RESPONSES, json={"model": "gpt-4o", "input": "more", "previous_response_id": chain}
                    )
                    assert r.status_code == 200 and r.headers["x-gateway-backend"] == owner
                    chain = r.json()["id"]
                r = await gw.client.get(f"{RESPONSES}/{response_id}")
                assert (
                    r.status_code == 200 and r.json()["id"] == response_id and r.headers["x-gateway-backend"] == owner
                )
                assert all(x.status == 200 for x in sims[owner].requests)

            # Once the mapping expires, follow-ups are routed like any other request.
            clock.now += 601
            served = set()
            for _ in range(12):
                r = await gw.client.post(
                    RESPONSES, json={"model": "gpt-4o", "input": "x", "previous_response_id": response_id}
                )
                served.add(r.headers["x-gateway-backend"])
            assert served == {"a", "b"}


async def test_store_false_creates_no_mapping_and_a_pinned_backend_is_used_even_while_throttled():
    async with simulators(SimulatorConfig(), SimulatorConfig()) as (a, b):
        async with gateway(
            [{"name": "a", "endpoint": a.url, "priority": 1}, {"name": "b", "endpoint": b.url, "priority": 2}]
        ) as gw:
            r = await gw.client.post(RESPONSES, json={"model": "gpt-4o", "input": "hi", "store": False})
            assert r.status_code == 200 and gw.ports.affinity.entries == {}
            r = await gw.client.post(RESPONSES, json={"model": "gpt-4o", "input": "hi"})
            response_id = r.json()["id"]
            assert r.headers["x-gateway-backend"] == "a"
            # a now throttles: a follow-up still goes to a (no other account has the response) and
            # the client gets a's own 429, not a misleading 400 from b.
            throttled = await gw.client.post(
                RESPONSES,
                json={"model": "gpt-4o", "input": "x", "previous_response_id": response_id},
                headers={"x-sim-status": "429"},
            )
            assert throttled.status_code == 429 and throttled.headers["x-gateway-backend"] == "a"
            r = await gw.client.post(
                RESPONSES, json={"model": "gpt-4o", "input": "x", "previous_response_id": response_id}
            )
            assert r.status_code == 200 and r.headers["x-gateway-backend"] == "a"
            assert not b.requests


# ----------------------------------------------------------------------------------- usage record


async def test_usage_record_names_the_serving_backend_and_the_attempt_count():
    async with simulators(
        SimulatorConfig(fail_statuses=(502,)), SimulatorConfig(throttle_rate=1.0), SimulatorConfig()
    ) as (a, b, c):
        config = [
            {"name": "a", "endpoint": a.url, "priority": 1},
            {"name": "b", "endpoint": b.url, "priority": 2},
            {"name": "c", "endpoint": c.url, "priority": 3},
        ]
        async with gateway(config) as gw:
            r = await gw.chat(stream=True)
            assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "3"
            ex = await gw.exchange(r)
            await handle_batch([ex.request_id.encode()], gw.ports)
            record = await gw.ports.records.get(ex.request_id)
            assert record["backend"] == "c" and record["attempts"] == 3 and record["status_code"] == 200
            assert record["completion_tokens"] > 0
