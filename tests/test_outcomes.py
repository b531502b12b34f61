import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web

from proxy.routing.outcomes import Outcome, classify_error, should_fail_over

DNF = b'{"error": {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."}}'
CONTENT_FILTER = (
    b'{"error": {"code": "content_filter", "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation"}}}'
)


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (429, b'{"error": {"code": "429"}}', "throttled"),
        (500, b"", "server_error"),
        (502, b"bad gateway", "server_error"),
        (503, b"", "server_error"),
        (504, b"", "server_error"),
        (404, DNF, "deployment_not_found"),
        (404, DNF.decode(), "deployment_not_found"),
    ],
)
def test_fails_over_on_listed_answers(status, body, reason):
    assert should_fail_over(status, body) == reason


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, b'{"id": "x"}'),
        (400, b'{"error": {"code": "BadRequest"}}'),
        (400, CONTENT_FILTER),
        (401, b'{"error": {"code": "401", "message": "Access denied"}}'),
        (403, b""),
        (404, b'{"error": {"code": "404", "message": "Resource not found"}}'),  # e.g. an unknown response id
        (404, b"not json"),
        (501, b""),
        (None, None),
    ],
)
def test_passes_through_everything_else(status, body):
    assert should_fail_over(status, body) is None


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ServerTimeoutError("read"), "timeout"),
        (aiohttp.ConnectionTimeoutError("connect"), "timeout"),
        (aiohttp.SocketTimeoutError("sock_read"), "timeout"),
        (aiohttp.ServerDisconnectedError(), "connect_error"),
        (aiohttp.ClientPayloadError("cut"), "connect_error"),
        (aiohttp.ClientOSError(104, "reset"), "connect_error"),
        (ConnectionResetError(), "connect_error"),
        (ValueError("a bug"), None),
        (aiohttp.InvalidURL("x"), None),
    ],
)
def test_classifies_transport_errors(error, kind):
    assert classify_error(error) == kind
    assert should_fail_over(None, error) == kind


def test_outcome_health_semantics():
    assert Outcome.answered(429, {"retry-after": "1"}).is_throttle
    assert not Outcome.answered(429, {}).is_health_failure  # a busy account is not a broken one
    assert Outcome.answered(503, {}).is_health_failure
    assert Outcome.failed("timeout").is_health_failure
    assert not Outcome.answered(404, {}, DNF).is_health_failure
    assert not Outcome.answered(200, {}).is_health_failure


# -- aiohttp's real exceptions, from a loopback server that misbehaves -------------------------


async def _drop(request: web.Request) -> web.StreamResponse:
    request.transport.close()  # hang up before any answer
    await asyncio.sleep(1)
    return web.Response()


async def _slow(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(5)
    return web.Response(text="late")


async def _cut(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-length": "1000"})
    await response.prepare(request)
    await response.write(b"x" * 10)
    request.transport.close()  # promised 1000 bytes, sent 10
    return response


@pytest.fixture
async def misbehaving_server():
    app = web.Application()
    app.router.add_post("/drop", _drop)
    app.router.add_post("/slow", _slow)
    app.router.add_post("/cut", _cut)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _error_of(url: str, timeout: aiohttp.ClientTimeout) -> BaseException:
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.post(url, data=b"{}") as response:
                await response.read()
        except Exception as exc:  # noqa: BLE001 - the exception is what we inspect
            return exc
    raise AssertionError(f"{url} did not fail")


async def test_classifies_aiohttp_exceptions_from_a_real_loopback_server(misbehaving_server):
    short = aiohttp.ClientTimeout(total=10, sock_read=0.3)
    refused = await _error_of(f"http://127.0.0.1:{_dead_port()}/x", short)
    assert isinstance(refused, aiohttp.ClientConnectorError) and classify_error(refused) == "connect_error"

    dropped = await _error_of(f"{misbehaving_server}/drop", short)
    assert isinstance(dropped, aiohttp.ServerDisconnectedError) and classify_error(dropped) == "connect_error"

    cut = await _error_of(f"{misbehaving_server}/cut", short)
    assert isinstance(cut, aiohttp.ClientPayloadError) and classify_error(cut) == "connect_error"

    read_timeout = await _error_of(f"{misbehaving_server}/slow", short)
    assert isinstance(read_timeout, aiohttp.ServerTimeoutError) and classify_error(read_timeout) == "timeout"

    total_timeout = await _error_of(f"{misbehaving_server}/slow", aiohttp.ClientTimeout(total=0.3))
    assert isinstance(total_timeout, asyncio.TimeoutError) and classify_error(total_timeout) == "timeout"
