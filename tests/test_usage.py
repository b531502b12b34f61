import base64
import struct

import pytest

from shared.normalize import record_schema
from shared.normalize.texts import completion_text, prompt_text
from shared.normalize.usage import normalize
from testing.factories import chunk, delta, exchange, responses_sse, sse, text_stream


def _record(ex):
    record, details = normalize(ex)
    record_schema.validate(record)
    return record, details


def test_non_stream_chat_with_service_usage_and_details():
    body = {
        "id": "chatcmpl-9",
        "object": "chat.completion",
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "tool_calls",
                "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
            }
        ],
        "prompt_filter_results": [
            {"prompt_index": 0, "content_filter_results": {"jailbreak": {"filtered": False, "detected": False}}}
        ],
        "usage": {
            "prompt_tokens": 1500,
            "completion_tokens": 20,
            "total_tokens": 1520,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "accepted_prediction_tokens": 0},
        },
    }
    record, details = _record(
        exchange(body={"messages": [{"role": "user", "content": "hi"}], "tools": []}, response_body=body)
    )
    assert record["usage_source"] == "service"
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"], record["cached_tokens"]) == (
        1500,
        20,
        1520,
        1024,
    )
    assert record["usage_details"]["prompt_tokens_details"]["cached_tokens"] == 1024
    assert (
        record["model"] == "gpt-4o-2024-08-06"
        and record["deployment"] == "gpt-4o"
        and record["api"] == "chat.completions"
    )
    assert record["region"] == "East US" and record["backend"] == "aoai-eastus" and record["attempts"] == 1
    assert record["finish_reasons"] == ["tool_calls"] and record["tool_call_count"] == 1
    assert record["content_filter"]["prompt"]["jailbreak"]["detected"] is False
    assert record["content_filter"]["filtered"] is False
    assert record["stream"] is False and record["ttft_ms"] == record["latency_ms"] == 900.0
    assert record["user_agent"].startswith("AzureOpenAI") and record["api_version"] == "2024-10-21"
    assert details["response"]["id"] == "chatcmpl-9" and details["request"]["messages"][0]["content"] == "hi"


def test_reasoning_tokens_from_responses_api_non_stream():
    body = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "o4-mini",
        "output": [{"type": "reasoning"}, {"type": "message", "content": [{"type": "output_text", "text": "42"}]}],
        "usage": {
            "input_tokens": 30,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 200,
            "output_tokens_details": {"reasoning_tokens": 192},
            "total_tokens": 230,
        },
    }
    record, _ = _record(
        exchange(path="/openai/v1/responses", query={}, body={"model": "o4-mini", "input": "q"}, response_body=body)
    )
    assert record["deployment"] == "o4-mini" and record["api"] == "responses"
    assert (record["prompt_tokens"], record["completion_tokens"], record["reasoning_tokens"]) == (30, 200, 192)
    assert record["finish_reasons"] == ["completed"]


def test_prompt_blocked_by_content_filter_is_flagged_and_prompt_estimated():
    error = {
        "error": {
            "code": "content_filter",
            "message": "filtered",
            "param": "prompt",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": {"filtered": True, "severity": "high"},
                    "jailbreak": {"filtered": True, "detected": True},
                    "custom_blocklists": {"filtered": False, "details": []},
                },
            },
        }
    }
    record, _ = _record(
        exchange(status=400, body={"messages": [{"role": "user", "content": "bad words"}]}, response_body=error)
    )
    assert record["error_code"] == "content_filter"
    assert record["content_filter"]["filtered"] is True
    assert record["content_filter"]["prompt"]["hate"] == {"filtered": True, "severity": "high"}
    assert record["usage_source"] == "estimated" and record["prompt_tokens"] > 0 and record["completion_tokens"] == 0


def test_innererror_code_when_error_code_missing():
    record, _ = _record(
        exchange(
            status=400,
            body={"messages": []},
            response_body={"error": {"message": "x", "innererror": {"code": "InvalidPayload"}}},
        )
    )
    assert record["error_code"] == "InvalidPayload" and record["usage_source"] == "none"


@pytest.mark.parametrize("status", [401, 404, 413, 429, 500, 503])
def test_errors_that_used_no_tokens(status):
    record, _ = _record(
        exchange(
            status=status,
            body={"messages": [{"role": "user", "content": "hi"}]},
            response_body={"error": {"code": str(status), "message": "no"}},
        )
    )
    assert record["usage_source"] == "none" and record["total_tokens"] == 0 and record["error_code"] == str(status)


