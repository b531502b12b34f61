"""Accounting rules on single records: audio units and prices, cached tokens, served models, batch
prices, estimate quality and the tool-call and schema counts of estimates."""

from __future__ import annotations

import base64
import io
import wave

import pytest

from bench.estimates import cases
from shared.normalize import record_schema
from shared.normalize.audio import container_seconds
from shared.normalize.batch_lines import line_records
from shared.normalize.tokens import TokenCounter
from shared.normalize.usage import normalize
from shared.pricing.book import load_book
from shared.pricing.cost import priced
from shared.pricing.deployments import DeploymentModel
from testing.factories import exchange, text_stream

BOOK = load_book()
STAMP = "2026-11-01T00:00:00Z"


def _wav(seconds: float, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(int(seconds * rate) * 2))
    return buf.getvalue()


def _multipart(audio: bytes, model: str = "whisper") -> tuple[dict, str]:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return {"base64": base64.b64encode(body).decode()}, f"multipart/form-data; boundary={boundary}"


def _rec(**fields) -> dict:
    base = {
        "timestamp": STAMP,
        "billable": True,
        "api": "chat.completions",
        "status_code": 200,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "image_count": 0,
        "deployment": "d",
        "model": "gpt-4o",
    }
    return {**base, **fields}


def test_container_duration_of_wav_and_mp3_and_nothing_for_other_bytes():
    assert container_seconds(_wav(2.5)) == 2.5
    frame = b"\xff\xfb\x90\xc4" + bytes(413)  # MPEG-1 Layer III, 128 kbit/s, 44.1 kHz
    assert container_seconds(frame * 100) == pytest.approx(100 * 1152 / 44100, abs=0.05)
    assert container_seconds(b'{"custom_id": "x"}\n') is None and container_seconds(b"") is None


def test_a_transcription_record_carries_the_upload_duration_and_is_priced_per_minute():
    body, ctype = _multipart(_wav(90.0))
    ex = exchange(path="/openai/deployments/whisper/audio/transcriptions", body=body, response_body={"text": "hello"})
    ex.request.body_encoding = "base64"
    ex.request.headers["content-type"] = ctype
    record, _ = normalize(ex)
    record_schema.validate(record)
    assert (record["audio_seconds"], record["duration_source"], record["usage_quality"]) == (90.0, "container", "exact")
    cost, reason, _, match = priced({**record, "timestamp": STAMP, "model": "whisper"}, BOOK)
    assert (cost, reason, match) == (pytest.approx(1.5 * 0.006), None, "exact")


def test_audio_without_a_known_duration_or_price_is_null_with_a_reason_never_zero():
    assert priced(_rec(api="audio.transcriptions", model="whisper"), BOOK)[:2] == (None, "no_audio_duration")
    assert priced(_rec(api="audio.speech", model="tts-1", input_characters=None), BOOK)[:2] == (
        None,
        "no_input_characters",
    )
    assert priced(_rec(api="audio.speech", model="some-new-tts", input_characters=10), BOOK)[:2] == (
        None,
        "unknown_model:some-new-tts",
    )
    # A token-priced audio model whose answer carried no usage: unknown, not free.
    assert priced(_rec(api="audio.speech", model="gpt-4o-mini-tts", input_characters=12), BOOK)[:2] == (
        None,
        "no_usage_reported:gpt-4o-mini-tts",
    )
    # Audio tokens on a model without an audio price: null, not the text price.
    audio = {"prompt_tokens_details": {"audio_tokens": 50}}
    assert priced(_rec(model="gpt-4o", prompt_tokens=60, usage_details=audio), BOOK)[:2] == (
        None,
        "no_audio_price:gpt-4o",
    )


