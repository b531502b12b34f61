"""The failover loop: try backends in plan order until one gives an answer worth forwarding.

The handler passes its upstream call in as `send(backend)`. `send` must return once the status,
the headers and the first body bytes are in and before anything is forwarded to the client; the
loop decides on that, so a response whose first byte reached the client is never retried. Every
call of `send` gets the same request bytes from the handler (replayed exactly, only the URL,
deployment name and credentials differ per backend).

Answers the loop moves on from (429, 500/502/503/504, 404 `DeploymentNotFound`) are closed but
kept: when attempts run out, one of them reaches the client unchanged (the 429 whose backend is
free soonest, else the last one), so the client sees a real AOAI answer with its real headers.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

import aiohttp

from proxy.routing.backends import Backend
from proxy.routing.outcomes import ErrorKind, Outcome, classify_error, should_fail_over
from proxy.routing.policy import RoutingPolicy
from proxy.routing.pool import TRIAL_WAIT_SECONDS, BackendPool
from shared.errors import BadGateway, DeploymentNotFound, ErrorResponse, GatewayTimeout, Throttled
from shared.exchange import Attempt


class UpstreamAnswer(Protocol):
    """What `send` returns: an upstream response whose body has not been forwarded yet."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def head(self) -> bytes:
        """Body bytes already read: the whole body for statuses >= 400 (AOAI errors are small
        JSON; a 404 is judged by its `error.code`, and a failure passed through must keep its
        bytes), whatever was read otherwise (may be empty). The handler forwards head + the rest."""
        ...

    async def aclose(self) -> None:
        """Release the connection; `status`, `headers` and `head` must stay readable after it."""
        ...


@dataclass(slots=True)
class AiohttpAnswer:
    """An `UpstreamAnswer` over an aiohttp response (see `read_answer`)."""

    response: aiohttp.ClientResponse
    head: bytes = b""

    @property
    def status(self) -> int:
        return self.response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers

    async def aclose(self) -> None:
        self.response.release()


async def read_answer(response: aiohttp.ClientResponse) -> AiohttpAnswer:
    """Wrap a response for the loop: error bodies are read whole, other bodies are left untouched.

    Call it inside `send` right after the response headers arrive; a read error closes the
    response and propagates (classified like any transport error).
    """
    if response.status < 400:
        return AiohttpAnswer(response)
    try:
        return AiohttpAnswer(response, await response.read())
    except BaseException:
        response.close()
        raise


A = TypeVar("A", bound=UpstreamAnswer)

#: answer: forward `answer` (upstream's, good or the final failure); throttled: answer 429 with
#: `retry_after`; failed: answer 504 when `error_kind` is "timeout", else 502; no_backend: no
#: backend is configured for the deployment, answer 404 `DeploymentNotFound`.
Verdict = Literal["answer", "throttled", "failed", "no_backend"]

_QUERY = re.compile(r"\?[^\s'\"]*")


@dataclass(slots=True)
class FailoverResult(Generic[A]):
    verdict: Verdict
    attempts: list[Attempt] = field(default_factory=list)
    answer: A | None = None
    #: The backend whose answer is forwarded.
    backend: Backend | None = None
    #: Seconds until a backend is free, for the gateway's own 429 (`retry-after`, `retry-after-ms`).
    retry_after: float | None = None
    #: The last transport error when no backend answered (None for an answer).
    error: BaseException | None = None
    error_kind: ErrorKind | None = None

    def response_headers(self) -> dict[str, str]:
        """`x-gateway-backend` (when an upstream answer is forwarded) and `x-gateway-attempts`."""
        headers = {"x-gateway-attempts": str(len(self.attempts))}
        if self.backend is not None:
            headers["x-gateway-backend"] = self.backend.name
        return headers

    def gateway_error(self) -> ErrorResponse | None:
        """The gateway's own AOAI-shaped answer when no upstream answer is forwarded, else None."""
        if self.verdict == "answer":
            return None
        if self.verdict == "throttled":
            wait = max(0.0, self.retry_after or 0.0)
            seconds = max(1, math.ceil(wait))
            return Throttled(
                f"Every backend for this deployment is busy; retry after {seconds} seconds.",
                headers={"retry-after": str(seconds), "retry-after-ms": str(math.ceil(wait * 1000))},
            )
        if self.verdict == "no_backend":
            return DeploymentNotFound(
                "The API deployment for this resource does not exist. If you created the deployment "
                "within the last 5 minutes, please wait a moment and try again."
            )
        if self.error_kind == "timeout":
            return GatewayTimeout("The upstream Azure OpenAI service did not answer in time.")
        return BadGateway("The upstream Azure OpenAI service could not be reached.")


