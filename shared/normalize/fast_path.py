"""The consolidation fast path: a chat chunk shape learnt once, then matched as text.

Chat streams repeat one chunk shape hundreds of times with only a text fragment changing. A shape
is the chunk's text with that fragment cut out; an event that matches it is consolidated by decoding
only the fragment, which roughly halves the parser's cost for a long stream. Learning is proved by a
probe (see `ChunkShape`), so a wrong cut never yields a shape and never changes a result.
"""

from __future__ import annotations

from typing import Any

import orjson

#: Shapes kept per stream (a content shape and a few tool-call argument shapes).
MAX_SHAPES = 4
#: A string no real fragment is: substituted into a learnt shape to prove where the fragment is.
_PROBE = "\u2603probe\u0001"
_PROBE_LITERAL = orjson.dumps(_PROBE).decode()


class ChunkShape:
    """One chunk's text with its only varying part, a text fragment, cut out: `prefix`, `suffix`.

    An event `prefix + literal + suffix` whose middle decodes as one JSON string parses to the
    learnt chunk with that fragment in place (JSON's grammar treats a string token as atomic), so
    such an event is handled by appending the decoded fragment to `target`, the list the general
    path would append it to, without parsing the rest. A shape is learnt only from a chunk whose
    every other effect is a no-op on a repeat (see `learn`), and only after a probe substituted at
    the cut parses back to the same chunk, so a wrong cut never yields a shape.
    """

    __slots__ = ("prefix", "suffix", "target", "minimum")

    def __init__(self, prefix: str, suffix: str, target: list[str]) -> None:
        self.prefix = prefix
        self.suffix = suffix
        self.target = target
        #: The shortest event of this shape: the cut holds at least an empty string, `""`.
        self.minimum = len(prefix) + len(suffix) + 2

    @staticmethod
    def learn(data: str, chunk: dict[str, Any], choices: dict[int, Any]) -> ChunkShape | None:
        """The shape of `chunk` (just consolidated from `data`), when a repeat of it with another
        fragment would only append that fragment: one choice, no finish reason, logprobs, usage,
        error or prompt annotations, an empty `content_filter_results` at most (merging `{}`
        again changes nothing), and a delta that is only `content`, or only one tool call's
        `arguments` (its id, type and name, set by an earlier chunk, are left alone)."""
        if (
            "prompt_filter_results" in chunk
            or "prompt_annotations" in chunk
            or chunk.get("usage")
            or chunk.get("error")
        ):
            return None
        chunk_choices = chunk.get("choices")
        if type(chunk_choices) is not list or len(chunk_choices) != 1 or type(chunk_choices[0]) is not dict:
            return None
        choice = chunk_choices[0]
        if choice.get("finish_reason") or choice.get("logprobs") or choice.get("content_filter_results", {}) != {}:
            return None
        idx = choice.get("index")
        state = choices.get(idx if type(idx) is int else 0)
        delta = choice.get("delta")
        if state is None or type(delta) is not dict or len(delta) != 1:
            return None
        if type(delta.get("content")) is str:
            key, target = "content", state.content
        else:
            calls = delta.get("tool_calls")
            if type(calls) is not list or len(calls) != 1 or type(calls[0]) is not dict:
                return None
            call = calls[0]
            fn = call.get("function")
            if not set(call) <= {"index", "function"} or type(fn) is not dict or len(fn) != 1:
                return None
            if type(fn.get("arguments")) is not str:
                return None
            call_index = call.get("index")
            current = state.tool_calls.get(call_index if type(call_index) is int else 0)
            if current is None:
                return None
            key, target = "arguments", current["function"]["arguments"]
        start = data.rfind(f'"{key}"')
        if start < 0:
            return None
        start = _value_start(data, start + len(key) + 2)
        end = _string_end(data, start) if start >= 0 else -1
        if end < 0:
            return None
        prefix, suffix = data[:start], data[end:]
        # Prove the cut: the probe in place parses to the same chunk with the probe as fragment.
        try:
            probe = orjson.loads(prefix + _PROBE_LITERAL + suffix)
        except orjson.JSONDecodeError:
            return None
        expected = orjson.loads(data)
        holder = expected["choices"][0]["delta"]
        if key == "arguments":
            holder = holder["tool_calls"][0]["function"]
        holder[key] = _PROBE
        if probe != expected:
            return None
        return ChunkShape(prefix, suffix, target)


def _value_start(data: str, i: int) -> int:
    """Where the string value after a key ending at `i` starts (`: ` and JSON whitespace), or -1."""
    n = len(data)
    while i < n and data[i] in " \t\n\r":
        i += 1
    if i >= n or data[i] != ":":
        return -1
    i += 1
    while i < n and data[i] in " \t\n\r":
        i += 1
    return i if i < n and data[i] == '"' else -1


def _string_end(data: str, start: int) -> int:
    """The index just past the JSON string literal starting at `start`, or -1."""
    i, n = start + 1, len(data)
    while i < n:
        c = data[i]
        if c == "\\":
            i += 2
        elif c == '"':
            return i + 1
        else:
            i += 1
    return -1
