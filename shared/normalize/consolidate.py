"""Stored event streams turned back into the body the same call would have returned without `stream`.

Decoding goes through `shared.normalize.sse` and each event's JSON is parsed on its own, so content that
contains `data: ` survives and a stream cut short still yields what arrived. Choices are consolidated per
index, tool calls per tool-call index, and AOAI's content-filter annotations (prompt annotation
frames, asynchronous-filter frames after the stop chunk) are merged, never allowed to null the
finish reason.

Chat chunks of a shape already seen are matched as text and only their fragment is decoded
(`shared/normalize/fast_path.py`); every other event takes the general path.

One module because chat, completions and Responses share the choice state and the filter merging.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.normalize import filter_results
from shared.normalize.budget import check as check_budget
from shared.normalize.fast_path import MAX_SHAPES, ChunkShape
from shared.normalize.sse import decode_text


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
    #: Events consolidated by the fast path (a learnt chunk shape; see `fast_path.ChunkShape`).
    fast_events: int = 0
    notes: list[str] = field(default_factory=list)


def consolidate(api: str, sse: str | bytes) -> Consolidated:
    text = sse.decode("utf-8", "replace") if isinstance(sse, (bytes, bytearray)) else sse
    if not isinstance(text, str):
        raise TypeError(f"stored stream is {type(sse).__name__}, not text")
    events = decode_text(text)
    if api == "responses":
        return consolidate_responses(events)
    if api == "completions":
        return _consolidate_choices(events, _CompletionChoice, "text_completion")
    return _consolidate_choices(events, _ChatChoice, "chat.completion")


def _payloads(events: list[tuple[str | None, str]], result: Consolidated) -> list[tuple[str | None, dict[str, Any]]]:
    """Each event's JSON, parsed on its own terms (never by editing the stream text)."""
    named: list[str | None] = []
    datas: list[str] = []
    for event, data in events:
        if not data:
            continue
        if data[0] != "{" and data.strip() == "[DONE]":
            result.complete = True
            continue
        named.append(event)
        datas.append(data)
    result.events = len(datas)
    # One parse per event: joining events into one JSON array would let two broken events combine
    # into a valid one (`{"x": [1` + `2]}, 3`).
    parsed: list[Any] = []
    for position, data in enumerate(datas):
        if not position & 255:
            check_budget()
        try:
            parsed.append(orjson.loads(data))
        except orjson.JSONDecodeError:
            parsed.append(None)
    out = [(name, payload) for name, payload in zip(named, parsed, strict=False) if isinstance(payload, dict)]
    result.bad_events = len(datas) - len(out)
    if result.bad_events:
        result.notes.append(f"{result.bad_events} stream event(s) were not JSON objects")
    return out


# --- chat and legacy completions ----------------------------------------------------------------


_HEADER_KEYS = ("id", "model", "system_fingerprint")
_DELTA_KEYS = frozenset(("role", "content", "refusal", "tool_calls", "function_call"))


_UNSEEN = object()


class _Choice:
    """What chat and legacy-completions choices merge alike: finish_reason, logprobs, filter results."""

    __slots__ = ("index", "finish", "logprobs", "filters", "last_filters")

    def __init__(self, index: int) -> None:
        self.index = index
        self.finish: str | None = None
        self.logprobs: dict[str, list[Any]] | None = None
        self.filters: dict[str, Any] | None = None
        #: The last `content_filter_results` merged: Azure repeats the same verdicts on every chunk.
        self.last_filters: Any = _UNSEEN

    def _outcome(self, choice: dict[str, Any]) -> None:
        reason = choice.get("finish_reason")
        if reason and type(reason) is str and self.finish != "content_filter":
            # Annotation frames after the stop chunk carry no finish_reason: never un-set it. A
            # content_filter verdict outranks the stop that may precede it.
            self.finish = reason
        logprobs = choice.get("logprobs")
        if logprobs:
            self.logprobs = _merge_logprobs(self.logprobs, logprobs)
        if "content_filter_results" in choice:
            results = choice["content_filter_results"]
            # Merging is idempotent (flags or-ed, the worst severity, lists united): the same
            # verdicts again change nothing, and comparing them costs a tenth of merging.
            if results != self.last_filters:
                self.filters = filter_results.merge(self.filters or {}, results)
                self.last_filters = results

    def _finish(self, out: dict[str, Any]) -> dict[str, Any]:
        """`out` (index and body already in place) with finish_reason, logprobs and filter results."""
        out["finish_reason"] = self.finish
        out["logprobs"] = self.logprobs
        if self.filters is not None:
            out["content_filter_results"] = self.filters
        return out