def test_transcribe_tts_and_realtime_tokens_at_their_audio_prices():
    # gpt-4o-mini-transcribe: text in 1.25, audio in 3.00, out 5.00 per 1M
    details = {"input_tokens_details": {"audio_tokens": 900, "text_tokens": 100}}
    rec = _rec(
        api="audio.transcriptions",
        model="gpt-4o-mini-transcribe",
        prompt_tokens=1000,
        completion_tokens=200,
        usage_details=details,
    )
    assert priced(rec, BOOK)[0] == pytest.approx((100 * 1.25 + 900 * 3.0 + 200 * 5.0) / 1e6)
    # gpt-4o-mini-tts: text in 0.60, audio out 12.00
    tts = _rec(
        api="audio.speech",
        model="gpt-4o-mini-tts-2025-03-20",
        prompt_tokens=20,
        completion_tokens=0,
        usage_details={"output_tokens_details": {"audio_tokens": 500}},
    )
    assert priced(tts, BOOK)[0] == pytest.approx((20 * 0.6 + 500 * 12.0) / 1e6)
    assert priced(tts, BOOK)[3] == "family"
    # gpt-realtime chat with audio in and out; cached audio at its cached price
    rt = _rec(
        model="gpt-realtime",
        prompt_tokens=1000,
        cached_tokens=200,
        completion_tokens=300,
        usage_details={
            "prompt_tokens_details": {"audio_tokens": 600, "cached_tokens_details": {"audio_tokens": 200}},
            "completion_tokens_details": {"audio_tokens": 250},
        },
    )
    expected = (400 * 4.0 + 400 * 32.0 + 200 * 0.4 + 50 * 16.0 + 250 * 64.0) / 1e6
    assert priced(rt, BOOK)[0] == pytest.approx(expected)


def test_cached_tokens_at_the_cached_rate_and_zero_rated_without_a_cache_price():
    # gpt-4o: 2.50 input, 1.25 cached, 10.00 output
    assert priced(_rec(prompt_tokens=1000, cached_tokens=400, completion_tokens=10), BOOK)[0] == pytest.approx(
        (600 * 2.5 + 400 * 1.25 + 10 * 10.0) / 1e6
    )


def test_unknown_versions_price_by_family_and_model_router_by_the_served_model():
    assert priced(_rec(model="gpt-4o-2099-01-01", prompt_tokens=10), BOOK)[3] == "family"
    assert priced(_rec(model="gpt-4o", prompt_tokens=10), BOOK)[3] == "exact"
    mapping = {"router": DeploymentModel(model="model-router")}
    served = _rec(deployment="router", model="gpt-4.1-mini-2025-04-14", prompt_tokens=1000)
    cost, reason, _, match = priced(served, BOOK, mapping)
    assert (reason, match) == (None, "family") and cost == pytest.approx(1000 * 0.4 / 1e6)
    # The configured model wins where the book prices it (AOAI may report a generic name).
    pinned = {"chat": DeploymentModel(model="gpt-4o-mini")}
    assert priced(_rec(deployment="chat", model="gpt-4o", prompt_tokens=1000), BOOK, pinned)[0] == pytest.approx(
        1000 * 0.15 / 1e6
    )


def test_batch_lines_are_priced_at_the_batch_rate_or_the_books_discount():
    seen = {
        "request_id": "r",
        "timestamp": STAMP,
        "method": "GET",
        "path": "/openai/batches/b",
        "api_version": "v",
        "backend": "east",
        "attempts": 1,
        "region": None,
        "status_code": 200,
        "subscription_id": "poller",
    }
    output = (
        b'{"id": "br_1", "custom_id": "a", "response": {"status_code": 200, "body": {"model": "gpt-4o-2024-08-06", '
        b'"usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}}}}\n'
        b'{"id": "br_2", "custom_id": "b", "response": {"status_code": 200, "body": {"model": "o3-2025-04-16", '
        b'"usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}}}}\nnot json\n'
    )
    batch = {"id": "batch_1", "endpoint": "/chat/completions", "output_file_id": "file-o", "completed_at": 1790000000}
    lines, summary, problems = line_records(seen, batch, output, {"subscription_id": "creator"})
    assert problems == ["output line 3: JSONDecodeError"]
    for record in [*lines, summary]:
        record_schema.validate({**record, "cost": None, "cost_reason": None})
    assert [r["subscription_id"] for r in lines] == ["creator", "creator"] and summary["billable"] is False
    gpt4o, o3 = (priced(r, BOOK) for r in lines)
    assert gpt4o[0] == pytest.approx((1000 * 1.25 + 100 * 5.0) / 1e6) and gpt4o[3] == "family"
    o3_global = BOOK.entry("o3", "global", __import__("datetime").date(2026, 9, 21))
    assert o3[3] == "batch_discount"
    assert o3[0] == pytest.approx(0.5 * (1000 * o3_global["input"] + 100 * o3_global["output"]) / 1e6)


