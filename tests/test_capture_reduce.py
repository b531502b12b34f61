"""The capture levels applied to exchanges of every kind (pure `reduce`), and the capture writer
around it: a level that cannot be applied keeps no bodies, `none` never reaches the store."""

from __future__ import annotations

import base64
import json

import pytest

from parser.handler import record_in_place
from proxy.capture import CaptureWriter
from shared.errors import ConfigurationError
from shared.exchange import CapturedRequest, CapturedResponse, Exchange, Identity, Timings
from shared.normalize.usage import normalize
from shared.privacy.capture import CapturePrivacy, reduce
from shared.privacy.pii import PiiRedactor
from shared.privacy.policy import CapturePolicy
from shared.settings import Settings
from shared.wiring import check_settings
from testing.memory import memory_ports

PII = PiiRedactor(secrets=False)
EMAIL = "ana.souza@example.com.br"
PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG" + bytes(600)).decode()


def _exchange(
    path: str, body, response_body, *, content_type: str = "application/json", encoding: str = "json"
) -> Exchange:
    return Exchange(
        request_id="rid-1",
        request=CapturedRequest(
            "POST", path, {"api-version": "2024-10-21"}, {"content-type": content_type}, body, encoding, 500
        ),  # type: ignore[arg-type]
        response=CapturedResponse(200, {"content-type": "application/json"}, response_body, "json", 300),
        timings=Timings("2026-12-06T00:00:00.000Z", 10.0, 20.0),
        identity=Identity("team-a", "Team A", "standard", "user-1"),
    )


def test_embeddings_keep_their_usage_and_lose_their_input() -> None:
    ex = _exchange(
        "/openai/deployments/emb/embeddings",
        {"input": [f"contact {EMAIL}", "IBAN DE89 3704 0044 0532 0130 00"], "model": "text-embedding-3-small"},
        {
            "object": "list",
            "model": "text-embedding-3-small",
            "data": [{"embedding": [0.1, 0.2], "index": 0}],
            "usage": {"prompt_tokens": 12, "total_tokens": 12},
        },
    )
    full, _ = normalize(ex)
    redacted = reduce(ex, "redacted", "standard", PII)
    assert redacted.request.body["input"] == ["contact <EMAIL_1>", "IBAN <IBAN_1>"]
    assert redacted.response.body["data"][0]["embedding"] == [0.1, 0.2]  # numbers are not text
    metadata = reduce(ex, "metadata", "standard", PII)
    assert metadata.request.body is None and metadata.response.body is None
    for reduced in (redacted, metadata):
        record, _ = normalize(reduced)
        assert (
            record["prompt_tokens"] == full["prompt_tokens"] == 12 and record["capture_level"] == reduced.capture_level
        )


def test_images_in_a_chat_become_their_size_and_digest() -> None:
    ex = _exchange(
        "/openai/deployments/gpt-4o/chat/completions",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"who sent {EMAIL}?"},
                        {"type": "image_url", "image_url": {"url": PNG}},
                    ],
                }
            ]
        },
        {
            "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "A cat."}}],
            "usage": {"prompt_tokens": 300, "completion_tokens": 3, "total_tokens": 303},
        },
    )
    reduced = reduce(ex, "redacted", "standard", PII)
    parts = reduced.request.body["messages"][0]["content"]
    assert parts[0]["text"] == "who sent <EMAIL_1>?"
    assert (
        parts[1]["image_url"]["url"].startswith("<data:image/png;base64 bytes=")
        and "sha256=" in parts[1]["image_url"]["url"]
    )
    assert normalize(reduced)[0]["image_count"] == normalize(ex)[0]["image_count"]


def test_binary_and_text_bodies_that_are_not_json() -> None:
    audio = _exchange(
        "/openai/deployments/whisper/audio/transcriptions",
        {"base64": base64.b64encode(b"RIFF\x00\xff\xfe").decode()},
        {"text": f"my mail is {EMAIL}"},
        content_type="multipart/form-data; boundary=x",
        encoding="base64",
    )
    reduced = reduce(audio, "redacted", "standard", PII)
    assert reduced.request.body["omitted"] == "binary" and reduced.request.body["bytes"] == 7
    assert reduced.response.body == {"text": "my mail is <EMAIL_1>"}
    text = _exchange(
        "/openai/deployments/gpt-4o/completions",
        {"base64": base64.b64encode(f"mail {EMAIL}".encode()).decode()},
        {"choices": []},
        content_type="text/plain",
        encoding="base64",
    )
    assert reduce(text, "redacted", "standard", PII).request.body == {"text": "mail <EMAIL_1>"}


