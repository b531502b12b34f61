"""End to end, request to usage record: the official OpenAI SDK -> dev host -> AOAI simulator, with the
parser fed in-process by the local event channel and writing to SQLite.

Every API yields exactly one record whose token counts equal the usage the simulator reported (or,
where AOAI reports none, the tiktoken count the simulator used); duplicates, poison events and
errors behave; the records, report and dashboard commands show what the traffic left, and the
dashboard renders in headless Chromium with the same totals.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx
import openai
import pytest
from openai import AzureOpenAI

import function_app
from devhost.dashboard_app import DASHBOARD_PATH, DashboardApp
from devhost.simulator import SimulatorConfig
from devhost.usage_report import report
from shared.normalize.encodings import get_encoding
from shared.normalize.sse import decode_all
from tests.devhost_harness import DevHostGateway, dev_host
from tests.test_dashboard import _check_page as _check_costed_page
from tests.test_dashboard import chromium_binary

ROOT = Path(__file__).resolve().parents[1]
CLIENT_KEY = "sk-team-rec-CLIENT-SECRET-5151"
UPSTREAM_KEY = "upstream-AOAI-SECRET-7373"
API_VERSION = "2024-10-21"
OLD_API_VERSION = "2024-06-01"  # before stream_options: streams carry no usage, the parser estimates
DEPLOYMENTS = ["gpt-4o", "gpt-35-turbo-instruct", "text-embedding-3-small", "dall-e-3", "whisper", "tts"]
#: The 429 test's own deployment: a 429 cools that deployment down on the one backend (routing),
#: which must not throttle the tests that follow.
THROTTLED = "gpt-4o-throttled"


class Gateway(DevHostGateway):
    def client(self, api_version: str = API_VERSION) -> AzureOpenAI:
        return AzureOpenAI(api_key=CLIENT_KEY, azure_endpoint=self.url, api_version=api_version, max_retries=0)

    def upstream(self, crid: str) -> Any:  # type: ignore[override]
        """The simulator's log entry for a client request id, once its last byte was written."""
        return super().upstream(crid, finished=True)

    def record(self, request_id: str) -> dict[str, Any]:
        self.settle()
        record = self.call(function_app.ports().records.get(request_id))
        assert record is not None, f"no usage record for {request_id}"
        return record

    def records(self) -> list[dict[str, Any]]:
        self.settle()
        return self.call(function_app.ports().records.list_records())

    def letters(self) -> list[dict[str, Any]]:
        self.settle()
        return self.call(function_app.ports().deadletters.list_letters())


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with dev_host(
        tmp_path_factory.mktemp("records"),
        {CLIENT_KEY: {"id": "team-rec", "name": "Team Rec", "product": "standard"}},
        {"sim": SimulatorConfig(api_key=UPSTREAM_KEY, deployments=DEPLOYMENTS + [THROTTLED])},
        # one deployment the simulator does not know: AOAI's own 404
        deployments=DEPLOYMENTS + [THROTTLED, "no-such-deployment"],
        env={"INJECT_STREAM_USAGE": "true"},
        gateway=Gateway,
        mounts=lambda db: {DASHBOARD_PATH: DashboardApp(db)},
    ) as gateway:
        yield gateway


def _crid() -> str:
    return f"rec-{uuid.uuid4()}"


def _sse_usage(raw: bytes) -> dict[str, Any]:
    """The usage the simulator put in a stream: the usage chunk, or `response.completed`'s usage."""
    found = []
    for event in decode_all(raw):
        if not event.data or event.data == "[DONE]":
            continue
        payload = json.loads(event.data)
        if isinstance(payload.get("usage"), dict):
            found.append(payload["usage"])
        if payload.get("type") == "response.completed":
            found.append(payload["response"]["usage"])
    assert len(found) == 1, f"expected one usage report in the stream, found {len(found)}"
    return found[0]


def _tokens(usage: dict[str, Any]) -> tuple[int, int, int]:
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0))
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
    return prompt, completion, usage["total_tokens"]


def _counts(record: dict[str, Any]) -> tuple[int, int, int]:
    return record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]


