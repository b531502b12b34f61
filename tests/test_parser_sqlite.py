"""The parser over the embedded adapters the dev host uses: SQLite stores and the local event channel."""

import asyncio

from parser.handler import handle_batch
from shared.normalize import record_schema
from shared.settings import Settings
from shared.wiring import build_ports
from testing.factories import exchange, text_stream


async def test_local_channel_batch_to_sqlite_records_with_duplicates_and_poison(tmp_path):
    settings = Settings.from_env(
        {"SQLITE_PATH": str(tmp_path / "gw.db"), "LOG_STORE": "sqlite", "EVENT_CHANNEL": "local"}
    )
    async with build_ports(settings) as ports:
        for rid in ("e1", "e2"):
            await ports.exchanges.save(
                exchange(
                    request_id=rid,
                    body={"messages": [{"role": "user", "content": "hi"}], "stream": True},
                    sse_text=text_stream(["Hello", " there"]),
                )
            )
            await ports.channel.publish(rid)
        await ports.channel.publish("e1")  # at-least-once redelivery
        await ports.channel.publish("nope")  # never stored
        batches = ports.channel.batches(max_batch=10, max_wait=0.05)
        batch = await asyncio.wait_for(batches.__anext__(), 5)
        result = await handle_batch(batch, ports, delays=(0.0, 0.0))
        await batches.aclose()

        assert result.recorded == ["e1", "e2"] and result.duplicates == ["e1"] and result.deadlettered == ["nope"]
        stored = await ports.records.get("e1")
        record_schema.validate(stored)
        assert stored["completion_tokens"] == 2 and stored["usage_source"] == "estimated"
        details = await ports.records.get_details("e1")
        assert details["response"]["choices"][0]["message"]["content"] == "Hello there"
        letters = await ports.deadletters.list_letters()
        assert [(d["key"], d["reason"]) for d in letters] == [("nope", "exchange not found after retries")]
