"""One exchange in, one usage record out (plus the details stored beside it). Pure: no I/O.

`normalize` never raises for a bad exchange: what cannot be parsed is reported in `parse_error`
and the rest of the record is still filled, so every request that reached the proxy is counted.
The record follows `shared/normalize/schema/usage-record.schema.json` (documented in docs/usage-record.md);
safety and cost fields are left to their own steps.

One module because `normalize` is the one mapping from an exchange to a record and every helper
here is a private step of it; counting (tokens, images) and consolidation live in their own modules.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Literal, cast

from shared.errors import ParseBudgetExceeded
from shared.exchange import Exchange, utc_now_iso
from shared.normalize import filter_results
from shared.normalize.apis import api_version, billable, classify, deployment_for, operation
from shared.normalize.consolidate import consolidate
from shared.normalize.record import CacheNote, Outcome, ShieldVerdict, UsageRecord
from shared.normalize.requests import parse_request
from shared.normalize.tokens import TokenCounter, encoding_name
from shared.redaction import redact_body_secrets
from shared.telemetry.tracecontext import trace_id_from

#: Statuses where the service did no model work, so no tokens were used.
_NO_WORK_STATUSES = {401, 403, 404, 405, 408, 409, 413, 415, 422, 429}
_TOKEN_APIS = {"chat.completions", "completions", "embeddings", "responses"}
_MAX_ERROR_CHARS = 1000
#: Strings longer than this that look like payloads (data URLs) are summarized in the details.
_KEEP_DATA_URL_CHARS = 256


def normalize(exchange: Exchange) -> tuple[UsageRecord, dict[str, Any]]:
    """The usage record and the details (normalized request, consolidated response) of an exchange.

    Below capture level `full` the proxy normalized the whole exchange before reducing it
    (shared/privacy/capture.py): that record and those details are returned as they are."""
    pre = exchange.normalized
    if isinstance(pre, Mapping) and isinstance(pre.get("record"), Mapping) and isinstance(pre.get("details"), Mapping):
        return cast(UsageRecord, {**pre["record"], "capture_level": exchange.capture_level}), dict(pre["details"])
    record = base_record(exchange)
    details: dict[str, Any] = {}
    try:
        _fill(record, details, exchange)
    except ParseBudgetExceeded:
        raise  # the parser writes the record for it, and dead-letters the exchange
    except Exception as exc:  # the boundary: a record with parse_error beats a lost record
        record["parse_error"] = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]
    return record, details


def base_record(exchange: Exchange) -> UsageRecord:
    """The fields that need no parsing, with neutral values for everything else (valid on its own)."""
    identity = exchange.identity
    request = exchange.request
    response = exchange.response
    timings = exchange.timings
    headers = request.headers if isinstance(request.headers, Mapping) else {}
    if response is not None and isinstance(response.status, int):
        status = response.status
    else:
        status = 499 if exchange.client_disconnected else 502
    backend = exchange.backend or (exchange.attempts[-1].backend if exchange.attempts else None)
    method, path = _str(request.method) or "", _str(request.path) or ""
    route = classify(path)
    op = operation(method, path, route)
    return {
        "request_id": str(exchange.request_id),
        # A malformed stored exchange must still give a valid record: coerce, never trust types.
        "timestamp": timings.received_at if isinstance(timings.received_at, str) else utc_now_iso(),
        "subscription_id": _str(identity.subscription_id) or "unknown",
        "subscription_name": _str(identity.subscription_name) or "unknown",
        "product": _str(identity.product) or "unknown",
        "user_id": _str(identity.user_id),
        "client_ip": _str(identity.client_ip),
        "user_agent": _header(headers, "user-agent"),
        "trace_id": trace_id_from(_header(headers, "traceparent")),
        "method": _str(request.method) or "",
        "path": _str(request.path) or "",
        "api": "other",
        "operation": op,
        "billable": billable(route.api if route else "other", op),
        "deployment": None,
        "model": None,
        "api_version": api_version(request.query) if isinstance(request.query, Mapping) else None,
        "backend": backend,
        "attempts": len(exchange.attempts),
        "region": _header(response.headers, "x-ms-region") if response is not None else None,
        # What the client was sent: an event stream, or not (a JSON error to a stream request).
        "stream": bool(response is not None and response.sse is not None),
        "outcome": delivery_outcome(exchange),
        "status_code": status,
        "error_code": (exchange.gateway_error or {}).get("code"),
        "latency_ms": _ms(timings.last_byte_ms),
        "ttft_ms": _ms(timings.upstream_first_byte_ms),
        "gateway_overhead_ms": _ms(timings.gateway_overhead_ms),
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "usage_details": None,
        "usage_source": "none",
        "usage_injected": bool(exchange.usage_injected),
        "finish_reasons": [],
        "tool_call_count": 0,
        "image_count": 0,
        "content_filter": {"prompt": {}, "completion": {}, "filtered": False},
        "client_disconnected": bool(exchange.client_disconnected),
        "parse_error": None,
        "audience_rule": _str((exchange.audience or {}).get("rule"))
        if isinstance(exchange.audience, Mapping)
        else None,
        "cache": _cache_note(exchange.cache),
        "prompt_shields": {"jailbreak": None, "indirect_attack": None},
        "prompt_blocked_reason": None,
        "capture_level": _capture_level(exchange.capture_level),
    }


def delivery_outcome(exchange: Exchange) -> Outcome:
    """How the answer reached the client, from what the proxy saw (no parsing): `complete`,
    `client_disconnected`, `upstream_broken` (AOAI's body broke after its first byte),
    `timeout` (no answer, or a stream silent too long) or `blocked` (in-stream enforcement).
    The parser refines `complete` from the body (content filter, a stream without its end)."""
    if exchange.client_disconnected:
        return "client_disconnected"
    error = exchange.attempts[-1].error if exchange.attempts else None
    if isinstance(error, str) and error.startswith("stream "):
        return "timeout" if "timeout" in error else "upstream_broken"
    if (exchange.gateway_error or {}).get("code") == "GatewayTimeout":
        return "timeout"
    enforcement = exchange.enforcement
    if isinstance(enforcement, Mapping) and enforcement.get("action") == "blocked":
        return "blocked"
    return "complete"


def _fill(record: UsageRecord, details: dict[str, Any], exchange: Exchange) -> None:
    req = exchange.request
    route = classify(req.path)
    api = route.api if route else "other"
    record["api"] = api
    request = parse_request(api, req.body, _header(req.headers, "content-type"))
    details["request"] = _scrub(request)
    if route is not None:
        record["deployment"] = deployment_for(route, request)

    response = exchange.response
    notes: list[str] = []
    stream_complete = True
    body: dict[str, Any] = {}
    if response is not None and response.sse is not None:
        result = consolidate(api, response.sse)
        body, stream_complete, notes = result.body, result.complete, list(result.notes)
    elif response is not None:
        body = _response_body(response.body, response.body_encoding, _header(response.headers, "content-type"))
    details["response"] = _scrub(body)
    if not record["stream"]:
        record["ttft_ms"] = record["latency_ms"] if record["latency_ms"] is not None else record["ttft_ms"]

    model = body.get("model") if isinstance(body.get("model"), str) and body.get("model") else None
    request_model = request.get("model") if isinstance(request.get("model"), str) else None
    record["model"] = model or request_model or record["deployment"]

    record["error_code"] = record["error_code"] or _error_code(body.get("error"))
    _verdicts(record, api, body)
    _shields(record)
    _choices(record, api, body)
    if record["outcome"] == "complete":
        if record["error_code"] == "content_filter" or "content_filter" in record["finish_reasons"]:
            record["outcome"] = "blocked"
        elif (
            record["stream"]
            and not stream_complete
            and isinstance(record["status_code"], int)
            and record["status_code"] < 400
        ):
            record["outcome"] = "upstream_broken"  # the stream ended without its terminal event
    if record["cache"] is not None and record["cache"]["status"] == "hit":
        _cache_hit(record, exchange)
        return
    if not record["billable"]:
        # Reading, listing, deleting or cancelling a stored object does no model work: the usage
        # the object carries was billed when it was created, never again here.
        record["finish_reasons"], record["tool_call_count"], record["image_count"] = [], 0, 0
        return
    _usage(record, exchange, api, request, body, notes, stream_complete, model)
    if notes:
        record["estimation_notes"] = notes


# --- audience: response cache, prompt shields ------------------------------------------------------


def _cache_note(cache: Any) -> CacheNote | None:
    """The record's `cache`: what the response cache did (None when the audience has no cache)."""
    if not isinstance(cache, Mapping) or cache.get("status") not in ("hit", "miss", "bypass", "store"):
        return None
    stored = cache.get("stored")
    age = cache.get("age_seconds")
    return {
        "status": cache["status"],
        "stored": stored if isinstance(stored, bool) else None,
        "reason": _str(cache.get("reason")),
        "age_seconds": float(age) if isinstance(age, (int, float)) and not isinstance(age, bool) else None,
        "tokens_avoided": None,
    }


def _cache_hit(record: UsageRecord, exchange: Exchange) -> None:
    """A hit did no model work: zero billable tokens, `usage_source: "cache"`, and the usage the
    stored answer cost when it was made kept as `cache.tokens_avoided` (priced as `cost_avoided`)."""
    cache = exchange.cache if isinstance(exchange.cache, Mapping) else {}
    record["billable"] = False
    record["usage_source"] = "cache"
    record["backend"] = None
    avoided = _service_usage(cache.get("usage"))
    note = record.get("cache")
    if avoided is not None and note is not None:
        note["tokens_avoided"] = {
            k: avoided[k]
            for k in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
        }


def _shields(record: UsageRecord) -> None:
    """Prompt Shields' verdicts (`jailbreak`, `indirect_attack`) from AOAI's prompt filter results,
    whatever the API reported them in (chat/completions `prompt_filter_results`, the Responses API's
    `content_filters`, a 400 `content_filter` error); and, for a blocked prompt, which categories blocked it."""
    prompt = record["content_filter"]["prompt"]
    record["prompt_shields"] = {
        "jailbreak": _shield(prompt.get("jailbreak")),
        "indirect_attack": _shield(prompt.get("indirect_attack")),
    }
    if record["status_code"] == 400 and record["error_code"] == "content_filter":
        reasons = sorted(k for k, v in prompt.items() if isinstance(v, Mapping) and v.get("filtered") is True)
        record["prompt_blocked_reason"] = ",".join(reasons) or "content_filter"


def _shield(verdict: Any) -> ShieldVerdict | None:
    if not isinstance(verdict, Mapping):
        return None  # not reported: the shield is off for this deployment
    return {"detected": verdict.get("detected") is True, "filtered": verdict.get("filtered") is True}


# --- response bodies ---------------------------------------------------------------------------


def _response_body(body: Any, encoding: str, content_type: str | None) -> dict[str, Any]:
    if isinstance(body, Mapping) and encoding == "json":
        return dict(body)
    if encoding == "base64" and isinstance(body, Mapping) and isinstance(body.get("base64"), str):
        try:
            raw = base64.b64decode(body["base64"])
        except (binascii.Error, ValueError):
            return {}
        if content_type and content_type.lower().startswith("text/"):
            return {"text": raw.decode("utf-8", "replace")}  # transcriptions as text / srt / vtt
        return {"content_type": content_type, "bytes": len(raw)}  # speech audio
    if encoding == "json" and body is not None:
        return {"body": body}
    return {}


def _error_code(error: Any) -> str | None:
    if not isinstance(error, Mapping):
        return None
    for value in (error.get("code"), _inner(error).get("code"), error.get("type")):
        if value not in (None, ""):
            return str(value)
    return None


def _inner(error: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = error.get("innererror") or error.get("inner_error")
    return inner if isinstance(inner, Mapping) else {}


# --- content filter, choices ---------------------------------------------------------------------


def _verdicts(record: UsageRecord, api: str, body: Mapping[str, Any]) -> None:
    prompt: dict[str, Any] = {}
    completion: dict[str, Any] = {}
    blocked = False
    for item in _list(body.get("prompt_filter_results")) + _list(body.get("prompt_annotations")):
        if isinstance(item, Mapping):
            filter_results.merge(prompt, item.get("content_filter_results"))
    for choice in _list(body.get("choices")):
        if isinstance(choice, Mapping):
            filter_results.merge(completion, choice.get("content_filter_results"))
    for item in _list(body.get("data")):  # images: per-image prompt and output results
        if isinstance(item, Mapping):
            filter_results.merge(prompt, item.get("prompt_filter_results"))
            filter_results.merge(completion, item.get("content_filter_results"))
    for item in _list(body.get("content_filters")):  # Responses API
        if isinstance(item, Mapping):
            side = prompt if item.get("source_type") == "prompt" else completion
            filter_results.merge(side, item.get("content_filter_results"))
            blocked = blocked or item.get("blocked") is True
    error = body.get("error")
    if isinstance(error, Mapping):
        inner = _inner(error)
        for key in ("content_filter_result", "content_filter_results"):
            filter_results.merge(prompt, inner.get(key) if key in inner else error.get(key))
        for item in _list(error.get("content_filters")):
            if isinstance(item, Mapping):
                filter_results.merge(prompt, item.get("content_filter_results"))
        blocked = blocked or record["error_code"] == "content_filter" or _error_code(error) == "content_filter"
    record["content_filter"] = {
        "prompt": prompt,
        "completion": completion,
        "filtered": blocked or filter_results.any_filtered(prompt) or filter_results.any_filtered(completion),
    }


def _choices(record: UsageRecord, api: str, body: Mapping[str, Any]) -> None:
    if api == "responses":
        output = [i for i in _list(body.get("output")) if isinstance(i, Mapping)]
        record["tool_call_count"] = sum(1 for i in output if str(i.get("type", "")).endswith("_call"))
        status = body.get("status")
        incomplete = body.get("incomplete_details")
        reason = incomplete.get("reason") if isinstance(incomplete, Mapping) else None
        if isinstance(status, str):
            record["finish_reasons"] = [reason if isinstance(reason, str) else status]
    else:
        reasons: list[str | None] = []
        calls = 0
        for choice in _list(body.get("choices")):
            if not isinstance(choice, Mapping):
                continue
            reason = choice.get("finish_reason")
            reasons.append(reason if isinstance(reason, str) else None)
            message = choice.get("message")
            if isinstance(message, Mapping):
                calls += len(_list(message.get("tool_calls"))) + (
                    1 if isinstance(message.get("function_call"), Mapping) else 0
                )
        record["finish_reasons"] = reasons
        record["tool_call_count"] = calls
    if "content_filter" in record["finish_reasons"]:
        record["content_filter"]["filtered"] = True
    if api == "images.generations":
        record["image_count"] = len(_list(body.get("data")))


# --- token usage -------------------------------------------------------------------------------


def _usage(
    record: UsageRecord,
    exchange: Exchange,
    api: str,
    request: Mapping[str, Any],
    body: Mapping[str, Any],
    notes: list[str],
    stream_complete: bool,
    model: str | None,
) -> None:
    candidates = (model, record["deployment"], request.get("model") if isinstance(request.get("model"), str) else None)
    if api in ("chat.completions", "responses"):
        record["image_count"] = _input_images(request)
    service = _service_usage(body.get("usage"))
    if service is not None:
        record.update(cast(UsageRecord, service))
        record["usage_source"] = "service"
        if exchange.response is not None and exchange.response.sse is not None and not stream_complete:
            notes.append("usage reported before the stream ended")
        return
    status = record["status_code"]
    if exchange.usage_injected and exchange.response is not None and exchange.response.sse is not None:
        notes.append("the gateway asked for stream usage but no usage chunk arrived")
    if exchange.gateway_error or exchange.response is None or api not in _TOKEN_APIS:
        return
    if status in _NO_WORK_STATUSES or status >= 500:
        return
    prompt_only = False
    if status >= 400:
        # A prompt blocked by the content filter is billed for the prompt evaluation; other 4xx are not.
        if record["error_code"] != "content_filter":
            return
        prompt_only = True
    counter = _counter(candidates, notes)
    prompt_estimate = _estimate_prompt(counter, api, request)
    completion = 0 if prompt_only else _estimate_completion(counter, api, body)
    record["prompt_tokens"] = prompt_estimate
    record["completion_tokens"] = completion
    record["total_tokens"] = prompt_estimate + completion
    record["usage_source"] = "estimated"
    for note in counter.notes:
        if note not in notes:
            notes.append(note)


def _input_images(request: Mapping[str, Any]) -> int:
    """Image parts in chat messages or Responses input items."""
    items = _list(request.get("messages")) + _list(request.get("input"))
    return sum(
        1
        for item in items
        if isinstance(item, Mapping)
        for part in _list(item.get("content"))
        if isinstance(part, Mapping) and part.get("type") in ("image_url", "input_image")
    )


def _counter(candidates: tuple[str | None, ...], notes: list[str]) -> TokenCounter:
    name, note = encoding_name(*candidates)
    if note:
        notes.append(note)
    return TokenCounter(name, model=next((c for c in candidates if c), None))


def _estimate_prompt(counter: TokenCounter, api: str, request: Mapping[str, Any]) -> int:
    if api == "chat.completions":
        return counter.chat_prompt(request.get("messages"), request.get("tools"), request.get("functions"))
    if api == "responses":
        return counter.responses_input(request)
    if api == "completions":
        return counter.texts_or_tokens(request.get("prompt"))
    if api == "embeddings":
        return counter.texts_or_tokens(request.get("input"))
    return 0


def _estimate_completion(counter: TokenCounter, api: str, body: Mapping[str, Any]) -> int:
    total = 0
    if api == "responses":
        for item in _list(body.get("output")):
            if isinstance(item, Mapping):
                total += sum(counter.content_part(p) for p in _list(item.get("content")))
                total += counter.text(item.get("name")) + counter.text(item.get("arguments"))
                if item.get("type") == "reasoning":
                    counter.note("reasoning tokens are not visible and not estimated")
        return total
    for choice in _list(body.get("choices")):
        if not isinstance(choice, Mapping):
            continue
        total += counter.text(choice.get("text"))
        message = choice.get("message")
        if isinstance(message, Mapping):
            total += counter.text(message.get("content")) + counter.text(message.get("refusal"))
            calls = _list(message.get("tool_calls"))
            if calls or isinstance(message.get("function_call"), Mapping):
                counter.note("tool-call formatting tokens in the completion are not modelled")
            total += sum(counter.tool_call(c) for c in calls)
            total += counter.tool_call(message.get("function_call"))
    return total


def _service_usage(usage: Any) -> dict[str, Any] | None:
    """Token counts as the service reported them (chat/completions/embeddings or Responses/images shape)."""
    if not isinstance(usage, Mapping):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        prompt, completion = _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
        in_details, out_details = usage.get("prompt_tokens_details"), usage.get("completion_tokens_details")
        in_key, out_key = "prompt_tokens_details", "completion_tokens_details"
    elif "input_tokens" in usage or "output_tokens" in usage:
        prompt, completion = _int(usage.get("input_tokens")), _int(usage.get("output_tokens"))
        in_details = usage.get("input_tokens_details") or usage.get("input_token_details")
        out_details = usage.get("output_tokens_details") or usage.get("output_token_details")
        in_key, out_key = "input_tokens_details", "output_tokens_details"
    else:
        return None
    total = _int(usage.get("total_tokens")) or prompt + completion
    in_details = in_details if isinstance(in_details, Mapping) else {}
    out_details = out_details if isinstance(out_details, Mapping) else {}
    usage_details = {k: dict(v) for k, v in ((in_key, in_details), (out_key, out_details)) if v} or None
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": total,
        "cached_tokens": _int(in_details.get("cached_tokens")),
        "reasoning_tokens": _int(out_details.get("reasoning_tokens")),
        "usage_details": usage_details,
    }


# --- small helpers -----------------------------------------------------------------------------


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return str(value)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    return value if isinstance(value, str) and value else None


def _scrub(value: Any) -> Any:
    """Details without payloads or secrets: credentials in the body redacted
    (`shared.redaction.redact_body_secrets`: exchanges stored before the proxy redacted bodies may
    still hold them), data URLs, base64 images and embedding vectors summarized.

    Details live beside the record (Cosmos items are limited to 2 MB); the raw exchange keeps the payloads.
    """
    # Summarize first: redaction then never walks embedding vectors (the same result, as a summary
    # only replaces payloads no redaction rule looks into, and a secret field is replaced whole).
    return redact_body_secrets(_summarize(value))


def _summarize(value: Any) -> Any:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "embedding" and isinstance(item, (list, str)):
                out[key] = f"[{len(item)} {'values' if isinstance(item, list) else 'base64 chars'} omitted]"
            elif key in ("b64_json", "partial_image_b64") and isinstance(item, str):
                out[key] = f"[{len(item)} base64 chars omitted]"
            else:
                out[key] = _summarize(item)
        return out
    if isinstance(value, list):
        return [_summarize(v) for v in value]
    if isinstance(value, str) and len(value) > _KEEP_DATA_URL_CHARS and value.startswith("data:"):
        head, _, rest = value.partition(",")
        return f"{head},[{len(rest)} chars omitted]"
    return value


def _capture_level(value: Any) -> Literal["full", "redacted", "metadata", "none"]:
    if value == "redacted" or value == "metadata" or value == "none":
        return value
    return "full"
