import json

from shared.normalize.consolidate import consolidate
from testing.factories import chunk, delta, responses_sse, sse, text_stream

PROMPT_ANNOTATION = {
    "id": "",
    "object": "",
    "created": 0,
    "model": "",
    "choices": [],
    "prompt_filter_results": [
        {
            "prompt_index": 0,
            "content_filter_results": {
                "hate": {"filtered": False, "severity": "safe"},
                "jailbreak": {"filtered": False, "detected": False},
                "custom_blocklists": {"filtered": False, "details": []},
            },
        }
    ],
}


def test_plain_text_stream_with_azure_prompt_annotation_first():
    text = sse(PROMPT_ANNOTATION, *[c for c in map(json.loads, _events(text_stream(["Hel", "lo"])))])
    result = consolidate("chat.completions", text)
    body = result.body
    assert result.complete and not result.has_usage
    assert body["id"] == "chatcmpl-1" and body["model"] == "gpt-4o-2024-08-06" and body["created"] == 1717430000
    assert body["object"] == "chat.completion" and body["system_fingerprint"] == "fp_1"
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop", "logprobs": None}
    ]
    assert body["prompt_filter_results"][0]["content_filter_results"]["jailbreak"] == {
        "filtered": False,
        "detected": False,
    }


def _events(stream: str) -> list[str]:
    return [line[6:] for line in stream.split("\n\n") if line.startswith("data: {")]


def test_content_containing_data_prefix_and_sse_syntax_survives():
    pieces = ["see data: [DONE]", '\n\ndata: {"x": 1}', " end"]
    body = consolidate("chat.completions", text_stream(pieces)).body
    assert body["choices"][0]["message"]["content"] == "".join(pieces)


def test_parallel_tool_calls_are_merged_by_index():
    stream = sse(
        chunk([delta(role="assistant", content=None)]),
        chunk(
            [
                delta(
                    tool_calls=[
                        {
                            "index": 0,
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ""},
                        }
                    ]
                )
            ]
        ),
        chunk([delta(tool_calls=[{"index": 0, "function": {"arguments": '{"loc'}}])]),
        chunk(
            [
                delta(
                    tool_calls=[
                        {
                            "index": 1,
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_time", "arguments": ""},
                        }
                    ]
                )
            ]
        ),
        chunk([delta(tool_calls=[{"index": 0, "function": {"arguments": 'ation": "Paris"}'}}])]),
        chunk([delta(tool_calls=[{"index": 1, "function": {"arguments": '{"tz": "CET"}'}}])]),
        chunk([delta(finish_reason="tool_calls")]),
    )
    choice = consolidate("chat.completions", stream).body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": '{"tz": "CET"}'}},
    ]
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"location": "Paris"}


def test_legacy_function_call_stream():
    stream = sse(
        chunk([delta(role="assistant", function_call={"name": "lookup", "arguments": ""})]),
        chunk([delta(function_call={"arguments": '{"q":'})]),
        chunk([delta(function_call={"arguments": " 1}"})]),
        chunk([delta(finish_reason="function_call")]),
    )
    message = consolidate("chat.completions", stream).body["choices"][0]["message"]
    assert message["function_call"] == {"name": "lookup", "arguments": '{"q": 1}'}


def test_n_greater_than_one_keeps_choices_apart_even_interleaved():
    stream = sse(
        chunk([delta(0, role="assistant", content=""), delta(1, role="assistant", content="")]),
        chunk([delta(1, content="B1 ")]),
        chunk([delta(0, content="A1 ")]),
        chunk([delta(0, content="A2")]),
        chunk([delta(1, content="B2")]),
        chunk([delta(1, finish_reason="length")]),
        chunk([delta(0, finish_reason="stop")]),
    )
    choices = consolidate("chat.completions", stream).body["choices"]
    assert [(c["index"], c["message"]["content"], c["finish_reason"]) for c in choices] == [
        (0, "A1 A2", "stop"),
        (1, "B1 B2", "length"),
    ]


