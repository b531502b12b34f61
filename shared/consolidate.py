"""Stored event streams turned back into the body the same call would have returned without `stream`.

Decoding goes through `shared.sse` and each event's JSON is parsed on its own, so content that
contains `data: ` survives and a stream cut short still yields what arrived (the seed rewrote the
stream into a JSON array by string replacement and lost both). Choices are consolidated per
index, tool calls per tool-call index, and AOAI's content-filter annotations (prompt annotation
frames, asynchronous-filter frames after the stop chunk) are merged, never allowed to null the
finish reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared import filter_results
from shared.sse import SSEEvent, decode_all


@dataclass(slots=True)
class Consolidated:
    """The equivalent non-stream body, and what the stream itself told us."""

    body: dict[str, Any]
    #: The stream ended properly: `[DONE]`, or a terminal Responses event.
    complete: bool = False
    #: AOAI reported usage in the stream (usage chunk or `response.completed`).
    has_usage: bool = False
    #: Events whose data was not JSON (kept for the record's parse notes, never fatal).
    bad_events: int = 0
    events: int = 0
    notes: list[str] = field(default_factory=list)


def consolidate(api: str, sse: str | bytes) -> Consolidated:
    events = decode_all(sse)
    if api == "responses":
        return consolidate_responses(events)
    if api == "completions":
        return _consolidate_choices(events, _CompletionChoice, "text_completion")
    return _consolidate_choices(events, _ChatChoice, "chat.completion")


def _payloads(events: list[SSEEvent], result: Consolidated) -> list[tuple[str | None, dict[str, Any]]]:
    out: list[tuple[str | None, dict[str, Any]]] = []
    for event in events:
        data = event.data
        if data is None or data == "":
            continue
        if data.strip() == "[DONE]":
            result.complete = True
            continue
        result.events += 1
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            result.bad_events += 1
            continue
        if isinstance(payload, dict):
            out.append((event.event, payload))
        else:
            result.bad_events += 1
    if result.bad_events:
        result.notes.append(f"{result.bad_events} stream event(s) were not JSON objects")
    return out


# --- chat and legacy completions ----------------------------------------------------------------


class _ChatChoice:
    __slots__ = ("index", "role", "content", "refusal", "tool_calls", "function_call", "finish", "logprobs", "filters", "extra")

    def __init__(self, index: int) -> None:
        self.index = index
        self.role: str | None = None
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] | None = None
        self.finish: str | None = None
        self.logprobs: dict[str, list[Any]] | None = None
        self.filters: dict[str, Any] | None = None
        self.extra: dict[str, Any] = {}

    def add(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, Mapping):
            self._delta(delta)
        _set_finish(self, choice.get("finish_reason"))
        self.logprobs = _merge_logprobs(self.logprobs, choice.get("logprobs"))
        if "content_filter_results" in choice:
            self.filters = filter_results.merge(self.filters or {}, choice.get("content_filter_results"))

    def _delta(self, delta: Mapping[str, Any]) -> None:
        role = delta.get("role")
        if isinstance(role, str) and role:
            self.role = role
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        for position, call in enumerate(delta.get("tool_calls") or []):
            if isinstance(call, Mapping):
                self._tool_call(call, position)
        fc = delta.get("function_call")
        if isinstance(fc, Mapping):
            current = self.function_call or {"name": "", "arguments": ""}
            current["name"] = current["name"] or str(fc.get("name") or "")
            current["arguments"] += str(fc.get("arguments") or "")
            self.function_call = current
        for key, value in delta.items():
            if key not in ("role", "content", "refusal", "tool_calls", "function_call") and value is not None:
                self.extra[key] = value  # e.g. Azure On Your Data `context`

    def _tool_call(self, call: Mapping[str, Any], position: int) -> None:
        index = call.get("index")
        index = index if isinstance(index, int) else position
        current = self.tool_calls.get(index)
        if current is None:
            current = self.tool_calls[index] = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        if call.get("id"):
            current["id"] = current["id"] or call["id"]
        if call.get("type"):
            current["type"] = call["type"]
        fn = call.get("function")
        if isinstance(fn, Mapping):
            if fn.get("name") and not current["function"]["name"]:
                current["function"]["name"] = fn["name"]
            if isinstance(fn.get("arguments"), str):
                current["function"]["arguments"] += fn["arguments"]

    def build(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role or "assistant",
            "content": "".join(self.content) if self.content or not (self.tool_calls or self.function_call) else None,
        }
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
        if self.function_call:
            message["function_call"] = self.function_call
        message.update(self.extra)
        out: dict[str, Any] = {"index": self.index, "message": message, "finish_reason": self.finish, "logprobs": self.logprobs}
        if self.filters is not None:
            out["content_filter_results"] = self.filters
        return out


class _CompletionChoice:
    __slots__ = ("index", "text", "finish", "logprobs", "filters")

    def __init__(self, index: int) -> None:
        self.index = index
        self.text: list[str] = []
        self.finish: str | None = None
        self.logprobs: dict[str, list[Any]] | None = None
        self.filters: dict[str, Any] | None = None

    def add(self, choice: Mapping[str, Any]) -> None:
        if isinstance(choice.get("text"), str):
            self.text.append(choice["text"])
        _set_finish(self, choice.get("finish_reason"))
        self.logprobs = _merge_logprobs(self.logprobs, choice.get("logprobs"))
        if "content_filter_results" in choice:
            self.filters = filter_results.merge(self.filters or {}, choice.get("content_filter_results"))

    def build(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "text": "".join(self.text), "finish_reason": self.finish, "logprobs": self.logprobs}
        if self.filters is not None:
            out["content_filter_results"] = self.filters
        return out


def _set_finish(choice: _ChatChoice | _CompletionChoice, reason: Any) -> None:
    # Annotation frames after the stop chunk carry no (or a null) finish_reason: never un-set it.
    # A content_filter verdict outranks the stop that may precede it.
    if isinstance(reason, str) and reason and choice.finish != "content_filter":
        choice.finish = reason


def _merge_logprobs(current: dict[str, list[Any]] | None, new: Any) -> dict[str, list[Any]] | None:
    """Concatenate per-chunk logprobs: chat `{content, refusal}`, completions `{tokens, ...}` lists."""
    if not isinstance(new, Mapping):
        return current
    merged = current if current is not None else {}
    for key, value in new.items():
        if isinstance(value, list):
            merged.setdefault(key, [])
            if isinstance(merged[key], list):
                merged[key].extend(value)
        elif key not in merged:
            merged[key] = value
    return merged


def _consolidate_choices(events: list[SSEEvent], choice_type: type, obj: str) -> Consolidated:
    result = Consolidated(body={})
    body = result.body
    choices: dict[int, Any] = {}
    prompt_filters: dict[int, dict[str, Any]] = {}
    for _, chunk in _payloads(events, result):
        for key in ("id", "model", "system_fingerprint"):
            value = chunk.get(key)
            if isinstance(value, str) and value and not body.get(key):
                body[key] = value
        created = chunk.get("created")
        if isinstance(created, int) and created and not body.get("created"):
            body["created"] = created
        for annotations in (chunk.get("prompt_filter_results"), chunk.get("prompt_annotations")):
            for item in annotations if isinstance(annotations, list) else []:
                if isinstance(item, Mapping):
                    idx = item.get("prompt_index", 0)
                    idx = idx if isinstance(idx, int) else 0
                    filter_results.merge(prompt_filters.setdefault(idx, {}), item.get("content_filter_results"))
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            body["usage"] = dict(usage)
            result.has_usage = True
        if isinstance(chunk.get("error"), Mapping):
            body["error"] = chunk["error"]
        for position, choice in enumerate(chunk.get("choices") or []):
            if not isinstance(choice, Mapping):
                continue
            idx = choice.get("index")
            idx = idx if isinstance(idx, int) else position
            state = choices.get(idx)
            if state is None:
                state = choices[idx] = choice_type(idx)
            state.add(choice)
    body["object"] = obj
    body["choices"] = [choices[i].build() for i in sorted(choices)]
    if prompt_filters:
        body["prompt_filter_results"] = [
            {"prompt_index": i, "content_filter_results": prompt_filters[i]} for i in sorted(prompt_filters)
        ]
    if not result.complete:
        result.notes.append("stream ended without [DONE]")
    return result


# --- Responses API ---------------------------------------------------------------------------

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def consolidate_responses(events: list[SSEEvent]) -> Consolidated:
    """The response from the terminal event, else rebuilt from the deltas that did arrive."""
    result = Consolidated(body={})
    payloads = _payloads(events, result)
    response: dict[str, Any] = {}
    items: dict[int, dict[str, Any]] = {}
    for event_name, payload in payloads:
        kind = payload.get("type") or event_name
        if kind in _TERMINAL and isinstance(payload.get("response"), Mapping):
            result.body = dict(payload["response"])
            result.complete = True
            result.has_usage = isinstance(result.body.get("usage"), Mapping)
            return result
        if kind in ("response.created", "response.in_progress", "response.queued") and isinstance(
            payload.get("response"), Mapping
        ):
            response = dict(payload["response"])
        elif kind == "error" or (kind is None and isinstance(payload.get("error"), Mapping)):
            response["error"] = payload.get("error") if isinstance(payload.get("error"), Mapping) else {
                k: payload.get(k) for k in ("code", "message", "param") if k in payload
            }
        else:
            _response_delta(kind, payload, items)
    response["output"] = [items[i] for i in sorted(items)]
    response.setdefault("object", "response")
    if response.get("status") in (None, "in_progress", "queued"):
        response["status"] = "incomplete"
    result.body = response
    result.notes.append("Responses stream ended without a terminal event; response rebuilt from deltas")
    return result


def _response_delta(kind: Any, payload: Mapping[str, Any], items: dict[int, dict[str, Any]]) -> None:
    oi = payload.get("output_index")
    if not isinstance(oi, int):
        return
    if kind in ("response.output_item.added", "response.output_item.done") and isinstance(payload.get("item"), Mapping):
        items[oi] = dict(payload["item"])
        return
    item = items.setdefault(oi, {"type": "message", "role": "assistant", "content": []})
    if kind in ("response.output_text.delta", "response.refusal.delta"):
        ci = payload.get("content_index", 0)
        content = item.setdefault("content", [])
        while len(content) <= (ci if isinstance(ci, int) else 0):
            content.append({"type": "output_text" if kind.endswith("text.delta") else "refusal"})
        part = content[ci if isinstance(ci, int) else 0]
        field_name = "text" if part.get("type") == "output_text" else "refusal"
        part[field_name] = str(part.get(field_name) or "") + str(payload.get("delta") or "")
    elif kind == "response.content_part.added" and isinstance(payload.get("part"), Mapping):
        ci = payload.get("content_index", 0)
        content = item.setdefault("content", [])
        while len(content) <= (ci if isinstance(ci, int) else 0):
            content.append({})
        content[ci if isinstance(ci, int) else 0] = dict(payload["part"])
    elif kind == "response.function_call_arguments.delta":
        item["arguments"] = str(item.get("arguments") or "") + str(payload.get("delta") or "")