def _one_record(gw: Gateway, request_id: str) -> dict[str, Any]:
    record = gw.record(request_id)
    assert gw.published.count(request_id) == 1 and gw.emitted[request_id] == 1
    assert record["request_id"] == request_id and record["subscription_id"] == "team-rec"
    raw = json.dumps(record)
    assert CLIENT_KEY not in raw and UPSTREAM_KEY not in raw
    return record


# --------------------------------------------------------------------------------------- chat
def test_chat_non_stream(gw):
    crid = _crid()
    raw = gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        extra_headers={"x-ms-client-request-id": crid},
    )
    reply = raw.parse()
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert _counts(record) == _tokens(json.loads(gw.upstream(crid).response)["usage"])
    assert _counts(record) == (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens)
    assert record["api"] == "chat.completions" and record["status_code"] == 200 and not record["stream"]
    assert record["usage_source"] == "service" and record["finish_reasons"] == ["stop"]
    assert record["deployment"] == "gpt-4o" and record["backend"] == "sim" and record["error_code"] is None


def test_chat_stream_client_without_usage_gets_no_usage_chunk_and_record_is_service(gw):
    crid = _crid()
    raw = gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Tell me about tokens"}],
        stream=True,
        extra_headers={"x-ms-client-request-id": crid},
    )
    chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)  # nothing the client did not ask for
    logged = gw.upstream(crid)
    assert json.loads(logged.body)["stream_options"] == {"include_usage": True}
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert _counts(record) == _tokens(_sse_usage(logged.response))
    assert record["usage_source"] == "service" and record["usage_injected"] and record["stream"]


def test_chat_stream_client_asked_for_usage(gw):
    crid = _crid()
    raw = gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hi"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-ms-client-request-id": crid},
    )
    chunks = list(raw.parse())
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert _counts(record) == _tokens(_sse_usage(gw.upstream(crid).response))
    assert _counts(record)[2] == chunks[-1].usage.total_tokens
    assert record["usage_source"] == "service" and not record["usage_injected"]


def test_streamed_tool_calls(gw):
    crid = _crid()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    raw = gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=tools,
        tool_choice="required",
        stream=True,
        extra_headers={"x-ms-client-request-id": crid},
    )
    chunks = list(raw.parse())
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather"
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert _counts(record) == _tokens(_sse_usage(gw.upstream(crid).response))
    assert record["usage_source"] == "service" and record["finish_reasons"] == ["tool_calls"]
    assert record["tool_call_count"] == len({tc.index for tc in calls}) >= 1


SEARCH_KEY = "search-ADMIN-KEY-SECRET-8080"
COSMOS_CONNECTION = "AccountEndpoint=https://docs.example:443/;AccountKey=cosmos-SECRET-6060=="


def test_on_your_data_credentials_reach_aoai_but_are_never_stored(gw):
    crid = _crid()
    data_sources = [
        {
            "type": "azure_search",
            "parameters": {
                "endpoint": "https://search.example",
                "index_name": "handbook",
                "authentication": {"type": "api_key", "key": SEARCH_KEY},
            },
        },
        {
            "type": "azure_cosmos_db",
            "parameters": {
                "database_name": "kb",
                "container_name": "docs",
                "index_name": "v",
                "authentication": {"type": "connection_string", "connection_string": COSMOS_CONNECTION},
            },
        },
    ]
    raw = gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "What does the handbook say about leave?"}],
        stream=True,
        extra_body={"data_sources": data_sources},
        extra_headers={"x-ms-client-request-id": crid},
    )
    assert list(raw.parse())
    rid = raw.headers["x-gateway-request-id"]
    # AOAI needs the credentials: it got them exactly as the client sent them.
    assert json.loads(gw.upstream(crid).body)["data_sources"] == data_sources
    record = _one_record(gw, rid)
    assert record["usage_source"] == "service"
    with sqlite3.connect(gw.db) as conn:
        items = [row[0] for row in conn.execute("SELECT item FROM exchange_items WHERE request_id = ?", (rid,))]
        stored_record, details = conn.execute(
            "SELECT record, details FROM records WHERE request_id = ?", (rid,)
        ).fetchone()
    for text in (*items, stored_record, details):
        assert SEARCH_KEY not in text and "cosmos-SECRET-6060" not in text
    # Nor anywhere else the dev host wrote (the database file, its journal, the outbox).
    for path in gw.db.parent.rglob("*"):
        if path.is_file():
            assert b"SECRET-8080" not in path.read_bytes() and b"SECRET-6060" not in path.read_bytes(), path
    stored = json.loads(items[0])["exchange"]["request"]["body"]["data_sources"]
    assert stored[0]["parameters"] == {
        **data_sources[0]["parameters"],
        "authentication": {"type": "api_key", "key": "[REDACTED]"},
    }
    assert stored[1]["parameters"]["authentication"] == {"type": "connection_string", "connection_string": "[REDACTED]"}
    assert json.loads(details)["request"]["data_sources"] == stored