def test_gateway_error_without_upstream_attempt():
    ex = exchange(
        status=502,
        body={"messages": []},
        response_body={"error": {"code": "BackendUnavailable", "message": "x"}},
        gateway_error={"code": "BackendUnavailable", "message": "all backends failed"},
    )
    ex.attempts = []
    ex.backend = None
    record, _ = _record(ex)
    assert (record["error_code"], record["attempts"], record["backend"], record["usage_source"]) == (
        "BackendUnavailable",
        0,
        None,
        "none",
    )


def test_client_gone_before_any_status():
    ex = exchange(status=None, body={"messages": []}, client_disconnected=True)
    record, _ = _record(ex)
    assert record["status_code"] == 499 and record["client_disconnected"] is True and record["usage_source"] == "none"


def test_stream_cut_short_is_estimated_from_what_arrived():
    stream = sse(chunk([delta(role="assistant", content="Hello")]), chunk([delta(content=" wor")]), done=False)
    ex = exchange(
        body={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        sse_text=stream,
        client_disconnected=True,
        response_headers={"content-type": "text/event-stream"},
    )
    record, details = _record(ex)
    assert record["usage_source"] == "estimated" and record["completion_tokens"] == 2 and record["stream"] is True
    assert "stream ended without [DONE]" in record["estimation_notes"]
    assert details["response"]["choices"][0]["finish_reason"] is None


def test_injected_usage_but_no_usage_chunk_is_noted():
    ex = exchange(
        body={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        sse_text=text_stream(["ok"]),
        usage_injected=True,
    )
    record, _ = _record(ex)
    assert record["usage_source"] == "estimated"
    assert any("no usage chunk" in n for n in record["estimation_notes"])


def test_async_filter_content_filter_finish_marks_filtered():
    stream = sse(
        chunk([delta(role="assistant", content="x")]),
        {
            "id": "",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "content_filter",
                    "content_filter_results": {"violence": {"filtered": True, "severity": "medium"}},
                }
            ],
        },
    )
    record, _ = _record(exchange(body={"messages": [], "stream": True}, sse_text=stream))
    assert record["finish_reasons"] == ["content_filter"] and record["content_filter"]["filtered"] is True
    assert record["content_filter"]["completion"]["violence"]["severity"] == "medium"


def test_embeddings_service_usage_and_vectors_not_kept_in_details():
    body = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [{"index": 0, "object": "embedding", "embedding": "AAAAAA=="}],
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    record, details = _record(
        exchange(path="/openai/deployments/emb/embeddings", body={"input": ["a", "b"]}, response_body=body)
    )
    assert (record["usage_source"], record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (
        "service",
        5,
        0,
        5,
    )
    assert details["response"]["data"][0]["embedding"] == "[8 base64 chars omitted]"


def test_legacy_completions_token_array_prompt_estimated():
    stream = sse(
        {
            "id": "c",
            "object": "text_completion",
            "model": "gpt-35-turbo-instruct",
            "choices": [{"index": 0, "text": "Hello world", "finish_reason": "stop", "logprobs": None}],
        }
    )
    ex = exchange(
        path="/openai/deployments/instruct/completions",
        body={"prompt": [[1, 2, 3], "Hello"], "stream": True, "logprobs": 2},
        sse_text=stream,
    )
    record, _ = _record(ex)
    assert record["api"] == "completions" and record["prompt_tokens"] == 3 + 1 and record["completion_tokens"] == 2


def test_gpt_image_usage_and_images_counted():
    body = {
        "created": 1,
        "data": [{"b64_json": "QUFB"}, {"b64_json": "QkJC"}],
        "usage": {
            "input_tokens": 50,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 50},
            "output_tokens": 4160,
            "total_tokens": 4210,
        },
    }
    record, details = _record(
        exchange(
            path="/openai/deployments/gpt-image-1/images/generations",
            body={"prompt": "a cat", "n": 2},
            response_body=body,
        )
    )
    assert (record["usage_source"], record["prompt_tokens"], record["completion_tokens"], record["image_count"]) == (
        "service",
        50,
        4160,
        2,
    )
    assert record["usage_details"]["input_tokens_details"]["text_tokens"] == 50
    assert details["response"]["data"][0]["b64_json"] == "[4 base64 chars omitted]"


