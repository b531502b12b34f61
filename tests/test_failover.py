import asyncio
import random
from dataclasses import dataclass, field

import aiohttp
import pytest

from proxy.routing.failover import run_failover
from proxy.routing.outcomes import Outcome
from proxy.routing.policy import RoutingPolicy
from proxy.routing.pool import BackendPool
from shared.exchange import Attempt
from tests.routing_fakes import FakeClock, backends

DNF = b'{"error": {"code": "DeploymentNotFound", "message": "no such deployment"}}'


@dataclass
class FakeAnswer:
    status: int
    headers: dict = field(default_factory=dict)
    head: bytes = b""
    closed: bool = False

    async def aclose(self) -> None:
        self.closed = True


def make_pool(*specs, seed=1, **policy):
    clock = FakeClock()
    policy = RoutingPolicy(
        **{"circuit_failures": 3, "circuit_window_seconds": 60, "circuit_cooldown_seconds": 30, **policy}
    )
    pool = BackendPool(backends(*specs), policy=policy, clock=clock, wall_clock=clock.wall, rng=random.Random(seed))
    return pool, clock


def scripted(clock, script, seconds=0.1):
    """A `send` that answers from a per-backend script and takes `seconds` of fake time."""
    calls = []

    async def send(backend):
        calls.append(backend.name)
        clock.advance(seconds)
        item = script[backend.name].pop(0)
        if isinstance(item, BaseException):
            raise item
        return item

    return send, calls


def ranked(*names):
    return [{"name": n, "priority": i + 1} for i, n in enumerate(names)]


async def test_first_good_answer_is_served_in_one_attempt():
    pool, clock = make_pool(*ranked("a", "b"))
    ok = FakeAnswer(200, head=b"data: {}\n\n")
    send, calls = scripted(clock, {"a": [ok]})
    result = await run_failover(send, pool, "gpt-4o")
    assert result.verdict == "answer" and result.answer is ok and result.backend.name == "a"
    assert result.attempts == [Attempt(backend="a", status=200, duration_ms=pytest.approx(100.0), outcome="served")]
    assert calls == ["a"] and not ok.closed


FAILOVER_CASES = [
    (FakeAnswer(429, {"retry-after": "1"}), "throttled", 429),
    (FakeAnswer(500), "server_error", 500),
    (FakeAnswer(502), "server_error", 502),
    (FakeAnswer(503), "server_error", 503),
    (FakeAnswer(504), "server_error", 504),
    (FakeAnswer(404, head=DNF), "deployment_not_found", 404),
    (aiohttp.ClientConnectorError(None, OSError(111, "Connection refused")), "connect_error", None),
    (aiohttp.ServerDisconnectedError(), "connect_error", None),
    (TimeoutError(), "timeout", None),
    (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), "timeout", None),
]


@pytest.mark.parametrize(("first", "reason", "status"), FAILOVER_CASES)
async def test_fails_over_on_each_listed_answer_and_error(first, reason, status):
    pool, clock = make_pool(*ranked("a", "b"))
    ok = FakeAnswer(200)
    send, calls = scripted(clock, {"a": [first], "b": [ok]})
    result = await run_failover(send, pool, "gpt-4o")
    assert calls == ["a", "b"] and result.answer is ok and result.backend.name == "b"
    assert [(a.backend, a.status, a.outcome) for a in result.attempts] == [("a", status, reason), ("b", 200, "served")]
    if isinstance(first, FakeAnswer):
        assert first.closed  # its connection is released
    else:
        assert result.attempts[0].error.startswith(type(first).__name__)


@pytest.mark.parametrize(
    "answer",
    [
        FakeAnswer(400, head=b'{"error": {"code": "BadRequest"}}'),
        FakeAnswer(
            400, head=b'{"error": {"code": "content_filter", "innererror": {"code": "ResponsibleAIPolicyViolation"}}}'
        ),
        FakeAnswer(401, head=b'{"error": {"code": "401"}}'),
        FakeAnswer(404, head=b'{"error": {"code": "404", "message": "Response not found"}}'),
        FakeAnswer(200),
    ],
)
async def test_does_not_fail_over_on_client_errors(answer):
    pool, clock = make_pool(*ranked("a", "b"))
    send, calls = scripted(clock, {"a": [answer], "b": [FakeAnswer(200)]})
    result = await run_failover(send, pool, "gpt-4o")
    assert calls == ["a"] and result.answer is answer and not answer.closed
    assert [a.outcome for a in result.attempts] == ["served"]


