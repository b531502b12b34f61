"""Exchange capture: one redacted exchange per request, stored then announced, spilled when the store is down."""

import asyncio

import orjson

from proxy.capture import CaptureWriter
from proxy.recorder import ExchangeRecorder
from shared.errors import BadGateway
from shared.exchange import Exchange, Identity
from testing.memory import memory_ports


def _recorder() -> ExchangeRecorder:
    rec = ExchangeRecorder("rid-1", Identity(subscription_id="team-a"))
    rec.set_request(
        "POST",
        "/openai/deployments/gpt-4o/chat/completions",
        [("api-version", "2024-10-21"), ("code", "fn-key-123")],
        [("API-Key", "client-secret-1"), ("Content-Type", "application/json"), ("Authorization", "Bearer tok-9")],
        b'{"messages":[],"stream":true}',
    )
    return rec


def test_streamed_exchange_keeps_raw_sse_and_redacts_secrets():
    rec = _recorder()
    rec.set_response(200, [("Content-Type", "text/event-stream; charset=utf-8"), ("Set-Cookie", "s=1")])
    rec.chunks += [b'data: {"a":"\xc3', b'\xa9"}\n\n', b"data: [DONE]\n\n"]
    rec.backend = "east"
    ex = rec.finish()
    assert ex.response.sse == 'data: {"a":"é"}\n\ndata: [DONE]\n\n'
    assert ex.response.body is None and ex.response.body_bytes == len(ex.response.sse.encode())
    assert ex.request.body == {"messages": [], "stream": True}
    raw = ex.to_json()
    for secret in (b"client-secret-1", b"tok-9", b"fn-key-123", b"s=1"):
        assert secret not in raw
    assert ex.request.query["api-version"] == "2024-10-21"
    assert ex.identity.subscription_id == "team-a" and ex.backend == "east"
    assert (
        ex.timings.upstream_first_byte_ms is not None and ex.timings.last_byte_ms >= ex.timings.upstream_first_byte_ms
    )


def test_credentials_in_a_json_request_body_are_redacted_and_a_clean_body_is_stored_as_parsed():
    rec = ExchangeRecorder("rid-2", Identity())
    sent = orjson.dumps(
        {
            "messages": [],
            "data_sources": [
                {
                    "type": "azure_search",
                    "parameters": {"index_name": "i", "authentication": {"type": "api_key", "key": "search-key-77"}},
                }
            ],
        }
    )
    rec.set_request(
        "POST", "/openai/deployments/gpt-4o/chat/completions", [], [("content-type", "application/json")], sent
    )
    rec.set_response(200, [("content-type", "application/json")])
    ex = rec.finish()
    assert b"search-key-77" not in ex.to_json() and ex.request.body_bytes == len(sent)
    assert ex.request.body["data_sources"][0]["parameters"] == {
        "index_name": "i",
        "authentication": {"type": "api_key", "key": "[REDACTED]"},
    }
    # Not JSON (a multipart upload): stored as base64, as received (documented limit).
    rec = ExchangeRecorder("rid-3", Identity())
    rec.set_request(
        "POST",
        "/openai/deployments/whisper/audio/transcriptions",
        [],
        [("content-type", "multipart/form-data; boundary=b")],
        b"--b\r\n\r\nRIFF--b--",
    )
    assert rec.finish().request.body_encoding == "base64"


def test_json_and_binary_bodies():
    rec = _recorder()
    rec.set_response(200, [("content-type", "application/json")])
    rec.chunks += [b'{"x":', b"1}"]
    assert rec.finish().response.body == {"x": 1}
    rec = _recorder()
    rec.set_response(200, [("content-type", "audio/mpeg")])
    rec.chunks.append(b"\x00\xff")
    assert rec.finish().response.body == {"base64": "AP8="}