def test_dalle3_without_usage_is_none():
    record, _ = _record(
        exchange(
            path="/openai/deployments/dalle3/images/generations",
            body={"prompt": "a cat"},
            response_body={"created": 1, "data": [{"url": "https://x", "revised_prompt": "cat"}]},
        )
    )
    assert record["usage_source"] == "none" and record["image_count"] == 1


def _png(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00\x00\x00\x00" + b"\x00" * 400


def test_vision_estimate_uses_tile_formula_and_flags_unknown_sizes():
    url = "data:image/png;base64," + base64.b64encode(_png(1024, 1024)).decode()
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png", "detail": "high"}},
    ]
    only_text = [{"type": "text", "text": "What is this?"}]
    stream = text_stream(["A cat"])
    with_images, details = _record(
        exchange(body={"messages": [{"role": "user", "content": content}], "stream": True}, sse_text=stream)
    )
    text_only, _ = _record(
        exchange(body={"messages": [{"role": "user", "content": only_text}], "stream": True}, sse_text=stream)
    )
    assert with_images["image_count"] == 2
    assert with_images["prompt_tokens"] - text_only["prompt_tokens"] == 765 + 765
    assert any("unknown size" in n for n in with_images["estimation_notes"])
    assert "omitted" in details["request"]["messages"][0]["content"][1]["image_url"]["url"]


def test_audio_transcription_text_response():
    ex = exchange(
        path="/openai/deployments/whisper/audio/transcriptions",
        body=None,
        response_headers={"content-type": "text/plain"},
    )
    ex.response.body = {"base64": base64.b64encode(b"Hallo Welt").decode()}
    ex.response.body_encoding = "base64"
    record, details = _record(ex)
    assert record["api"] == "audio.transcriptions" and record["usage_source"] == "none"
    assert completion_text("audio.transcriptions", details["response"]) == "Hallo Welt"


def test_responses_stream_usage_from_completed_event():
    final = {
        "id": "r",
        "object": "response",
        "status": "completed",
        "model": "gpt-4o",
        "output": [{"type": "function_call", "name": "f", "arguments": "{}"}],
        "usage": {
            "input_tokens": 11,
            "output_tokens": 7,
            "total_tokens": 18,
            "input_tokens_details": {"cached_tokens": 0},
        },
    }
    stream = responses_sse(
        {"type": "response.created", "response": {"id": "r"}}, {"type": "response.completed", "response": final}
    )
    record, _ = _record(
        exchange(
            path="/openai/v1/responses",
            query={},
            body={"model": "gpt-4o", "input": "x", "stream": True},
            sse_text=stream,
        )
    )
    assert (record["usage_source"], record["total_tokens"], record["tool_call_count"], record["stream"]) == (
        "service",
        18,
        1,
        True,
    )


def test_unparseable_exchange_still_yields_a_valid_record_with_parse_error():
    ex = exchange(body={"messages": []}, sse_text=None)
    ex.response.sse = 12345  # not text: consolidation cannot read it
    record, _ = _record(ex)
    assert record["parse_error"] and record["request_id"] == "req-1" and record["status_code"] == 200


