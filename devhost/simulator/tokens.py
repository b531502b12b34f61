"""Token counts the simulator reports: tiktoken over what it received and what it sent.

Implemented here on purpose, independently of the gateway's own counting (parser/), so tests that
compare the two are not comparing a function with itself. Chat prompts follow the OpenAI cookbook
("How to count tokens with tiktoken"): 3 tokens per message, +1 per `name`, +3 to prime the
reply, plus the tokens of every string the message carries; tool definitions follow the same
notebook's `num_tokens_for_tools`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import tiktoken

TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3


def count(enc: tiktoken.Encoding, text: str) -> int:
    # disallowed_special=() so a prompt that quotes "<|endoftext|>" is counted as text, not rejected.
    return len(enc.encode(text, disallowed_special=()))


def _strings(value: Any) -> Iterable[str]:
    """The text a message value carries: strings, text parts, tool-call names and arguments."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and "type" in item:
                # Content parts: only the text is text; image/audio parts are not modelled.
                for key in ("text", "refusal"):
                    if isinstance(item.get(key), str):
                        yield item[key]
                if isinstance(item.get("function"), dict):
                    yield from _strings(item["function"])
            else:
                yield from _strings(item)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def chat_prompt_tokens(enc: tiktoken.Encoding, messages: list[Any], tools: list[Any] | None = None) -> int:
    total = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        total += TOKENS_PER_MESSAGE
        for key, value in message.items():
            if key == "tool_calls" and isinstance(value, list):
                for call in value:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        total += sum(count(enc, s) for s in _strings(fn))
                continue
            total += sum(count(enc, s) for s in _strings(value))
            if key == "name":
                total += TOKENS_PER_NAME
    total += REPLY_PRIMING
    if tools:
        total += tool_tokens(enc, tools)
    return total


def tool_tokens(enc: tiktoken.Encoding, tools: list[Any]) -> int:
    """The cookbook's `num_tokens_for_tools` (flat parameters; nested schemas are not modelled)."""
    o200k = enc.name == "o200k_base"
    func_init, prop_init, prop_key, enum_init, enum_item, func_end = (7 if o200k else 10), 3, 3, -3, 3, 12
    total = 0
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict):
            continue
        total += func_init
        desc = str(fn.get("description", "")).removesuffix(".")
        total += count(enc, f"{fn.get('name', '')}:{desc}")
        props = (fn.get("parameters") or {}).get("properties") or {}
        if props:
            total += prop_init
            for key, spec in props.items():
                spec = spec if isinstance(spec, dict) else {}
                total += prop_key
                pdesc = str(spec.get("description", "")).removesuffix(".")
                total += count(enc, f"{key}:{spec.get('type', '')}:{pdesc}")
                if isinstance(spec.get("enum"), list):
                    total += enum_init
                    for item in spec["enum"]:
                        total += enum_item + count(enc, str(item))
    if total:
        total += func_end
    return total


def prompt_text_tokens(enc: tiktoken.Encoding, prompt: Any) -> int:
    """Completions/embeddings input: a string, a list of strings, a token array or a list of them."""
    if isinstance(prompt, str):
        return count(enc, prompt)
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        return sum(prompt_text_tokens(enc, p) for p in prompt)
    return 0
