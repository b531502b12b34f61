"""Every error the gateway raises on purpose, in one hierarchy under `GatewayError`.

`ErrorResponse` and its subclasses are answers: an HTTP status, an AOAI error code and a message
safe to show the client, serialized once in AOAI's shape (`{"error": {"code", "message"}}`, which
the OpenAI SDKs parse). The others are internal conditions, each caught where it is handled:
configuration at start-up, a broken upstream stream in the relay, a store or a schema in the parser.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


# ------------------------------------------------------------------------------------------ answers
class ErrorResponse(GatewayError):
    """An answer to the client: status, AOAI-style code, and a message safe to show."""

    status: int = 500
    code: str = "InternalServerError"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.body())


class BadRequest(ErrorResponse):
    status, code = 400, "BadRequest"


class MethodNotAllowed(ErrorResponse):
    status, code = 405, "405"


class Unauthorized(ErrorResponse):
    status, code = 401, "401"


class NotFound(ErrorResponse):
    status, code = 404, "404"


class DeploymentNotFound(ErrorResponse):
    status, code = 404, "DeploymentNotFound"


class RealtimeNotSupported(ErrorResponse):
    """A WebSocket upgrade to the Realtime API: an HTTP-triggered function cannot hold a WebSocket."""

    status, code = 400, "WebSocketNotSupported"


class DeploymentNotAllowed(ErrorResponse):
    """The caller's audience may not use this deployment or operation (`AUDIENCE_POLICIES`)."""

    status, code = 403, "deployment_not_allowed"


class RequestTimeout(ErrorResponse):
    status, code = 408, "Timeout"


class PayloadTooLarge(ErrorResponse):
    status, code = 413, "PayloadTooLarge"


class HeadersTooLarge(ErrorResponse):
    status, code = 431, "RequestHeaderFieldsTooLarge"


class Throttled(ErrorResponse):
    status, code = 429, "429"


class BadGateway(ErrorResponse):
    status, code = 502, "BadGateway"


class GatewayTimeout(ErrorResponse):
    status, code = 504, "GatewayTimeout"


class BudgetExceeded(ErrorResponse):
    """429: the request's worst case does not fit in a budget that applies. Retrying before the
    reset cannot help, so OpenAI SDKs are told not to (`x-should-retry: false`)."""

    status, code = 429, "budget_exceeded"

    def __init__(self, message: str, *, budget: str, reset_at: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers={"x-should-retry": "false", **(headers or {})})
        self.budget, self.reset_at = budget, reset_at

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "budget": self.budget, "reset_at": self.reset_at}}


class BudgetStoreUnavailable(ErrorResponse):
    """503: the budget store cannot be reached and a budget that applies fails closed."""

    status, code = 503, "budget_store_unavailable"


# ------------------------------------------------------------------------------------------ internal
class ConfigurationError(GatewayError):
    """Invalid app settings: raised at start-up with a message that names the bad entry."""


class UpstreamBroken(GatewayError):
    """The upstream body failed mid-stream; raised out of the client's body to abort its connection."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(f"upstream response for {request_id} broke after its first byte: {reason}")
        self.request_id = request_id
        self.reason = reason


class ContentSafetyError(GatewayError):
    """A Content Safety call failed for good (after retries). The message holds no secret."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class IncompleteExchange(GatewayError, ValueError):
    """Some store items of an exchange are missing (or it has none)."""


class PoisonExchange(GatewayError, ValueError):
    """A stored exchange that can never be read as one (not JSON, fields missing or of the wrong
    type): retrying cannot help. `data` is its JSON object when the text at least parsed."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.data = data


class ParseBudgetExceeded(GatewayError, RuntimeError):
    """An exchange took more of the parser (time, or bytes to consolidate) than its budget allows."""


class InvalidRecord(GatewayError, ValueError):
    """A usage record that does not match the schema; the message lists every violation."""


class EncodingDataError(GatewayError, RuntimeError):
    """The shipped rank file is missing or does not match tiktoken's expected hash."""


class BatchIncomplete(GatewayError, RuntimeError):
    """Some events were neither recorded nor dead-lettered; the batch must be delivered again."""


class BudgetStoreDown(GatewayError):
    """The budget store failed (after the adapter's own retries)."""


class BudgetConflict(GatewayError, RuntimeError):
    """A budget ledger step lost the optimistic-concurrency race too many times in a row."""
