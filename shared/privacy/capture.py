"""The capture level applied to one exchange, after the client's last byte and before it is stored.

The usage record is computed here, in memory, from the whole exchange (`normalize`), before
anything is dropped, and travels with the reduced exchange (`Exchange.normalized`): the parser
uses it as it is, so tokens and cost are the same at every level, including a streamed answer
whose usage had to be estimated from the text.

- `full`: unchanged (secrets were already redacted by the capture).
- `redacted`: every string of the request and answer bodies, the record's details and error
  messages with personal data replaced by typed placeholders (shared/privacy/pii.py), one
  numbering per exchange. A streamed answer is kept as its consolidated JSON rather than as raw
  events: a value split across two events cannot be found event by event. Binary bodies (audio,
  images, files) and data URLs are replaced by their size and SHA-256.
- `metadata`: no bodies; the details keep request options (model, sizes, limits), tool names
  without arguments, and the size and SHA-256 of the prompt and of the answer.
- `none`: as `metadata`, and the exchange is never stored (proxy/capture.py records it in place).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from shared.exchange import Exchange, decode_body
from shared.normalize.record import UsageRecord
from shared.normalize.texts import completion_text, prompt_text
from shared.normalize.usage import normalize
from shared.privacy.pii import PiiRedactor, Placeholders
from shared.privacy.policy import CaptureLevel, CapturePolicy

#: Request fields that are options, not content: kept at `metadata` (pricing reads size and quality).
OPTION_FIELDS = frozenset(
    {
        "model",
        "stream",
        "n",
        "size",
        "quality",
        "style",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "max_output_tokens",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "reasoning_effort",
        "service_tier",
        "dimensions",
        "encoding_format",
        "voice",
        "parallel_tool_calls",
        "store",
        "background",
        "logprobs",
        "top_logprobs",
        "output_format",
        "background_color",
    }
)
#: The pattern recognizers alone (header and query values at `metadata`).
_PATTERNS = PiiRedactor(secrets=False)
#: Strings longer than this that start with `data:` are payloads (images, audio) rather than text.
_DATA_URL_CHARS = 256


class CapturePrivacy:
    """CAPTURE_LEVELS and the PII recognizers, applied to finished exchanges (`apply`)."""

    def __init__(self, policy: CapturePolicy, pii: PiiRedactor | None = None) -> None:
        self.policy = policy
        # The capture already took secrets out (shared/redaction.py): only personal data is left.
        self.pii = pii or PiiRedactor(secrets=False)

    def level_of(self, exchange: Exchange) -> tuple[CaptureLevel, str]:
        resolved = self.policy.level_for(exchange.identity.product, exchange.identity.subscription_id)
        return resolved.value, resolved.rule

    def apply(self, exchange: Exchange) -> Exchange:
        level, rule = self.level_of(exchange)
        return reduce(exchange, level, rule, self.pii)


def reduce(exchange: Exchange, level: CaptureLevel, rule: str, pii: PiiRedactor) -> Exchange:
    """The exchange as stored at `level` (`rule`: the CAPTURE_LEVELS key that chose it)."""
    if level == "full":
        return replace(exchange, capture_level="full", privacy={"rule": rule})
    record, details = normalize(exchange)
    if level == "redacted":
        return _redacted(exchange, record, details, rule, pii)
    return _metadata(exchange, record, details, level, rule)


def _redacted(
    exchange: Exchange, record: UsageRecord, details: dict[str, Any], rule: str, pii: PiiRedactor
) -> Exchange:
    names = Placeholders()
    response = exchange.response
    pii.prefetch([exchange.request.body, details, response.body if response is not None else None])

    def clean(value: Any) -> Any:
        return pii.json(_without_payloads(value), names)

    request = exchange.request
    body, encoding = request.body, request.body_encoding
    if encoding == "json":
        body = clean(body)
    elif encoding == "base64":
        body, encoding = _text_or_digest(decode_body(body, encoding), pii, names)
    new_request = replace(
        request,
        body=body,
        body_encoding=encoding,
        path=pii.text(request.path, names),
        headers=_fields(request.headers, pii, names),
        query=_fields(request.query, pii, names),
    )
    new_details = clean(details)
    response = exchange.response
    if response is not None:
        response = replace(response, headers=_fields(response.headers, pii, names))
        if response.sse is not None:
            # Kept as its consolidated JSON (see the module docstring), redacted with the details.
            response = replace(response, sse=None, body=new_details.get("response"), body_encoding="json")
        elif response.body_encoding == "json":
            response = replace(response, body=clean(response.body))
        elif response.body_encoding == "base64":
            rbody, renc = _text_or_digest(decode_body(response.body, "base64"), pii, names)
            response = replace(response, body=rbody, body_encoding=renc)
    error = exchange.gateway_error
    if error is not None:
        error = {k: pii.text(v, names) if isinstance(v, str) else v for k, v in error.items()}
    parse_error = record.get("parse_error")
    if isinstance(parse_error, str):
        record["parse_error"] = pii.text(parse_error, names)
    attempts = [replace(a, error=pii.text(a.error, names)) if a.error else a for a in exchange.attempts]
    privacy: dict[str, Any] = {"rule": rule, "pii": names.distinct}
    return replace(
        exchange,
        request=new_request,
        response=response,
        gateway_error=error,
        attempts=attempts,
        capture_level="redacted",
        privacy=privacy,
        normalized={"record": record, "details": new_details},
    )


def _metadata(
    exchange: Exchange,
    record: UsageRecord,
    details: dict[str, Any],
    level: CaptureLevel,
    rule: str,
) -> Exchange:
    api = str(record.get("api") or "other")
    request_details: Mapping[str, Any] = details.get("request") or {}
    response_details: Mapping[str, Any] = details.get("response") or {}
    if not isinstance(request_details, Mapping):
        request_details = {}
    if not isinstance(response_details, Mapping):
        response_details = {}
    summary = {
        "request": {k: v for k, v in request_details.items() if k in OPTION_FIELDS and _scalar(v)},
        "tools": sorted(set(_tool_names(request_details.get("tools")))),
        "tool_calls": list(_tool_names(response_details, calls=True)),
        "prompt": _digest(prompt_text(api, request_details).encode("utf-8")),
        "completion": _digest(completion_text(api, response_details).encode("utf-8")),
        "request_body": _digest(decode_body(exchange.request.body, exchange.request.body_encoding)),
    }
    # Header and query values are metadata, but a client can put anything in them. The patterns
    # only: a second stage (a paid network call) is for texts, which this level does not keep.
    names, pii = Placeholders(), _PATTERNS
    request = replace(
        exchange.request,
        body=None,
        body_encoding="empty",
        headers=_fields(exchange.request.headers, pii, names),
        query=_fields(exchange.request.query, pii, names),
    )
    response = exchange.response
    if response is not None:
        response = replace(response, headers=_fields(response.headers, pii, names))
        raw = (
            response.sse.encode("utf-8")
            if response.sse is not None
            else decode_body(response.body, response.body_encoding)
        )
        summary["response_body"] = _digest(raw)
        response = replace(response, body=None, body_encoding="empty", sse=None)
    error = exchange.gateway_error
    if error is not None:
        error = {"code": error.get("code", "")}  # the message can quote the request
    if record.get("parse_error"):
        record["parse_error"] = str(record["parse_error"]).split(":", 1)[0]
    attempts = [replace(a, error=a.error.split(":", 1)[0]) if a.error else a for a in exchange.attempts]
    return replace(
        exchange,
        request=request,
        response=response,
        gateway_error=error,
        attempts=attempts,
        capture_level=level,
        privacy={"rule": rule},
        normalized={"record": record, "details": summary},
    )


def _scalar(value: Any) -> bool:
    return (
        value is None or isinstance(value, (str, int, float, bool)) and not (isinstance(value, str) and len(value) > 64)
    )


def _digest(raw: bytes) -> dict[str, Any]:
    return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def _tool_names(value: Any, *, calls: bool = False) -> Iterator[str]:
    """Names of tools (declared, or called in an answer), never their arguments."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, Mapping):
            fn = node.get("function")
            if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
                yield fn["name"]
            elif isinstance(node.get("name"), str) and (not calls or str(node.get("type", "")).endswith("_call")):
                yield node["name"]
            elif not calls and isinstance(node.get("type"), str):
                yield node["type"]  # a built-in tool: web_search, file_search, code_interpreter
            if calls:
                stack.extend(v for v in node.values() if isinstance(v, (list, Mapping)))


