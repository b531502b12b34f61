"""End to end: the official OpenAI SDK -> dev host (function_app.py on uvicorn) -> AOAI simulator.

Checks byte-for-byte pass-through, incremental delivery, one stored and announced exchange per
request without secrets, usage injection hidden from the client, and disconnects.
"""

import json
import logging
import time
import uuid

import httpx
import openai
import pytest
from openai import AzureOpenAI

import function_app
from devhost.simulator import SimulatorConfig
from devhost.simulator.catalog import DEFAULT_DEPLOYMENTS
from shared.exchange import decode_body
from tests.devhost_harness import DevHostGateway, dev_host

CLIENT_KEY = "sk-team-a-CLIENT-SECRET-4242"
UPSTREAM_KEY = "upstream-AOAI-SECRET-9191"
TOKEN_DELAY_MS = 25
API_VERSION = "2024-10-21"


class Gateway(DevHostGateway):
    def client(self, **kw) -> AzureOpenAI:
        return AzureOpenAI(api_key=CLIENT_KEY, azure_endpoint=self.url, api_version=API_VERSION, max_retries=0, **kw)


#: The simulator's usual deployments plus one that test_429_passed_through throttles on its own.
SERVED = [*DEFAULT_DEPLOYMENTS, "gpt-4o-throttled"]


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with dev_host(
        tmp_path_factory.mktemp("gw"),
        {CLIENT_KEY: {"id": "team-a", "name": "Team A", "product": "standard"}},
        {"sim": SimulatorConfig(api_key=UPSTREAM_KEY, token_delay_ms=TOKEN_DELAY_MS, deployments=SERVED)},
        env={"INJECT_STREAM_USAGE": "true"},
        gateway=Gateway,
    ) as gateway:
        yield gateway


def _crid() -> str:
    return f"test-{uuid.uuid4()}"


def _stored_once(gw: Gateway, request_id: str):
    ex = gw.exchange(request_id)
    assert ex is not None, "exchange not stored"
    assert gw.published.count(request_id) == 1
    raw = ex.to_json()
    assert CLIENT_KEY.encode() not in raw and UPSTREAM_KEY.encode() not in raw
    return ex


def test_chat_non_stream(gw):
    crid = _crid()
    raw = gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}], extra_headers={"x-ms-client-request-id": crid}
    )
    reply = raw.parse()
    logged = gw.upstream(crid)
    assert raw.http_response.content == logged.response
    assert reply.choices[0].message.content and reply.usage.total_tokens > 0
    for name in (
        "apim-request-id",
        "x-request-id",
        "x-ms-region",
        "x-ratelimit-remaining-tokens",
        "openai-processing-ms",
    ):
        assert raw.headers[name] == logged.response_headers[name]
    ex = _stored_once(gw, raw.headers["x-gateway-request-id"])
    assert ex.response.status == 200 and ex.response.body == json.loads(logged.response)
    assert ex.identity.subscription_id == "team-a" and ex.identity.product == "standard"
    assert ex.request.headers["api-key"] == "[REDACTED]" and not ex.usage_injected


def test_chat_stream_bytes_identical_incremental_and_usage_hidden(gw):
    crid = _crid()
    body = {"messages": [{"role": "user", "content": "Hello"}], "stream": True}
    arrivals, received = [], bytearray()
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        start = time.monotonic()
        with http.stream(
            "POST",
            f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
            json=body,
            headers={"api-key": CLIENT_KEY, "x-ms-client-request-id": crid},
        ) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for chunk in r.iter_raw():
                arrivals.append(time.monotonic() - start)
                received += chunk
            rid = r.headers["x-gateway-request-id"]
    logged = gw.upstream(crid)
    assert json.loads(logged.body)["stream_options"] == {"include_usage": True}
    # The client gets exactly what the simulator sent, minus the usage chunk it did not ask for.
    events = logged.response.split(b"\n\n")
    usage = [e for e in events if b'"choices":[]' in e and b'"usage":{' in e]
    assert len(usage) == 1
    assert bytes(received) == logged.response.replace(usage[0] + b"\n\n", b"")
    assert b'"usage":{' not in received
    # Incremental: chunks arrived spread over the simulated generation, not all at the end.
    assert len(arrivals) >= 5
    assert arrivals[-1] - arrivals[0] >= 0.5 * TOKEN_DELAY_MS / 1000 * (len(arrivals) - 2)
    ex = _stored_once(gw, rid)
    assert ex.usage_injected and ex.response.sse.encode() == logged.response
    assert not ex.client_disconnected and ex.timings.last_byte_ms >= ex.timings.upstream_first_byte_ms