def test_old_api_version_stream_is_estimated_and_equals_the_simulators_tiktoken_count(gw):
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "name": "alice", "content": "Explain what a token is, briefly."},
        {"role": "assistant", "content": "A token is a piece of text."},
        {"role": "user", "content": "And how are they counted?"},
    ]
    crid = _crid()
    raw = gw.client(OLD_API_VERSION).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, stream=True, extra_headers={"x-ms-client-request-id": crid}
    )
    text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    logged = gw.upstream(crid)
    assert "stream_options" not in json.loads(logged.body) and b'"usage":{' not in logged.response
    # The same request without streaming: the simulator reports the tiktoken counts it used.
    same = gw.client(OLD_API_VERSION).chat.completions.create(model="gpt-4o", messages=messages)
    assert same.choices[0].message.content == text
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert record["usage_source"] == "estimated" and not record["usage_injected"]
    assert _counts(record) == (same.usage.prompt_tokens, same.usage.completion_tokens, same.usage.total_tokens)
    assert record["api_version"] == OLD_API_VERSION


# --------------------------------------------------------------------------------------- completions
def test_completions_non_stream(gw):
    crid = _crid()
    raw = gw.client().completions.with_raw_response.create(
        model="gpt-35-turbo-instruct",
        prompt="Once upon a time",
        max_tokens=20,
        extra_headers={"x-ms-client-request-id": crid},
    )
    raw.parse()
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert _counts(record) == _tokens(json.loads(gw.upstream(crid).response)["usage"])
    assert record["api"] == "completions" and record["usage_source"] == "service"


def test_completions_stream_gets_usage_injected_and_hidden(gw):
    crid = _crid()
    raw = gw.client().completions.with_raw_response.create(
        model="gpt-35-turbo-instruct",
        prompt="Once upon a time",
        max_tokens=20,
        stream=True,
        extra_headers={"x-ms-client-request-id": crid},
    )
    chunks = list(raw.parse())
    assert chunks and all(c.usage is None for c in chunks)
    logged = gw.upstream(crid)
    assert json.loads(logged.body)["stream_options"] == {"include_usage": True}
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert _counts(record) == _tokens(_sse_usage(logged.response))
    assert record["usage_source"] == "service" and record["usage_injected"] and record["stream"]


def test_old_api_version_completions_stream_is_estimated_and_equals_the_simulators_count(gw):
    prompt = "Write a haiku about tokenizers."
    raw = gw.client(OLD_API_VERSION).completions.with_raw_response.create(
        model="gpt-35-turbo-instruct", prompt=prompt, max_tokens=30, stream=True
    )
    text = "".join(c.choices[0].text for c in raw.parse() if c.choices)
    same = gw.client(OLD_API_VERSION).completions.create(model="gpt-35-turbo-instruct", prompt=prompt, max_tokens=30)
    assert same.choices[0].text == text
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert record["usage_source"] == "estimated" and not record["usage_injected"]
    assert _counts(record) == (same.usage.prompt_tokens, same.usage.completion_tokens, same.usage.total_tokens)


def test_v1_surface_stream_injects_usage_and_takes_the_deployment_from_the_body(gw):
    crid = _crid()
    v1 = openai.OpenAI(base_url=f"{gw.url}/openai/v1/", api_key=CLIENT_KEY, max_retries=0)
    raw = v1.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hello from v1"}],
        stream=True,
        extra_headers={"x-ms-client-request-id": crid},
    )
    assert all(c.usage is None for c in raw.parse())
    logged = gw.upstream(crid)
    assert logged.path == "/openai/v1/chat/completions"
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert record["deployment"] == "gpt-4o" and record["api_version"] is None
    assert record["usage_source"] == "service" and record["usage_injected"]
    assert _counts(record) == _tokens(_sse_usage(logged.response))