class _ChatChoice(_Choice):
    __slots__ = ("role", "content", "refusal", "tool_calls", "function_call", "extra")

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.role: str | None = None
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, str] | None = None
        self.extra: dict[str, Any] = {}

    def add(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if type(delta) is dict:
            content = delta.get("content")
            # Most chunks carry one content piece and nothing else: keep that path short.
            if type(content) is str and len(delta) == 1:
                self.content.append(content)
            elif delta:
                self._delta(delta)
        self._outcome(choice)

    def _delta(self, delta: dict[str, Any]) -> None:
        role = delta.get("role")
        if isinstance(role, str) and role:
            self.role = role
        if isinstance(delta.get("content"), str):
            self.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self.refusal.append(delta["refusal"])
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, dict):
                    self._tool_call(call, position)
        fc = delta.get("function_call")
        if isinstance(fc, dict):
            current = self.function_call or {"name": "", "arguments": ""}
            current["name"] = current["name"] or str(fc.get("name") or "")
            current["arguments"] += str(fc.get("arguments") or "")
            self.function_call = current
        for key, value in delta.items():
            if key not in _DELTA_KEYS and value is not None:
                self.extra[key] = value  # e.g. Azure On Your Data `context`

    def _tool_call(self, call: dict[str, Any], position: int) -> None:
        index = call.get("index")
        index = index if type(index) is int else position
        current = self.tool_calls.get(index)
        if current is None:
            current = self.tool_calls[index] = {
                "id": None,
                "type": "function",
                "function": {"name": "", "arguments": []},
            }
        if call.get("id") and not current["id"]:
            current["id"] = call["id"]
        if call.get("type"):
            current["type"] = call["type"]
        fn = call.get("function")
        if isinstance(fn, dict):
            if fn.get("name") and not current["function"]["name"]:
                current["function"]["name"] = fn["name"]
            arguments = fn.get("arguments")
            if type(arguments) is str:
                current["function"]["arguments"].append(arguments)

    def build(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role or "assistant",
            "content": "".join(self.content) if self.content or not (self.tool_calls or self.function_call) else None,
        }
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.tool_calls:
            message["tool_calls"] = [
                {**call, "function": {**call["function"], "arguments": "".join(call["function"]["arguments"])}}
                for _, call in sorted(self.tool_calls.items())
            ]
        if self.function_call:
            message["function_call"] = self.function_call
        message.update(self.extra)
        return self._finish({"index": self.index, "message": message})


class _CompletionChoice(_Choice):
    __slots__ = ("text",)

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.text: list[str] = []

    def add(self, choice: dict[str, Any]) -> None:
        text = choice.get("text")
        if type(text) is str:
            self.text.append(text)
        self._outcome(choice)

    def build(self) -> dict[str, Any]:
        return self._finish({"index": self.index, "text": "".join(self.text)})


def _merge_logprobs(current: dict[str, list[Any]] | None, new: Any) -> dict[str, list[Any]] | None:
    """Concatenate per-chunk logprobs: chat `{content, refusal}`, completions `{tokens, ...}` lists."""
    if not isinstance(new, dict):
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


def _consolidate_choices(
    events: list[tuple[str | None, str]], choice_type: type, obj: str, *, fast: bool = True
) -> Consolidated:
    result = Consolidated(body={})
    body = result.body
    choices: dict[int, Any] = {}
    prompt_filters: dict[int, dict[str, Any]] = {}
    header_missing = True
    # Chat streams repeat one chunk shape hundreds of times with only a text fragment changing:
    # such events are matched as text against a shape learnt from a parsed one (see `shared/normalize/fast_path.py`) and
    # only the fragment is decoded. Anything else goes through the general path below.
    shapes: list[tuple[str, str, int, Callable[[str], None]]] = []
    learn = fast and choice_type is _ChatChoice
    loads, JSONDecodeError = orjson.loads, orjson.JSONDecodeError
    count = bad = fast_events = 0
    for _, data in events:
        if not data:
            continue
        if data[0] != "{" and data.strip() == "[DONE]":
            result.complete = True
            continue
        count += 1
        if not count & 255:
            check_budget()
        if shapes:
            # An event of a learnt shape: decode only its fragment. Inlined: this runs once per event.
            size = len(data)
            for prefix, suffix, minimum, append in shapes:
                if size >= minimum and data.startswith(prefix) and data.endswith(suffix):
                    try:
                        fragment = loads(data[len(prefix) : size - len(suffix)])
                    except JSONDecodeError:
                        continue
                    if type(fragment) is str:
                        append(fragment)
                        break
            else:
                fragment = None
            if type(fragment) is str:
                fast_events += 1
                continue
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if type(chunk) is not dict:
            bad += 1
            continue
        if header_missing:
            # id/model/created come from the first chunk that has them (Azure's annotation frames
            # have empty ones); stop looking once all are known.
            for key in _HEADER_KEYS:
                value = chunk.get(key)
                if value and type(value) is str and key not in body:
                    body[key] = value
            created = chunk.get("created")
            if created and type(created) is int and "created" not in body:
                body["created"] = created
            header_missing = not (
                "id" in body and "model" in body and "created" in body and "system_fingerprint" in body
            )
        if "prompt_filter_results" in chunk or "prompt_annotations" in chunk:
            _prompt_annotations(chunk, prompt_filters)
        usage = chunk.get("usage")
        if usage and type(usage) is dict:
            body["usage"] = usage
            result.has_usage = True
        error = chunk.get("error")
        if error and type(error) is dict:
            body["error"] = error
        chunk_choices = chunk.get("choices")
        if not chunk_choices or type(chunk_choices) is not list:
            continue
        for position, choice in enumerate(chunk_choices):
            if type(choice) is not dict:
                continue
            idx = choice.get("index")
            if type(idx) is not int:
                idx = position
            state = choices.get(idx)
            if state is None:
                state = choices[idx] = choice_type(idx)
            state.add(choice)
        if learn and len(shapes) < MAX_SHAPES:
            shape = ChunkShape.learn(data, chunk, choices)
            if shape is not None:
                shapes.insert(0, (shape.prefix, shape.suffix, shape.minimum, shape.target.append))
    result.events = count
    result.fast_events = fast_events
    result.bad_events = bad
    if bad:
        result.notes.append(f"{bad} stream event(s) were not JSON objects")
    body["object"] = obj
    body["choices"] = [choices[i].build() for i in sorted(choices)]
    if prompt_filters:
        body["prompt_filter_results"] = [
            {"prompt_index": i, "content_filter_results": prompt_filters[i]} for i in sorted(prompt_filters)
        ]
    if not result.complete:
        result.notes.append("stream ended without [DONE]")
    return result


