"""Secrets out of headers and query strings, case-insensitively, before anything is stored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

REDACTED = "[REDACTED]"

#: Header names whose values are credentials (compared lower-case).
SECRET_HEADERS = frozenset(
    {
        "api-key",
        "authorization",
        "proxy-authorization",
        "x-functions-key",
        "ocp-apim-subscription-key",
        "cookie",
        "set-cookie",
        "x-ms-token-aad-access-token",
        "x-ms-token-aad-id-token",
    }
)

#: Query parameter names whose values are credentials (compared lower-case).
SECRET_QUERY_PARAMS = frozenset({"api-key", "code", "subscription-key", "sig", "access_token"})


def is_secret_header(name: str) -> bool:
    return name.lower() in SECRET_HEADERS


def redact_headers(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """Lower-case names, join repeated headers with ', ', replace secret values."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        value = REDACTED if key in SECRET_HEADERS else value
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def redact_query(params: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """Query parameters as a dict (last value wins), secret values replaced."""
    items = params.items() if isinstance(params, Mapping) else params
    return {k: (REDACTED if k.lower() in SECRET_QUERY_PARAMS else v) for k, v in items}


def forwardable_query(params: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The client's query without its credentials, for the upstream call."""
    return [(k, v) for k, v in params if k.lower() not in SECRET_QUERY_PARAMS]
