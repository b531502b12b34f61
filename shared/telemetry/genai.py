"""Usage records and exchanges in OpenTelemetry GenAI semantic-convention terms (pure functions).

Follows the OpenTelemetry semantic conventions for generative AI, version 1.41.0
(`gen_ai.provider.name`, `gen_ai.usage.input_tokens`/`output_tokens`, operation names `chat`,
`text_completion`, `embeddings`). The gateway's own facts go under `gateway.`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SEMCONV_VERSION = "1.41.0"
SEMCONV_SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
PROVIDER = "azure.ai.openai"

#: Record `api` -> `gen_ai.operation.name` (well-known values where one exists).
_OPERATIONS = {
    "chat.completions": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}

#: Request body key -> `gen_ai.request.*` attribute (Chat, Completions, Responses, Embeddings).
_REQUEST_PARAMS = (
    ("max_tokens", "gen_ai.request.max_tokens"),
    ("max_completion_tokens", "gen_ai.request.max_tokens"),
    ("max_output_tokens", "gen_ai.request.max_tokens"),
    ("temperature", "gen_ai.request.temperature"),
    ("top_p", "gen_ai.request.top_p"),
    ("frequency_penalty", "gen_ai.request.frequency_penalty"),
    ("presence_penalty", "gen_ai.request.presence_penalty"),
    ("seed", "gen_ai.request.seed"),
    ("n", "gen_ai.request.choice.count"),
)


def operation_name(api: str | None) -> str:
    return _OPERATIONS.get(api or "", api or "other")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def request_attributes(request: Mapping[str, Any]) -> dict[str, Any]:
    """`gen_ai.request.*` from the client's (normalized) request body."""
    out: dict[str, Any] = {}
    for key, name in _REQUEST_PARAMS:
        value = request.get(key)
        if _number(value) and name not in out:
            out[name] = value
    stop = request.get("stop")
    if isinstance(stop, str):
        out["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        out["gen_ai.request.stop_sequences"] = list(stop)
    fmt = request.get("encoding_format")
    if isinstance(fmt, str):
        out["gen_ai.request.encoding_formats"] = [fmt]
    return out


def error_type(record: Mapping[str, Any]) -> str | None:
    """`error.type`: the error code when there is one, else the status for an HTTP error."""
    status = record.get("status_code")
    if record.get("error_code"):
        return str(record["error_code"])
    if isinstance(status, int) and status >= 400:
        return str(status)
    if record.get("client_disconnected"):
        return "client_disconnected"
    return None


def common_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a server span, a client span and every metric point share."""
    out: dict[str, Any] = {
        "gen_ai.operation.name": operation_name(record.get("api")),
        "gen_ai.provider.name": PROVIDER,
    }
    if record.get("deployment"):
        out["gen_ai.request.model"] = record["deployment"]
    if record.get("model"):
        out["gen_ai.response.model"] = record["model"]
    err = error_type(record)
    if err is not None:
        out["error.type"] = err
    return out


def gateway_attributes(record: Mapping[str, Any]) -> dict[str, Any]:
    """The gateway's own facts, under `gateway.`."""
    out: dict[str, Any] = {"gateway.request_id": record.get("request_id") or ""}
    for key in (
        "subscription_id",
        "subscription_name",
        "product",
        "backend",
        "attempts",
        "usage_source",
        "cost",
        "api",
        "stream",
        "gateway_overhead_ms",
        "status_code",
        "user_id",
    ):
        value = record.get(key)
        if value is not None:
            out[f"gateway.{key}"] = value
    return out


def response_attributes(record: Mapping[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    """`gen_ai.response.*` and `gen_ai.usage.*` (known once the answer is parsed)."""
    out: dict[str, Any] = {}
    rid = response.get("id")
    if isinstance(rid, str) and rid:
        out["gen_ai.response.id"] = rid
    reasons = record.get("finish_reasons")
    if isinstance(reasons, list) and reasons:
        out["gen_ai.response.finish_reasons"] = [str(r) for r in reasons]
    if record.get("usage_source") != "none":
        out["gen_ai.usage.input_tokens"] = int(record.get("prompt_tokens") or 0)
        if operation_name(record.get("api")) != "embeddings":
            out["gen_ai.usage.output_tokens"] = int(record.get("completion_tokens") or 0)
    return out
