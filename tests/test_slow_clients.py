"""Slow and greedy clients against the dev host, with real sockets: a head trickled a byte at a time
is cut at the header deadline, a trickled body at the body deadline, connections past the bound
are refused at once, and each refusal is an AOAI-shaped answer and a log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

import orjson
import pytest

import function_app
from devhost.simulator import SimulatorConfig
from tests.devhost_harness import DevHostGateway, dev_host
from tests.raw_http import exchange, read_response, request_head

KEY = "slow-key"
UPSTREAM_KEY = "slow-upstream"
PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MAX_CONNECTIONS = 20
BODY = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostGateway]:
    env = {
        "DEVHOST_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "REQUEST_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "DEVHOST_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with dev_host(
        tmp_path_factory.mktemp("slow"),
        {KEY: {"id": "slow", "name": "Slow", "product": "standard"}},
        {"sim": SimulatorConfig(api_key=UPSTREAM_KEY, completion_tokens=4)},
        env=env,
    ) as gateway:
        yield gateway


def _address(gw: DevHostGateway) -> tuple[str, int]:
    host, port = gw.url.removeprefix("http://").split(":")
    return host, int(port)


async def _trickle_head(gw: DevHostGateway, interval: float) -> tuple[bytes, int]:
    """Send a request head a byte every `interval` s until the server answers or closes; returns
    what it sent back and how many bytes went out."""
    reader, writer = await asyncio.open_connection(*_address(gw))
    head = request_head("POST", PATH, [("api-key", KEY), ("x-slow", "s" * 400)])
    sent = 0
    try:
        for byte in head:
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                break
            sent += 1
            try:
                data = await asyncio.wait_for(reader.read(65536), interval)
            except TimeoutError:
                continue
            return data, sent
        return await reader.read(65536), sent
    finally:
        writer.close()


def test_a_head_trickled_a_byte_at_a_time_is_answered_408_and_closed(
    gw: DevHostGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="devhost.guard"):
        data, sent = gw.call(_trickle_head(gw, 0.05), timeout=30)
    head_len = len(request_head("POST", PATH, [("api-key", KEY), ("x-slow", "s" * 400)]))
    assert sent < head_len, "the server waited for the whole head"
    assert data.startswith(b"HTTP/1.1 408 ")
    assert orjson.loads(data.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "Timeout"
    assert any("no complete request head" in r.getMessage() for r in caplog.records)


def test_an_idle_connection_that_never_sends_is_closed(gw: DevHostGateway) -> None:
    async def idle() -> bytes:
        reader, writer = await asyncio.open_connection(*_address(gw))
        try:
            return await asyncio.wait_for(reader.read(65536), HEADER_TIMEOUT + 10)
        finally:
            writer.close()

    assert gw.call(idle(), timeout=30).startswith(b"HTTP/1.1 408 ")


def test_a_body_trickled_past_its_deadline_is_answered_408_and_recorded(
    gw: DevHostGateway, caplog: pytest.LogCaptureFixture
) -> None:
    async def trickle():
        async def pieces():
            for byte in BODY:
                yield bytes([byte])
                await asyncio.sleep(0.1)

        head = request_head(
            "POST", PATH, [("api-key", KEY), ("content-type", "application/json"), ("content-length", str(len(BODY)))]
        )
        return await exchange(gw.url, head, pieces())

    with caplog.at_level(logging.WARNING):
        response = gw.call(trickle(), timeout=30)
    assert response is not None and response.status == 408
    assert orjson.loads(response.body)["error"]["code"] == "Timeout"
    assert any("request body" in r.getMessage() for r in caplog.records)
    gw.settle()
    record = gw.call(function_app.ports().records.get(response.header("x-gateway-request-id")))
    assert record is not None and record["status_code"] == 408


def test_connections_past_the_bound_get_503_and_health_answers_again_once_they_go(gw: DevHostGateway) -> None:
    async def crowd():
        held = [await asyncio.open_connection(*_address(gw)) for _ in range(MAX_CONNECTIONS)]
        try:
            reader, writer = await asyncio.open_connection(*_address(gw))
            writer.write(request_head("GET", "/health", [("api-key", KEY)]))
            refused = await read_response(reader)
            writer.close()
        finally:
            for _, w in held:
                w.close()
        await asyncio.sleep(0.2)
        reader, writer = await asyncio.open_connection(*_address(gw))
        writer.write(request_head("GET", "/health", [("api-key", KEY)]))
        after = await read_response(reader)
        writer.close()
        return refused, after

    refused, after = gw.call(crowd(), timeout=30)
    assert refused is not None and refused.status == 503
    assert orjson.loads(refused.body)["error"]["code"] == "ServiceUnavailable"
    assert after is not None and after.status == 200


def test_a_slow_but_steady_client_within_the_deadlines_is_served(gw: DevHostGateway) -> None:
    async def steady():
        async def pieces():
            half = len(BODY) // 2
            yield BODY[:half]
            await asyncio.sleep(BODY_TIMEOUT / 4)
            yield BODY[half:]

        head = request_head(
            "POST", PATH, [("api-key", KEY), ("content-type", "application/json"), ("content-length", str(len(BODY)))]
        )
        return await exchange(gw.url, head, pieces())

    started = time.monotonic()
    response = gw.call(steady(), timeout=30)
    assert response is not None and response.status == 200, (response, time.monotonic() - started)


def test_a_client_that_leaves_while_sending_its_body_is_recorded_as_499(gw: DevHostGateway) -> None:
    async def leave() -> None:
        reader, writer = await asyncio.open_connection(*_address(gw))
        head = request_head(
            "POST",
            PATH + "&left=1",
            [("api-key", KEY), ("content-type", "application/json"), ("content-length", "1000")],
        )
        writer.write(head + BODY[:10])
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()

    gw.call(leave(), timeout=30)
    for _ in range(100):
        gw.settle()
        records = gw.call(function_app.ports().records.list_records())
        left = [r for r in records if r["status_code"] in (499, 500) and r.get("client_disconnected") is not None]
        if left:
            break
        time.sleep(0.05)
    assert [r["status_code"] for r in left] == [499]
    assert left[0]["client_disconnected"] is True


async def test_a_large_body_sent_in_one_write_with_its_head_is_no_long_head(gw):
    """A client that writes head and a 200 KB body at once hands the server reads that carry both:
    only bytes of an unfinished head count against the head bound, so this is served, not a 431."""
    body = orjson.dumps({"messages": [{"role": "user", "content": "x" * 200_000}]})
    head = request_head(
        "POST", PATH, [("api-key", KEY), ("content-type", "application/json"), ("content-length", str(len(body)))]
    )
    answer = await exchange(gw.url, head, body)
    assert answer is not None and answer.status == 200


async def test_a_request_sent_as_soon_as_the_last_answer_is_complete_is_served(gw):
    """A JSON answer carries its length, so a client sends its next request on the connection as
    soon as it has that many bytes, possibly before the server has marked the first one complete:
    the guard must judge the request that completed, not the next one, and keep the connection."""
    reader, writer = await asyncio.open_connection(*_address(gw))
    head = request_head(
        "POST", PATH, [("api-key", KEY), ("content-type", "application/json"), ("content-length", str(len(BODY)))]
    )
    try:
        for _ in range(20):
            writer.write(head + BODY)
            await writer.drain()
            answer = await read_response(reader)
            assert answer is not None and answer.status == 200
    finally:
        writer.close()