def test_gateway_error_is_recorded_as_the_answer():
    rec = _recorder()
    body = rec.answer_error(BadGateway("The backend 'east' could not be reached."))
    ex = rec.finish()
    assert orjson.loads(body) == {
        "error": {"code": "BadGateway", "message": "The backend 'east' could not be reached."}
    }
    assert ex.response.status == 502 and ex.response.body == orjson.loads(body)
    assert ex.gateway_error == {"code": "BadGateway", "message": "The backend 'east' could not be reached."}


async def test_writer_stores_then_publishes_once():
    ports = memory_ports()
    order = []
    save, publish = ports.exchanges.save, ports.channel.publish

    async def spy_save(ex):
        order.append("save")
        await save(ex)

    async def spy_publish(rid):
        order.append("publish")
        await publish(rid)

    ports.exchanges.save, ports.channel.publish = spy_save, spy_publish
    writer = CaptureWriter(lambda: ports)
    writer.submit(_recorder().finish())
    await writer.drain()
    assert order == ["save", "publish"]
    assert ports.channel.published == ["rid-1"]
    assert (await ports.exchanges.load("rid-1")).request_id == "rid-1"


class FlakyStore:
    def __init__(self, failures: int) -> None:
        self.failures, self.saved = failures, []

    async def save(self, ex):
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store down")
        self.saved.append(ex.request_id)

    async def load(self, rid):
        return None


async def test_writer_retries_the_store_with_backoff(tmp_path):
    ports = memory_ports()
    ports.exchanges = FlakyStore(failures=2)
    writer = CaptureWriter(lambda: ports, tmp_path, backoff_seconds=0.001)
    writer.submit(_recorder().finish())
    await writer.drain()
    assert ports.exchanges.saved == ["rid-1"] and ports.channel.published == ["rid-1"]
    assert list(tmp_path.iterdir()) == []


async def test_writer_spills_to_the_outbox_and_replays(tmp_path):
    ports = memory_ports()
    ports.exchanges = FlakyStore(failures=99)
    writer = CaptureWriter(lambda: ports, tmp_path / "outbox", store_attempts=3, backoff_seconds=0.001)
    writer.submit(_recorder().finish())
    await writer.drain()
    spilled = tmp_path / "outbox" / "rid-1.json"
    assert spilled.is_file() and ports.channel.published == []
    assert Exchange.from_json(spilled.read_bytes()).request_id == "rid-1"
    assert b"client-secret-1" not in spilled.read_bytes()
    ports.exchanges.failures = 0
    assert await writer.replay_outbox() == 1
    assert ports.exchanges.saved == ["rid-1"] and ports.channel.published == ["rid-1"]
    assert not spilled.exists()


async def test_submit_does_not_wait_for_the_store():
    ports = memory_ports()
    gate = asyncio.Event()
    save = ports.exchanges.save

    async def slow_save(ex):
        await gate.wait()
        await save(ex)

    ports.exchanges.save = slow_save
    writer = CaptureWriter(lambda: ports)
    writer.submit(_recorder().finish())  # returns at once
    assert writer.pending == 1
    gate.set()
    await writer.drain()
    assert writer.pending == 0 and ports.channel.published == ["rid-1"]


def test_credentials_echoed_in_a_json_response_are_redacted():
    rec = ExchangeRecorder("rid-4", Identity())
    rec.set_request("POST", "/openai/v1/responses", [], [("content-type", "application/json")], b'{"model": "m"}')
    rec.set_response(200, [("content-type", "application/json")])
    rec.chunks.append(
        orjson.dumps(
            {
                "id": "resp_1",
                "output": [],
                "tools": [
                    {
                        "type": "mcp",
                        "server_url": "https://mcp.example",
                        "headers": {"Authorization": "Bearer mcp-token-5"},
                    }
                ],
            }
        )
    )
    ex = rec.finish()
    assert b"mcp-token-5" not in ex.to_json()
    assert ex.response.body["tools"][0]["headers"] == {"Authorization": "[REDACTED]"}
    assert ex.response.body["id"] == "resp_1"
