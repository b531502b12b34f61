"""AOAI-shaped error bodies the simulator answers with, worded like the real service."""

from __future__ import annotations

from typing import Any

import orjson

from .filters import blocked_prompt, jailbreak_prompt

_MESSAGES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is invalid."),
    401: (
        "401",
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
        "for an active subscription and use a correct regional API endpoint for your resource.",
    ),
    403: ("403", "Access denied."),
    404: ("404", "Resource not found"),
    408: ("Timeout", "The operation was timeout."),
    413: ("PayloadTooLarge", "The request payload is too large."),
    429: (
        "429",
        "Requests to the {operation} Operation under Azure OpenAI API version {version} have exceeded token "
        "rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} second. Please go here: "
        "https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
    ),
    500: (
        "InternalServerError",
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request. Please try again later."),
    504: ("GatewayTimeout", "The operation was timeout."),
}


def error_body(code: str, message: str, **extra: Any) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message, **extra}})


def status_body(
    status: int, *, operation: str = "ChatCompletions_Create", version: str = "", seconds: int = 1
) -> bytes:
    code, message = _MESSAGES.get(status, (str(status), f"Simulated error {status}."))
    return error_body(code, message.format(operation=operation, version=version or "v1", seconds=seconds))


DEPLOYMENT_NOT_FOUND = error_body(
    "DeploymentNotFound",
    "The API deployment for this resource does not exist. If you created the deployment within the last "
    "5 minutes, please wait a moment and try again.",
)
STREAM_OPTIONS_UNRECOGNIZED = orjson.dumps(
    {
        "error": {
            "code": None,
            "message": "Unrecognized request argument supplied: stream_options",
            "param": None,
            "type": "invalid_request_error",
        }
    }
)


def rate_limited_body(kind: str, *, operation: str, version: str, seconds: int) -> bytes:
    """The 429 of a deployment whose `kind` ("call" or "token") rate limit is spent."""
    return error_body(
        "429",
        f"Requests to the {operation} Operation under Azure OpenAI API version {version or 'v1'} have exceeded "
        f"{kind} rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds. Please go "
        "here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.",
    )


_FILTER_MESSAGE = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please "
    "modify your prompt and retry. To learn more about our content filtering policies please read our "
    "documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)
#: The prompt-filter 400 of chat/completions/embeddings/images (note `innererror` + singular
#: `content_filter_result`, as the service sends it, unlike the spec's spelling).
CONTENT_FILTER = orjson.dumps(
    {
        "error": {
            "message": _FILTER_MESSAGE,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": blocked_prompt()},
        }
    }
)
#: The Responses API reports filtering as `content_filters[]` instead of `innererror`.
CONTENT_FILTER_RESPONSES = orjson.dumps(
    {
        "error": {
            "message": _FILTER_MESSAGE,
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "content_filter",
            "content_filters": [{"blocked": True, "source_type": "prompt", "content_filter_results": blocked_prompt()}],
        }
    }
)

#: A prompt Prompt Shields blocked (a deployment whose content filter runs the jailbreak model in
#: block mode): the same 400, with `jailbreak` filtered and detected (documented shape).
JAILBREAK = orjson.dumps(
    {
        "error": {
            "message": _FILTER_MESSAGE,
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": jailbreak_prompt()},
        }
    }
)
JAILBREAK_RESPONSES = orjson.dumps(
    {
        "error": {
            "message": _FILTER_MESSAGE,
            "type": "invalid_request_error",
            "param": "prompt",
            "code": "content_filter",
            "content_filters": [
                {"blocked": True, "source_type": "prompt", "content_filter_results": jailbreak_prompt()}
            ],
        }
    }
)
