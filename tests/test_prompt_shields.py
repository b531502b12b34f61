"""Prompt Shields' verdicts normalized into the record, from the shapes Azure OpenAI documents
(the project has no recorded Prompt Shields traffic; every body below is named as documented).

Sources: "Content filtering annotations" (learn.microsoft.com, azure/ai-services/openai/concepts/
content-filter-annotations): optional models report `{"filtered": bool, "detected": bool}` per
category, `jailbreak` for user prompt attacks and `indirect_attack` for attacks in documents, in
`prompt_filter_results[].content_filter_results`; the 400 `content_filter` error carries them in
`innererror.content_filter_result`; the Responses API in `content_filters[]` with `source_type`.
"""

from __future__ import annotations

from shared.normalize import record_schema
from shared.normalize.usage import normalize
from testing.factories import chunk, delta, exchange, sse

CHAT = "/openai/deployments/gpt-4o/chat/completions"
REQUEST = {"messages": [{"role": "user", "content": "hi"}]}
ANSWER = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def _record(ex):
    record, _ = normalize(ex)
    record_schema.validate(record)
    return record


def test_documented_annotate_mode_jailbreak_detected_not_filtered():
    body = {
        **ANSWER,
        "prompt_filter_results": [
            {
                "prompt_index": 0,
                "content_filter_results": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "jailbreak": {"filtered": False, "detected": True},
                },
            }
        ],
    }
    record = _record(exchange(path=CHAT, body=REQUEST, response_body=body))
    assert record["prompt_shields"] == {"jailbreak": {"detected": True, "filtered": False}, "indirect_attack": None}
    assert record["prompt_blocked_reason"] is None and record["content_filter"]["filtered"] is False


def test_documented_indirect_attack_in_a_document_prompt_result():
    body = {
        **ANSWER,
        "prompt_filter_results": [
            {"prompt_index": 0, "content_filter_results": {"jailbreak": {"filtered": False, "detected": False}}},
            {"prompt_index": 1, "content_filter_results": {"indirect_attack": {"filtered": False, "detected": True}}},
        ],
    }
    record = _record(exchange(path=CHAT, body=REQUEST, response_body=body))
    assert record["prompt_shields"]["indirect_attack"] == {"detected": True, "filtered": False}
    assert record["prompt_shields"]["jailbreak"] == {"detected": False, "filtered": False}


def test_documented_stream_prompt_annotation_frame():
    frame = {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [
            {"prompt_index": 0, "content_filter_results": {"jailbreak": {"filtered": False, "detected": True}}}
        ],
    }
    text = sse(
        frame, chunk([delta(content="ok")], id="c", model="gpt-4o"), chunk([delta(finish_reason="stop")], id="c")
    )
    ex = exchange(
        path=CHAT,
        body={**REQUEST, "stream": True},
        sse_text=text,
        response_headers={"content-type": "text/event-stream"},
    )
    assert _record(ex)["prompt_shields"]["jailbreak"] == {"detected": True, "filtered": False}


def test_documented_blocked_prompt_400_records_the_reason():
    error = {
        "error": {
            "code": "content_filter",
            "message": "The response was filtered",
            "param": "prompt",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "jailbreak": {"filtered": True, "detected": True},
                    "indirect_attack": {"filtered": True, "detected": True},
                },
            },
        }
    }
    record = _record(exchange(path=CHAT, body=REQUEST, status=400, response_body=error))
    assert record["prompt_blocked_reason"] == "indirect_attack,jailbreak"
    assert record["prompt_shields"]["jailbreak"] == {"detected": True, "filtered": True}
    assert record["content_filter"]["filtered"] is True


def test_documented_responses_api_content_filters():
    body = {
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": "gpt-4o",
        "output": [],
        "usage": {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
        "content_filters": [
            {
                "blocked": False,
                "source_type": "prompt",
                "content_filter_results": {"jailbreak": {"filtered": False, "detected": True}},
            }
        ],
    }
    record = _record(exchange(path="/openai/v1/responses", body={"model": "gpt-4o", "input": "hi"}, response_body=body))
    assert record["prompt_shields"]["jailbreak"] == {"detected": True, "filtered": False}
    blocked = {
        "error": {
            "code": "content_filter",
            "message": "filtered",
            "content_filters": [
                {
                    "blocked": True,
                    "source_type": "prompt",
                    "content_filter_results": {"jailbreak": {"filtered": True, "detected": True}},
                }
            ],
        }
    }
    record = _record(
        exchange(path="/openai/v1/responses", body={"model": "gpt-4o", "input": "x"}, status=400, response_body=blocked)
    )
    assert record["prompt_blocked_reason"] == "jailbreak"


def test_no_shield_reported_is_null_not_clean():
    record = _record(exchange(path=CHAT, body=REQUEST, response_body=ANSWER))
    assert record["prompt_shields"] == {"jailbreak": None, "indirect_attack": None}