async def test_max_attempts_then_the_last_failure_passes_through_unchanged():
    pool, clock = make_pool(*ranked("a", "b", "c", "d"), max_attempts=3)
    answers = {n: [FakeAnswer(500 + i, {"x-n": n})] for i, n in enumerate("abcd") if i != 1} | {
        "b": [FakeAnswer(503, {"x-n": "b"})]
    }
    answers["a"] = [FakeAnswer(500, {"x-n": "a"})]
    answers["c"] = [FakeAnswer(502, {"x-n": "c"})]
    send, calls = scripted(clock, answers)
    result = await run_failover(send, pool, "gpt-4o")
    assert calls == ["a", "b", "c"]
    assert result.verdict == "answer" and result.answer.status == 502 and result.answer.headers == {"x-n": "c"}
    assert [(a.backend, a.outcome) for a in result.attempts] == [
        ("a", "server_error"),
        ("b", "server_error"),
        ("c", "served"),
    ]


async def test_when_all_throttle_the_429_of_the_soonest_free_backend_passes_through():
    pool, clock = make_pool(*ranked("a", "b", "c"))
    send, _ = scripted(
        clock,
        {
            "a": [FakeAnswer(429, {"retry-after-ms": "2500"})],
            "b": [FakeAnswer(429, {"retry-after": "20"})],
            "c": [FakeAnswer(500)],
        },
    )
    result = await run_failover(send, pool, "gpt-4o")
    assert (
        result.verdict == "answer"
        and result.backend.name == "a"
        and result.answer.headers == {"retry-after-ms": "2500"}
    )
    assert [a.outcome for a in result.attempts] == ["served", "throttled", "server_error"]


async def test_deadline_stops_new_attempts():
    pool, clock = make_pool(*ranked("a", "b", "c"), deadline_seconds=1.0, max_attempts=5)
    send, calls = scripted(clock, {n: [FakeAnswer(503)] for n in "abc"}, seconds=0.6)
    result = await run_failover(send, pool, "gpt-4o")
    assert calls == ["a", "b"]  # b started at 0.6 s, c would start at 1.2 s
    assert [a.duration_ms for a in result.attempts] == [pytest.approx(600.0)] * 2


async def test_nothing_eligible_gives_throttled_with_retry_after_and_no_call():
    pool, clock = make_pool(*ranked("a", "b"))
    pool.record(pool.backend("a"), Outcome.answered(429, {"retry-after": "9"}), deployment="gpt-4o")
    pool.record(pool.backend("b"), Outcome.answered(429, {"retry-after": "4"}), deployment="gpt-4o")
    send, calls = scripted(clock, {})
    result = await run_failover(send, pool, "gpt-4o")
    assert calls == [] and result.verdict == "throttled" and result.retry_after == pytest.approx(4.0)
    assert result.attempts == []


async def test_unknown_deployment_is_no_backend():
    pool, clock = make_pool(*ranked("a"))
    send, calls = scripted(clock, {})
    result = await run_failover(send, pool, "nope")
    assert result.verdict == "no_backend" and calls == []


async def test_only_transport_errors_is_failed_with_the_last_kind():
    pool, clock = make_pool(*ranked("a", "b"))
    send, _ = scripted(clock, {"a": [aiohttp.ServerDisconnectedError()], "b": [TimeoutError()]})
    result = await run_failover(send, pool, "gpt-4o")
    assert (
        result.verdict == "failed" and result.error_kind == "timeout" and isinstance(result.error, asyncio.TimeoutError)
    )
    assert [a.outcome for a in result.attempts] == ["connect_error", "timeout"]
    assert [a.error for a in result.attempts] == ["ServerDisconnectedError: Server disconnected", "TimeoutError"]


