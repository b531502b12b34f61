"""What one upstream attempt's answer means for routing: fail over or not, and is the backend unwell.

AOAI answers a throttle with 429, a missing deployment with 404 `DeploymentNotFound`, and trouble
with 500/502/503/504; the network fails with aiohttp connection errors or timeouts. Everything else
(200s, 400 bad request, 401, 400 `content_filter`, ...) is the answer the client must get unchanged:
trying another account would not change it and could double-bill the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import aiohttp
import orjson

FailoverReason = Literal["throttled", "server_error", "connect_error", "timeout", "deployment_not_found"]
ErrorKind = Literal["connect_error", "timeout"]

#: Upstream statuses that make the proxy try the next backend (404 only with `DeploymentNotFound`).
SERVER_ERROR_STATUSES = frozenset({500, 502, 503, 504})
#: Reasons that count against a backend's health (a 429 does not: the account is up, just busy).
HEALTH_FAILURES: frozenset[FailoverReason] = frozenset({"server_error", "connect_error", "timeout"})


def classify_error(error: BaseException) -> ErrorKind | None:
    """A transport failure as `timeout` or `connect_error`; None for anything else (a bug, not the network).

    aiohttp's `ServerTimeoutError` (and its `ConnectionTimeoutError`/`SocketTimeoutError`) is both a
    connection error and a `TimeoutError`, so timeouts are checked first.
    """
    if isinstance(error, TimeoutError):
        return "timeout"
    if isinstance(error, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ConnectionError)):
        return "connect_error"
    if isinstance(error, OSError) and not isinstance(error, aiohttp.ClientError):
        return "connect_error"
    return None


def error_code(body: bytes | str | None) -> str | None:
    """`error.code` of an AOAI-shaped error body, or None when the body is not one."""
    if not body:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None


def should_fail_over(
    status: int | None, body_or_error: bytes | str | BaseException | None = None
) -> FailoverReason | None:
    """Why the proxy should try the next backend after this answer, or None to pass it through.

    `status` is None when no HTTP answer came back; `body_or_error` is then the exception. For a 404
    it is the whole (small) error body, read before deciding.
    """
    if isinstance(body_or_error, BaseException):
        return classify_error(body_or_error)
    if status is None:
        return None
    if status == 429:
        return "throttled"
    if status in SERVER_ERROR_STATUSES:
        return "server_error"
    if status == 404 and error_code(body_or_error) == "DeploymentNotFound":
        return "deployment_not_found"
    return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt produced, as the backend pool needs it to update health and cooldowns."""

    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Set when no HTTP answer came back.
    error: ErrorKind | None = None
    #: The classified reason to move on (None: a good or final answer).
    reason: FailoverReason | None = None

    @classmethod
    def answered(cls, status: int, headers: Mapping[str, str], body: bytes | str | None = None) -> Outcome:
        return cls(status=status, headers=headers, reason=should_fail_over(status, body))

    @classmethod
    def failed(cls, kind: ErrorKind) -> Outcome:
        return cls(error=kind, reason=kind)

    @property
    def is_health_failure(self) -> bool:
        return self.reason in HEALTH_FAILURES

    @property
    def is_throttle(self) -> bool:
        return self.reason == "throttled"