def _prompt_annotations(chunk: dict[str, Any], prompt_filters: dict[int, dict[str, Any]]) -> None:
    for found in (chunk.get("prompt_filter_results"), chunk.get("prompt_annotations")):
        for item in found if isinstance(found, list) else []:
            if isinstance(item, dict):
                idx = item.get("prompt_index", 0)
                idx = idx if type(idx) is int else 0
                filter_results.merge(prompt_filters.setdefault(idx, {}), item.get("content_filter_results"))


# --- Responses API ---------------------------------------------------------------------------

_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def consolidate_responses(events: list[tuple[str | None, str]]) -> Consolidated:
    """The response from the terminal event, else rebuilt from the deltas that did arrive."""
    result = Consolidated(body={})
    payloads = _payloads(events, result)
    response: dict[str, Any] = {}
    items: dict[int, dict[str, Any]] = {}
    ignored = 0
    # No part index can exceed the number of events: each part needs an event to exist.
    limit = len(payloads)
    for position, (event_name, payload) in enumerate(payloads):
        if not position & 255:
            check_budget()
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
            response["error"] = (
                payload.get("error")
                if isinstance(payload.get("error"), Mapping)
                else {k: payload.get(k) for k in ("code", "message", "param") if k in payload}
            )
        else:
            if not _response_delta(kind, payload, items, limit):
                ignored += 1
    if ignored:
        result.notes.append(f"{ignored} stream event(s) had an index beyond what the stream holds and were ignored")
    _join_pieces(items)
    response["output"] = [items[i] for i in sorted(items)]
    response.setdefault("object", "response")
    if response.get("status") in (None, "in_progress", "queued"):
        response["status"] = "incomplete"
    result.body = response
    result.notes.append("Responses stream ended without a terminal event; response rebuilt from deltas")
    return result


def _response_delta(kind: Any, payload: Mapping[str, Any], items: dict[int, dict[str, Any]], limit: int) -> bool:
    """Apply one delta event; False when its indexes are beyond `limit` (ignored, nothing allocated)."""
    oi = payload.get("output_index")
    if not isinstance(oi, int):
        return True
    ci = payload.get("content_index", 0)
    if not 0 <= oi <= limit or (isinstance(ci, int) and not 0 <= ci <= limit):
        return False
    if kind in ("response.output_item.added", "response.output_item.done") and isinstance(payload.get("item"), Mapping):
        items[oi] = dict(payload["item"])
        return True
    item = items.setdefault(oi, {"type": "message", "role": "assistant", "content": []})
    if kind in ("response.output_text.delta", "response.refusal.delta"):
        content = item.setdefault("content", [])
        while len(content) <= (ci if isinstance(ci, int) else 0):
            content.append({"type": "output_text" if kind.endswith("text.delta") else "refusal"})
        part = content[ci if isinstance(ci, int) else 0]
        part.setdefault(_PIECES, []).append(str(payload.get("delta") or ""))
    elif kind == "response.content_part.added" and isinstance(payload.get("part"), Mapping):
        content = item.setdefault("content", [])
        while len(content) <= (ci if isinstance(ci, int) else 0):
            content.append({})
        content[ci if isinstance(ci, int) else 0] = dict(payload["part"])
    elif kind == "response.function_call_arguments.delta":
        item.setdefault(_PIECES, []).append(str(payload.get("delta") or ""))
    return True


#: Deltas are collected under this key and joined once at the end (`_join_pieces`): adding each
#: delta to a growing string copies it every time, quadratic in a long stream.
_PIECES = "\0pieces"


def _join_pieces(items: dict[int, dict[str, Any]]) -> None:
    for item in items.values():
        if _PIECES in item:
            item["arguments"] = str(item.get("arguments") or "") + "".join(item.pop(_PIECES))
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and _PIECES in part:
                field_name = "text" if part.get("type") == "output_text" else "refusal"
                part[field_name] = str(part.get(field_name) or "") + "".join(part.pop(_PIECES))