def test_chat_stream_with_include_usage_keeps_the_chunk(gw):
    crid = _crid()
    chunks = list(
        gw.client().chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Hi"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-ms-client-request-id": crid},
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert json.loads(gw.upstream(crid).body)["stream_options"] == {"include_usage": True}


def test_sdk_stream_text_matches_and_no_usage_chunk(gw):
    chunks = list(
        gw.client().chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True)
    )
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_streamed_tool_calls(gw):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    chunks = list(
        gw.client().chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=tools,
            tool_choice="required",
            stream=True,
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id and calls[0].function.name == "get_weather"
    args = "".join(tc.function.arguments or "" for tc in calls)
    assert "city" in json.loads(args)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_429_passed_through(gw):
    # Its own deployment name: the 429 puts that deployment (only) into a cooldown on the one backend.
    with pytest.raises(openai.RateLimitError) as err:
        gw.client().chat.completions.create(
            model="gpt-4o-throttled",
            messages=[{"role": "user", "content": "Hi"}],
            extra_headers={"x-sim-status": "429"},
        )
    headers = err.value.response.headers
    assert headers["retry-after"] and headers["retry-after-ms"]
    ex = _stored_once(gw, headers["x-gateway-request-id"])
    assert ex.response.status == 429 and ex.gateway_error is None
    assert headers["x-gateway-backend"] == "sim" and headers["x-gateway-attempts"] == "1"


def test_content_filter_400_passed_through(gw):
    with pytest.raises(openai.BadRequestError) as err:
        gw.client().chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "SIMULATE_CONTENT_FILTER"}]
        )
    assert err.value.code == "content_filter"
    assert err.value.body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    ex = _stored_once(gw, err.value.response.headers["x-gateway-request-id"])
    assert ex.response.status == 400 and ex.response.body["error"]["code"] == "content_filter"


def test_missing_or_unknown_key_is_401(gw):
    for headers in ({}, {"api-key": "wrong"}):
        r = httpx.post(
            f"{gw.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
            json={"messages": []},
            headers=headers,
        )
        assert r.status_code == 401 and set(r.json()["error"]) == {"code", "message"}


def test_client_disconnect_mid_stream_is_recorded_and_upstream_closed(gw):
    crid = _crid()
    with httpx.Client(base_url=gw.url, timeout=30) as http:
        with http.stream(
            "POST",
            f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
            json={"messages": [{"role": "user", "content": "long"}], "stream": True},
            headers={"api-key": CLIENT_KEY, "x-ms-client-request-id": crid, "x-sim-token-delay-ms": "200"},
        ) as r:
            rid = r.headers["x-gateway-request-id"]
            next(r.iter_raw())
    deadline = time.monotonic() + 10
    ex = None
    while time.monotonic() < deadline:
        ex = gw.exchange(rid)
        if ex is not None:
            break
        time.sleep(0.05)
    assert ex is not None and ex.client_disconnected
    assert gw.published.count(rid) == 1
    # The upstream call was closed at once, long before the simulated generation (12 x 200 ms) ended.
    assert ex.timings.last_byte_ms < 1500
    assert ex.response.sse.count("data:") < 12


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_stream_upstream_breaks_after_its_first_byte_is_cut_for_the_client_too(gw, caplog):
    """AOAI would have dropped the connection: the client must not get a clean end that looks complete."""
    crid, received = _crid(), bytearray()
    server_log = _ListHandler()
    logging.getLogger("uvicorn.error").addHandler(server_log)
    try:
        with httpx.Client(base_url=gw.url, timeout=30) as http:
            with http.stream(
                "POST",
                f"/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
                json={"messages": [{"role": "user", "content": "Hello"}], "stream": True},
                headers={"api-key": CLIENT_KEY, "x-ms-client-request-id": crid, "x-sim-drop-after": "3"},
            ) as r:
                assert r.status_code == 200
                rid = r.headers["x-gateway-request-id"]
                with pytest.raises(httpx.RemoteProtocolError):  # incomplete chunked read
                    for chunk in r.iter_raw():
                        received += chunk
        # The official SDK, while iterating: a connection error, not an answer that merely stops.
        with pytest.raises(openai.APIConnectionError):
            for _ in gw.client().chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "Hi"}],
                stream=True,
                extra_headers={"x-sim-drop-after": "3"},
            ):
                pass
    finally:
        logging.getLogger("uvicorn.error").removeHandler(server_log)
    logged = gw.upstream(crid)
    # Exactly what the simulator sent before it hung up: no end spliced in.
    assert logged.dropped and bytes(received) == logged.response and b"[DONE]" not in received
    ex = _stored_once(gw, rid)
    assert not ex.client_disconnected and ex.response.sse.encode() == logged.response
    assert len(ex.attempts) == 1 and ex.attempts[0].error.startswith("stream broken")
    # The proxy says so at warning, with the request id; the server adds no traceback per cut stream.
    assert any(rid in m and "stream broken" in m for m in caplog.messages)
    assert not [x for x in server_log.records if x.exc_info], [x.getMessage() for x in server_log.records]