# --------------------------------------------------------------------------------------- embeddings, images, audio
@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_embeddings(gw, encoding_format):
    crid = _crid()
    raw = gw.client().embeddings.with_raw_response.create(
        model="text-embedding-3-small",
        input=["first text", "second, longer text"],
        encoding_format=encoding_format,
        extra_headers={"x-ms-client-request-id": crid},
    )
    assert len(raw.parse().data) == 2
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    usage = json.loads(gw.upstream(crid).response)["usage"]
    assert _counts(record) == (usage["prompt_tokens"], 0, usage["total_tokens"])
    assert record["api"] == "embeddings" and record["usage_source"] == "service"


def test_images(gw):
    raw = gw.client().images.with_raw_response.generate(model="dall-e-3", prompt="A lighthouse at dusk", n=1)
    assert raw.parse().data
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert record["api"] == "images.generations" and record["image_count"] == 1
    assert record["usage_source"] == "none" and _counts(record) == (0, 0, 0)  # dall-e-3 reports no tokens


def test_audio_transcription(gw):
    raw = gw.client().audio.transcriptions.with_raw_response.create(
        model="whisper", file=("clip.wav", bytes(range(256)) * 40, "audio/wav")
    )
    assert raw.parse().text
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert record["api"] == "audio.transcriptions" and record["deployment"] == "whisper"
    assert record["status_code"] == 200 and record["usage_source"] == "none"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks translations deprecated
def test_audio_translation(gw):
    raw = gw.client().audio.translations.with_raw_response.create(
        model="whisper", file=("clip.wav", bytes(range(256)) * 40, "audio/wav")
    )
    assert raw.parse().text
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert record["api"] == "audio.translations" and record["status_code"] == 200 and record["usage_source"] == "none"


def test_audio_speech(gw):
    raw = gw.client().audio.speech.with_raw_response.create(model="tts", voice="alloy", input="Hello there")
    assert len(raw.content) > 0
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert record["api"] == "audio.speech" and record["status_code"] == 200 and record["usage_source"] == "none"


# --------------------------------------------------------------------------------------- responses
def test_responses_non_stream(gw):
    crid = _crid()
    client = gw.client("2025-04-01-preview")
    raw = client.responses.with_raw_response.create(
        model="gpt-4o", input="Tell me a story", extra_headers={"x-ms-client-request-id": crid}
    )
    reply = raw.parse()
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert _counts(record) == _tokens(json.loads(gw.upstream(crid).response)["usage"])
    assert _counts(record) == (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.total_tokens)
    assert record["api"] == "responses" and record["usage_source"] == "service" and record["deployment"] == "gpt-4o"


def test_responses_stream(gw):
    crid = _crid()
    client = gw.client("2025-04-01-preview")
    raw = client.responses.with_raw_response.create(
        model="gpt-4o", input="Tell me a story", stream=True, extra_headers={"x-ms-client-request-id": crid}
    )
    events = list(raw.parse())
    assert events[-1].type == "response.completed"
    record = _one_record(gw, raw.headers["x-gateway-request-id"])
    assert _counts(record) == _tokens(_sse_usage(gw.upstream(crid).response))
    assert record["usage_source"] == "service" and record["stream"] and not record["usage_injected"]


def test_retrieve_input_items_delete_and_models_are_not_billable_and_inherit_no_tokens(gw):
    client = gw.client("2025-04-01-preview")
    created = client.responses.with_raw_response.create(model="gpt-4o", input="Tell me a story")
    reply = created.parse()
    create_record = _one_record(gw, created.headers["x-gateway-request-id"])
    assert (
        create_record["billable"] is True
        and create_record["operation"] == "create"
        and create_record["total_tokens"] > 0
    )
    assert create_record["cost"] and create_record["cost"] > 0
    calls = [
        ("retrieve", client.responses.with_raw_response.retrieve(reply.id)),
        ("list", client.responses.input_items.with_raw_response.list(reply.id)),
        ("delete", client.responses.with_raw_response.delete(reply.id)),
    ]
    for operation, raw in calls:
        raw.parse()
        record = _one_record(gw, raw.headers["x-gateway-request-id"])
        assert (record["operation"], record["billable"]) == (operation, False), record["path"]
        assert _counts(record) == (0, 0, 0) and record["usage_source"] == "none"
        assert (record["cost"], record["cost_reason"]) == (0.0, "not billable")