def describe(error: BaseException) -> str:
    """A short, safe description of a transport error for the exchange (no query strings)."""
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - some exceptions' __str__ needs state they were not given
        text = ""
    name = type(error).__name__
    return _QUERY.sub("?…", f"{name}: {text}" if text else name)


async def _close_quietly(answer: UpstreamAnswer) -> None:
    try:
        await answer.aclose()
    except Exception:  # noqa: BLE001 - releasing a connection we are done with must not fail the request
        pass


async def run_failover(
    send: Callable[[Backend], Awaitable[A]],
    pool: BackendPool,
    deployment: str | None,
    *,
    pinned: str | None = None,
    policy: RoutingPolicy | None = None,
    clock: Callable[[], float] | None = None,
) -> FailoverResult[A]:
    """Send the request to backends in plan order; stop at the first answer not to fail over.

    `pinned` is the backend name from Responses API affinity (see proxy/routing/affinity.py): it is the
    only backend tried. At most `policy.max_attempts` attempts are made, and none starts after
    `policy.deadline_seconds` from the start. Every attempt is recorded in `attempts` and fed back
    to the pool (cooldowns, circuit breaker).
    """
    policy = policy or pool.policy
    clock = clock or pool.clock
    started = clock()
    pinned_backend = pool.pinned(pinned, deployment)
    plan = pool.plan(deployment, pinned=pinned)
    if not plan:
        if not pool.serving(deployment):
            return FailoverResult(verdict="no_backend")
        wait = pool.retry_after(deployment)
        return FailoverResult(verdict="throttled", retry_after=TRIAL_WAIT_SECONDS if wait is None else wait)

    attempts: list[Attempt] = []
    held: list[tuple[Backend, A, Attempt]] = []
    tried: set[str] = set()
    last_error: BaseException | None = None
    last_kind: ErrorKind | None = None
    for backend in plan:
        if len(attempts) >= policy.max_attempts:
            break
        if attempts and clock() - started >= policy.deadline_seconds:
            break
        lease = pool.acquire(backend, deployment, pinned=backend is pinned_backend)
        if lease is None:
            continue  # it started cooling down or tripped since the plan was made
        tried.add(backend.name)
        t0 = clock()
        try:
            answer = await send(backend)
        except asyncio.CancelledError:
            pool.abandon(lease)
            raise
        except Exception as exc:  # noqa: BLE001 - classified below; unknown errors end the loop
            duration = (clock() - t0) * 1000.0
            kind = classify_error(exc)
            attempts.append(
                Attempt(
                    backend=backend.name,
                    status=None,
                    duration_ms=duration,
                    outcome=kind or "error",
                    error=describe(exc),
                )
            )
            if kind is None:
                pool.abandon(lease)
                return FailoverResult(verdict="failed", attempts=attempts, error=exc)
            pool.finish(lease, Outcome.failed(kind))
            last_error, last_kind = exc, kind
            continue
        duration = (clock() - t0) * 1000.0
        reason = should_fail_over(answer.status, answer.head)
        pool.finish(lease, Outcome(status=answer.status, headers=answer.headers, reason=reason))
        attempt = Attempt(backend=backend.name, status=answer.status, duration_ms=duration, outcome=reason or "served")
        attempts.append(attempt)
        if reason is None:
            return FailoverResult(verdict="answer", attempts=attempts, answer=answer, backend=backend)
        await _close_quietly(answer)
        held.append((backend, answer, attempt))

    if held:
        backend, answer, attempt = _pass_through(held, pool, deployment)
        attempt.outcome = "served"
        return FailoverResult(verdict="answer", attempts=attempts, answer=answer, backend=backend)
    # A pinned request cannot go elsewhere, so other backends' cooldowns do not concern it.
    others = [] if pinned_backend is not None else [b for b in pool.serving(deployment) if b.name not in tried]
    waits = [w for w in (pool.free_in(b, deployment) for b in others) if w > 0]
    if waits or last_error is None:
        # Nobody answered, but some backend will be free later (or none could be tried at all):
        # an honest 429 beats a 502 the client cannot act on.
        wait = min(waits) if waits else pool.retry_after(deployment)
        return FailoverResult(
            verdict="throttled",
            attempts=attempts,
            retry_after=TRIAL_WAIT_SECONDS if wait is None else wait,
            error=last_error,
            error_kind=last_kind,
        )
    return FailoverResult(verdict="failed", attempts=attempts, error=last_error, error_kind=last_kind)


def _pass_through(
    held: list[tuple[Backend, A, Attempt]], pool: BackendPool, deployment: str | None
) -> tuple[Backend, A, Attempt]:
    """The held answer the client gets: the 429 whose backend is free soonest, else the last one."""
    throttled = [h for h in held if h[2].outcome == "throttled"]
    if throttled:
        return min(throttled, key=lambda h: pool.free_in(h[0], deployment))
    return held[-1]
