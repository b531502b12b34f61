"""Chat completions, streamed and not: text answers, tool calls and legacy function calls."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from . import text, tokens
from .filters import SAFE_COMPLETION, blocked_completion, prompt_filter_results
from .wire import (
    DONE,
    BadRequest,
    ChunkFrame,
    Context,
    Event,
    Plan,
    data_event,
    max_tokens,
    text_answer,
    token_budget,
)

#: In a prompt, makes the completion filter cut the answer: finish_reason content_filter.
COMPLETION_FILTER_MARKER = b"SIMULATE_COMPLETION_FILTER"


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    name: str
    arguments: str


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "completion_tokens": completion,
        "completion_tokens_details": {
            "accepted_prediction_tokens": 0,
            "audio_tokens": 0,
            "reasoning_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
        "prompt_tokens": prompt,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _sample(name: str, spec: Any, salt: int) -> Any:
    """A deterministic value that fits a JSON-schema property (strings carry multibyte and escapes)."""
    spec = spec if isinstance(spec, dict) else {}
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return spec["enum"][salt % len(spec["enum"])]
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number"):
        return 7 + salt % 90
    if kind == "boolean":
        return salt % 2 == 0
    if kind == "array":
        return [_sample(name, spec.get("items"), salt)]
    if kind == "object":
        props = spec.get("properties") or {}
        return {k: _sample(k, v, salt + i) for i, (k, v) in enumerate(props.items())}
    return ["Zürich, 東京", 'say "hi"', "C:\\temp\nnext", "🚀 data: x"][salt % 4] + f" ({name})"


def _arguments(fn: dict[str, Any], salt: int) -> str:
    params = fn.get("parameters")
    if not isinstance(params, dict):
        params = {}
    props = params.get("properties") or {}
    value = {k: _sample(k, v, salt + i) for i, (k, v) in enumerate(props.items())}
    # OpenAI sends arguments as compact-ish JSON text; ensure_ascii off keeps multibyte in the stream.
    return orjson.dumps(value).decode()


def _functions(body: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    """The functions to call and whether this is the legacy `functions` form."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if isinstance(tools, list) and tools:
        if choice == "none":
            return [], False
        fns = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
        if isinstance(choice, dict):
            wanted = (choice.get("function") or {}).get("name")
            fns = [f for f in fns if f.get("name") == wanted] or fns[:1]
        elif body.get("parallel_tool_calls") is False:
            fns = fns[:1]
        return fns[:3], False
    functions, fchoice = body.get("functions"), body.get("function_call")
    if isinstance(functions, list) and functions and fchoice != "none":
        fns = [f for f in functions if isinstance(f, dict)]
        if isinstance(fchoice, dict):
            fns = [f for f in fns if f.get("name") == fchoice.get("name")] or fns[:1]
        return fns[:1], True
    return [], False