# --------------------------------------------------------------------------------------- errors
def test_401_from_the_dev_host_never_reaches_the_proxy_and_has_no_record(gw):
    before = len(gw.records())
    published = len(gw.published)
    r = httpx.post(
        f"{gw.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
        json={"messages": [{"role": "user", "content": "Hi"}]},
        headers={"api-key": "wrong"},
    )
    assert r.status_code == 401 and "x-gateway-request-id" not in r.headers
    assert len(gw.records()) == before and len(gw.published) == published  # like APIM: stopped at the door


def test_404_unknown_deployment_upstream(gw):
    with pytest.raises(openai.NotFoundError) as err:
        gw.client().chat.completions.create(model="no-such-deployment", messages=[{"role": "user", "content": "Hi"}])
    record = _one_record(gw, err.value.response.headers["x-gateway-request-id"])
    assert record["status_code"] == 404 and record["error_code"] == err.value.code == "DeploymentNotFound"
    assert record["backend"] == "sim" and record["attempts"] == 1  # AOAI's answer, passed through
    assert record["usage_source"] == "none" and _counts(record) == (0, 0, 0)


def test_404_deployment_no_backend_serves_is_answered_by_the_gateway(gw):
    before = len(gw.sim.requests)
    with pytest.raises(openai.NotFoundError) as err:
        gw.client().chat.completions.create(model="not-served", messages=[{"role": "user", "content": "Hi"}])
    assert len(gw.sim.requests) == before  # never went upstream
    record = _one_record(gw, err.value.response.headers["x-gateway-request-id"])
    assert record["status_code"] == 404 and record["error_code"] == err.value.code == "DeploymentNotFound"
    assert record["attempts"] == 0 and record["backend"] is None
    assert record["usage_source"] == "none" and _counts(record) == (0, 0, 0)


def test_429_throttled(gw):
    with pytest.raises(openai.RateLimitError) as err:
        gw.client().chat.completions.create(
            model=THROTTLED, messages=[{"role": "user", "content": "Hi"}], extra_headers={"x-sim-status": "429"}
        )
    record = _one_record(gw, err.value.response.headers["x-gateway-request-id"])
    assert record["status_code"] == 429 and record["error_code"] == err.value.body["code"]
    assert record["backend"] == "sim" and record["attempts"] == 1  # AOAI's own 429, passed through
    assert record["usage_source"] == "none" and _counts(record) == (0, 0, 0)


def test_content_filter_400_is_billed_for_the_prompt(gw):
    messages = [{"role": "user", "content": "Please SIMULATE_CONTENT_FILTER now"}]
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().chat.completions.create(model="gpt-4o", messages=messages)
    record = _one_record(gw, err.value.response.headers["x-gateway-request-id"])
    assert record["status_code"] == 400 and record["error_code"] == "content_filter"
    assert record["content_filter"]["filtered"] is True
    # AOAI reports no usage on the 400 but bills the prompt: estimated with the cookbook's chat formula
    # (3 tokens per message, its role and content, 3 to prime the reply) on gpt-4o's o200k_base.
    enc = get_encoding("o200k_base")
    expected = 3 + len(enc.encode("user")) + len(enc.encode(messages[0]["content"])) + 3
    assert record["usage_source"] == "estimated" and record["completion_tokens"] == 0
    assert record["prompt_tokens"] == record["total_tokens"] == expected


# --------------------------------------------------------------------------------------- delivery
def test_duplicate_event_yields_no_second_record(gw):
    raw = gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "dup"}]
    )
    rid = raw.headers["x-gateway-request-id"]
    first = _one_record(gw, rid)
    gw.host.call(function_app.ports().channel.publish(rid))  # Event Hubs delivers at least once
    gw.settle()
    assert gw.published.count(rid) == 2
    assert gw.emitted[rid] == 1 and gw.record(rid) == first
    assert [r["request_id"] for r in gw.records()].count(rid) == 1
    assert not [letter for letter in gw.letters() if letter["key"] == rid]


