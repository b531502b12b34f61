"""The gateway's own errors, each mapped once to an AOAI-shaped JSON error response.

AOAI answers errors as `{"error": {"code": ..., "message": ...}}`; clients (the OpenAI SDKs) parse
that shape, so the gateway's own failures use it too.
"""

from __future__ import annotations

from typing import Any

import orjson


class GatewayError(Exception):
    """Base: an HTTP status, an AOAI-style error code and a message safe to show the client."""

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


class BadRequest(GatewayError):
    status, code = 400, "BadRequest"


class MethodNotAllowed(GatewayError):
    status, code = 405, "405"


class Unauthorized(GatewayError):
    status, code = 401, "401"


class NotFound(GatewayError):
    status, code = 404, "404"


class DeploymentNotFound(GatewayError):
    status, code = 404, "DeploymentNotFound"


class PayloadTooLarge(GatewayError):
    status, code = 413, "PayloadTooLarge"


class Throttled(GatewayError):
    status, code = 429, "429"


class BadGateway(GatewayError):
    status, code = 502, "BadGateway"


class GatewayTimeout(GatewayError):
    status, code = 504, "GatewayTimeout"


class ConfigurationError(Exception):
    """Invalid app settings: raised at start-up with a message that names the bad entry."""