def test_completions_stream_and_non_stream(gw):
    client = gw.client()
    crid = _crid()
    raw = client.completions.with_raw_response.create(
        model="gpt-35-turbo-instruct", prompt="Once upon", max_tokens=20, extra_headers={"x-ms-client-request-id": crid}
    )
    assert raw.http_response.content == gw.upstream(crid).response
    assert raw.parse().choices[0].text
    chunks = list(
        client.completions.create(model="gpt-35-turbo-instruct", prompt="Once upon", max_tokens=20, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices)


def test_embeddings_float_and_base64(gw):
    client = gw.client()
    crid = _crid()
    raw = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=["a", "b"], extra_headers={"x-ms-client-request-id": crid}
    )
    assert raw.http_response.content == gw.upstream(crid).response
    result = raw.parse()
    assert len(result.data) == 2 and len(result.data[0].embedding) > 10
    assert json.loads(gw.upstream(crid).body)["encoding_format"] == "base64"  # the SDK's default, untouched
    ex = _stored_once(gw, raw.headers["x-gateway-request-id"])
    assert ex.request.body["input"] == ["a", "b"]


def test_responses_api_stream_bytes_identical(gw):
    crid = _crid()
    client = AzureOpenAI(api_key=CLIENT_KEY, azure_endpoint=gw.url, api_version="2025-04-01-preview", max_retries=0)
    with client.responses.with_streaming_response.create(
        model="gpt-4o", input="Tell me a story", stream=True, extra_headers={"x-ms-client-request-id": crid}
    ) as response:
        received = b"".join(response.iter_bytes())
        rid = response.headers["x-gateway-request-id"]
    logged = gw.upstream(crid)
    assert logged.path == "/openai/responses"
    assert received == logged.response and b"event: response.completed" in received
    ex = _stored_once(gw, rid)
    assert ex.response.sse.encode() == logged.response and not ex.usage_injected
    events = list(client.responses.create(model="gpt-4o", input="Hi", stream=True))
    assert events[-1].type == "response.completed" and events[-1].response.usage.total_tokens > 0


def test_audio_transcription_multipart_upload(gw):
    crid = _crid()
    audio = bytes(range(256)) * 400  # 100 kB of binary "audio"
    raw = gw.client().audio.transcriptions.with_raw_response.create(
        model="whisper", file=("clip.wav", audio, "audio/wav"), extra_headers={"x-ms-client-request-id": crid}
    )
    logged = gw.upstream(crid)
    assert raw.parse().text and raw.http_response.content == logged.response
    assert audio in logged.body  # the multipart body went upstream byte for byte
    ex = _stored_once(gw, raw.headers["x-gateway-request-id"])
    assert ex.request.body_encoding == "base64" and decode_body(ex.request.body, "base64") == logged.body
    assert ex.request.headers["content-type"].startswith("multipart/form-data")


def test_client_gone_before_the_first_byte_still_leaves_one_exchange(gw):
    crid = _crid()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{gw.url}/openai/deployments/gpt-4o/chat/completions?api-version={API_VERSION}",
            json={"messages": [{"role": "user", "content": "slow"}], "stream": True},
            timeout=0.3,
            headers={"api-key": CLIENT_KEY, "x-ms-client-request-id": crid, "x-sim-ttft-ms": "800"},
        )
    time.sleep(1.2)  # the upstream answers after 800 ms, to a client that is gone
    gw.host.call(function_app.drain())
    logged = gw.upstream(crid)
    rids = [
        rid
        for rid in gw.published
        if (ex := gw.exchange(rid)) and ex.request.headers.get("x-ms-client-request-id") == crid
    ]
    assert len(rids) == 1 and logged is not None
    ex = gw.exchange(rids[0])
    assert ex.client_disconnected and ex.response.status == 200
