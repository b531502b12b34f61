"""The exact response cache's rules, pure: which requests may be answered from it, the key, what
may be stored, and how a stored answer is served in the form the client asked for.

Exact match only. The key is a hash of the scope (the subscription, or the product when it shares
its cache on purpose), the deployment, the API, the api-version and the request body without the
transport-only fields (`stream`, `stream_options`, `user`). Only requests that ask for a repeatable
answer take part (`temperature` 0 or a `seed`, one choice, no logprobs); embeddings always do.
Only complete, successful, unfiltered answers are stored, with their usage, so that a hit can say
what it saved. A stored stream serves a non-stream request as its consolidated body; a stored body
serves a streamed request as AOAI's chunk events (the usage chunk only when the client asked).

The Responses API is not cached: its answers are stored objects with ids that later calls refer
to (`previous_response_id`, retrieve, delete), which a replayed answer would break.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from shared.normalize import filter_results
from shared.normalize.consolidate import consolidate
from shared.normalize.sse import decode_all

#: APIs whose answers the cache may hold.
CACHEABLE_APIS = frozenset({"chat.completions", "completions", "embeddings"})
#: Request fields that change how the answer travels, never what it says.
TRANSPORT_FIELDS = frozenset({"stream", "stream_options", "user"})
#: Answers that ended normally (a `length` stop is the same answer again for the same max_tokens).
_COMPLETE_FINISH = frozenset({"stop", "length", "tool_calls", "function_call"})
ENTRY_VERSION = 1


def repeatable(api: str, body: Any) -> str | None:
    """None when the request asks for a repeatable answer, else why it does not (for the record)."""
    if api not in CACHEABLE_APIS:
        return f"{api} answers are not cached"
    if not isinstance(body, Mapping):
        return "the request body is not a JSON object"
    if api == "embeddings":
        return None
    n = body.get("n")
    if n not in (None, 1):
        return "n is not 1"
    if body.get("logprobs") not in (None, False, 0) or body.get("top_logprobs") not in (None, 0):
        return "logprobs requested"
    temperature = body.get("temperature")
    seeded = isinstance(body.get("seed"), int) and not isinstance(body.get("seed"), bool)
    if not seeded and not (
        isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature == 0
    ):
        return "neither temperature 0 nor a seed"
    return None


def cache_key(scope: str, deployment: str, api: str, api_version: str | None, body: Mapping[str, Any]) -> str:
    """The entry's id: sha256 of everything that decides the answer, in a canonical JSON form."""
    kept = {k: v for k, v in body.items() if k not in TRANSPORT_FIELDS}
    canonical = orjson.dumps(
        [ENTRY_VERSION, scope, deployment, api, api_version or "", kept], option=orjson.OPT_SORT_KEYS
    )
    return hashlib.sha256(canonical).hexdigest()


def wants_stream(body: Mapping[str, Any]) -> bool:
    return body.get("stream") is True


def wants_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


