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

from shared.errors import IncompleteExchange, PoisonExchange

SCHEMA_VERSION = 1
MAX_ITEM_BYTES = 1_000_000
#: Raw bytes per split piece, so that its base64 text stays within MAX_ITEM_BYTES.
_PIECE_BYTES = MAX_ITEM_BYTES // 4 * 3 - 3000

#: JSON nesting a body may have to be stored as parsed JSON. orjson writes at most 255 levels and a
#: body sits a few levels down in a store item (item, exchange, request, body) and in the parser's
#: details; a body nested deeper is stored as its raw bytes (base64) instead.
MAX_BODY_DEPTH = 200

BodyEncoding = Literal["json", "base64", "empty"]


def encode_body(raw: bytes, content_type: str | None) -> tuple[Any, BodyEncoding]:
    """A body in its stored form: parsed JSON when it is JSON (and can be written back), else
    {"base64": ...} of the bytes as received."""
    if not raw:
        return None, "empty"
    if content_type is None or "json" in content_type.lower():
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
        else:
            if not nested_deeper(parsed, MAX_BODY_DEPTH, raw):
                return parsed, "json"
    return {"base64": base64.b64encode(raw).decode("ascii")}, "base64"


def nested_deeper(value: Any, limit: int, raw: bytes | None = None) -> bool:
    """Whether a parsed JSON value nests more than `limit` containers deep.

    With its source text, a body holding fewer brackets than `limit` is answered without a walk;
    the walk is iterative (a deep value must not exhaust the interpreter's stack either)."""
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


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
    #: Budget admission (shared/budgets/keeper.py `Admission.marks`): holds taken, downgrade, store error.
    budget: dict[str, Any] | None = None
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
            budget=d.get("budget"),
            schema_version=int(d.get("schema_version", SCHEMA_VERSION)),
        )

    def to_json(self) -> bytes:
        """The JSON form; never raises. Should a body still not serialize (`encode_body` keeps
        too-deep bodies as bytes), that body is replaced by a note, so the exchange is stored."""
        return self._dumps()[0]

    def _dumps(self) -> tuple[bytes, bool]:
        """The JSON form, and whether a body had to be replaced to write it."""
        try:
            return orjson.dumps(self), False  # orjson serializes (slotted) dataclasses natively, in field order
        except TypeError as exc:
            return orjson.dumps(self._without_unserializable_bodies(str(exc))), True

    def _without_unserializable_bodies(self, reason: str) -> dict[str, Any]:
        data = self.to_dict()
        for side in ("request", "response"):
            part = data.get(side)
            if part is None:
                continue
            try:
                orjson.dumps(part["body"])
            except TypeError:
                note = f"body not serializable ({reason}); {part.get('body_bytes', 0)} bytes received"
                data[side] = {
                    **part,
                    "body": {"base64": base64.b64encode(note.encode()).decode("ascii")},
                    "body_encoding": "base64",
                }
        return data

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
    raw, replaced = exchange._dumps()
    if len(raw) <= max_item_bytes - 1000:
        data = orjson.loads(raw) if replaced else exchange.to_dict()
        return [{"id": f"{rid}.0", "requestId": rid, "seq": 0, "count": 1, "exchange": data}]
    return _pieces(rid, raw, max_item_bytes)


def to_item_rows(exchange: Exchange, max_item_bytes: int = MAX_ITEM_BYTES) -> list[tuple[int, int, bytes]]:
    """`to_items` as (seq, count, JSON) for a store that keeps items as JSON text: the exchange's
    JSON goes into its item as written, never turned back into objects and written again."""
    rid = exchange.request_id
    raw, _ = exchange._dumps()
    if len(raw) <= max_item_bytes - 1000:
        head = orjson.dumps({"id": f"{rid}.0", "requestId": rid, "seq": 0, "count": 1})
        return [(0, 1, head[:-1] + b',"exchange":' + raw + b"}")]
    return [(it["seq"], it["count"], orjson.dumps(it)) for it in _pieces(rid, raw, max_item_bytes)]


def _pieces(rid: str, raw: bytes, max_item_bytes: int) -> list[dict[str, Any]]:
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


def from_items(items: list[Any]) -> Exchange:
    """Join store items (in any order) back into the exchange.

    Raises IncompleteExchange when items are missing (they may still be landing), PoisonExchange
    when what is stored can never be read as an exchange."""
    if not items:
        raise IncompleteExchange("no items")
    try:
        ordered = sorted(items, key=lambda it: int(it["seq"]))
        count = int(ordered[0]["count"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PoisonExchange(f"store items without a valid seq/count: {type(exc).__name__}: {exc}") from exc
    if [int(it["seq"]) for it in ordered] != list(range(count)):
        raise IncompleteExchange(f"expected {count} items, have seq {[it['seq'] for it in ordered]}")
    data: Any = None
    try:
        if count == 1 and "exchange" in ordered[0]:
            data = ordered[0]["exchange"]
        else:
            data = orjson.loads(b"".join(base64.b64decode(it["part"]) for it in ordered))
        if not isinstance(data, dict):
            raise TypeError(f"the exchange is a JSON {type(data).__name__}, not an object")
        return Exchange.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise PoisonExchange(f"stored exchange is not readable: {reason}"[:500], data) from exc


#: Largest event that carries its exchange (Event Hubs takes events up to 1 MB, envelope included).
MAX_EVENT_BYTES = 1_000_000 - 4_000


def exchange_event(request_id: str, exchange_json: bytes) -> bytes | None:
    """An event that carries the exchange itself (`{"request_id", "exchange"}`), for when the store
    cannot take it; None when it would not fit in one event."""
    if len(exchange_json) + len(request_id) + 40 > MAX_EVENT_BYTES:
        return None
    return orjson.dumps({"request_id": request_id, "exchange": orjson.Fragment(exchange_json)})


def salvage(data: Any, request_id: str) -> Exchange | None:
    """What of an unreadable stored exchange can still be read: the request (with identity and
    timings when they are well-formed), so the parser can still write its record; None when even
    the request is not there."""
    if not isinstance(data, dict):
        return None
    request = _lenient(CapturedRequest, data.get("request"))
    if request is None:
        return None
    return Exchange(
        request_id=request_id,
        request=request,
        timings=_lenient(Timings, data.get("timings")) or Timings(received_at=utc_now_iso()),
        identity=_lenient(Identity, data.get("identity")) or Identity(),
        response=_lenient(CapturedResponse, data.get("response")),
    )


def _lenient(cls: Any, value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in value.items() if k in names})
    except TypeError:
        return None
