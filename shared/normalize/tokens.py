"""Token estimates for exchanges the service did not report usage for, with notes on what may deviate.

Follows the OpenAI cookbook "How to count tokens with tiktoken": 3 tokens per chat message, 1 per
`name`, 3 to prime the reply, tool definitions as `num_tokens_for_tools` counts them. The
encoding is chosen per model (o200k_base for the gpt-4o family and later, cl100k_base before).
Encodings come from `shared.normalize.encodings` (offline, loaded once per process).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import tiktoken
import tiktoken.model

from shared.normalize import images
from shared.normalize.budget import check as check_budget
from shared.normalize.encodings import SHIPPED, get_encoding

FALLBACK_ENCODING = "o200k_base"
#: Texts longer than this are encoded in pieces of about `_PIECE_CHARS` (see `TokenCounter.text`).
_WHOLE_CHARS = 64_000
_PIECE_CHARS = 16_000
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# num_tokens_for_tools constants, per encoding family (cookbook: gpt-4o/mini vs gpt-3.5/gpt-4).
_FUNC_INIT = {"o200k_base": 7, "cl100k_base": 10}
_PROP_INIT, _PROP_KEY, _ENUM_INIT, _ENUM_ITEM, _FUNC_END = 3, 3, -3, 3, 12


def _tiktoken_name(model: str) -> str | None:
    name = model.strip().lower()
    if not name:
        return None
    # Azure spells gpt-3.5 without the dot (gpt-35-turbo, gpt-35-turbo-instruct).
    name = name.replace("gpt-35", "gpt-3.5")
    try:
        return tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        return None


def encoding_name(*candidates: str | None) -> tuple[str, str | None]:
    """The encoding for the first candidate model name tiktoken knows, and a note when none did.

    Callers pass the service-reported model first (deployment names are arbitrary), then the
    deployment and the request's `model`.
    """
    for model in candidates:
        if model:
            name = _tiktoken_name(model)
            if name in SHIPPED:
                return name, None
    named = ", ".join(repr(m) for m in candidates if m) or "none"
    return FALLBACK_ENCODING, f"encoding unknown for model {named}; counted with {FALLBACK_ENCODING}"


@dataclass(slots=True)
class TokenCounter:
    """Counts text with one encoding and collects notes on where the estimate may deviate."""

    encoding_name: str
    model: str | None = None
    notes: list[str] = field(default_factory=list)
    image_count: int = 0
    _enc: tiktoken.Encoding = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._enc = get_encoding(self.encoding_name)

    def text(self, value: Any) -> int:
        if not isinstance(value, str):
            return 0
        if len(value) <= _WHOLE_CHARS:
            return len(self._enc.encode(value, disallowed_special=()))
        # A long text is counted in pieces cut before a space where there is one (where BPE words
        # start, so counts stay exact for prose), checking the parser's budget in between. Pieces
        # also keep BPE fast: one long run without spaces (tool-call arguments, base64) is a single
        # pre-token whose merging grows much faster than its length.
        total, start, size = 0, 0, len(value)
        while start < size:
            check_budget()
            end = min(start + _PIECE_CHARS, size)
            if end < size:
                space = value.rfind(" ", start + _PIECE_CHARS // 2, end)
                end = space if space > start else end
            total += len(self._enc.encode(value[start:end], disallowed_special=()))
            start = end
        return total

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # --- prompts -----------------------------------------------------------------------------

    def chat_prompt(self, messages: Any, tools: Any = None, functions: Any = None) -> int:
        total = 0
        for message in messages if isinstance(messages, list) else []:
            if not isinstance(message, Mapping):
                continue
            total += TOKENS_PER_MESSAGE
            for key, value in message.items():
                total += self._message_value(key, value)
                if key == "name":
                    total += TOKENS_PER_NAME
        total += REPLY_PRIMING
        definitions = [t.get("function") for t in tools or [] if isinstance(t, Mapping) and t.get("type") == "function"]
        if isinstance(tools, list) and len(definitions) != len(tools):
            self.note("non-function tools are not counted")
        definitions += [f for f in functions or [] if isinstance(f, Mapping)]
        total += self.tool_definitions([d for d in definitions if isinstance(d, Mapping)])
        return total

    def _message_value(self, key: str, value: Any) -> int:
        if isinstance(value, str):
            return self.text(value)
        if key == "content" and isinstance(value, list):
            return sum(self.content_part(part) for part in value)
        if key == "tool_calls" and isinstance(value, list):
            self.note("assistant tool_calls in the prompt are approximated")
            return sum(self.tool_call(call) for call in value)
        if key == "function_call" and isinstance(value, Mapping):
            self.note("assistant function_call in the prompt is approximated")
            return self.text(value.get("name")) + self.text(value.get("arguments"))
        return 0

    def content_part(self, part: Any) -> int:
        if isinstance(part, str):
            return self.text(part)
        if not isinstance(part, Mapping):
            return 0
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            return self.text(part.get("text"))
        if kind in ("image_url", "input_image"):
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            detail = (image.get("detail") if isinstance(image, Mapping) else None) or part.get("detail")
            return self.image(url if isinstance(url, str) else "", detail)
        if kind == "refusal":
            return self.text(part.get("refusal"))
        self.note(f"content part {kind!r} is not counted")
        return 0

    def image(self, url: str, detail: str | None) -> int:
        self.image_count += 1
        costs, known = images.costs_for(self.model)
        if not known:
            self.note(f"image costs unknown for model {self.model!r}; counted as gpt-4o")
        if (detail or "").lower() == "low" and isinstance(costs, images.TileCosts):
            return costs.base
        size = images.data_url_size(url) if url else None
        if size is None:
            size = images.DEFAULT_SIZE
            self.note(f"image of unknown size counted as {size[0]}x{size[1]}")
        if (detail or "auto").lower() == "auto":
            self.note("image detail auto counted as high")
        return images.image_tokens(size[0], size[1], detail, self.model)

    def tool_definitions(self, functions: list[Mapping[str, Any]]) -> int:
        """The cookbook's `num_tokens_for_tools`, tolerant of missing fields; nesting is not modelled."""
        if not functions:
            return 0
        func_init = _FUNC_INIT.get(self.encoding_name, 7)
        total = 0
        for fn in functions:
            total += func_init
            desc = str(fn.get("description") or "").removesuffix(".")
            total += self.text(f"{fn.get('name') or ''}:{desc}")
            params = fn.get("parameters")
            props = params.get("properties") if isinstance(params, Mapping) else None
            if isinstance(props, Mapping) and props:
                total += _PROP_INIT
                for key, prop in props.items():
                    total += _PROP_KEY
                    prop = prop if isinstance(prop, Mapping) else {}
                    enum = prop.get("enum")
                    if isinstance(enum, list):
                        total += _ENUM_INIT
                        for item in enum:
                            total += _ENUM_ITEM + self.text(str(item))
                    if prop.get("type") in ("object", "array") or "anyOf" in prop:
                        self.note("nested tool parameter schemas are approximated")
                    p_desc = str(prop.get("description") or "").removesuffix(".")
                    total += self.text(f"{key}:{prop.get('type')}:{p_desc}")
        return total + _FUNC_END

    def tool_call(self, call: Any) -> int:
        if not isinstance(call, Mapping):
            return 0
        fn = call.get("function")
        if isinstance(fn, Mapping):
            return self.text(fn.get("name")) + self.text(fn.get("arguments"))
        return self.text(call.get("name")) + self.text(call.get("arguments"))

    def texts_or_tokens(self, value: Any) -> int:
        """`prompt` / `input`: a string, a list of strings, a token array or a list of token arrays."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            if value and all(isinstance(v, int) for v in value):
                return len(value)
            return sum(self.texts_or_tokens(v) for v in value)
        return 0

    def responses_input(self, body: Mapping[str, Any]) -> int:
        """Responses API input, counted like chat messages (the format overhead is not published)."""
        self.note("Responses API prompt estimated with the chat format overhead")
        total = self.text(body.get("instructions"))
        value = body.get("input")
        if isinstance(value, str):
            return total + self.chat_prompt([{"role": "user", "content": value}], body.get("tools"))
        messages: list[Any] = []
        for item in value if isinstance(value, list) else []:
            if isinstance(item, Mapping) and item.get("type") in (None, "message"):
                messages.append({k: v for k, v in item.items() if k in ("role", "content", "name")})
            elif isinstance(item, Mapping):
                total += self.text(item.get("output")) + self.text(item.get("arguments"))
        tools = [
            {"type": "function", "function": t}
            for t in body.get("tools") or []
            if isinstance(t, Mapping) and t.get("type") == "function"
        ]
        return total + self.chat_prompt(messages, tools)
