"""The Responses API: create (stream and not), retrieve, delete and list input items.

Streams use named events (`event:` + `data:`), every payload carries `type` and an increasing
`sequence_number`, and the stream ends with `response.completed` (or `response.incomplete`),
never with `[DONE]`.
"""

from __future__ import annotations

from typing import Any

import orjson

from . import chat, text, tokens
from .wire import (
    BadRequest,
    Context,
    Event,
    Plan,
    StoredResponse,
    max_tokens,
    named_event,
    text_answer,
    token_budget,
)


def _as_messages(body: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(chat-style messages for token counting, input items as the API lists them)."""
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[dict[str, Any]] = [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": raw}]}
        ]
    elif isinstance(raw, list) and raw and all(isinstance(x, dict) for x in raw):
        items = [{"type": "message", **x} if "type" not in x else x for x in raw]
    else:
        raise BadRequest("'input' is a required property (a string or an array of input items).", param="input")
    messages: list[dict[str, Any]] = []
    if isinstance(body.get("instructions"), str):
        messages.append({"role": "developer", "content": body["instructions"]})
    for item in items:
        kind = item.get("type")
        if kind == "message":
            messages.append({"role": item.get("role", "user"), "content": item.get("content", "")})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "content": item.get("output", "")})
        elif kind == "function_call":
            messages.append(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")}}
                    ],
                }
            )
    return messages, items


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def build(body: dict[str, Any], ctx: Context, *, stream: bool) -> Plan:
    messages, items = _as_messages(body)
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and t.get("type") == "function"]
    prompt = tokens.chat_prompt_tokens(ctx.enc, messages, tools or None)
    previous = body.get("previous_response_id")
    if previous is not None:
        stored = ctx.responses.get(previous) if isinstance(previous, str) else None
        if stored is None:
            raise BadRequest(
                f"Previous response with id '{previous}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        prompt += stored.context_tokens
    cap = max_tokens(body, "max_output_tokens")
    budget, truncated = token_budget(ctx, cap)
    chunks = ctx.chunks
    key = orjson.dumps([body.get("instructions"), body.get("input")])
    rid = ctx.new_id("resp", "_")

    output: list[dict[str, Any]] = []
    pieces: list[tuple[str, ...]] = []
    if tools and body.get("tool_choice") != "none":
        chosen = tools if body.get("parallel_tool_calls", True) is not False else tools[:1]
        completion = 0
        for j, tool in enumerate(chosen[:3]):
            args = chat._arguments(tool, text.variant(ctx.config.seed, key) + j)
            name = str(tool.get("name", ""))
            output.append(
                {
                    "arguments": args,
                    "call_id": f"call_{ctx.rng.getrandbits(96):024x}",
                    "name": name,
                    "type": "function_call",
                    "id": ctx.new_id("fc", "_"),
                    "status": "completed",
                }
            )
            pieces.append(text.split_text(args, max(2, chunks)))
            completion += tokens.count(ctx.enc, name) + tokens.count(ctx.enc, args)
        incomplete = False
    else:
        answer = text_answer(ctx, text.variant(ctx.config.seed, key), budget)
        completion = answer.tokens
        incomplete = truncated and ctx.content is None
        output.append(
            {
                "id": ctx.new_id("msg", "_"),
                "type": "message",
                "status": "incomplete" if incomplete else "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": answer.text, "annotations": [], "logprobs": []}],
            }
        )
        pieces.append(answer.chunks)

    final = {
        "id": rid,
        "object": "response",
        "created_at": ctx.created,
        "status": "incomplete" if incomplete else "completed",
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": cap,
        "metadata": body.get("metadata") or {},
        "model": ctx.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": previous,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True) is not False,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": _usage(prompt, completion),
        "user": body.get("user"),
    }
    final_bytes = orjson.dumps(final)
    if final["store"]:
        listed = [{"id": ctx.new_id("msg", "_"), **item} for item in items]
        ctx.responses[rid] = StoredResponse(final_bytes, listed, prompt + completion)
    if not stream:
        return Plan(body=final_bytes, paced_chunks=chunks, tokens=prompt + completion)
    return Plan(events=_events(final, pieces), content_type="text/event-stream", tokens=prompt + completion)


def _events(final: dict[str, Any], pieces: list[tuple[str, ...]]) -> list[Event]:
    seq = 0
    events: list[Event] = []

    def emit(kind: str, paced: bool = False, **payload: Any) -> None:
        nonlocal seq
        events.append(Event(named_event(kind, {"type": kind, "sequence_number": seq, **payload}), paced=paced))
        seq += 1

    pending = {**final, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    emit("response.created", response=pending)
    emit("response.in_progress", response=pending)
    for index, (item, parts) in enumerate(zip(final["output"], pieces, strict=True)):
        if item["type"] == "function_call":
            emit(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            )
            for piece in parts:
                emit(
                    "response.function_call_arguments.delta",
                    paced=True,
                    item_id=item["id"],
                    output_index=index,
                    delta=piece,
                )
            emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
            emit("response.output_item.done", output_index=index, item=item)
            continue
        part = item["content"][0]
        emit("response.output_item.added", output_index=index, item={**item, "status": "in_progress", "content": []})
        emit(
            "response.content_part.added",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            part={**part, "text": ""},
        )
        for piece in parts:
            emit(
                "response.output_text.delta",
                paced=True,
                item_id=item["id"],
                output_index=index,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        emit(
            "response.output_text.done",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            text=part["text"],
            logprobs=[],
        )
        emit("response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part)
        emit("response.output_item.done", output_index=index, item=item)
    emit("response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final)
    return events


def input_items_page(stored: StoredResponse) -> bytes:
    data = list(reversed(stored.input_items))  # the API lists newest first by default
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": False,
        }
    )