async def test_transport_error_while_the_others_cool_down_is_an_honest_429():
    pool, clock = make_pool(*ranked("a", "b"))
    pool.record(pool.backend("b"), Outcome.answered(429, {"retry-after": "6"}), deployment="gpt-4o")
    send, calls = scripted(clock, {"a": [aiohttp.ServerDisconnectedError()]})
    result = await run_failover(send, pool, "gpt-4o")
    assert calls == ["a"] and result.verdict == "throttled" and result.retry_after == pytest.approx(5.9)
    assert result.error_kind == "connect_error"


async def test_an_unexpected_exception_stops_without_failover():
    pool, clock = make_pool(*ranked("a", "b"))
    send, calls = scripted(clock, {"a": [RuntimeError("bug in send")], "b": [FakeAnswer(200)]})
    result = await run_failover(send, pool, "gpt-4o")
    assert calls == ["a"] and result.verdict == "failed" and result.error_kind is None
    assert result.attempts[0].outcome == "error" and pool.snapshot()["a"]["recent_failures"] == 0


async def test_error_text_drops_query_strings():
    pool, clock = make_pool(*ranked("a"))
    send, _ = scripted(
        clock, {"a": [aiohttp.ClientPayloadError("cut off at https://a/openai/x?api-version=1&sig=s3cret")]}
    )
    result = await run_failover(send, pool, "gpt-4o")
    assert "s3cret" not in result.attempts[0].error and "https://a/openai/x?…" in result.attempts[0].error


async def test_loop_feeds_the_pool_so_a_throttled_backend_is_not_called_before_its_time():
    pool, clock = make_pool(*ranked("a", "b"))
    send, calls = scripted(
        clock, {"a": [FakeAnswer(429, {"retry-after": "2"}), FakeAnswer(200)], "b": [FakeAnswer(200)] * 3}, seconds=0
    )
    await run_failover(send, pool, "gpt-4o")
    clock.advance(1.99)
    await run_failover(send, pool, "gpt-4o")
    clock.advance(0.01)
    result = await run_failover(send, pool, "gpt-4o")
    assert calls == ["a", "b", "b", "a"] and result.backend.name == "a"


async def test_loop_opens_the_circuit_and_sends_one_trial_after_the_cooldown():
    pool, clock = make_pool(*ranked("a", "b"))
    refused = aiohttp.ClientConnectorError(None, OSError(111, "refused"))
    send, calls = scripted(
        clock, {"a": [refused, refused, refused, FakeAnswer(200)], "b": [FakeAnswer(200)] * 4}, seconds=0
    )
    for _ in range(4):
        await run_failover(send, pool, "gpt-4o")
    assert calls == ["a", "b", "a", "b", "a", "b", "b"]  # the fourth request skips a
    clock.advance(30)
    result = await run_failover(send, pool, "gpt-4o")
    assert result.backend.name == "a" and pool.snapshot()["a"]["state"] == "healthy"


async def test_concurrent_requests_send_only_one_trial_to_a_half_open_backend():
    pool, clock = make_pool(*ranked("a", "b"))
    for _ in range(3):
        pool.record(pool.backend("a"), Outcome.answered(500, {}))
    clock.advance(30)
    release = asyncio.Event()
    calls = []

    async def send(backend):
        calls.append(backend.name)
        if backend.name == "a":
            await release.wait()
        return FakeAnswer(200)

    first = asyncio.create_task(run_failover(send, pool, "gpt-4o"))
    await asyncio.sleep(0)
    others = [await run_failover(send, pool, "gpt-4o") for _ in range(3)]
    assert [r.backend.name for r in others] == ["b"] * 3
    release.set()
    assert (await first).backend.name == "a" and calls == ["a", "b", "b", "b"]