def build(body: dict[str, Any], ctx: Context, *, stream: bool) -> Plan:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is a required property and must be a non-empty array.", param="messages")
    if body.get("stream_options") is not None and not stream:
        raise BadRequest(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )
    n = body.get("n", 1) or 1
    if not isinstance(n, int) or not 1 <= n <= 128:
        raise BadRequest("Invalid value for 'n': must be an integer between 1 and 128.", param="n")
    tool_defs = body.get("tools") if isinstance(body.get("tools"), list) else body.get("functions")
    prompt = tokens.chat_prompt_tokens(ctx.enc, messages, tool_defs if isinstance(tool_defs, list) else None)
    key = orjson.dumps(messages)
    start = text.variant(ctx.config.seed, key)
    fns, legacy = _functions(body)
    cap = max_tokens(body, "max_completion_tokens", "max_tokens")
    budget, truncated = token_budget(ctx, cap)
    chunks = ctx.chunks

    cid = ctx.new_id("chatcmpl", "-")
    base = {
        "created": ctx.created,
        "id": cid,
        "model": ctx.model,
        "object": "chat.completion.chunk",
        "system_fingerprint": ctx.fingerprint,
    }
    include_usage = bool((body.get("stream_options") or {}).get("include_usage")) if stream else False

    if fns:
        salt = zlib.crc32(key, ctx.config.seed & 0xFFFFFFFF)
        calls_per_choice = [
            [
                Call(f"call_{ctx.rng.getrandbits(96):024x}", str(f.get("name", "")), _arguments(f, salt + j))
                for j, f in enumerate(fns)
            ]
            for _ in range(n)
        ]
        completion = sum(
            tokens.count(ctx.enc, c.name) + tokens.count(ctx.enc, c.arguments)
            for calls in calls_per_choice
            for c in calls
        )
        finish = "function_call" if legacy else "tool_calls"
        if not stream:
            choices = []
            for i, calls in enumerate(calls_per_choice):
                message: dict[str, Any] = {"content": None, "refusal": None, "role": "assistant"}
                if legacy:
                    message["function_call"] = {"arguments": calls[0].arguments, "name": calls[0].name}
                else:
                    message["tool_calls"] = [
                        {"function": {"arguments": c.arguments, "name": c.name}, "id": c.id, "type": "function"}
                        for c in calls
                    ]
                choices.append(
                    {
                        "content_filter_results": {},
                        "finish_reason": finish,
                        "index": i,
                        "logprobs": None,
                        "message": message,
                    }
                )
            return _non_stream(base, choices, prompt, completion, paced=chunks)
        extra = {"usage": None} if include_usage else {}
        frame = ChunkFrame({**base, **extra})
        events = [Event(PROMPT_FRAME)]
        for i, calls in enumerate(calls_per_choice):
            events.append(Event(frame([_delta(i, {"content": None, "refusal": None, "role": "assistant"}, {})])))
            for t, call in enumerate(calls):
                pieces = text.split_text(call.arguments, max(2, chunks))
                head: dict[str, Any]
                if legacy:
                    head = {"function_call": {"arguments": "", "name": call.name}}
                else:
                    head = {
                        "tool_calls": [
                            {
                                "function": {"arguments": "", "name": call.name},
                                "id": call.id,
                                "index": t,
                                "type": "function",
                            }
                        ]
                    }
                events.append(Event(frame([_delta(i, head, {})]), paced=True))
                for piece in pieces:
                    delta: dict[str, Any]
                    if legacy:
                        delta = {"function_call": {"arguments": piece}}
                    else:
                        delta = {"tool_calls": [{"function": {"arguments": piece}, "index": t}]}
                    events.append(Event(frame([_delta(i, delta, {})]), paced=True))
            events.append(Event(frame([_delta(i, {}, {}, finish)])))
        return _stream_tail(events, base, include_usage, prompt, completion)

    answers = [text_answer(ctx, start + 7 * i, budget) for i in range(n)]
    if ctx.large_chunk and stream:
        answers = [text.enlarge(ctx.enc, a, ctx.large_chunk) for a in answers]
    finish = "length" if truncated and ctx.content is None else "stop"
    final_filter: dict[str, Any] = {}
    if COMPLETION_FILTER_MARKER in key:
        # The completion filter stops the answer halfway: what was sent is still billed.
        answers = [text.cut(ctx.enc, a, max(1, len(a.chunks) // 2)) for a in answers]
        finish, final_filter = "content_filter", blocked_completion()
    completion = sum(a.tokens for a in answers)
    if not stream:
        choices = [
            {
                "content_filter_results": final_filter or SAFE_COMPLETION,
                "finish_reason": finish,
                "index": i,
                "logprobs": None,
                "message": {"content": a.text, "refusal": None, "role": "assistant"},
            }
            for i, a in enumerate(answers)
        ]
        return _non_stream(base, choices, prompt, completion, paced=chunks)

    extra = {"usage": None} if include_usage else {}
    frame = ChunkFrame({**base, **extra})
    events = [Event(PROMPT_FRAME)]
    for i in range(n):
        events.append(Event(frame([_delta(i, {"content": "", "refusal": None, "role": "assistant"}, {})])))
    # Asynchronous filter mode: content streams unannotated; annotation frames follow every few
    # chunks, and the last one arrives after the finish chunk (or ends a filtered answer itself).
    lazy = ctx.async_filter
    sent_chars, checked = [0] * n, [0] * n
    for k in range(max(len(a.chunks) for a in answers)):
        for i, a in enumerate(answers):
            if k < len(a.chunks):
                events.append(
                    Event(frame([_delta(i, {"content": a.chunks[k]}, {} if lazy else SAFE_COMPLETION)]), paced=True)
                )
                sent_chars[i] += len(a.chunks[k])
                if lazy and (k + 1) % ANNOTATE_EVERY == 0:
                    events.append(Event(_annotation(i, checked[i], sent_chars[i], SAFE_COMPLETION)))
                    checked[i] = sent_chars[i]
    for i in range(n):
        if lazy and final_filter:
            events.append(Event(_annotation(i, checked[i], sent_chars[i], final_filter, finish)))
            continue
        events.append(Event(frame([_delta(i, {}, final_filter, finish)])))
        if lazy:
            events.append(Event(_annotation(i, checked[i], sent_chars[i], SAFE_COMPLETION)))
    return _stream_tail(events, base, include_usage, prompt, completion)


#: In asynchronous filter mode, an annotation frame follows every this many content chunks.
ANNOTATE_EVERY = 4


def _annotation(index: int, start: int, end: int, results: dict[str, Any], finish: str | None = None) -> bytes:
    """An asynchronous-filter annotation frame: empty id/model/object, no delta, character offsets."""
    choice = {
        "content_filter_offsets": {"check_offset": start, "start_offset": start, "end_offset": end},
        "content_filter_results": results,
        "finish_reason": finish,
        "index": index,
    }
    return data_event({"choices": [choice], "created": 0, "id": "", "model": "", "object": ""})


# Azure's first frame: prompt annotations with empty id/object/model and no choices.
PROMPT_FRAME = data_event(
    {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": prompt_filter_results()}
)


def _delta(index: int, delta: dict[str, Any], cfr: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"content_filter_results": cfr, "delta": delta, "finish_reason": finish, "index": index, "logprobs": None}


def _non_stream(base: dict[str, Any], choices: list[Any], prompt: int, completion: int, *, paced: int) -> Plan:
    body = {
        "choices": choices,
        "created": base["created"],
        "id": base["id"],
        "model": base["model"],
        "object": "chat.completion",
        "prompt_filter_results": prompt_filter_results(),
        "system_fingerprint": base["system_fingerprint"],
        "usage": usage(prompt, completion),
    }
    return Plan(body=orjson.dumps(body), paced_chunks=paced, tokens=prompt + completion)


def _stream_tail(events: list[Event], base: dict[str, Any], include_usage: bool, prompt: int, completion: int) -> Plan:
    if include_usage:
        events.append(Event(data_event({**base, "choices": [], "usage": usage(prompt, completion)})))
    events.append(Event(DONE))
    return Plan(events=events, content_type="text/event-stream", tokens=prompt + completion)
