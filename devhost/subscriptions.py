"""Local subscription keys: what APIM does at the front door, for the dev host.

`LOCAL_SUBSCRIPTIONS` maps an api-key value to `{"id", "name", "product"}`. A request's key comes
from the `api-key` header, the `api-key` query parameter or `Authorization: Bearer <key>` (as the
OpenAI SDKs send it on the v1 surface): the same forms APIM accepts (policies/fragments/gateway-bearer.xml); a missing or
unknown key gets APIM's 401; a known key gets the `x-gateway-*` identity headers APIM would set,
after any the client sent are removed (a client must not choose its own identity).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from shared.errors import Unauthorized
from shared.settings import parse_json


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    name: str
    product: str


def parse_subscriptions(raw: str) -> dict[str, Subscription]:
    """Parse LOCAL_SUBSCRIPTIONS (its shape: shared/setting_shapes.py); raises ConfigurationError naming the bad entry."""
    entries = parse_json("LOCAL_SUBSCRIPTIONS", raw)
    return {
        key: Subscription(id=e.id, name=e.name or e.id, product=e.product or "standard") for key, e in entries.items()
    }


def new_local_key() -> str:
    return "local-" + secrets.token_urlsafe(24)


def key_from(headers: Iterable[tuple[str, str]]) -> str | None:
    """The caller's key: `api-key`, else `Authorization: Bearer <key>`."""
    bearer = None
    for name, value in headers:
        key = name.lower()
        if key == "api-key" and value:
            return value
        if key == "authorization" and value[:7].lower() == "bearer ":
            bearer = value[7:].strip() or None
    return bearer


_MISSING = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API."
_INVALID = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."


def authorize(
    subscriptions: dict[str, Subscription],
    headers: list[tuple[str, str]],
    client_ip: str | None,
    query_string: str = "",
) -> list[tuple[str, str]]:
    """The request headers as APIM forwards them, or Unauthorized (401) for a missing/unknown key."""
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    forwarded = authorize_raw(subscriptions, raw, client_ip, query_string.encode("latin-1"))
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in forwarded]


def _query_key(query_string: bytes) -> bytes | None:
    """The first non-empty `api-key` query parameter, percent-decoded."""
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=False):
        if name == "api-key" and value:
            return value.encode("latin-1")
    return None


def authorize_raw(
    subscriptions: dict[str, Subscription],
    headers: list[tuple[bytes, bytes]],
    client_ip: str | None,
    query_string: bytes = b"",
) -> list[tuple[bytes, bytes]]:
    """`authorize` on an ASGI scope's raw headers (what the dev host runs per request: one pass,
    nothing decoded but the key); names come back lower-case. The `api-key` header wins over the
    `api-key` query parameter, which wins over a bearer token (APIM's order: its key locations first)."""
    api_key = bearer = None
    kept = []
    for name, value in headers:
        lower = name.lower()
        if lower.startswith(b"x-gateway-"):
            continue
        kept.append((lower, value))  # ASGI names are lower-case; a server that did not lower them still gets lower
        if api_key is None:
            if lower == b"api-key" and value:
                api_key = value
            elif lower == b"authorization" and value[:7].lower() == b"bearer ":
                bearer = value[7:].strip() or None
    key = api_key or (_query_key(query_string) if b"api-key=" in query_string else None) or bearer
    if key is None:
        raise Unauthorized(_MISSING)
    sub = subscriptions.get(key.decode("latin-1"))
    if sub is None:
        raise Unauthorized(_INVALID)
    kept += [
        (b"x-gateway-request-id", str(uuid.uuid4()).encode()),
        (b"x-gateway-subscription-id", sub.id.encode("latin-1")),
        (b"x-gateway-subscription-name", sub.name.encode("latin-1")),
        (b"x-gateway-product", sub.product.encode("latin-1")),
    ]
    if client_ip:
        kept.append((b"x-gateway-client-ip", client_ip.encode("latin-1")))
    return kept