def test_prompt_and_completion_texts():
    body = {
        "messages": [
            {"role": "system", "content": "Be nice."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ]
    }
    assert prompt_text("chat.completions", body) == "Be nice.\nDescribe"
    consolidated = {
        "choices": [
            {"message": {"content": "A cat", "tool_calls": [{"function": {"name": "f", "arguments": '{"a": 1}'}}]}}
        ]
    }
    assert completion_text("chat.completions", consolidated) == 'A cat\n{"a": 1}'
    assert prompt_text("completions", {"prompt": [[1, 2], "hello"]}) == "hello"
    assert (
        prompt_text(
            "responses",
            {"instructions": "I", "input": [{"role": "user", "content": [{"type": "input_text", "text": "q"}]}]},
        )
        == "I\nq"
    )
    assert (
        completion_text(
            "responses", {"output": [{"type": "message", "content": [{"type": "output_text", "text": "a"}]}]}
        )
        == "a"
    )


def test_inlined_schema_gives_the_same_verdicts_as_the_original():
    from jsonschema import Draft202012Validator

    original = Draft202012Validator(record_schema.schema())
    record, _ = normalize(exchange(body={"messages": []}, sse_text=text_stream(["x"])))
    variants = [
        record,
        {**record, "cached_tokens": -1},
        {**record, "user_id": 5},
        {**record, "extra": 1},
        {**record, "content_filter": {"prompt": {"hate": "x"}, "completion": {}, "filtered": False}},
        {**record, "usage_source": "guess"},
        {k: v for k, v in record.items() if k != "model"},
        {**record, "latency_ms": -3},
    ]
    for variant in variants:
        assert original.is_valid(variant) == (record_schema.errors(variant) == []), variant
    assert sum(original.is_valid(v) for v in variants) == 1


def test_fast_validator_agrees_with_jsonschema():
    record, _ = normalize(exchange(body={"messages": []}, sse_text=text_stream(["x"])))
    variants = [
        record,
        {**record, "cached_tokens": -1},
        {**record, "user_id": 5},
        {**record, "extra": 1},
        {**record, "usage_source": "guess"},
        {k: v for k, v in record.items() if k != "request_id"},
        {**record, "stream": "yes"},
        {**record, "finish_reasons": [3]},
        {**record, "prompt_tokens": 1.5},
        {**record, "timestamp": "yesterday"},
    ]
    slow = record_schema.validator()
    for variant in variants:
        assert record_schema.fast_validator().is_valid(variant) == slow.is_valid(variant), variant
    assert record_schema.errors({**record, "stream": "yes"})[0].startswith("stream:")


def test_n_greater_than_one_estimates_every_choice_once_and_the_prompt_once():
    one = sse(chunk([delta(0, role="assistant", content="Hello world")]), chunk([delta(0, finish_reason="stop")]))
    two = sse(
        chunk([delta(0, role="assistant", content="Hello world"), delta(1, role="assistant", content="Hello world")]),
        chunk([delta(0, finish_reason="stop"), delta(1, finish_reason="stop")]),
    )
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    r1, _ = _record(exchange(body=body, sse_text=one))
    r2, _ = _record(exchange(body={**body, "n": 2}, sse_text=two))
    assert r2["prompt_tokens"] == r1["prompt_tokens"]
    assert r2["completion_tokens"] == 2 * r1["completion_tokens"] == 4
    assert r2["finish_reasons"] == ["stop", "stop"]


def test_credentials_in_the_body_never_reach_the_details():
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "data_sources": [
            {
                "type": "azure_search",
                "parameters": {
                    "endpoint": "https://s",
                    "index_name": "i",
                    "authentication": {"type": "api_key", "key": "sekrit-1"},
                },
            },
            {
                "type": "mongo_db",
                "parameters": {
                    "authentication": {"type": "username_and_password", "username": "u", "password": "sekrit-2"}
                },
            },
            {
                "type": "elasticsearch",
                "parameters": {"authentication": {"type": "encoded_api_key", "encoded_api_key": "sekrit-3"}},
            },
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "f", "parameters": {"type": "object", "properties": {"key": {"type": "string"}}}},
            }
        ],
    }
    record, details = _record(
        exchange(
            body=body,
            response_body={"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}},
        )
    )
    text = str(details) + str(record)
    assert "sekrit" not in text
    assert details["request"]["data_sources"][0]["parameters"]["authentication"] == {
        "type": "api_key",
        "key": "[REDACTED]",
    }
    assert details["request"]["tools"][0]["function"]["parameters"]["properties"]["key"] == {"type": "string"}


def test_details_scrub_summarizes_then_redacts_with_the_same_result_as_the_other_order():
    # `_scrub` summarizes payloads before redacting (so redaction never walks embedding vectors);
    # every rule of either step must give what redacting first gives.
    from shared.normalize.usage import _scrub, _summarize
    from shared.redaction import redact_body_secrets

    url = "data:image/png;base64," + "A" * 5000
    body = {
        "data": [{"object": "embedding", "embedding": [0.1] * 1536}, {"embedding": "QUJD" * 100}],
        "password": url,
        "api_key": [1, 2, 3],
        "client_secret": {"embedding": [1.0], "api_key": "k"},
        "data_sources": [{"parameters": {"authentication": {"type": "api_key", "key": url, "embedding": [2.0]}}}],
        "messages": [{"content": [{"image_url": {"url": url}}, {"b64_json": "x" * 99}]}],
        "tools": [{"function": {"parameters": {"properties": {"password": {"type": "string"}}}}}],
    }
    scrubbed = _scrub(body)
    assert scrubbed == _summarize(redact_body_secrets(body))
    assert scrubbed["password"] == scrubbed["api_key"] == "[REDACTED]"
    assert scrubbed["data"][0]["embedding"] == "[1536 values omitted]"
    assert scrubbed["data_sources"][0]["parameters"]["authentication"]["key"] == "[REDACTED]"
