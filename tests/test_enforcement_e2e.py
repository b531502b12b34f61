"""End to end: in-stream enforcement through the dev host, with the official OpenAI SDK, the AOAI
simulator as backend and the fake Content Safety server on loopback.

Products: `standard` monitors (the default), `kids` enforces and fails open, `strict` enforces and
fails closed. The stream window is 100 characters with 20 of overlap, so every window brings 80 new
characters; answers are forced with the simulator's `x-sim-content` as 10-character pieces, so the
position of the trigger word decides which window violates.
"""

from __future__ import annotations

import json
import time
import uuid
from urllib.parse import quote

import httpx
import orjson
import pytest
from openai import AzureOpenAI
from openai.types.chat import ChatCompletionChunk
from openai.types.completion import Completion

import function_app
from devhost.simulator import SimulatorConfig
from shared.normalize.sse import decode_all
from testing.fakes.content_safety import FakeContentSafety
from testing.fakes.content_safety import run_in_thread as run_fake
from tests.devhost_harness import DevHostGateway, dev_host

UPSTREAM_KEY = "upstream-AOAI-SECRET-7373"
SAFETY_KEY = "content-safety-SECRET-5151"
KEYS = {"standard": "sk-standard-0001", "kids": "sk-kids-0002", "strict": "sk-strict-0003"}
API_VERSION = "2024-10-21"
WINDOW, OVERLAP = 100, 20
STEP = WINDOW - OVERLAP
TRIGGER = ("VIOLENCE_L", "EVEL_6 ok.")  # the fake answers Violence 6 for VIOLENCE_LEVEL_6


def pieces(count: int, trigger_at: int | None = None) -> list[str]:
    """`count` 10-character pieces; the trigger spans pieces `trigger_at` and `trigger_at + 1`."""
    out = [f"word{i:04d}. " for i in range(count)]
    if trigger_at is not None:
        out[trigger_at], out[trigger_at + 1] = TRIGGER
    return out


def forced(parts: list[str], **extra: str) -> dict[str, str]:
    return {
        "x-sim-content": quote("".join(parts)),
        "x-sim-chunks": str(len(parts)),
        "x-ms-client-request-id": f"test-{uuid.uuid4()}",
        **extra,
    }


class Gateway(DevHostGateway):
    fake: FakeContentSafety

    def client(self, product: str, api_version: str = API_VERSION) -> AzureOpenAI:
        return AzureOpenAI(api_key=KEYS[product], azure_endpoint=self.url, api_version=api_version, max_retries=0)

    def exchange(self, request_id: str):
        exchange = super().exchange(request_id)
        assert exchange is not None and self.published.count(request_id) == 1
        raw = exchange.to_json()
        assert SAFETY_KEY.encode() not in raw and UPSTREAM_KEY.encode() not in raw
        return exchange

    def idle(self) -> None:
        """Wait until every announced exchange is parsed (the parser may call Content Safety too)."""
        self.settle()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    fake = run_fake(FakeContentSafety(key=SAFETY_KEY))
    env = {
        "INJECT_STREAM_USAGE": "true",
        "CONTENT_SAFETY_ENDPOINT": fake.url,
        "CONTENT_SAFETY_KEY": SAFETY_KEY,
        "CONTENT_SAFETY_MODES": json.dumps({"default": "monitor", "kids": "enforce", "strict": "enforce"}),
        "CONTENT_SAFETY_FAIL_MODES": json.dumps({"default": "open", "strict": "closed"}),
        "CONTENT_SAFETY_STREAM_WINDOW_CHARS": str(WINDOW),
        "CONTENT_SAFETY_STREAM_WINDOW_OVERLAP": str(OVERLAP),
        "CONTENT_SAFETY_MAX_RETRIES": "0",
    }
    subscriptions = {key: {"id": product, "name": product.title(), "product": product} for product, key in KEYS.items()}
    try:
        with dev_host(
            tmp_path_factory.mktemp("enf"),
            subscriptions,
            {"sim": SimulatorConfig(api_key=UPSTREAM_KEY)},
            env=env,
            gateway=Gateway,
        ) as gateway:
            gateway.fake = fake.fake
            yield gateway
    finally:
        fake.stop()


def raw_stream(gw: Gateway, product: str, op: str, body: dict, headers: dict[str, str]) -> tuple[bytes, str]:
    """The bytes the client receives, and the gateway's request id."""
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        with http.stream(
            "POST", f"/openai/{op}?api-version={API_VERSION}", json=body, headers={"api-key": KEYS[product], **headers}
        ) as r:
            assert r.status_code == 200, r.read()
            return b"".join(r.iter_raw()), r.headers["x-gateway-request-id"]


CHAT = "deployments/gpt-4o/chat/completions"
HELLO = {"messages": [{"role": "user", "content": "Hello"}], "stream": True}


def chat_chunks(received: bytes) -> list[ChatCompletionChunk]:
    events = decode_all(received)
    assert events[-1].data == "[DONE]"
    objects = [orjson.loads(e.data) for e in events[:-1]]
    assert "prompt_filter_results" in objects[0]  # Azure's prompt annotation frame (object ""), released first
    return [ChatCompletionChunk.model_validate(o) for o in objects[1:]]


