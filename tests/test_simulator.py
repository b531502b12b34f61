"""The AOAI simulator, driven with the official openai SDK and raw HTTP: formats, usage, faults."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import openai
import pytest
from openai import AzureOpenAI, OpenAI

from devhost.simulator import SimulatorConfig, SimulatorHandle, run_in_thread, serve
from devhost.simulator.__main__ import parse_args
from shared.normalize.encodings import get_encoding
from shared.normalize.sse import decode_all

API_VERSION = "2024-10-21"
O200K = get_encoding("o200k_base")
CL100K = get_encoding("cl100k_base")

# The OpenAI cookbook's worked examples ("How to count tokens with tiktoken"), with its published counts.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]
COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
COOKBOOK_TOOL_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]
SECOND_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}
HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    # Any deployment name: these tests pick models (gpt-4, gpt-35-turbo, ...) by naming the deployment after them.
    handle = run_in_thread(SimulatorConfig(completion_tokens=120, deployments=None))
    yield handle
    handle.stop()


@pytest.fixture
def client(sim: SimulatorHandle) -> AzureOpenAI:
    return AzureOpenAI(azure_endpoint=sim.url, api_key="test-key", api_version=API_VERSION, max_retries=0)


@pytest.fixture
def v1(sim: SimulatorHandle) -> OpenAI:
    return OpenAI(base_url=sim.url + "/openai/v1/", api_key="test-key", max_retries=0)


def chat_url(sim: SimulatorHandle, deployment: str = "gpt-4o", op: str = "chat/completions") -> str:
    return f"{sim.url}/openai/deployments/{deployment}/{op}?api-version={API_VERSION}"


def raw_events(sim: SimulatorHandle, body: dict, headers: dict | None = None, op: str = "chat/completions"):
    r = httpx.post(chat_url(sim, op=op), json=body, headers={"api-key": "k", **(headers or {})}, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    return r, decode_all(r.content)


# --- chat -------------------------------------------------------------------------------------


def test_chat_non_stream_shape_and_usage(client: AzureOpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    text = r.choices[0].message.content
    assert text and r.choices[0].finish_reason == "stop"
    assert r.model == "gpt-4o-2024-08-06" and r.object == "chat.completion" and r.system_fingerprint
    extra = r.model_extra or {}
    assert extra["prompt_filter_results"][0]["content_filter_results"]["jailbreak"] == {
        "filtered": False,
        "detected": False,
    }
    assert (r.choices[0].model_extra or {})["content_filter_results"]["hate"]["severity"] == "safe"
    assert r.usage.prompt_tokens == 3 + len(O200K.encode("user")) + len(O200K.encode("Say hello")) + 3
    assert r.usage.completion_tokens == len(O200K.encode(text))
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


@pytest.mark.parametrize(
    ("deployment", "expected"), [("gpt-35-turbo", 129), ("gpt-4", 129), ("gpt-4o", 124), ("my-4o-mini", 124)]
)
def test_chat_prompt_tokens_match_cookbook_example(client: AzureOpenAI, deployment: str, expected: int) -> None:
    r = client.chat.completions.create(model=deployment, messages=COOKBOOK_MESSAGES)
    assert r.usage.prompt_tokens == expected


@pytest.mark.parametrize(("deployment", "expected"), [("gpt-35-turbo", 105), ("gpt-4o", 101)])
def test_chat_prompt_tokens_with_tools_match_cookbook(client: AzureOpenAI, deployment: str, expected: int) -> None:
    r = client.chat.completions.create(model=deployment, messages=COOKBOOK_TOOL_MESSAGES, tools=COOKBOOK_TOOLS)
    assert r.usage.prompt_tokens == expected


def test_chat_stream_via_sdk_reassembles_the_non_stream_text(client: AzureOpenAI) -> None:
    whole = client.chat.completions.create(model="gpt-4o", messages=HELLO).choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices == [] and chunks[0].id == ""  # Azure's prompt annotation frame
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(O200K.encode(text))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]


def test_chat_raw_sse_format(sim: SimulatorHandle) -> None:
    _, events = raw_events(sim, {"messages": HELLO, "stream": True})
    first = json.loads(events[0].data)
    assert first["choices"] == [] and first["id"] == "" and first["object"] == "" and first["created"] == 0
    assert first["model"] == "" and first["prompt_filter_results"][0]["prompt_index"] == 0
    assert events[-1].data == "[DONE]" and events[-1].raw == b"data: [DONE]\n\n"
    chunks = [json.loads(e.data) for e in events[1:-1]]
    assert all("usage" not in c for c in chunks)  # no usage chunk without include_usage
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(content) == 12  # stream_chunks default
    assert all(c["choices"][0]["content_filter_results"]["violence"]["filtered"] is False for c in content)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["object"] == "chat.completion.chunk"


def test_stream_text_has_multibyte_and_escaped_characters(sim: SimulatorHandle) -> None:
    r, events = raw_events(sim, {"messages": HELLO, "stream": True})
    text = "".join(
        json.loads(e.data)["choices"][0]["delta"].get("content") or ""
        for e in events[1:-1]
        if json.loads(e.data)["choices"]
    )
    for needle in ("é", "東京", "🚀", '"', "\\", "\n", "data: "):
        assert needle in text
    for escaped in (b'\\"', b"\\\\", b"\\n"):
        assert escaped in r.content
    assert "東京".encode() in r.content  # raw UTF-8, not \u escapes


def test_include_usage_adds_one_usage_chunk_before_done(sim: SimulatorHandle) -> None:
    _, events = raw_events(sim, {"messages": HELLO, "stream": True, "stream_options": {"include_usage": True}})
    chunks = [json.loads(e.data) for e in events[1:-1]]
    usage_chunks = [c for c in chunks if c.get("usage")]
    assert len(usage_chunks) == 1 and usage_chunks[0] is chunks[-1] and usage_chunks[0]["choices"] == []
    assert all(c["usage"] is None for c in chunks[:-1])
    assert events[-1].data == "[DONE]"


def test_chunks_header_sets_content_chunk_count(sim: SimulatorHandle) -> None:
    _, events = raw_events(sim, {"messages": HELLO, "stream": True}, {"x-sim-chunks": "40"})
    content = [e for e in events[1:-1] if json.loads(e.data)["choices"][0]["delta"].get("content")]
    assert len(content) == 40


def test_large_chunk_header_grows_one_chunk_and_usage_follows(sim: SimulatorHandle) -> None:
    body = {"messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    _, events = raw_events(sim, body, {"x-sim-chunks": "20", "x-sim-large-chunk": "8192"})
    chunks = [json.loads(e.data) for e in events[1:-1]]
    pieces = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]]
    pieces = [p for p in pieces if p]
    sizes = sorted(len(p.encode()) for p in pieces)
    assert len(pieces) == 20
    assert sizes[-1] >= 8192 and sizes[-2] < 1024  # exactly one big chunk
    text = "".join(pieces)
    assert any(ord(ch) > 0xFFFF for ch in text) and "東京" in text  # multibyte survives the growth
    assert chunks[-1]["usage"]["completion_tokens"] == len(O200K.encode(text))
    plain = httpx.post(
        chat_url(sim),
        json={"messages": HELLO},
        headers={"api-key": "k", "x-sim-chunks": "20", "x-sim-large-chunk": "8192"},
    )
    assert len(plain.json()["choices"][0]["message"]["content"].encode()) < 4096  # streams only


def test_content_header_forces_the_answer_text_and_its_chunks(sim: SimulatorHandle, client: AzureOpenAI) -> None:
    forced = "".join(f"word{i:04d}. " for i in range(8))  # 80 characters
    _, events = raw_events(
        sim, {"messages": HELLO, "stream": True}, {"x-sim-content": quote(forced), "x-sim-chunks": "8"}
    )
    content = [json.loads(e.data)["choices"][0]["delta"].get("content") for e in events[1:-1]]
    pieces = [c for c in content if c]
    assert pieces == [f"word{i:04d}. " for i in range(8)]  # near-equal character runs, in order
    # Percent-encoded UTF-8 for text a header cannot carry; every API that streams text honours it.
    reply = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, max_tokens=1, extra_headers={"x-sim-content": "caf%C3%A9 VIOLENCE_LEVEL_6"}
    )
    assert reply.choices[0].message.content == "café VIOLENCE_LEVEL_6" and reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == len(O200K.encode("café VIOLENCE_LEVEL_6"))
    legacy = client.completions.create(
        model="gpt-35-turbo-instruct", prompt="x", stream=True, extra_headers={"x-sim-content": "abc def"}
    )
    assert "".join(c.choices[0].text for c in legacy if c.choices) == "abc def"
    response = client.responses.create(model="gpt-4o", input="x", extra_headers={"x-sim-content": "one two"})
    assert response.output_text == "one two"
    r = httpx.post(chat_url(sim), json={"messages": HELLO}, headers={"api-key": "k", "x-sim-content": ""})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadRequest"


def test_n_choices_stream_per_index(client: AzureOpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=HELLO, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    texts: dict[int, str] = {0: "", 1: ""}
    for chunk in client.chat.completions.create(model="gpt-4o", messages=HELLO, n=2, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {0: r.choices[0].message.content, 1: r.choices[1].message.content}
    assert r.usage.completion_tokens == sum(len(O200K.encode(c.message.content)) for c in r.choices)


def test_max_tokens_caps_the_answer_with_finish_length(client: AzureOpenAI) -> None:
    r = client.chat.completions.create(model="gpt-4o", messages=HELLO, max_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert 1 <= r.usage.completion_tokens <= 5
    assert r.usage.completion_tokens == len(O200K.encode(r.choices[0].message.content))


# --- tool calls -------------------------------------------------------------------------------


def test_streamed_parallel_tool_calls_reassembled_by_sdk(client: AzureOpenAI, sim: SimulatorHandle) -> None:
    tools = [*COOKBOOK_TOOLS, SECOND_TOOL]
    with client.chat.completions.stream(model="gpt-4o", messages=COOKBOOK_TOOL_MESSAGES, tools=tools) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_current_weather", "get_time"]
    args = json.loads(calls[0].function.arguments)
    assert set(args) == {"location", "unit"} and args["unit"] in ("celsius", "fahrenheit")
    # Same request, not streamed: the same calls.
    whole = client.chat.completions.create(model="gpt-4o", messages=COOKBOOK_TOOL_MESSAGES, tools=tools)
    assert [c.function.arguments for c in whole.choices[0].message.tool_calls] == [c.function.arguments for c in calls]
    assert whole.usage.completion_tokens == sum(
        len(O200K.encode(c.function.name)) + len(O200K.encode(c.function.arguments)) for c in calls
    )
    # On the wire: the first fragment carries id/type/name, later ones only index + argument pieces.
    events = decode_all(sim.requests[-2].response)
    fragments = [
        tc for e in events[1:-1] for ch in json.loads(e.data)["choices"] for tc in ch["delta"].get("tool_calls") or []
    ]
    first = [f for f in fragments if "id" in f]
    assert [f["index"] for f in first] == [0, 1] and all(f["type"] == "function" for f in first)
    pieces = [f for f in fragments if "id" not in f and f["index"] == 0]
    assert len(pieces) > 2 and all(set(f) == {"index", "function"} for f in pieces)


def test_parallel_tool_calls_false_gives_one_call(client: AzureOpenAI) -> None:
    r = client.chat.completions.create(
        model="gpt-4o", messages=COOKBOOK_TOOL_MESSAGES, tools=[*COOKBOOK_TOOLS, SECOND_TOOL], parallel_tool_calls=False
    )
    assert len(r.choices[0].message.tool_calls) == 1


def test_legacy_function_call_stream(sim: SimulatorHandle) -> None:
    functions = [COOKBOOK_TOOLS[0]["function"]]
    _, events = raw_events(sim, {"messages": COOKBOOK_TOOL_MESSAGES, "functions": functions, "stream": True})
    chunks = [json.loads(e.data) for e in events[1:-1]]
    calls = [c["choices"][0]["delta"]["function_call"] for c in chunks if "function_call" in c["choices"][0]["delta"]]
    assert calls[0]["name"] == "get_current_weather"
    assert json.loads("".join(c["arguments"] for c in calls))["location"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"


# --- completions, embeddings, images, audio ---------------------------------------------------


def test_completions_stream_and_non_stream(client: AzureOpenAI) -> None:
    r = client.completions.create(model="gpt-35-turbo-instruct", prompt="tiktoken is great!")
    assert r.object == "text_completion" and r.usage.prompt_tokens == 6  # cl100k_base, cookbook example
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens <= 16  # API default max_tokens
    streamed = list(client.completions.create(model="gpt-35-turbo-instruct", prompt="tiktoken is great!", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == r.choices[0].text
    assert {c.object for c in streamed if c.choices} == {"text_completion"}


def test_completions_stream_include_usage(client: AzureOpenAI) -> None:
    whole = client.completions.create(model="gpt-35-turbo-instruct", prompt="tiktoken is great!")
    chunks = list(
        client.completions.create(
            model="gpt-35-turbo-instruct",
            prompt="tiktoken is great!",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage  # the non-stream call's usage
    assert [c for c in chunks if c.usage] == chunks[-1:]
    plain = list(client.completions.create(model="gpt-35-turbo-instruct", prompt="tiktoken is great!", stream=True))
    assert all(c.usage is None for c in plain)


def test_embeddings_float_and_base64_agree(client: AzureOpenAI, sim: SimulatorHandle) -> None:
    floats = client.embeddings.create(
        model="text-embedding-ada-002", input="tiktoken is great!", encoding_format="float"
    )
    default = client.embeddings.create(model="text-embedding-ada-002", input="tiktoken is great!")
    assert json.loads(sim.requests[-1].body)["encoding_format"] == "base64"  # what the SDK sends by default
    raw = json.loads(sim.requests[-1].response)["data"][0]["embedding"]
    assert isinstance(raw, str)
    assert list(struct.unpack("<1536f", base64.b64decode(raw))) == floats.data[0].embedding
    assert default.data[0].embedding == floats.data[0].embedding
    assert floats.usage.prompt_tokens == 6  # the cookbook's cl100k_base example
    norm = sum(v * v for v in floats.data[0].embedding)
    assert abs(norm - 1) < 1e-4


def test_embeddings_dimensions_and_input_shapes(client: AzureOpenAI) -> None:
    r = client.embeddings.create(model="text-embedding-3-large", input=["a", "b c"], dimensions=256)
    assert [len(d.embedding) for d in r.data] == [256, 256] and [d.index for d in r.data] == [0, 1]
    assert r.usage.prompt_tokens == len(CL100K.encode("a")) + len(CL100K.encode("b c"))
    tokens = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert tokens.usage.prompt_tokens == 5 and len(tokens.data[0].embedding) == 1536


def test_images_b64_and_url(client: AzureOpenAI) -> None:
    r = client.images.generate(model="dall-e-3", prompt="a lighthouse", response_format="b64_json")
    assert base64.b64decode(r.data[0].b64_json).startswith(b"\x89PNG\r\n\x1a\n")
    assert (r.data[0].model_extra or {})["prompt_filter_results"]["hate"]["filtered"] is False
    u = client.images.generate(model="dall-e-3", prompt="a lighthouse")
    fetched = httpx.get(u.data[0].url)
    assert fetched.headers["content-type"] == "image/png" and fetched.content == base64.b64decode(r.data[0].b64_json)


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
def test_transcription_and_translation_uploads(client: AzureOpenAI, sim: SimulatorHandle) -> None:
    audio = ("speech.wav", b"RIFF" + bytes(4000), "audio/wav")
    t = client.audio.transcriptions.create(model="whisper", file=audio)
    assert t.text and sim.requests[-1].headers["Content-Type"].startswith("multipart/form-data")
    as_text = client.audio.transcriptions.create(model="whisper", file=audio, response_format="text")
    assert as_text.strip() == t.text
    verbose = client.audio.transcriptions.create(model="whisper", file=audio, response_format="verbose_json")
    assert verbose.text == t.text and verbose.duration > 0 and verbose.segments[0].text == t.text
    translated = client.audio.translations.create(model="whisper", file=audio)
    assert translated.text == t.text and "/audio/translations" in sim.requests[-1].path


def test_speech_returns_audio_bytes(client: AzureOpenAI) -> None:
    mp3 = client.audio.speech.create(model="tts", voice="alloy", input="Hello there")
    assert mp3.content[:2] == b"\xff\xfb" and mp3.response.headers["content-type"] == "audio/mpeg"
    wav = client.audio.speech.create(model="tts", voice="alloy", input="Hello", response_format="wav")
    assert wav.content[:4] == b"RIFF" and wav.content[8:12] == b"WAVE"


# --- Responses API ----------------------------------------------------------------------------


def test_responses_create_get_delete(v1: OpenAI) -> None:
    r = v1.responses.create(model="gpt-4o", input="tiktoken is great!", instructions="Be brief.")
    assert r.status == "completed" and r.output_text
    expected_input = (
        3
        + len(O200K.encode("developer"))
        + len(O200K.encode("Be brief."))
        + 3
        + len(O200K.encode("user"))
        + len(O200K.encode("tiktoken is great!"))
        + 3
    )
    assert r.usage.input_tokens == expected_input
    assert r.usage.output_tokens == len(O200K.encode(r.output_text))
    got = v1.responses.retrieve(r.id)
    assert got.output_text == r.output_text and got.id == r.id
    items = v1.responses.input_items.list(r.id)
    assert items.data[0].content[0].text == "tiktoken is great!"
    v1.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        v1.responses.retrieve(r.id)


def test_responses_previous_response_id(v1: OpenAI) -> None:
    first = v1.responses.create(model="gpt-4o", input="one")
    second = v1.responses.create(model="gpt-4o", input="two", previous_response_id=first.id)
    assert second.usage.input_tokens > first.usage.total_tokens
    with pytest.raises(openai.BadRequestError):
        v1.responses.create(model="gpt-4o", input="two", previous_response_id="resp_unknown")


def test_responses_stream_events(v1: OpenAI, sim: SimulatorHandle) -> None:
    with v1.responses.stream(model="gpt-4o", input="hello") as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert types.count("response.output_text.delta") == 12
    events = decode_all(sim.requests[-1].response)
    assert all(e.event == json.loads(e.data)["type"] for e in events)
    assert [json.loads(e.data)["sequence_number"] for e in events] == list(range(len(events)))
    assert b"[DONE]" not in sim.requests[-1].response
    assert final.usage.output_tokens == len(O200K.encode(final.output_text))
    assert v1.responses.retrieve(final.id).output_text == final.output_text


def test_responses_stream_function_call(v1: OpenAI) -> None:
    tool = {
        "type": "function",
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
    }
    with v1.responses.stream(model="gpt-4o", input="find", tools=[tool]) as stream:
        deltas = [e for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    call = final.output[0]
    assert call.type == "function_call" and call.name == "lookup"
    assert "".join(d.delta for d in deltas) == call.arguments and len(deltas) > 1


def test_v1_chat_and_models(v1: OpenAI) -> None:
    r = v1.chat.completions.create(model="gpt-4.1-mini", messages=HELLO)
    assert r.model == "gpt-4.1-mini-2025-04-14"
    assert any(m.id == "gpt-4o-2024-08-06" for m in v1.models.list())


# --- faults, auth, headers --------------------------------------------------------------------


def test_429_with_retry_headers(client: AzureOpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers={"x-sim-status": "429"})
    headers = caught.value.response.headers
    assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "1000"
    assert caught.value.code == "429" and "rate limit" in caught.value.message


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_forced_server_errors(client: AzureOpenAI, status: int) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=HELLO, extra_headers={"x-sim-status": str(status)})
    assert caught.value.status_code == status
    assert caught.value.response.json()["error"]["code"]


def test_content_filter_400(client: AzureOpenAI, v1: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "SIMULATE_CONTENT_FILTER"}]
        )
    error = caught.value.response.json()["error"]
    assert error["code"] == "content_filter" and error["status"] == 400 and error["param"] == "prompt"
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert error["innererror"]["content_filter_result"]["violence"] == {"filtered": True, "severity": "medium"}
    with pytest.raises(openai.BadRequestError) as caught:
        v1.responses.create(model="gpt-4o", input="SIMULATE_CONTENT_FILTER")
    assert caught.value.response.json()["error"]["content_filters"][0]["blocked"] is True


def test_auth_errors(sim: SimulatorHandle) -> None:
    r = httpx.post(chat_url(sim), json={"messages": HELLO})
    assert r.status_code == 401 and r.json()["error"]["code"] == "401"
    assert (
        httpx.post(chat_url(sim), json={"messages": HELLO}, headers={"Authorization": "Bearer tok"}).status_code == 200
    )
    with run_in_thread(SimulatorConfig(api_key="right")) as other:
        assert httpx.post(chat_url(other), json={"messages": HELLO}, headers={"api-key": "wrong"}).status_code == 401
        assert httpx.post(chat_url(other), json={"messages": HELLO}, headers={"api-key": "right"}).status_code == 200


def test_api_version_required_and_unknown_deployment(sim: SimulatorHandle) -> None:
    r = httpx.post(
        f"{sim.url}/openai/deployments/gpt-4o/chat/completions", json={"messages": HELLO}, headers={"api-key": "k"}
    )
    assert r.status_code == 404 and r.json() == {"error": {"code": "404", "message": "Resource not found"}}
    with run_in_thread(SimulatorConfig(deployments=["gpt-4o"])) as other:
        r = httpx.post(chat_url(other, "missing"), json={"messages": HELLO}, headers={"api-key": "k"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "DeploymentNotFound"
        assert httpx.post(chat_url(other), json={"messages": HELLO}, headers={"api-key": "k"}).status_code == 200


def test_bad_requests_get_aoai_errors(sim: SimulatorHandle) -> None:
    r = httpx.post(chat_url(sim), content=b"{not json", headers={"api-key": "k", "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"]
    r = httpx.post(chat_url(sim), json={"messages": []}, headers={"api-key": "k"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


def test_headers_on_every_response(sim: SimulatorHandle) -> None:
    for extra in ({}, {"x-sim-status": "503"}):
        r = httpx.post(chat_url(sim), json={"messages": HELLO}, headers={"api-key": "k", **extra})
        for name in (
            "apim-request-id",
            "x-request-id",
            "x-ms-region",
            "openai-processing-ms",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-limit-requests",
            "x-ratelimit-limit-tokens",
        ):
            assert r.headers.get(name), name
        assert r.headers["x-ms-deployment-name"] == "gpt-4o" and r.headers["x-ms-region"] == "swedencentral"
    assert "retry-after" not in r.headers


def test_throttle_and_fail_rates() -> None:
    with run_in_thread(SimulatorConfig(throttle_rate=1.0)) as sim:
        r = httpx.post(chat_url(sim), json={"messages": HELLO}, headers={"api-key": "k"})
        assert r.status_code == 429 and r.headers["retry-after-ms"] == "1000"
    with run_in_thread(SimulatorConfig(fail_statuses=(500, 503))) as sim:
        codes = [
            httpx.post(chat_url(sim), json={"messages": HELLO}, headers={"api-key": "k"}).status_code for _ in range(4)
        ]
        assert codes == [500, 503, 500, 503]
    with run_in_thread(SimulatorConfig(throttle_rate=0.5, seed=3)) as sim:
        codes = [
            httpx.post(chat_url(sim), json={"messages": HELLO}, headers={"api-key": "k"}).status_code for _ in range(40)
        ]
        assert 5 < codes.count(429) < 35 and codes.count(200) == 40 - codes.count(429)


def test_drop_after_cuts_the_stream(sim: SimulatorHandle) -> None:
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream(
            "POST",
            chat_url(sim),
            json={"messages": HELLO, "stream": True},
            headers={"api-key": "k", "x-sim-drop-after": "3"},
        ) as r:
            for chunk in r.iter_raw():
                received += chunk
    record = sim.requests[-1]
    assert record.dropped and b"[DONE]" not in received
    events = decode_all(record.response)
    assert (
        sum(
            1
            for e in events
            if json.loads(e.data)["choices"] and json.loads(e.data)["choices"][0]["delta"].get("content")
        )
        == 3
    )


def test_drop_rate_drops_non_stream() -> None:
    with run_in_thread(SimulatorConfig(drop_rate=1.0)) as sim:
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.post(chat_url(sim), json={"messages": HELLO}, headers={"api-key": "k"})
        assert sim.requests[-1].dropped


def test_ttft_and_token_delay_pace_the_stream(sim: SimulatorHandle) -> None:
    arrivals: list[float] = []
    start = time.monotonic()
    with httpx.stream(
        "POST",
        chat_url(sim),
        json={"messages": HELLO, "stream": True},
        headers={"api-key": "k", "x-sim-ttft-ms": "150", "x-sim-token-delay-ms": "40", "x-sim-chunks": "5"},
    ) as r:
        for _ in r.iter_raw():
            arrivals.append(time.monotonic() - start)
    assert arrivals[0] >= 0.15  # nothing before the time to first token
    assert arrivals[-1] - arrivals[0] >= 4 * 0.04  # content chunks arrive spread out, not at once
    assert len(arrivals) >= 5


def test_request_log_keeps_exact_bytes(sim: SimulatorHandle) -> None:
    r = httpx.post(chat_url(sim), json={"messages": HELLO, "stream": True}, headers={"api-key": "secret-k"})
    record = sim.requests[-1]
    deadline = time.monotonic() + 5
    while not record.finished and time.monotonic() < deadline:  # logged just after the last byte went out
        time.sleep(0.01)
    assert record.response == r.content and record.status == 200 and record.method == "POST"
    assert record.path == "/openai/deployments/gpt-4o/chat/completions" and record.query == {"api-version": API_VERSION}
    assert record.headers["api-key"] == "secret-k" and json.loads(record.body)["stream"] is True
    assert record.received <= record.finished


def test_deterministic_for_a_given_request() -> None:
    body = {"messages": [{"role": "user", "content": "determinism"}], "stream": True}
    runs = []
    for _ in range(2):
        with run_in_thread(SimulatorConfig(seed=7)) as sim:
            runs.append([httpx.post(chat_url(sim), json=body, headers={"api-key": "k"}).content for _ in range(2)])
    strip = [[json.loads(e.data).get("choices") for e in decode_all(c)[:-1]] for c in runs[0]]
    assert strip[0] == strip[1]  # same request, same content, within a run
    assert [_drop_created(c) for c in runs[0]] == [_drop_created(c) for c in runs[1]]  # and across runs, ids too
    with run_in_thread(SimulatorConfig(seed=8)) as sim:
        other = httpx.post(chat_url(sim), json=body, headers={"api-key": "k"}).content
    assert _drop_created(other) != _drop_created(runs[0][0])


def _drop_created(raw: bytes) -> list:
    out = []
    for e in decode_all(raw)[:-1]:
        data = json.loads(e.data)
        data.pop("created", None)
        out.append(data)
    return out


async def test_serve_async_context_manager() -> None:
    async with serve(SimulatorConfig(log_requests=False)) as sim:
        async with httpx.AsyncClient() as http:
            r = await http.post(chat_url(sim), json={"messages": HELLO}, headers={"api-key": "k"})
        assert r.status_code == 200 and sim.requests == []


def test_cli_arguments() -> None:
    config, host, port, _ = parse_args(
        [
            "--port",
            "9000",
            "--ttft-ms",
            "20",
            "--fail-status",
            "503",
            "--deployment",
            "gpt-4o",
            "--model",
            "chat=gpt-4.1-2025-04-14",
            "--no-log",
        ]
    )
    assert (host, port, config.ttft_ms, tuple(config.fail_statuses)) == ("127.0.0.1", 9000, 20.0, (503,))
    assert config.deployments == ["gpt-4o"] and config.models == {"chat": "gpt-4.1-2025-04-14"}
    assert config.log_requests is False


def test_completion_filter_stops_the_answer(client: AzureOpenAI, sim: SimulatorHandle) -> None:
    messages = [{"role": "user", "content": "SIMULATE_COMPLETION_FILTER please"}]
    full = client.chat.completions.create(model="gpt-4o", messages=HELLO)
    r = client.chat.completions.create(model="gpt-4o", messages=messages)
    assert r.choices[0].finish_reason == "content_filter"
    assert (r.choices[0].model_extra or {})["content_filter_results"]["violence"]["filtered"] is True
    assert r.usage.completion_tokens == len(O200K.encode(r.choices[0].message.content)) > 0
    assert r.usage.completion_tokens < full.usage.completion_tokens
    _, events = raw_events(sim, {"messages": messages, "stream": True})
    chunks = [json.loads(e.data) for e in events[1:-1]]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == r.choices[0].message.content
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert chunks[-1]["choices"][0]["content_filter_results"]["violence"]["filtered"] is True


def test_stream_options_need_stream_and_dated_responses_path_needs_api_version(sim: SimulatorHandle) -> None:
    r = httpx.post(
        chat_url(sim), json={"messages": HELLO, "stream_options": {"include_usage": True}}, headers={"api-key": "k"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream_options"
    r = httpx.post(f"{sim.url}/openai/responses", json={"model": "gpt-4o", "input": "hi"}, headers={"api-key": "k"})
    assert r.status_code == 404 and r.json()["error"]["message"] == "Resource not found"
    r = httpx.post(
        f"{sim.url}/openai/responses?api-version=2025-04-01-preview",
        json={"model": "gpt-4o", "input": "hi"},
        headers={"api-key": "k"},
    )
    assert r.status_code == 200 and r.json()["object"] == "response"
    assert (
        httpx.get(
            f"{sim.url}/openai/responses/{r.json()['id']}?api-version=2025-04-01-preview", headers={"api-key": "k"}
        ).json()["id"]
        == r.json()["id"]
    )


def test_throttled_response_advertises_nothing_remaining(sim: SimulatorHandle) -> None:
    r = httpx.post(chat_url(sim), json={"messages": HELLO}, headers={"api-key": "k", "x-sim-status": "429"})
    assert r.headers["x-ratelimit-remaining-requests"] == "0" and r.headers["x-ratelimit-remaining-tokens"] == "0"


def test_bad_override_header_is_a_400_and_client_disconnect_is_recorded(sim: SimulatorHandle) -> None:
    r = httpx.post(chat_url(sim), json={"messages": HELLO}, headers={"api-key": "k", "x-sim-ttft-ms": "soon"})
    assert r.status_code == 400 and "x-sim-ttft-ms" in r.json()["error"]["message"]
    with httpx.stream(
        "POST",
        chat_url(sim),
        json={"messages": HELLO, "stream": True},
        headers={"api-key": "k", "x-sim-token-delay-ms": "30", "x-sim-chunks": "30"},
    ) as s:
        next(s.iter_raw())  # read the first bytes, then hang up
    record = sim.requests[-1]
    deadline = time.monotonic() + 10  # the server notices at its next write; allow for a busy machine
    while not record.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert record.client_disconnected and not record.dropped
    assert b"[DONE]" not in record.response


def test_async_filter_annotations_follow_the_content(sim: SimulatorHandle, client: AzureOpenAI) -> None:
    _, events = raw_events(sim, {"messages": HELLO, "stream": True}, {"x-sim-async-filter": "1"})
    chunks = [json.loads(e.data) for e in events[1:-1]]
    annotations = [c for c in chunks if c["id"] == ""]
    content = [c for c in chunks if c["id"] and c["choices"][0]["delta"].get("content")]
    assert len(annotations) == 12 // 4 + 1 and all("delta" not in a["choices"][0] for a in annotations)
    assert all(c["choices"][0]["content_filter_results"] == {} for c in content)
    offsets = [a["choices"][0]["content_filter_offsets"] for a in annotations]
    assert [o["check_offset"] for o in offsets] == sorted(o["check_offset"] for o in offsets)
    text = "".join(c["choices"][0]["delta"]["content"] for c in content)
    assert offsets[-1]["end_offset"] == len(text)
    finish_at = next(i for i, c in enumerate(chunks) if c["id"] and c["choices"][0]["finish_reason"] == "stop")
    assert chunks[finish_at + 1] is annotations[-1]  # the last annotation arrives after the finish chunk
    # The SDK copes: the text reassembles as without the filter.
    streamed = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, extra_headers={"x-sim-async-filter": "1"}
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices and c.choices[0].delta) == text


def test_async_filter_violation_ends_with_an_annotation(sim: SimulatorHandle) -> None:
    body = {"messages": [{"role": "user", "content": "SIMULATE_COMPLETION_FILTER"}], "stream": True}
    _, events = raw_events(sim, body, {"x-sim-async-filter": "true"})
    last = json.loads(events[-2].data)
    assert last["id"] == "" and last["choices"][0]["finish_reason"] == "content_filter"
    assert last["choices"][0]["content_filter_results"]["violence"]["filtered"] is True
    assert events[-1].data == "[DONE]"
