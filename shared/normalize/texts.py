"""The plain text of a prompt and of a completion, for content-safety analysis.

Images, audio and base64 payloads are left out; tool-call arguments are included because they
are model output a user can read. Pure functions over the normalized request and consolidated body.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def prompt_text(api: str, request_body: Any) -> str:
    if not isinstance(request_body, Mapping):
        return ""
    return "\n".join(t for t in _prompt_parts(api, request_body) if t)


def completion_text(api: str, consolidated_body: Any) -> str:
    if not isinstance(consolidated_body, Mapping):
        return ""
    return "\n".join(t for t in _completion_parts(api, consolidated_body) if t)


def _prompt_parts(api: str, body: Mapping[str, Any]) -> Iterator[str]:
    if api == "chat.completions":
        for message in body.get("messages") or []:
            if isinstance(message, Mapping):
                yield from _content(message.get("content"))
    elif api == "completions":
        yield from _strings(body.get("prompt"))
    elif api == "embeddings":
        yield from _strings(body.get("input"))
    elif api == "responses":
        if isinstance(body.get("instructions"), str):
            yield body["instructions"]
        value = body.get("input")
        if isinstance(value, str):
            yield value
        for item in value if isinstance(value, list) else []:
            if isinstance(item, Mapping):
                yield from _content(item.get("content"))
                if isinstance(item.get("output"), str):
                    yield item["output"]
    elif isinstance(body.get("prompt"), str):  # images, audio (the form's prompt field)
        yield body["prompt"]


def _completion_parts(api: str, body: Mapping[str, Any]) -> Iterator[str]:
    if api == "responses":
        for item in body.get("output") or []:
            if not isinstance(item, Mapping):
                continue
            yield from _content(item.get("content"))
            if isinstance(item.get("arguments"), str):
                yield item["arguments"]
        return
    if api in ("audio.transcriptions", "audio.translations") and isinstance(body.get("text"), str):
        yield body["text"]
        return
    for choice in body.get("choices") or []:
        if not isinstance(choice, Mapping):
            continue
        if isinstance(choice.get("text"), str):
            yield choice["text"]
        message = choice.get("message")
        if isinstance(message, Mapping):
            yield from _content(message.get("content"))
            if isinstance(message.get("refusal"), str):
                yield message["refusal"]
            for call in message.get("tool_calls") or []:
                fn = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(fn, Mapping) and isinstance(fn.get("arguments"), str):
                    yield fn["arguments"]
            fc = message.get("function_call")
            if isinstance(fc, Mapping) and isinstance(fc.get("arguments"), str):
                yield fc["arguments"]


def _content(content: Any) -> Iterator[str]:
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                yield part
            elif isinstance(part, Mapping):
                for key in ("text", "refusal"):
                    if isinstance(part.get(key), str):
                        yield part[key]


def _strings(value: Any) -> Iterator[str]:
    """Strings of a prompt/input; token arrays are not text and are skipped."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                yield item
            elif isinstance(item, list):
                yield from _strings(item)