def test_third_window_violates_client_gets_cleared_text_then_content_filter(gw):
    parts = pieces(200, trigger_at=20)  # characters 200..220: only the third window (160..240 new) holds it
    headers = forced(parts, **{"x-sim-token-delay-ms": "20"})  # AOAI would take 4 s for all of it
    received, rid = raw_stream(gw, "kids", CHAT, HELLO, headers)

    chunks = chat_chunks(received)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(parts[: 2 * STEP // 10])  # the first two windows, cleared, and nothing else
    assert b"word0016" not in received and b"VIOLENCE" not in received  # no byte of the violating window
    last = chunks[-1]
    assert last.choices[0].finish_reason == "content_filter" and last.choices[0].delta.content is None
    assert last.id == chunks[0].id and last.model == chunks[0].model and last.created == chunks[0].created
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "content_filter"
    ]
    assert b'"usage":{' not in received  # the injected usage chunk stays hidden

    ex = gw.exchange(rid)
    assert ex.enforcement["action"] == "blocked" and ex.enforcement["source"] == "content_safety"
    assert ex.enforcement["window_index"] == 2 and ex.enforcement["categories"] == {"Violence": 6}
    assert ex.enforcement["characters_released"] == 2 * STEP and ex.enforcement["windows_analyzed"] == 3
    assert not ex.client_disconnected and ex.response.status == 200
    # The exchange keeps what AOAI sent, including the text the client never saw.
    logged = gw.upstream(headers["x-ms-client-request-id"])
    assert "VIOLENCE_L" in ex.response.sse
    # The upstream call was closed at once: AOAI saw the hang-up long before its 200 x 20 ms were over
    # (the violation was known at piece 23, 240 characters).
    deadline = time.monotonic() + 5
    while not logged.finished and time.monotonic() < deadline:
        time.sleep(0.02)
    assert logged.client_disconnected and not logged.dropped
    assert b"word0199" not in logged.response
    assert logged.response.startswith(ex.response.sse.encode())  # the exchange holds what AOAI sent, as sent


def test_sdk_sees_an_honest_content_filter_end(gw):
    parts = pieces(30, trigger_at=20)
    stream = gw.client("kids").chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True, extra_headers=forced(parts)
    )
    chunks = list(stream)  # the SDK stops at [DONE]; a hang or a cut connection would raise here
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(parts[:16])
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_monitor_product_gets_byte_identical_output(gw):
    parts = pieces(30, trigger_at=20)
    body = {**HELLO, "stream_options": {"include_usage": True}}  # nothing injected: the whole stream is AOAI's
    headers = forced(parts)
    received, rid = raw_stream(gw, "standard", CHAT, body, headers)
    logged = gw.upstream(headers["x-ms-client-request-id"])
    assert received == logged.response and b"VIOLENCE_L" in received
    ex = gw.exchange(rid)
    assert ex.enforcement is None and ex.response.sse.encode() == logged.response


def test_enforced_clean_stream_is_released_byte_for_byte_after_the_usage_filter(gw):
    parts = pieces(30)
    headers = forced(parts)
    received, rid = raw_stream(gw, "kids", CHAT, HELLO, headers)
    logged = gw.upstream(headers["x-ms-client-request-id"])
    usage = [e for e in logged.response.split(b"\n\n") if b'"choices":[]' in e and b'"usage":{' in e]
    assert len(usage) == 1
    assert received == logged.response.replace(usage[0] + b"\n\n", b"")
    ex = gw.exchange(rid)
    assert ex.usage_injected and ex.response.sse.encode() == logged.response
    assert ex.enforcement["action"] == "released" and ex.enforcement["characters_released"] == 300
    assert ex.enforcement["windows_analyzed"] == 4  # 80 + 80 + 80 new characters, then the last 60


def test_enforcement_sees_the_stream_after_the_usage_filter(gw):
    """The order of composition: upstream -> usage filter -> enforcement -> client."""
    safety = gw.host.call(_proxy_safety())
    seen: list[bytes] = []
    wrap = safety.wrap

    def spying_wrap(call, response, stream):
        async def tee():
            async for chunk in stream:
                seen.append(chunk)
                yield chunk

        return wrap(call, response, tee())

    safety.wrap = spying_wrap
    try:
        headers = forced(pieces(12))
        received, _ = raw_stream(gw, "kids", CHAT, HELLO, headers)
    finally:
        del safety.wrap
    logged = gw.upstream(headers["x-ms-client-request-id"])
    assert b'"usage":{' in logged.response  # AOAI sent the usage chunk the gateway asked for ...
    assert b"".join(seen) == received and b'"usage":{' not in b"".join(seen)  # ... enforcement never saw it


async def _proxy_safety():
    return function_app.proxy().safety