@dataclass(frozen=True, slots=True)
class Entry:
    """One stored answer: AOAI's bytes as text (a JSON body, or the raw event stream), and its usage."""

    api: str
    stream: bool
    text: str
    usage: dict[str, Any]
    model: str | None
    stored_at: float

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "v": ENTRY_VERSION,
                "api": self.api,
                "stream": self.stream,
                "text": self.text,
                "usage": self.usage,
                "model": self.model,
                "stored_at": self.stored_at,
            }
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> Entry | None:
        """None for anything that is not a current entry (an older format is a miss, never an error)."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(data, dict) or data.get("v") != ENTRY_VERSION or not isinstance(data.get("text"), str):
            return None
        usage = data.get("usage")
        return cls(
            api=str(data.get("api")),
            stream=data.get("stream") is True,
            text=data["text"],
            usage=usage if isinstance(usage, dict) else {},
            model=data.get("model") if isinstance(data.get("model"), str) else None,
            stored_at=float(data.get("stored_at") or 0),
        )


def storable(api: str, status: int, content_type: str, raw: bytes, stored_at: float) -> tuple[Entry | None, str]:
    """The entry for AOAI's answer, or None and why it is not stored.

    Never stored: an error, a cut stream (no `[DONE]`), a stream without its usage, an answer the
    content filter touched (any `filtered: true`, a `content_filter` finish), an unfinished choice."""
    if status != 200:
        return None, f"status {status}"
    is_stream = content_type.lower().startswith("text/event-stream")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "the answer is not UTF-8"
    if is_stream:
        result = consolidate(api, text)
        if not result.complete:
            return None, "the stream did not end with [DONE]"
        if not result.has_usage:
            return None, "the stream carried no usage"
        body = result.body
    else:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None, "the answer is not JSON"
        if not isinstance(body, dict):
            return None, "the answer is not a JSON object"
    if body.get("error") is not None:
        return None, "the answer carries an error"
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None, "the answer carries no usage"
    reason = _filtered(body)
    if reason:
        return None, reason
    if api != "embeddings":
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            return None, "the answer has no choices"
        for choice in choices:
            if not isinstance(choice, Mapping) or choice.get("finish_reason") not in _COMPLETE_FINISH:
                finish = choice.get("finish_reason") if isinstance(choice, Mapping) else None
                return None, f"a choice ended with finish_reason {finish!r}"
    model = body.get("model") if isinstance(body.get("model"), str) else None
    return Entry(api=api, stream=is_stream, text=text, usage=usage, model=model, stored_at=stored_at), ""


def _filtered(body: Mapping[str, Any]) -> str:
    for item in _list(body.get("prompt_filter_results")):
        if isinstance(item, Mapping) and filter_results.any_filtered(item.get("content_filter_results")):
            return "the content filter flagged the prompt"
    for choice in _list(body.get("choices")):
        if isinstance(choice, Mapping):
            if choice.get("finish_reason") == "content_filter":
                return "the content filter stopped the answer"
            if filter_results.any_filtered(choice.get("content_filter_results")):
                return "the content filter flagged the answer"
    return ""


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# --------------------------------------------------------------------------------- serving an entry
def as_body(entry: Entry) -> bytes:
    """The non-stream answer: the stored body, or the stored stream consolidated (with its usage)."""
    if not entry.stream:
        return entry.text.encode("utf-8")
    return orjson.dumps(consolidate(entry.api, entry.text).body)


def as_stream(entry: Entry, include_usage: bool) -> bytes:
    """The streamed answer as AOAI's event stream: the stored stream (its usage chunk kept only
    when the client asked for it), or the stored body as chunk events."""
    if entry.stream:
        if include_usage:
            return entry.text.encode("utf-8")
        return b"".join(event.raw for event in decode_all(entry.text) if not _is_usage_chunk(event.data))
    body = orjson.loads(entry.text)
    events = (
        _chat_events(body, include_usage)
        if entry.api == "chat.completions"
        else _completion_events(body, include_usage)
    )
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def _is_usage_chunk(data: str | None) -> bool:
    """The usage-only chunk (`choices: []` with a `usage` object), as the live stream filter judges it."""
    if not data or '"usage"' not in data:
        return False
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and payload.get("choices") == [] and isinstance(payload.get("usage"), dict)


def _chat_events(body: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """A chat.completion body as the chunks AOAI streams: the prompt-annotation frame, then per
    choice a role chunk, the content (or tool calls) and the finish chunk, then the usage chunk."""
    base: dict[str, Any] = {
        "created": body.get("created"),
        "id": body.get("id"),
        "model": body.get("model"),
        "object": "chat.completion.chunk",
        "system_fingerprint": body.get("system_fingerprint"),
    }
    if include_usage:
        base["usage"] = None
    events: list[dict[str, Any]] = _prompt_annotation(body)
    for choice in _list(body.get("choices")):
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        role = {
            "content": "" if message.get("content") is not None else None,
            "refusal": None,
            "role": message.get("role", "assistant"),
        }
        events.append({**base, "choices": [_delta(index, role, {})]})
        delta: dict[str, Any] = {}
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("refusal"):
            delta["refusal"] = message["refusal"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(message["tool_calls"])]
        if message.get("function_call"):
            delta["function_call"] = message["function_call"]
        if delta:
            events.append(
                {
                    **base,
                    "choices": [
                        _delta(
                            index, delta, choice.get("content_filter_results") or {}, logprobs=choice.get("logprobs")
                        )
                    ],
                }
            )
        events.append({**base, "choices": [_delta(index, {}, {}, choice.get("finish_reason"))]})
    if include_usage:
        events.append({**base, "choices": [], "usage": body.get("usage")})
    return events


def _prompt_annotation(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Azure's first event when the answer has prompt filter results: empty id, model and object."""
    if body.get("prompt_filter_results") is None:
        return []
    return [
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": body["prompt_filter_results"],
        }
    ]


def _completion_events(body: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    base: dict[str, Any] = {
        "created": body.get("created"),
        "id": body.get("id"),
        "model": body.get("model"),
        "object": "text_completion",
    }
    if include_usage:
        base["usage"] = None
    events: list[dict[str, Any]] = _prompt_annotation(body)
    for choice in _list(body.get("choices")):
        events.append(
            {
                **base,
                "choices": [
                    {
                        "content_filter_results": choice.get("content_filter_results") or {},
                        "finish_reason": None,
                        "index": choice.get("index", 0),
                        "logprobs": choice.get("logprobs"),
                        "text": choice.get("text", ""),
                    }
                ],
            }
        )
        events.append(
            {
                **base,
                "choices": [
                    {
                        "content_filter_results": {},
                        "finish_reason": choice.get("finish_reason"),
                        "index": choice.get("index", 0),
                        "logprobs": None,
                        "text": "",
                    }
                ],
            }
        )
    if include_usage:
        events.append({**base, "choices": [], "usage": body.get("usage")})
    return events


def _delta(
    index: int, delta: dict[str, Any], cfr: dict[str, Any], finish: str | None = None, logprobs: Any = None
) -> dict[str, Any]:
    return {
        "content_filter_results": cfr,
        "delta": delta,
        "finish_reason": finish,
        "index": index,
        "logprobs": logprobs,
    }
