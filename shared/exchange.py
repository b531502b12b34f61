"""The Exchange: one client request and what answered it, as stored by the proxy and read by the parser.

The JSON form is documented in docs/exchange-format.md. Large exchanges are split into store items
of at most 1 MB (Cosmos DB items are limited to 2 MB) and joined again by `from_items`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from shared.errors import IncompleteExchange

SCHEMA_VERSION = 1
MAX_ITEM_BYTES = 1_000_000
#: Raw bytes per split piece, so that its base64 text stays within MAX_ITEM_BYTES.
_PIECE_BYTES = MAX_ITEM_BYTES // 4 * 3 - 3000

BodyEncoding = Literal["json", "base64", "empty"]


def encode_body(raw: bytes, content_type: str | None) -> tuple[Any, BodyEncoding]:
    """A body in its stored form: parsed JSON when it is JSON, else {"base64": ...}."""
    if not raw:
        return None, "empty"
    if content_type is None or "json" in content_type.lower():
        try:
            return orjson.loads(raw), "json"
        except orjson.JSONDecodeError:
            pass
    return {"base64": base64.b64encode(raw).decode("ascii")}, "base64"


def decode_body(body: Any, encoding: BodyEncoding) -> bytes:
    """The original bytes of a stored body (JSON bodies come back re-serialized)."""
    if encoding == "empty" or body is None:
        return b""
    if encoding == "base64":
        return base64.b64decode(body["base64"])
    return orjson.dumps(body)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Identity:
    """Who called, as APIM (or the dev host) stated it in `x-gateway-*` headers."""

    subscription_id: str = "unknown"
    subscription_name: str = "unknown"
    product: str = "unknown"
    user_id: str | None = None
    client_ip: str | None = None


@dataclass(slots=True)
class CapturedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None
    body_encoding: BodyEncoding = "empty"
    body_bytes: int = 0


@dataclass(slots=True)
class CapturedResponse:
    status: int
    headers: dict[str, str]
    body: Any = None
    body_encoding: BodyEncoding = "empty"
    body_bytes: int = 0
    #: The raw event-stream text in arrival order, when the response was `text/event-stream`.
    sse: str | None = None


@dataclass(slots=True)
class Timings:
    """Milliseconds since the proxy received the request (monotonic clock)."""

    received_at: str
    upstream_first_byte_ms: float | None = None
    last_byte_ms: float | None = None
    #: Time the gateway itself added before the first byte (`x-gateway-overhead-ms`).
    gateway_overhead_ms: float | None = None


@dataclass(slots=True)
class Attempt:
    """One try against one backend."""

    backend: str
    status: int | None
    duration_ms: float
    #: "served" for the attempt whose answer reached the client, else why the proxy moved on.
    outcome: str
    error: str | None = None
    #: The span id this attempt's `traceparent` named as parent of AOAI's work (None without a trace).
    span_id: str | None = None


@dataclass(slots=True)
class Exchange:
    request_id: str
    request: CapturedRequest
    timings: Timings
    identity: Identity = field(default_factory=Identity)
    response: CapturedResponse | None = None
    backend: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    client_disconnected: bool = False
    #: Set when the gateway answered by itself: {"code": ..., "message": ...}.
    gateway_error: dict[str, str] | None = None
    #: The proxy added `stream_options.include_usage` and held the usage chunk back from the client.
    usage_injected: bool = False
    #: In-stream content-safety enforcement outcome (proxy/streams/enforcement.py), when the product enforces.
    enforcement: dict[str, Any] | None = None
    #: The audience policy entry that applied (`{"rule": "<key>|default"}`, shared/audience.py).
    audience: dict[str, Any] | None = None
    #: The response cache's part: {"status": hit|miss|bypass|store, "reason", "stored", "usage"...}.
    cache: dict[str, Any] | None = None
    #: What was kept (shared/privacy/capture.py): "full", "redacted", "metadata" or "none".
    capture_level: str = "full"
    #: How the level was chosen and applied: {"rule": CAPTURE_LEVELS key, "pii": distinct values per kind}.
    privacy: dict[str, Any] | None = None
    #: Below `full`: the usage record and details computed from the whole exchange before bodies were
    #: reduced ({"record": ..., "details": ...}); the parser uses them as they are.
    normalized: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON form as plain dicts, like `dataclasses.asdict` but shallow: bodies are shared,
        not copied (a deep copy of a 5 MB body costs more than storing it). Treat it as read-only."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Exchange:
        d = dict(data)
        response = d.get("response")
        return cls(
            request_id=d["request_id"],
            request=CapturedRequest(**d["request"]),
            timings=Timings(**d["timings"]),
            identity=Identity(**(d.get("identity") or {})),
            response=CapturedResponse(**response) if response else None,
            backend=d.get("backend"),
            attempts=[Attempt(**a) for a in d.get("attempts") or []],
            client_disconnected=bool(d.get("client_disconnected", False)),
            gateway_error=d.get("gateway_error"),
            usage_injected=bool(d.get("usage_injected", False)),
            enforcement=d.get("enforcement"),
            audience=d.get("audience"),
            cache=d.get("cache"),
            capture_level=str(d.get("capture_level") or "full"),
            privacy=d.get("privacy"),
            normalized=d.get("normalized"),
            schema_version=int(d.get("schema_version", SCHEMA_VERSION)),
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # orjson serializes (slotted) dataclasses natively, in field order

    @classmethod
    def from_json(cls, raw: bytes | str) -> Exchange:
        return cls.from_dict(orjson.loads(raw))


def _plain(value: Any) -> Any:
    """A field value in JSON form: dataclasses (and lists of them) as dicts, in field order."""
    if hasattr(type(value), "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if type(value) is list and value and hasattr(type(value[0]), "__dataclass_fields__"):
        return [_plain(v) for v in value]  # attempts; a JSON body's lists are left as they are
    return value


def to_items(exchange: Exchange, max_item_bytes: int = MAX_ITEM_BYTES) -> list[dict[str, Any]]:
    """Store items for one exchange: one readable item when it fits, else base64 pieces in order."""
    rid = exchange.request_id
    data = exchange.to_dict()
    raw = exchange.to_json()
    if len(raw) <= max_item_bytes - 1000:
        return [{"id": f"{rid}.0", "requestId": rid, "seq": 0, "count": 1, "exchange": data}]
    piece = min(_PIECE_BYTES, (max_item_bytes - 1000) // 4 * 3)
    pieces = [raw[i : i + piece] for i in range(0, len(raw), piece)]
    return [
        {
            "id": f"{rid}.{seq}",
            "requestId": rid,
            "seq": seq,
            "count": len(pieces),
            "part": base64.b64encode(p).decode("ascii"),
        }
        for seq, p in enumerate(pieces)
    ]


def from_items(items: list[dict[str, Any]]) -> Exchange:
    """Join store items (in any order) back into the exchange."""
    if not items:
        raise IncompleteExchange("no items")
    ordered = sorted(items, key=lambda it: int(it["seq"]))
    count = int(ordered[0]["count"])
    if [int(it["seq"]) for it in ordered] != list(range(count)):
        raise IncompleteExchange(f"expected {count} items, have seq {[it['seq'] for it in ordered]}")
    if count == 1 and "exchange" in ordered[0]:
        return Exchange.from_dict(ordered[0]["exchange"])
    return Exchange.from_json(b"".join(base64.b64decode(it["part"]) for it in ordered))