async def test_cancelled_attempt_frees_the_trial_slot():
    pool, clock = make_pool(*ranked("a"))
    for _ in range(3):
        pool.record(pool.backend("a"), Outcome.answered(500, {}))
    clock.advance(30)

    async def hang(backend):
        await asyncio.sleep(3600)

    task = asyncio.create_task(run_failover(hang, pool, "gpt-4o"))
    await asyncio.sleep(0)
    assert pool.snapshot()["a"]["trial_in_flight"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pool.snapshot()["a"]["trial_in_flight"] and pool.snapshot()["a"]["state"] == "half_open"


async def test_a_backend_that_cools_down_after_planning_is_skipped():
    pool, clock = make_pool(*ranked("a", "b", "c"))

    async def send(backend):
        if backend.name == "a":  # meanwhile another request got a 429 from b
            pool.record(pool.backend("b"), Outcome.answered(429, {"retry-after": "5"}), deployment="gpt-4o")
            return FakeAnswer(503)
        return FakeAnswer(200)

    result = await run_failover(send, pool, "gpt-4o")
    assert [a.backend for a in result.attempts] == ["a", "c"]


async def test_pinned_backend_is_the_only_one_tried_even_while_cooling_down():
    pool, clock = make_pool(*ranked("a", "b"))
    pool.record(pool.backend("b"), Outcome.answered(429, {"retry-after": "30"}), deployment="gpt-4o")
    throttled = FakeAnswer(429, {"retry-after": "29"})
    send, calls = scripted(clock, {"b": [FakeAnswer(200), throttled]})
    assert (await run_failover(send, pool, "gpt-4o", pinned="b")).backend.name == "b"
    result = await run_failover(send, pool, "gpt-4o", pinned="b")
    assert calls == ["b", "b"] and result.answer is throttled and result.attempts[0].outcome == "served"


async def test_expired_or_unknown_pin_falls_back_to_normal_selection():
    pool, clock = make_pool(*ranked("a", "b"))
    send, calls = scripted(clock, {"a": [FakeAnswer(200)]})
    result = await run_failover(send, pool, "gpt-4o", pinned="gone")
    assert calls == ["a"] and result.backend.name == "a"


async def test_gateway_answers_and_headers_for_each_verdict():
    pool, clock = make_pool(*ranked("a", "b"))
    send, _ = scripted(clock, {"a": [FakeAnswer(503)], "b": [FakeAnswer(200)]})
    served = await run_failover(send, pool, "gpt-4o")
    assert served.gateway_error() is None
    assert served.response_headers() == {"x-gateway-attempts": "2", "x-gateway-backend": "b"}

    pool.record(pool.backend("a"), Outcome.answered(429, {"retry-after-ms": "2300"}), deployment="gpt-4o")
    pool.record(pool.backend("b"), Outcome.answered(429, {"retry-after": "9"}), deployment="gpt-4o")
    throttled = await run_failover(send, pool, "gpt-4o")
    error = throttled.gateway_error()
    assert (error.status, error.code, error.headers) == (429, "429", {"retry-after": "3", "retry-after-ms": "2300"})
    assert throttled.response_headers() == {"x-gateway-attempts": "0"}

    missing = (await run_failover(send, pool, "nope")).gateway_error()
    assert (missing.status, missing.code) == (404, "DeploymentNotFound")

    clock.advance(10)
    send, _ = scripted(clock, {"a": [TimeoutError()], "b": [aiohttp.ServerDisconnectedError()]})
    failed = await run_failover(send, pool, "gpt-4o")
    assert failed.gateway_error().status == 502 and failed.response_headers() == {"x-gateway-attempts": "2"}
    send, _ = scripted(clock, {"a": [aiohttp.ServerDisconnectedError()], "b": [TimeoutError()]})
    assert (await run_failover(send, pool, "gpt-4o")).gateway_error().status == 504


async def test_a_pinned_request_that_cannot_connect_fails_rather_than_waiting_for_others():
    pool, clock = make_pool(*ranked("a", "b"))
    pool.record(pool.backend("a"), Outcome.answered(429, {"retry-after": "5"}), deployment="gpt-4o")
    send, calls = scripted(clock, {"b": [aiohttp.ServerDisconnectedError()]})
    result = await run_failover(send, pool, "gpt-4o", pinned="b")
    assert calls == ["b"] and result.verdict == "failed" and result.gateway_error().status == 502
