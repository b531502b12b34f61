import json

import azure.functions as func
import pytest

from parser.handler import handle_batch, request_id_of
from shared.errors import BatchIncomplete
from shared.normalize import record_schema
from testing.factories import exchange, text_stream
from testing.memory import memory_ports

NO_WAIT = dict(delays=(0, 0, 0), sleep=lambda s: _noop())


async def _noop():
    return None


def _chat(rid: str):
    return exchange(
        request_id=rid,
        body={"messages": [{"role": "user", "content": "hi"}], "stream": True},
        sse_text=text_stream(["Hi", "!"]),
    )


async def test_one_record_per_exchange_and_duplicates_are_skipped():
    ports = memory_ports()
    for rid in ("a", "b"):
        await ports.exchanges.save(_chat(rid))
    result = await handle_batch([b"a", "b", b"a"], ports, **NO_WAIT)
    assert result.recorded == ["a", "b"] and result.duplicates == ["a"] and not result.deadlettered
    assert sorted(ports.records.records) == ["a", "b"]
    assert [r["request_id"] for r in ports.sink.emitted] == ["a", "b"]
    for record in ports.sink.emitted:
        record_schema.validate(record)
    assert ports.records.details["a"]["response"]["choices"][0]["message"]["content"] == "Hi!"
    # Redelivery of the whole batch (Event Hubs is at least once): nothing new.
    again = await handle_batch([b"a", b"b"], ports, **NO_WAIT)
    assert again.duplicates == ["a", "b"] and len(ports.sink.emitted) == 2


async def test_event_body_may_be_json_with_request_id():
    ports = memory_ports()
    await ports.exchanges.save(_chat("r1"))
    result = await handle_batch([json.dumps({"request_id": "r1"}).encode()], ports, **NO_WAIT)
    assert result.recorded == ["r1"]


@pytest.mark.parametrize("event", [b"\xff\xfe\x00", b"", b"   ", b"{not json", b'{"other": 1}', b"a/b"])
async def test_undecodable_events_are_dead_lettered(event):
    ports = memory_ports()
    result = await handle_batch([event], ports, **NO_WAIT)
    assert len(ports.deadletters.letters) == 1 and not ports.records.records
    key, reason, payload = ports.deadletters.letters[0]
    assert "undecodable event" in reason and isinstance(payload, str)
    assert result.deadlettered == [key]


async def test_missing_exchange_is_retried_then_dead_lettered_and_the_batch_goes_on():
    ports = memory_ports()
    await ports.exchanges.save(_chat("ok"))
    sleeps: list[float] = []

    async def sleep(s):
        sleeps.append(s)

    result = await handle_batch([b"ghost", b"ok"], ports, delays=(0.01, 0.02), sleep=sleep)
    assert sleeps == [0.01, 0.02]
    assert ports.deadletters.letters == [("ghost", "exchange not found after retries", "ghost")]
    assert result.recorded == ["ok"]


async def test_exchange_that_arrives_late_is_picked_up_by_the_retry():
    ports = memory_ports()

    async def sleep(_):
        await ports.exchanges.save(_chat("late"))

    result = await handle_batch([b"late"], ports, delays=(0.01,), sleep=sleep)
    assert result.recorded == ["late"]


class FlakyStore:
    def __init__(self, inner, failures: int):
        self.inner, self.failures, self.calls = inner, failures, 0

    async def load(self, request_id):
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("store unavailable")
        return await self.inner.load(request_id)

    async def save(self, ex):
        await self.inner.save(ex)


async def test_transient_store_failure_is_retried():
    ports = memory_ports()
    ports.exchanges = FlakyStore(ports.exchanges, failures=2)
    await ports.exchanges.save(_chat("x"))
    result = await handle_batch([b"x"], ports, **NO_WAIT)
    assert result.recorded == ["x"] and ports.exchanges.calls == 3


async def test_store_down_for_good_dead_letters_with_the_reason():
    ports = memory_ports()
    ports.exchanges = FlakyStore(ports.exchanges, failures=100)
    await handle_batch([b"x"], ports, **NO_WAIT)
    assert ports.exchanges.calls == 4  # bounded: 3 retries + the first try
    assert "exchange store unavailable: ConnectionError" in ports.deadletters.letters[0][1]


async def test_sink_failure_is_retried_then_dead_lettered_with_the_record():
    ports = memory_ports()
    await ports.exchanges.save(_chat("s"))
    calls = []

    async def emit(record):
        calls.append(record)
        raise TimeoutError("ingestion down")

    ports.sink.emit = emit
    result = await handle_batch([b"s"], ports, **NO_WAIT)
    assert len(calls) == 4 and result.deadlettered == ["s"]
    assert json.loads(ports.deadletters.letters[0][2])["request_id"] == "s"
    assert "s" in ports.records.records


async def test_parse_failure_still_yields_a_record_with_parse_error():
    ports = memory_ports()
    bad = _chat("p")
    bad.response.sse = 42
    await ports.exchanges.save(bad)
    result = await handle_batch([b"p"], ports, **NO_WAIT)
    assert result.recorded == ["p"]
    record = ports.sink.emitted[0]
    assert record["parse_error"] and record["status_code"] == 200
    record_schema.validate(record)


async def test_malformed_identity_and_timings_are_coerced_into_a_valid_record():
    ports = memory_ports()
    odd = _chat("v")
    odd.identity.subscription_id = 123
    odd.identity.client_ip = None
    odd.timings.received_at = None
    odd.request.path = None
    await ports.exchanges.save(odd)
    result = await handle_batch([b"v"], ports, **NO_WAIT)
    assert result.recorded == ["v"]
    record = ports.sink.emitted[0]
    record_schema.validate(record)
    assert record["subscription_id"] == "123" and record["timestamp"].endswith("Z")


async def test_event_neither_recorded_nor_dead_lettered_fails_the_batch_for_a_redelivery():
    ports = memory_ports()

    async def put(*args):
        raise ConnectionError("dead-letter store down too")

    ports.deadletters.put = put
    with pytest.raises(BatchIncomplete):
        await handle_batch([b""], ports, **NO_WAIT)


def test_request_id_of_event_hub_event_bodies():
    assert request_id_of(func.EventHubEvent(body=b"abc-123").get_body()) == "abc-123"
    assert request_id_of(" abc\n") == "abc"


async def test_record_failing_the_schema_keeps_its_valid_fields_and_says_why():
    ports = memory_ports()
    odd = exchange(
        request_id="w",
        body={"messages": []},
        response_body={
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"content": "x"},
                    "finish_reason": "stop",
                    "content_filter_results": {"hate": "weird"},
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        },
    )
    await ports.exchanges.save(odd)
    result = await handle_batch([b"w"], ports, **NO_WAIT)
    record = ports.sink.emitted[0]
    assert result.recorded == ["w"]
    assert record["parse_error"].startswith("record failed schema validation: content_filter/completion/hate")
    # Only the offending field is reset; the rest of the record is kept.
    assert record["content_filter"] == {"prompt": {}, "completion": {}, "filtered": False}
    assert (record["usage_source"], record["total_tokens"], record["api"]) == ("service", 2, "chat.completions")
    record_schema.validate(record)