def test_async_filter_annotations_after_stop_keep_finish_reason_and_merge_most_severe():
    annotation = lambda results: {  # noqa: E731
        "id": "",
        "object": "",
        "created": 0,
        "model": "",
        "choices": [
            {
                "index": 0,
                "finish_reason": None,
                "content_filter_results": results,
                "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 20},
            }
        ],
    }
    stream = sse(
        PROMPT_ANNOTATION,
        chunk([delta(role="assistant", content="Hi")]),
        chunk([delta(finish_reason="stop")]),
        annotation(
            {
                "violence": {"filtered": False, "severity": "low"},
                "protected_material_text": {"filtered": False, "detected": False},
            }
        ),
        annotation(
            {
                "violence": {"filtered": False, "severity": "safe"},
                "protected_material_code": {
                    "filtered": False,
                    "detected": True,
                    "citation": {"URL": "https://x", "license": "MIT"},
                },
            }
        ),
        annotation(
            {
                "profanity": {"filtered": False, "detected": True},
                "custom_blocklists": {"filtered": True, "details": [{"id": "bl1", "filtered": True}]},
            }
        ),
    )
    choice = consolidate("chat.completions", stream).body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "Hi"
    results = choice["content_filter_results"]
    assert results["violence"] == {"filtered": False, "severity": "low"}
    assert results["protected_material_code"]["detected"] is True
    assert results["protected_material_text"] == {"filtered": False, "detected": False}
    assert results["profanity"]["detected"] is True
    assert results["custom_blocklists"] == {"filtered": True, "details": [{"id": "bl1", "filtered": True}]}


def test_async_filter_content_filter_finish_wins():
    stream = sse(
        chunk([delta(role="assistant", content="bad")]),
        {
            "id": "",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "content_filter",
                    "content_filter_results": {"hate": {"filtered": True, "severity": "high"}},
                }
            ],
        },
    )
    result = consolidate("chat.completions", stream)
    assert result.body["choices"][0]["finish_reason"] == "content_filter"


def test_usage_chunk_logprobs_and_missing_done():
    lp = lambda tok: {"content": [{"token": tok, "logprob": -0.1, "top_logprobs": []}], "refusal": None}  # noqa: E731
    stream = sse(
        chunk(
            [{"index": 0, "delta": {"role": "assistant", "content": "a"}, "logprobs": lp("a"), "finish_reason": None}]
        ),
        chunk([{"index": 0, "delta": {"content": "b"}, "logprobs": lp("b"), "finish_reason": "stop"}]),
        chunk([], usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
        done=False,
    )
    result = consolidate("chat.completions", stream)
    assert result.has_usage and not result.complete
    assert result.body["usage"]["total_tokens"] == 7
    assert [t["token"] for t in result.body["choices"][0]["logprobs"]["content"]] == ["a", "b"]


def test_refusal_and_bad_events_are_tolerated():
    stream = sse(
        chunk([delta(role="assistant", refusal="I can")]),
        "not json",
        chunk([delta(refusal="not.", finish_reason="stop")]),
    )
    result = consolidate("chat.completions", stream)
    assert result.body["choices"][0]["message"]["refusal"] == "I cannot."
    assert result.bad_events == 1


def test_legacy_completions_stream_with_logprobs_objects():
    def c(text, finish=None):
        return {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1,
            "model": "gpt-35-turbo-instruct",
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "finish_reason": finish,
                    "logprobs": {
                        "tokens": [text],
                        "token_logprobs": [-0.5],
                        "top_logprobs": [{text: -0.5}],
                        "text_offset": [0],
                    },
                }
            ],
        }

    body = consolidate("completions", sse(c("Hello"), c(" world", "stop"))).body
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Hello world" and body["choices"][0]["finish_reason"] == "stop"
    assert body["choices"][0]["logprobs"]["tokens"] == ["Hello", " world"]


def test_responses_stream_takes_the_completed_response():
    final = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-4o",
        "output": [],
        "usage": {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
    }
    stream = responses_sse(
        {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1", "status": "in_progress"}},
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "output_index": 0,
            "content_index": 0,
            "item_id": "m",
            "delta": "data: x",
        },
        {"type": "response.completed", "sequence_number": 2, "response": final},
    )
    result = consolidate("responses", stream)
    assert result.body == final and result.complete and result.has_usage


def test_responses_stream_broken_off_is_rebuilt_from_deltas():
    stream = responses_sse(
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": {"id": "resp_1", "status": "in_progress", "model": "gpt-4o"},
        },
        {
            "type": "response.output_item.added",
            "sequence_number": 1,
            "output_index": 0,
            "item": {"id": "m", "type": "message", "role": "assistant", "content": []},
        },
        {
            "type": "response.content_part.added",
            "sequence_number": 2,
            "output_index": 0,
            "content_index": 0,
            "part": {"type": "output_text", "text": ""},
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 3,
            "output_index": 0,
            "content_index": 0,
            "delta": "Hello ",
        },
        {
            "type": "response.output_text.delta",
            "sequence_number": 4,
            "output_index": 0,
            "content_index": 0,
            "delta": "there",
        },
        {
            "type": "response.output_item.added",
            "sequence_number": 5,
            "output_index": 1,
            "item": {"type": "function_call", "name": "f", "arguments": "", "call_id": "c1"},
        },
        {"type": "response.function_call_arguments.delta", "sequence_number": 6, "output_index": 1, "delta": '{"a":'},
    )
    result = consolidate("responses", stream)
    assert not result.complete and not result.has_usage
    body = result.body
    assert body["id"] == "resp_1" and body["status"] == "incomplete"
    assert body["output"][0]["content"][0]["text"] == "Hello there"
    assert body["output"][1]["arguments"] == '{"a":'