def _without_payloads(value: Any) -> Any:
    """Data URLs (base64 images and audio) replaced by their size and digest: no recognizer reads them."""
    if isinstance(value, str):
        return _payload_digest(value) if _is_payload(value) else value
    if not isinstance(value, (dict, list)):
        return value
    root: list[Any] = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    while stack:
        parent, key, node = stack.pop()
        copy: Any = dict(node) if isinstance(node, dict) else list(node)
        parent[key] = copy
        for k, v in copy.items() if isinstance(copy, dict) else enumerate(copy):
            if isinstance(v, str) and _is_payload(v):
                copy[k] = _payload_digest(v)
            elif isinstance(v, (dict, list)):
                stack.append((copy, k, v))
    return root[0]


def _is_payload(value: str) -> bool:
    return len(value) > _DATA_URL_CHARS and value.startswith("data:")


def _payload_digest(value: str) -> str:
    head = value.split(",", 1)[0]
    return f"<{head} bytes={len(value)} sha256={hashlib.sha256(value.encode()).hexdigest()}>"


def _text_or_digest(raw: bytes, pii: PiiRedactor, names: Placeholders) -> tuple[Any, Any]:
    """A non-JSON body: redacted when it is text, else only its size and digest."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"omitted": "binary", **_digest(raw)}, "json"
    return {"text": pii.text(text, names)}, "json"


def without_bodies(exchange: Exchange, rule: str) -> Exchange:
    """The fail-closed form when applying a level failed (a defect): no bodies and no details, the
    usage fields still computed from the whole exchange when that works."""
    normalized: dict[str, Any] | None
    try:
        record, _ = normalize(exchange)
        record["parse_error"] = "capture level could not be applied; bodies dropped"
        normalized = {"record": record, "details": {}}
    except Exception:
        normalized = None
    response = exchange.response
    if response is not None:
        response = replace(response, body=None, body_encoding="empty", sse=None)
    error = exchange.gateway_error
    return replace(
        exchange,
        request=replace(exchange.request, body=None, body_encoding="empty"),
        response=response,
        gateway_error={"code": error.get("code", "")} if error is not None else None,
        capture_level="metadata",
        privacy={"rule": rule, "error": "capture level could not be applied"},
        normalized=normalized,
    )


def _fields(values: Mapping[str, str], pii: PiiRedactor, names: Placeholders) -> dict[str, str]:
    """Header or query values with personal data replaced, percent-encoded ones too."""
    out = {}
    for name, value in values.items():
        new = pii.text(value, names)
        if new == value and "%" in value:
            decoded = unquote(value)
            cleaned = pii.text(decoded, names)
            new = cleaned if cleaned != decoded else value
        out[name] = new
    return out