def test_poison_events_land_in_the_dead_letter_store(gw):
    missing = f"never-stored-{uuid.uuid4()}"
    gw.host.call(function_app.ports().channel.publish(missing))
    gw.settle()
    undecodable = func.EventHubEvent(body=b"\xff\xfe\x00not text")
    gw.host.call(function_app.parse_exchanges([undecodable]))
    letters = gw.letters()
    by_key = {letter["key"]: letter for letter in letters}
    assert missing in by_key and "not found" in by_key[missing]["reason"]
    unreadable = [letter for letter in letters if letter["key"] != missing]
    assert len(unreadable) == 1 and "utf-8" in unreadable[0]["reason"]
    records = gw.records()
    assert missing not in {r["request_id"] for r in records}
    assert gw.emitted[missing] == 0


def test_every_request_that_reached_the_proxy_has_exactly_one_record(gw):
    records = gw.records()
    ids = [r["request_id"] for r in records]
    assert len(ids) == len(set(ids))
    reached = {rid for rid in gw.published if not rid.startswith("never-stored-")}
    assert set(ids) == reached
    assert all(gw.emitted[rid] == 1 for rid in reached)


# --------------------------------------------------------------------------------------- commands
def _check_page(page: str, records: list[dict[str, Any]]) -> Any:
    """The dashboard's totals equal the records (records the parser left uncosted count as cost null)."""
    return _check_costed_page(page, [{"cost": None, **r} for r in records])


def _devhost(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devhost", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=60,
        **kw,
    )


