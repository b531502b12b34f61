"""Accounting a finance team can sign, end to end: the official OpenAI SDK -> dev host -> AOAI simulator
-> parser -> usage records in SQLite.

Reads and management calls are non-billable zero-token records; audio is priced from the uploaded
file's duration and the speech input's characters; a batch job's lines are recorded one by one at
the batch price, attributed to the team that created the batch; a model-router stream is priced by
the model that served it.
"""

from __future__ import annotations

import io
import json
import uuid
import wave
from typing import Any

import httpx
import openai
import pytest
from openai import AzureOpenAI

import function_app
from devhost.simulator import SimulatorConfig
from shared.pricing.book import load_book
from tests.devhost_harness import DevHostGateway, dev_host

KEY_A = "sk-team-acct-A-5151"
KEY_B = "sk-team-acct-B-6262"
UPSTREAM_KEY = "upstream-acct-7373"
API_VERSION = "2024-10-21"
BOOK = load_book()


class Gateway(DevHostGateway):
    def client(self, key: str = KEY_A) -> AzureOpenAI:
        return AzureOpenAI(api_key=key, azure_endpoint=self.url, api_version=API_VERSION, max_retries=0)

    def record(self, request_id: str) -> dict[str, Any]:
        self.settle()
        record = self.call(function_app.ports().records.get(request_id))
        assert record is not None, f"no usage record for {request_id}"
        return record

    def records(self) -> list[dict[str, Any]]:
        self.settle()
        return self.call(function_app.ports().records.list_records())


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with dev_host(
        tmp_path_factory.mktemp("accounting"),
        {
            KEY_A: {"id": "team-a", "name": "Team A", "product": "standard"},
            KEY_B: {"id": "team-b", "name": "Team B", "product": "standard"},
        },
        {"sim": SimulatorConfig(api_key=UPSTREAM_KEY, models={"model-router": "gpt-4.1-nano-2025-04-14"})},
        env={"DEPLOYMENT_MODELS": json.dumps({"model-router": {"model": "model-router", "type": "global"}})},
        gateway=Gateway,
    ) as gateway:
        yield gateway


def _rid(response: Any) -> str:
    return response.headers["x-gateway-request-id"]


def _not_billable(record: dict[str, Any]) -> None:
    assert record["billable"] is False, record
    assert (record["prompt_tokens"], record["completion_tokens"], record["total_tokens"]) == (0, 0, 0)
    assert (record["cost"], record["cost_reason"]) == (0.0, "not billable")
    assert record["usage_quality"] == "none"


def test_reads_and_management_calls_are_not_billable(gw):
    client = gw.client()
    created = client.responses.with_raw_response.create(model="gpt-4o", input="Say hello")
    response_id = created.parse().id
    assert gw.record(_rid(created))["billable"] is True
    calls = {
        "retrieve": client.responses.with_raw_response.retrieve(response_id),
        "list": client.responses.input_items.with_raw_response.list(response_id),
        "models": client.models.with_raw_response.list(),
        "files": client.files.with_raw_response.list(),
        "delete": client.responses.with_raw_response.delete(response_id),
    }
    ops = {}
    for name, raw in calls.items():
        record = gw.record(_rid(raw))
        _not_billable(record)
        ops[name] = (record["api"], record["operation"])
    assert ops == {
        "retrieve": ("responses", "retrieve"),
        "list": ("responses", "list"),
        "models": ("models", "list"),
        "files": ("files", "list"),
        "delete": ("responses", "delete"),
    }


def _wav(seconds: float, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(int(seconds * rate) * 2))
    return buf.getvalue()