def test_responses_stream_ends_with_response_incomplete(gw):
    parts = pieces(30, trigger_at=20)
    client = gw.client("kids", api_version="2025-04-01-preview")
    events = list(client.responses.create(model="gpt-4o", input="Tell me", stream=True, extra_headers=forced(parts)))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete" and last.response.incomplete_details.reason == "content_filter"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "".join(parts[:16]) and not any(e.type == "response.completed" for e in events)


def test_legacy_completions_stream_blocked(gw):
    parts = pieces(30, trigger_at=10)  # characters 100..120: the second window
    chunks = list(
        gw.client("kids").completions.create(
            model="gpt-35-turbo-instruct", prompt="Once", stream=True, extra_headers=forced(parts)
        )
    )
    assert all(isinstance(c, Completion) for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "".join(parts[:8])
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_aoai_asynchronous_filter_annotation_is_honoured(gw):
    crid = f"test-{uuid.uuid4()}"
    body = {"messages": [{"role": "user", "content": "SIMULATE_COMPLETION_FILTER"}], "stream": True}
    received, rid = raw_stream(gw, "kids", CHAT, body, {"x-sim-async-filter": "1", "x-ms-client-request-id": crid})
    chunks = chat_chunks(received)
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    ex = gw.exchange(rid)
    assert ex.enforcement["action"] == "blocked" and ex.enforcement["source"] == "aoai"


def test_analyser_failure_fails_closed_or_open_per_product(gw):
    gw.idle()
    gw.fake.fail(500, times=1)  # the next text:analyze call (window 0) fails; no retries in this module
    received, rid = raw_stream(gw, "strict", CHAT, HELLO, forced(pieces(30)))
    chunks = chat_chunks(received)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ""
    assert chunks[-1].choices[0].finish_reason == "content_filter"
    ex = gw.exchange(rid)
    assert ex.enforcement["source"] == "analyser_error" and "500" in ex.enforcement["errors"][0]

    gw.idle()
    gw.fake.fail(500, times=1)
    received, rid = raw_stream(gw, "kids", CHAT, HELLO, forced(pieces(30)))
    chunks = chat_chunks(received)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(pieces(30))
    assert chunks[-1].choices[0].finish_reason == "stop"
    ex = gw.exchange(rid)
    assert ex.enforcement["action"] == "released" and len(ex.enforcement["errors"]) == 1


def test_non_stream_answer_is_not_held_back(gw):
    crid = f"test-{uuid.uuid4()}"
    raw = gw.client("kids").chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-sim-content": quote("".join(pieces(3, trigger_at=0))), "x-ms-client-request-id": crid},
    )
    assert raw.http_response.content == gw.upstream(crid).response
    assert gw.exchange(raw.headers["x-gateway-request-id"]).enforcement is None


def test_client_gone_mid_enforced_stream_is_aborted_and_upstream_closed(gw):
    headers = forced(pieces(60), **{"x-sim-token-delay-ms": "50"})
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        with http.stream(
            "POST",
            f"/openai/{CHAT}?api-version={API_VERSION}",
            json=HELLO,
            headers={"api-key": KEYS["kids"], **headers},
        ) as r:
            rid = r.headers["x-gateway-request-id"]
            next(r.iter_raw())  # the prompt annotation frame, released at once
    deadline = time.monotonic() + 10
    ex = None
    while ex is None and time.monotonic() < deadline:
        gw.host.call(function_app.drain())
        ex = gw.host.call(function_app.ports().exchanges.load(rid))
        time.sleep(0.05)
    assert ex is not None and ex.client_disconnected
    assert ex.enforcement["action"] == "aborted"
    logged = gw.upstream(headers["x-ms-client-request-id"])
    deadline = time.monotonic() + 5
    while not logged.client_disconnected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert logged.client_disconnected and b"word0059" not in logged.response


def test_record_shows_the_enforcement_verdict(gw):
    """The parser (run in-process by the dev host) folds the exchange's outcome into the record's `safety`."""
    received, rid = raw_stream(gw, "kids", CHAT, HELLO, forced(pieces(30, trigger_at=20)))
    assert b"VIOLENCE" not in received
    gw.idle()
    record = gw.host.call(function_app.ports().records.get(rid))
    assert record is not None
    safety = record["safety"]
    assert safety["status"] == "flagged" and "enforcement" in safety["flagged_by"]
    assert safety["enforcement"]["action"] == "blocked" and safety["enforcement"]["window_index"] == 2
    assert safety["enforcement"]["categories"] == {"Violence": 6}
    # Post-hoc analysis judges what AOAI generated (the stored exchange), violating text included.
    assert safety["completion"]["Violence"] == 6 and "content_safety" in safety["flagged_by"]

    received, rid = raw_stream(gw, "standard", CHAT, HELLO, forced(pieces(30, trigger_at=20)))
    assert b"VIOLENCE_L" in received  # monitor: flagged after the fact, nothing cut
    gw.idle()
    safety = gw.host.call(function_app.ports().records.get(rid))["safety"]
    assert safety["flagged_by"] == ["content_safety"] and safety.get("enforcement") is None
