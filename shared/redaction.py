"""Secrets out of headers, query strings and JSON bodies, case-insensitively, before anything is stored."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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


#: JSON body fields whose values are credentials (compared lower-case): Azure "On Your Data"
#: `data_sources[].parameters.authentication` (and `embedding_dependency.authentication`) carries
#: keys, connection strings and tokens; an MCP tool carries `authorization` or secret `headers`.
SECRET_BODY_FIELDS = frozenset(
    {
        "api_key",
        "apikey",
        "connection_string",
        "access_token",
        "encoded_api_key",
        "client_secret",
        "password",
        "authorization",
        "x-api-key",
        *SECRET_HEADERS,
    }
)

#: Fields that are credentials only inside an `authentication` object: elsewhere `key` is ordinary
#: (a tool parameter named "key", a metadata key).
SECRET_AUTHENTICATION_FIELDS = frozenset({"key"})


_SCALARS = frozenset({str, int, float, bool, type(None)})


def redact_body_secrets(value: Any) -> Any:
    """A parsed JSON body with credential values replaced; the same object when there are none.

    Copy on write: the common body (no credentials) costs one walk and no allocation. A secret
    field's value (a string, number or list) is replaced whole, except an object, which is walked
    instead: in a JSON schema (`tools[].function.parameters.properties.password`) the name belongs
    to a parameter, not to a credential.
    """
    return _redact(value, None)


def _redact(value: Any, parent: str | None) -> Any:
    if isinstance(value, dict):
        changed: dict[Any, Any] | None = None
        for key, item in value.items():
            name = key.lower() if isinstance(key, str) else None
            secret = name in SECRET_BODY_FIELDS or (parent == "authentication" and name in SECRET_AUTHENTICATION_FIELDS)
            if secret and item is not None and not isinstance(item, (dict, bool)) and item != REDACTED:
                new: Any = REDACTED
            else:
                new = _redact(item, name)
            if new is not item:
                if changed is None:
                    changed = dict(value)
                changed[key] = new
        return value if changed is None else changed
    if isinstance(value, list):
        if _SCALARS.issuperset(map(type, value)):
            return value  # token ids, embedding inputs: nothing to look into (checked in C, not per item)
        out: list[Any] | None = None
        for i, item in enumerate(value):
            new = _redact(item, parent)
            if new is not item:
                if out is None:
                    out = list(value)
                out[i] = new
        return value if out is None else out
    return value