def test_whisper_is_priced_per_minute_of_the_uploaded_audio(gw):
    raw = gw.client().audio.transcriptions.with_raw_response.create(
        model="whisper", file=("note.wav", io.BytesIO(_wav(3.0)), "audio/wav")
    )
    record = gw.record(_rid(raw))
    assert record["api"] == "audio.transcriptions" and record["billable"] is True
    assert (record["audio_seconds"], record["duration_source"]) == (3.0, "container")
    # whisper global: 0.36 USD per hour = 0.006 per minute; 3 s = 0.0003
    assert record["cost"] == pytest.approx(3.0 / 60 * 0.006) and record["cost"] > 0
    assert record["cost_reason"] is None and record["usage_quality"] == "exact"


def test_speech_is_priced_per_input_character(gw):
    text = "The quarterly numbers are in."
    raw = gw.client().audio.speech.with_raw_response.create(model="tts", voice="alloy", input=text)
    record = gw.record(_rid(raw))
    assert record["input_characters"] == len(text)
    assert record["cost"] == pytest.approx(len(text) * 15.0 / 1e6) and record["cost"] > 0


def test_a_batch_is_charged_back_per_line_at_the_batch_price_to_its_creator(gw):
    creator, other_team = gw.client(KEY_A), gw.client(KEY_B)
    poller = creator  # another subscription cannot see the batch at all (tenant isolation)
    lines = [
        {
            "custom_id": f"task-{i}",
            "method": "POST",
            "url": "/chat/completions",
            "body": {"model": "gpt-4o-batch", "messages": [{"role": "user", "content": f"Summarize item {i}"}]},
        }
        for i in range(3)
    ]
    payload = "\n".join(json.dumps(line) for line in lines).encode()
    upload = creator.files.with_raw_response.create(file=("tasks.jsonl", io.BytesIO(payload)), purpose="batch")
    file_id = upload.parse().id
    created = creator.batches.with_raw_response.create(
        input_file_id=file_id, endpoint="/chat/completions", completion_window="24h"
    )
    batch = created.parse()
    create_record = gw.record(_rid(created))
    assert (create_record["api"], create_record["operation"], create_record["billable"]) == ("batches", "create", False)
    assert create_record["batch_id"] == batch.id and gw.record(_rid(upload))["object_id"] == file_id
    gw.settle()  # the creator is remembered before anyone polls
    with pytest.raises(openai.NotFoundError):
        other_team.batches.retrieve(batch.id)

    statuses = []
    for _ in range(4):  # validating -> in_progress -> finalizing -> completed, one step per retrieve
        raw = poller.batches.with_raw_response.retrieve(batch.id)
        statuses.append(raw.parse().status)
        _not_billable(gw.record(_rid(raw)))
    assert statuses == ["in_progress", "finalizing", "completed", "completed"]
    output = creator.files.with_raw_response.content(raw.parse().output_file_id)
    _not_billable(gw.record(_rid(output)))
    served = {
        json.loads(line)["custom_id"]: json.loads(line)["response"]["body"]["usage"]
        for line in output.text.splitlines()
        if line.strip()
    }

    records = [r for r in gw.records() if r.get("batch_id") == batch.id and r.get("custom_id")]
    assert sorted(r["custom_id"] for r in records) == ["task-0", "task-1", "task-2"]
    for record in records:
        usage = served[record["custom_id"]]
        assert (record["prompt_tokens"], record["completion_tokens"]) == (
            usage["prompt_tokens"],
            usage["completion_tokens"],
        )
        assert record["subscription_id"] == "team-a", "lines belong to the batch's creator, not to the poller"
        assert record["billable"] is True and record["deployment_type"] == "global_batch"
        # gpt-4o Global Batch: 1.25 input, 5.00 output per 1M (half the standard 2.50 / 10.00)
        expected = (usage["prompt_tokens"] * 1.25 + usage["completion_tokens"] * 5.0) / 1e6
        assert record["cost"] == pytest.approx(expected) and record["cost"] > 0
        assert record["price_version"] == BOOK.version
    summary = gw.record(f"batch:{batch.id}")
    assert summary["billable"] is False and summary["subscription_id"] == "team-a"
    assert summary["usage_details"]["batch"]["lines"] == 3
    # Polling again settles nothing twice.
    poller.batches.retrieve(batch.id)
    assert len([r for r in gw.records() if r.get("batch_id") == batch.id and r.get("custom_id")]) == 3
    cancel = creator.batches.with_raw_response.cancel(batch.id)
    assert gw.record(_rid(cancel))["operation"] == "cancel"
    for raw in (creator.files.with_raw_response.retrieve(file_id), creator.batches.with_raw_response.list()):
        _not_billable(gw.record(_rid(raw)))
    deleted = creator.files.with_raw_response.delete(file_id)
    record = gw.record(_rid(deleted))
    _not_billable(record)
    assert (record["api"], record["operation"], record["object_id"]) == ("files", "delete", file_id)