def test_sse_edge_cases_crlf_comments_multiline_data_and_bom():
    stream = (
        "\ufeff: keep-alive\r\n\r\n"
        'data: {"id": "c1", "model": "gpt-4o", "created": 5,\r\n'
        'data:  "choices": [{"index": 0, "delta": {"role": "assistant", "content": "line\\nbreak"}}]}\r\n\r\n'
        ": comment between events\r"
        '\rdata:{"id": "c1", "choices": [{"index": 0, "delta": {"content": " \\u2028ok"}, "finish_reason": "stop"}]}\n\n\n\n'
        "data: [DONE]"
    )
    result = consolidate("chat.completions", stream)
    assert result.complete and result.bad_events == 0
    assert result.body["choices"][0]["message"]["content"] == "line\nbreak \u2028ok"
    assert result.body["choices"][0]["finish_reason"] == "stop"


def test_same_result_from_bytes_and_from_every_line_ending():
    text = text_stream(["a", "b"])
    expected = consolidate("chat.completions", text).body
    for ending in ("\r\n", "\r"):
        assert consolidate("chat.completions", text.replace("\n", ending).encode()).body == expected


def test_older_prompt_annotations_name_is_merged_too():
    older = {
        "id": "",
        "choices": [],
        "prompt_annotations": [
            {"prompt_index": 0, "content_filter_results": {"sexual": {"filtered": False, "severity": "low"}}},
            {"prompt_index": 1, "content_filter_results": {"sexual": {"filtered": False, "severity": "safe"}}},
        ],
    }
    body = consolidate("chat.completions", sse(older, *[json.loads(e) for e in _events(text_stream(["x"]))])).body
    assert [p["prompt_index"] for p in body["prompt_filter_results"]] == [0, 1]
    assert body["prompt_filter_results"][0]["content_filter_results"]["sexual"]["severity"] == "low"


def test_responses_stream_broken_events_never_combine_into_one():
    # Each half is invalid JSON; joined into one array they would parse as a bogus event.
    stream = 'event: response.created\ndata: {"x": [1\n\nevent: response.created\ndata: 2]}, 3\n\n'
    result = consolidate("responses", stream)
    assert result.bad_events == 2 and result.events == 2


def test_repeated_filter_verdicts_merge_as_if_each_were_merged():
    """Azure repeats a chunk's verdicts on every chunk; a repeat is not merged again. Seeded random
    sequences (repeats, a worse severity in between, null, a blocklist hit, the first verdict coming
    back) give exactly the fold of `filter_results.merge` over every chunk's verdicts."""
    import random

    from shared.normalize import filter_results

    safe = {"hate": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}
    verdicts = [
        safe,
        {"hate": {"filtered": False, "severity": "low"}, "violence": {"filtered": False, "severity": "safe"}},
        {"violence": {"filtered": True, "severity": "high"}},
        None,
        {},
        {"custom_blocklists": {"filtered": True, "details": [{"id": "bl1", "filtered": True}]}},
        {"custom_blocklists": {"filtered": False, "details": [{"id": "bl2", "filtered": False}]}},
        {"protected_material_code": {"filtered": False, "detected": True, "citation": {"URL": "u"}}},
    ]
    rnd = random.Random(3)
    for _ in range(300):
        chosen = [rnd.choice(verdicts[:2]) if rnd.random() < 0.7 else rnd.choice(verdicts) for _ in range(12)]
        chunks = [
            {**chunk([delta(content=str(i))]), "choices": [{**delta(content=str(i)), "content_filter_results": v}]}
            for i, v in enumerate(chosen)
        ]
        expected: dict = {}
        for v in chosen:
            expected = filter_results.merge(expected, json.loads(json.dumps(v)))
        choice = consolidate("chat.completions", sse(*chunks)).body["choices"][0]
        assert choice["content_filter_results"] == expected, chosen