def test_reasoning_model_estimates_are_lower_bounds():
    ex = exchange(
        path="/openai/deployments/gpt-5-mini/chat/completions",
        query={"api-version": "2024-06-01"},
        body={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        response_headers={"content-type": "text/event-stream"},
        sse_text=text_stream(["Hello"], model="gpt-5-mini-2025-08-07"),
    )
    record, _ = normalize(ex)
    record_schema.validate(record)
    assert (record["usage_source"], record["usage_quality"], record["reasoning_tokens"]) == (
        "estimated",
        "lower_bound",
        None,
    )


def test_tool_calls_results_and_schemas_are_counted_like_the_service_frames_them():
    counter = TokenCounter("o200k_base")
    one = [{"function": {"name": "get_weather", "arguments": '{"location":"Shanghai"}'}}]
    two = one + [{"function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}}]
    assert counter.completion_tool_calls(one) == 14  # the published gpt-4o count for this call
    single_sum = sum(counter.tool_call(c) for c in two)
    assert counter.completion_tool_calls(two) > single_sum + 2 * 8, "the parallel wrapper costs tokens per call"
    with_id = [{"role": "tool", "tool_call_id": "call_qOfTGgDrItLORNfC6VwUbyLL", "content": "18C"}]
    assert counter.chat_prompt(with_id) == counter.chat_prompt([{"role": "tool", "content": "18C"}])
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {"type": "object", "properties": {"city": {"type": "string"}, "temperature": {"type": "number"}}},
        },
    }
    assert counter.response_format(schema) > 20 and counter.response_format({"type": "json_object"}) == 0


def test_the_bench_cases_are_measured_against_real_counts():
    measured = cases()
    assert {k for c in measured for k in c.kind.split("/")} >= {
        "plain",
        "tool-definition",
        "tool-call",
        "tool-result",
        "structured-output",
        "reasoning",
    }
    assert all(c.error == 0 for c in measured if c.kind in ("plain", "tool-definition"))
    # Tool calls in recorded answers (not the one the framing was fitted on) are counted exactly.
    calls = [
        c
        for c in measured
        if c.measured == "completion" and c.kind.startswith(("tool-call", "structured-output/tool-call"))
    ]
    assert len(calls) >= 3 and all(c.error == 0 for c in calls)
    # Recorded prompts with tool rounds and json_schema formats: within 5%.
    prompts = [
        c for c in measured if c.measured == "prompt" and "tool-result" in c.kind or "structured-output" in c.kind
    ]
    assert prompts and all(abs(c.error_pct) <= 5 for c in prompts if c.measured == "prompt")
    # The reasoning recording: far below the service's count, and the record says it is a lower bound.
    (reasoning,) = [c for c in measured if c.kind == "reasoning" and c.measured == "completion"]
    assert reasoning.usage_quality == "lower_bound" and reasoning.error < -50


def test_a_responses_api_json_schema_format_is_part_of_the_prompt_estimate():
    counter = TokenCounter("o200k_base")
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    plain = counter.responses_input({"input": "Where?"})
    shaped = counter.responses_input(
        {"input": "Where?", "text": {"format": {"type": "json_schema", "name": "c", "schema": schema}}}
    )
    assert shaped - plain == counter.response_format(
        {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    )
    assert shaped > plain
