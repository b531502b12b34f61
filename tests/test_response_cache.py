"""The exact response cache's rules, pure: repeatable requests, the key, what is storable, and a
stored answer served in the other form (checked by consolidating it back)."""

from __future__ import annotations

import orjson
import pytest

from shared.normalize.consolidate import consolidate
from shared.normalize.sse import decode_all
from shared.response_cache import Entry, as_body, as_stream, cache_key, repeatable, storable

BODY = {
    "choices": [
        {
            "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
            "finish_reason": "stop",
            "index": 0,
            "logprobs": None,
            "message": {"content": "Hello there, friend.", "refusal": None, "role": "assistant"},
        }
    ],
    "created": 1733400000,
    "id": "chatcmpl-abc",
    "model": "gpt-4o-2024-08-06",
    "object": "chat.completion",
    "prompt_filter_results": [
        {"prompt_index": 0, "content_filter_results": {"jailbreak": {"filtered": False, "detected": False}}}
    ],
    "system_fingerprint": "fp_1",
    "usage": {"completion_tokens": 5, "prompt_tokens": 9, "total_tokens": 14},
}


@pytest.mark.parametrize(
    ("api", "body", "why"),
    [
        ("chat.completions", {"temperature": 0}, None),
        ("chat.completions", {"seed": 3, "temperature": 0.8}, None),
        ("chat.completions", {"temperature": 0.0, "n": 1}, None),
        ("embeddings", {"input": "x"}, None),
        ("chat.completions", {}, "neither temperature 0 nor a seed"),
        ("chat.completions", {"temperature": 0, "n": 2}, "n is not 1"),
        ("chat.completions", {"temperature": 0, "logprobs": True}, "logprobs requested"),
        ("completions", {"temperature": 0, "logprobs": 2}, "logprobs requested"),
        ("chat.completions", {"seed": True}, "neither temperature 0 nor a seed"),
        ("responses", {"temperature": 0}, "responses answers are not cached"),
        ("chat.completions", None, "the request body is not a JSON object"),
    ],
)
def test_only_repeatable_requests_take_part(api, body, why):
    assert repeatable(api, body) == why


def test_the_key_ignores_transport_fields_only():
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    key = cache_key("subscription:a", "gpt-4o", "chat.completions", "2024-10-21", body)
    same = {**body, "stream": True, "stream_options": {"include_usage": True}, "user": "u1"}
    assert cache_key("subscription:a", "gpt-4o", "chat.completions", "2024-10-21", same) == key
    assert cache_key("subscription:a", "gpt-4o", "chat.completions", "2024-10-21", dict(reversed(body.items()))) == key
    for other in (
        cache_key("subscription:b", "gpt-4o", "chat.completions", "2024-10-21", body),
        cache_key("subscription:a", "gpt-4o-mini", "chat.completions", "2024-10-21", body),
        cache_key("subscription:a", "gpt-4o", "chat.completions", "2025-01-01", body),
        cache_key("subscription:a", "gpt-4o", "chat.completions", "2024-10-21", {**body, "max_tokens": 5}),
    ):
        assert other != key


def _stream(body: dict, *, usage: bool = True, done: bool = True) -> bytes:
    return as_stream(Entry("chat.completions", False, orjson.dumps(body).decode(), body["usage"], None, 0), usage)[
        : None if done else -len(b"data: [DONE]\n\n")
    ]


def test_storable_answers_and_what_is_refused():
    entry, why = storable("chat.completions", 200, "application/json", orjson.dumps(BODY), 5.0)
    assert entry is not None and why == "" and entry.usage == BODY["usage"] and not entry.stream
    stream = _stream(BODY)
    entry, _ = storable("chat.completions", 200, "text/event-stream; charset=utf-8", stream, 5.0)
    assert entry is not None and entry.stream and entry.usage == BODY["usage"]
    filtered = {**BODY, "choices": [{**BODY["choices"][0], "finish_reason": "content_filter"}]}
    flagged_prompt = {
        **BODY,
        "prompt_filter_results": [{"content_filter_results": {"jailbreak": {"filtered": True, "detected": True}}}],
    }
    refused = [
        (500, "application/json", orjson.dumps(BODY), "status 500"),
        (200, "application/json", orjson.dumps(filtered), "the content filter stopped the answer"),
        (200, "application/json", orjson.dumps(flagged_prompt), "the content filter flagged the prompt"),
        (200, "application/json", orjson.dumps({**BODY, "usage": None}), "the answer carries no usage"),
        (200, "text/event-stream", _stream(BODY, done=False), "the stream did not end with [DONE]"),
        (200, "text/event-stream", _stream(BODY, usage=False), "the stream carried no usage"),
        (200, "application/json", b"\xff", "the answer is not UTF-8"),
    ]
    for status, ctype, raw, reason in refused:
        assert storable("chat.completions", status, ctype, raw, 0) == (None, reason)


def test_a_stored_body_served_as_a_stream_consolidates_back_to_it():
    entry = Entry("chat.completions", False, orjson.dumps(BODY).decode(), BODY["usage"], BODY["model"], 0)
    with_usage = as_stream(entry, include_usage=True)
    events = [e.data for e in decode_all(with_usage)]
    assert events[-1] == "[DONE]" and orjson.loads(events[0])["prompt_filter_results"] == BODY["prompt_filter_results"]
    chunks = [orjson.loads(d) for d in events[1:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "chatcmpl-abc" for c in chunks)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == BODY["usage"]
    back = consolidate("chat.completions", with_usage).body
    assert back["choices"][0]["message"]["content"] == "Hello there, friend."
    assert back["usage"] == BODY["usage"] and back["choices"][0]["finish_reason"] == "stop"
    without = as_stream(entry, include_usage=False)
    assert b'"usage"' not in without and consolidate("chat.completions", without).complete


def test_a_stored_stream_serves_a_body_and_hides_its_usage_chunk_unless_asked():
    stream = _stream(BODY)
    entry, _ = storable("chat.completions", 200, "text/event-stream", stream, 0)
    assert entry is not None
    body = orjson.loads(as_body(entry))
    assert body["object"] == "chat.completion" and body["usage"] == BODY["usage"]
    assert body["choices"][0]["message"]["content"] == BODY["choices"][0]["message"]["content"]
    assert as_stream(entry, include_usage=True) == stream
    hidden = as_stream(entry, include_usage=False)
    assert len(decode_all(hidden)) == len(decode_all(stream)) - 1 and b'"usage":{' not in hidden