def test_a_model_router_stream_is_priced_by_the_model_that_served(gw):
    crid = f"acct-{uuid.uuid4()}"
    with gw.client().chat.completions.with_streaming_response.create(
        model="model-router",
        messages=[{"role": "user", "content": "Route me"}],
        stream=True,
        extra_headers={"x-ms-client-request-id": crid},
    ) as raw:
        chunks = [line for line in raw.iter_lines() if line.startswith("data: {")]
        request_id = raw.headers["x-gateway-request-id"]
    assert any('"model":"gpt-4.1-nano-2025-04-14"' in c.replace(" ", "") for c in chunks)
    record = gw.record(request_id)
    assert record["deployment"] == "model-router" and record["deployment_model"] == "model-router"
    assert record["model"] == "gpt-4.1-nano-2025-04-14" and record["price_match"] == "family"
    # gpt-4.1-nano global: 0.10 input, 0.40 output per 1M
    entry = BOOK.entry("gpt-4.1-nano", "global", __import__("datetime").date.today())
    expected = (record["prompt_tokens"] * entry["input"] + record["completion_tokens"] * entry["output"]) / 1e6
    assert record["usage_source"] == "service" and record["cost"] == pytest.approx(expected) and record["cost"] > 0


@pytest.mark.parametrize("path", ["/openai/realtime", "/openai/v1/realtime"])
def test_a_realtime_websocket_upgrade_is_refused_with_the_supported_route_and_recorded(gw, path):
    headers = {
        "api-key": KEY_A,
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    answer = httpx.get(
        gw.url + path, params={"api-version": "2025-04-01-preview", "deployment": "gpt-realtime"}, headers=headers
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "WebSocketNotSupported" and "API Management" in error["message"]
    assert "wss://" in error["message"] and "client_secrets" in error["message"]
    assert not gw.sim.requests or all(not r.path.endswith("realtime") for r in gw.sim.requests), "never forwarded"
    record = gw.record(answer.headers["x-gateway-request-id"])
    assert (record["api"], record["status_code"], record["error_code"]) == ("realtime", 400, "WebSocketNotSupported")
    _not_billable(record)


def test_webrtc_session_creation_passes_through_as_non_billable_and_keeps_no_secret(gw):
    answer = httpx.post(
        gw.url + "/openai/v1/realtime/client_secrets",
        headers={"api-key": KEY_A},
        json={"session": {"type": "realtime", "model": "gpt-realtime"}},
    )
    assert answer.status_code == 200 and answer.json()["value"].startswith("ek_")
    request_id = answer.headers["x-gateway-request-id"]
    record = gw.record(request_id)
    assert (record["api"], record["operation"]) == ("realtime", "create")
    _not_billable(record)
    stored = gw.exchange(request_id)
    assert answer.json()["value"] not in json.dumps(stored.to_dict()), "the ephemeral key is not stored"


def test_no_record_of_this_suite_is_estimated(gw):
    """Usage injection makes estimates the exception: every billable token record here is the service's."""
    records = gw.records()
    estimated = [r["request_id"] for r in records if r["usage_source"] == "estimated"]
    assert estimated == []
    assert any(r["usage_source"] == "service" for r in records)