def test_metadata_keeps_options_and_tool_names_never_arguments() -> None:
    ex = _exchange(
        "/openai/deployments/gpt-4o/chat/completions",
        {
            "model": "gpt-4o",
            "max_tokens": 50,
            "temperature": 0.2,
            "user": EMAIL,
            "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        },
        {
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "call_1",
                                "type": "function",
                                "function": {
                                    "name": "get_weather",
                                    "arguments": json.dumps({"city": "Lisbon", "email": EMAIL}),
                                },
                            }
                        ],
                    },
                }
            ],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29},
        },
    )
    reduced = reduce(ex, "metadata", "subscription:team-a", PII)
    details = reduced.normalized["details"]
    assert details["request"].items() >= {"model": "gpt-4o", "max_tokens": 50, "temperature": 0.2}.items()
    assert "user" not in details["request"] and "messages" not in details["request"]
    assert details["tools"] == ["get_weather"] and details["tool_calls"] == ["get_weather"]
    assert "Lisbon" not in json.dumps(reduced.to_dict()) and EMAIL not in json.dumps(reduced.to_dict())
    assert reduced.normalized["record"]["tool_call_count"] == 1


def test_gateway_error_messages_follow_the_level() -> None:
    ex = _exchange("/openai/deployments/gpt-4o/chat/completions", {"messages": []}, None)
    ex.response = None
    ex.gateway_error = {"code": "BadRequest", "message": f"field 'x' of {EMAIL} is wrong"}
    assert reduce(ex, "redacted", "r", PII).gateway_error == {
        "code": "BadRequest",
        "message": "field 'x' of <EMAIL_1> is wrong",
    }
    assert reduce(ex, "metadata", "r", PII).gateway_error == {"code": "BadRequest"}


class _Broken(PiiRedactor):
    def text(self, value, placeholders):  # noqa: ANN001 - a defect, on purpose
        raise RuntimeError("defect")


def _chat() -> Exchange:
    return _exchange(
        "/openai/deployments/gpt-4o/chat/completions",
        {"messages": [{"role": "user", "content": f"I am {EMAIL}"}]},
        {
            "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
        },
    )


async def test_a_level_that_cannot_be_applied_keeps_no_bodies(caplog: pytest.LogCaptureFixture) -> None:
    ports = memory_ports()
    writer = CaptureWriter(
        lambda: ports, privacy=CapturePrivacy(CapturePolicy.parse('{"standard": "redacted"}'), _Broken())
    )
    writer.submit(_chat())
    await writer.drain()
    stored = await ports.exchanges.load("rid-1")
    assert stored is not None and stored.capture_level == "metadata" and stored.request.body is None
    assert EMAIL not in stored.to_json().decode() and stored.normalized["record"]["total_tokens"] == 9
    assert "applying capture level redacted to rid-1 failed" in caplog.text


async def test_level_none_is_recorded_in_place_and_never_stored() -> None:
    ports = memory_ports()
    writer = CaptureWriter(
        lambda: ports,
        privacy=CapturePrivacy(CapturePolicy.parse('{"standard": "none"}')),
        record_in_place=lambda ex: record_in_place(ex, ports),
    )
    writer.submit(_chat())
    await writer.drain()
    assert await ports.exchanges.load("rid-1") is None and ports.channel.published == []
    record = ports.records.records["rid-1"]
    assert record["capture_level"] == "none" and record["total_tokens"] == 9 and record["cost"] is not None
    assert ports.sink.emitted == [record] and EMAIL not in json.dumps(ports.records.details["rid-1"])


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"CAPTURE_LEVELS": '{"standard": "all"}'}, "CAPTURE_LEVELS"),
        ({"RETENTION": '{"x": {"records_days": -5}}'}, "RETENTION"),
    ],
)
def test_bad_privacy_settings_stop_start_up_naming_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_settings(Settings.from_env(env))
    assert str(info.value).startswith(name)
