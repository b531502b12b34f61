"""The chat consolidation fast path (learnt chunk shapes) against the general path, on random streams.

Each case builds an Azure-shaped chat stream from random pieces (content, refusal, tool-call
fragments, n>1, prompt and post-stop annotation frames, usage chunk, logprobs, odd and broken
events), serialized in a random JSON style, and checks that both paths give the same result.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from shared.normalize import consolidate as C
from shared.normalize.fast_path import MAX_SHAPES
from shared.normalize.sse import decode_text
from testing.factories import CHUNK_BASE

ALPHABET = [
    "a",
    "b",
    " ",
    "é",
    "東京",
    "😀",
    '"',
    "\\",
    "\n",
    "data: ",
    '"content": "x"',
    '"arguments"',
    "{",
    "}",
    ",",
    "\u2603",
]
FILTERS = {"hate": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "low"}}
PROMPT_FRAME = {
    "id": "",
    "object": "",
    "created": 0,
    "model": "",
    "choices": [],
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
}


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 4)))


def _choice(index: int, delta: dict[str, Any], *, azure: bool, finish: str | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
    if azure:
        choice["content_filter_results"] = {}
    return choice


def _chunk(choices: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {**CHUNK_BASE, "choices": choices, **fields}


def _template(rng: random.Random, n: int, calls: int, azure: bool, usage_null: bool) -> Callable[[str], dict[str, Any]]:
    """A chunk with a hole for one text fragment: mostly the simple shapes (only content, only one
    tool call's arguments), sometimes with something else that must keep it off the fast path."""
    i = rng.randrange(n)
    kind = rng.random()
    call_index = rng.randrange(calls) if calls else None
    odd = rng.choice(
        (
            "",
            "",
            "",
            "finish",
            "usage",
            "error",
            "logprobs",
            "filters",
            "two_choices",
            "role",
            "refusal",
            "type",
            "id",
            "name",
            "no_index",
            "content_null_extra",
        )
    )
    other = _text(rng)

    def make(fragment: str) -> dict[str, Any]:
        if kind < 0.6 or call_index is None:
            d: dict[str, Any] = {"content": fragment}
        else:
            call: dict[str, Any] = {"index": call_index, "function": {"arguments": fragment}}
            if odd in ("type", "id"):  # (a late id or name is ignored; a type is not)
                call[odd] = f"custom{kind:.2f}" if odd == "type" else "call_late"
            elif odd == "name":
                call["function"]["name"] = "late_name"
            elif odd == "no_index":
                del call["index"]
            d = {"tool_calls": [call]}
        if odd == "role":
            d["role"] = "tool"
        elif odd == "refusal":
            d["refusal"] = other
        elif odd == "content_null_extra":
            d["context"] = {"citations": [other]}
        choice = _choice(i, d, azure=azure, finish=rng.choice(("stop", "length")) if odd == "finish" else None)
        if odd == "logprobs":
            choice["logprobs"] = {"content": [{"token": other, "logprob": -0.5, "bytes": [], "top_logprobs": []}]}
        elif odd == "filters":
            choice["content_filter_results"] = FILTERS
        choices = [choice]
        if odd == "two_choices" and n > 1:
            choices.append(_choice(1 - i, {"content": other}, azure=azure))
        fields: dict[str, Any] = {"usage": None} if usage_null else {}
        if odd in ("usage", "error"):
            fields[odd] = {"prompt_tokens": rng.randint(1, 3), "code": other}
        return _chunk(choices, **fields)

    return make


def random_stream(rng: random.Random) -> list[Any]:
    """Events (dicts, or raw strings for odd ones) of one random chat stream: chunks drawn from a
    few random templates, so that shapes repeat with other chunks in between."""
    azure = rng.random() < 0.5
    usage_null = rng.random() < 0.3  # `stream_options.include_usage`: `"usage": null` on every chunk
    n = rng.choice((1, 1, 2))
    events: list[Any] = []
    if rng.random() < 0.6:
        events.append(PROMPT_FRAME)
    events.append(_chunk([_choice(i, {"role": "assistant", "content": ""}, azure=azure) for i in range(n)]))
    calls = rng.choice((0, 1, 2))
    for call in range(calls):
        for i in range(n):
            events.append(
                _chunk(
                    [
                        _choice(
                            i,
                            {
                                "tool_calls": [
                                    {
                                        "index": call,
                                        "id": f"call_{i}_{call}",
                                        "type": "function",
                                        "function": {"name": rng.choice(("get_weather", "get_time")), "arguments": ""},
                                    }
                                ]
                            },
                            azure=azure,
                        )
                    ]
                )
            )
    templates = [_template(rng, n, calls, azure, usage_null) for _ in range(rng.randint(1, 6))]
    for _ in range(rng.randint(0, 80)):
        r = rng.random()
        if r < 0.9:
            events.append(rng.choice(templates)(_text(rng)))
        elif r < 0.93:
            events.append(rng.choice(['{"choices": [', "not json", "[1, 2]", "5"]))
        elif r < 0.96:
            events.append(_chunk([_choice(rng.randrange(n), {"content": rng.choice((1, ["x"], None))}, azure=azure)]))
        else:
            events.append(_chunk([], usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}))
    for i in range(n if rng.random() < 0.7 else 0):
        events.append(_chunk([_choice(i, {}, azure=azure, finish=rng.choice(("stop", "tool_calls", "length")))]))
    if rng.random() < 0.4:  # Azure's asynchronous filter: annotation frames after the stop chunk
        events.append(
            {
                "id": "",
                "object": "",
                "created": 0,
                "model": "",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": None,
                        "content_filter_results": FILTERS,
                        "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 9},
                    }
                ],
            }
        )
    if rng.random() < 0.5:
        events.append(_chunk([], usage={"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30}))
    return events


def serialize(rng: random.Random, events: list[Any]) -> str:
    """A `data:` stream in one random JSON style (Python's spacing or AOAI's compact, escaped or not)."""
    compact, ascii_only = rng.random() < 0.5, rng.random() < 0.5
    seps = (",", ":") if compact else (", ", ": ")
    out = []
    for event in events:
        data = event if isinstance(event, str) else json.dumps(event, separators=seps, ensure_ascii=ascii_only)
        out.append(f"data: {data}\n\n")
    if rng.random() < 0.8:
        out.append("data: [DONE]\n\n")
    return "".join(out)


def _both(text: str) -> tuple[C.Consolidated, C.Consolidated]:
    events = decode_text(text)
    fast = C._consolidate_choices(events, C._ChatChoice, "chat.completion", fast=True)
    general = C._consolidate_choices(events, C._ChatChoice, "chat.completion", fast=False)
    return fast, general


@pytest.mark.parametrize("max_shapes", [MAX_SHAPES, 1000])  # 1000: every odd shape is learnt too
@pytest.mark.parametrize("seed", range(500))
def test_fast_path_equals_general_path_on_random_streams(
    seed: int, max_shapes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(C, "MAX_SHAPES", max_shapes)
    rng = random.Random(seed)
    fast, general = _both(serialize(rng, random_stream(rng)))
    assert fast.body == general.body
    assert json.dumps(fast.body) == json.dumps(general.body)  # same key order too
    assert (fast.complete, fast.has_usage, fast.bad_events, fast.events, fast.notes) == (
        general.complete,
        general.has_usage,
        general.bad_events,
        general.events,
        general.notes,
    )
    assert general.fast_events == 0


def test_random_streams_do_take_the_fast_path() -> None:
    taken = 0
    for seed in range(100):
        rng = random.Random(seed)
        taken += _both(serialize(rng, random_stream(rng)))[0].fast_events > 0
    assert taken >= 50


@pytest.mark.parametrize("azure", [False, True])
def test_fast_path_takes_repeated_content_and_argument_chunks(azure: bool) -> None:
    rng = random.Random(1)
    extra = {"content_filter_results": {}} if azure else {}

    def one(d: dict[str, Any]) -> dict[str, Any]:
        return _chunk([{"index": 0, "delta": d, "finish_reason": None, "logprobs": None, **extra}])

    events = [one({"role": "assistant", "content": ""})] + [one({"content": f'w{i}"é'}) for i in range(50)]
    events.append(
        one({"tool_calls": [{"index": 0, "id": "c0", "type": "function", "function": {"name": "f", "arguments": ""}}]})
    )
    events += [one({"tool_calls": [{"index": 0, "function": {"arguments": "{\\"}}]}) for _ in range(20)]
    fast, general = _both(serialize(rng, events))
    assert fast.body == general.body
    message = fast.body["choices"][0]["message"]
    assert message["content"] == "".join(f'w{i}"é' for i in range(50))
    assert message["tool_calls"][0]["function"]["arguments"] == "{\\" * 20
    # The first chunk of each shape goes through the general path; every repeat is matched.
    assert fast.fast_events == 49 + 19 and general.fast_events == 0


def test_chunk_of_a_learnt_shape_with_a_non_string_fragment_takes_the_general_path() -> None:
    events = [_chunk([{"index": 0, "delta": {"content": c}, "finish_reason": None}]) for c in ("a", "b")]
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    # Same text around the fragment, but the fragment is a number, an array, two strings, a broken string.
    prefix, suffix = json.dumps(events[0]).split('"a"')
    for middle in ("5", '["x"]', '"x", "y"', '"x'):
        text += f"data: {prefix}{middle}{suffix}\n\n"
    text += "data: [DONE]\n\n"
    fast, general = _both(text)
    assert fast.body == general.body and fast.bad_events == general.bad_events == 2
    assert fast.body["choices"][0]["message"]["content"] == "ab"
    assert fast.fast_events == 1  # "b"


def test_no_shape_is_learnt_when_the_cut_is_not_the_fragment() -> None:
    # A later `"content"` key outside the delta: cutting there would be wrong, and the probe says so.
    events = [{"choices": [{"index": 0, "delta": {"content": "a"}}], "x": {"content": c}} for c in ("p", "q", "r")]
    text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
    fast, general = _both(text)
    assert fast.body == general.body and fast.body["choices"][0]["message"]["content"] == "aaa"
    assert fast.fast_events == 0