def test_records_command_json_and_table(gw, tmp_path):
    records = gw.records()
    # The settings file names the database, as local.settings.json does for `make run`.
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": {"SQLITE_PATH": str(gw.db)}}))
    env = {k: v for k, v in os.environ.items() if k != "SQLITE_PATH"}
    out = subprocess.run(
        [sys.executable, "-m", "devhost", "records", "--json", "--settings", str(settings)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert lines == records
    table = _devhost("records", "--settings", str(settings), env={"SQLITE_PATH": str(gw.db)})
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[:3] == ["timestamp", "request_id", "subscription"]
    assert all(r["request_id"] in table.stdout for r in records)
    assert f"{len(records)} record(s)" in table.stdout


def test_records_command_since(gw):
    records = gw.records()
    middle = records[len(records) // 2]["timestamp"]
    out = _devhost("records", "--json", "--since", middle, env={"SQLITE_PATH": str(gw.db)})
    assert out.returncode == 0, out.stderr
    got = [json.loads(line)["request_id"] for line in out.stdout.splitlines()]
    assert got == [r["request_id"] for r in records if r["timestamp"] >= middle] and 0 < len(got) < len(records)
    future = _devhost("records", "--json", "--since", "2999-01-01", env={"SQLITE_PATH": str(gw.db)})
    assert future.returncode == 0 and future.stdout == ""
    bad = _devhost("records", "--since", "yesterday", env={"SQLITE_PATH": str(gw.db)})
    assert bad.returncode == 2 and "ISO-8601" in bad.stderr


def test_report_command_totals_equal_the_records(gw):
    records = gw.records()
    out = _devhost("report", "--json", env={"SQLITE_PATH": str(gw.db)})
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert sum(x["requests"] for x in lines) == len(records)
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert sum(x[name] for x in lines) == sum(r[name] for r in records) > 0
    assert sum(x["errors"] for x in lines) == sum(r["status_code"] >= 400 for r in records) >= 3
    gpt4o = next(x for x in lines if x["deployment"] == "gpt-4o")
    assert gpt4o["subscription"] == "Team Rec"
    assert gpt4o["requests"] == sum(r["deployment"] == "gpt-4o" for r in records)
    table = _devhost("report", env={"SQLITE_PATH": str(gw.db)})
    assert table.returncode == 0, table.stderr
    total = next(line for line in table.stdout.splitlines() if line.startswith("TOTAL")).split()
    assert total[1:5] == [
        str(len(records)),
        str(sum(r["prompt_tokens"] for r in records)),
        str(sum(r["completion_tokens"] for r in records)),
        str(sum(r["total_tokens"] for r in records)),
    ]
    assert [x["deployment"] for x in lines] == [x.deployment for x in report(records)]


def test_commands_say_when_there_is_no_database(tmp_path):
    for command in ("records", "report", "dashboard"):
        out = _devhost(command, env={"SQLITE_PATH": str(tmp_path / "none.db")})
        assert out.returncode == 1 and "No records database" in out.stderr
        assert not (tmp_path / "none.db").exists()


def test_dashboard_command_serves_the_records(gw):
    records = gw.records()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "dashboard", "--port", "0"],
        cwd=ROOT,
        env={**os.environ, "SQLITE_PATH": str(gw.db)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("dashboard on http://127.0.0.1:"), line
        url = line.split()[2]
        page = urllib.request.urlopen(url, timeout=30).read().decode()
        _check_page(page, records)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dev_host_serves_the_dashboard_on_loopback(gw):
    records = gw.records()
    page = httpx.get(f"{gw.url}{DASHBOARD_PATH}", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    _check_page(page.text, records)
    assert f'<script src="{DASHBOARD_PATH}/plotly.min.js">' in page.text
    js = httpx.get(f"{gw.url}{DASHBOARD_PATH}/plotly.min.js", timeout=30)
    assert js.status_code == 200 and len(js.content) > 1_000_000
    summary = httpx.get(f"{gw.url}{DASHBOARD_PATH}/api/summary", timeout=30).json()
    assert summary["totals"]["requests"] == len(records)
    assert httpx.get(f"{gw.url}{DASHBOARD_PATH}/nope").status_code == 404
    assert httpx.post(f"{gw.url}{DASHBOARD_PATH}").status_code == 405


def test_dashboard_is_refused_to_other_machines(tmp_path):
    app = DashboardApp(tmp_path / "gateway.db")
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    def get(client) -> tuple[int, bytes]:
        sent.clear()
        scope = {
            "type": "http",
            "method": "GET",
            "path": DASHBOARD_PATH,
            "client": client,
            "headers": [],
            "query_string": b"",
        }
        asyncio.run(app(scope, receive, send))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent)

    for client in (("10.1.2.3", 5000), ("192.168.0.7", 80), None):
        assert get(client)[0] == 404, client
    for client in (("127.0.0.1", 5000), ("::1", 5000)):
        status, body = get(client)
        # Before any traffic there is no database: an empty dashboard, and no file created.
        assert status == 200 and b'data-requests="0"' in body, client
    assert not (tmp_path / "gateway.db").exists()


# --------------------------------------------------------------------------------------- chromium
@pytest.mark.chromium
@pytest.mark.skipif(
    chromium_binary() is None,
    reason="Debian's chromium is not installed (.ci/run installs it: apt-get install -y chromium)",
)
def test_dashboard_after_traffic_in_headless_chromium(gw, tmp_path):
    records = gw.records()
    assert len(records) >= 15 and {r["api"] for r in records} >= {
        "chat.completions",
        "completions",
        "embeddings",
        "images.generations",
        "audio.transcriptions",
        "audio.translations",
        "audio.speech",
        "responses",
    }
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    screenshot = results / "dashboard-devhost.png"
    url = f"{gw.url}{DASHBOARD_PATH}"  # the page the running dev host serves, plotly.js from it too
    base = [
        chromium_binary(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--window-size=1280,2400",
    ]
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = _check_page(dom.stdout, records)
    assert parsed.charts >= 5, "plotly drew the charts in the browser (one svg.main-svg per chart at least)"
    shot = subprocess.run(base + [f"--screenshot={screenshot}", url], capture_output=True, text=True, timeout=180)
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):  # the README's picture: the top of the page
        docs = ROOT / "docs" / "img" / "dashboard.png"
        docs.parent.mkdir(parents=True, exist_ok=True)
        top = [a if not a.startswith("--window-size=") else "--window-size=1280,1100" for a in base]
        assert subprocess.run(top + [f"--screenshot={docs}", url], capture_output=True, timeout=180).returncode == 0
