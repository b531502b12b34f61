"""Event Hubs channel against a fake of the aio EventHubProducerClient surface it calls."""

import asyncio

from azure.eventhub import EventData

from shared.adapters.eventhub import EventHubChannel


class FakeProducer:
    def __init__(self):
        self.sent: list[tuple[EventData, str | None]] = []
        self.closed = False

    async def send_event(self, event_data, *, partition_id=None, partition_key=None, timeout=None):
        assert isinstance(event_data, EventData)
        assert not self.closed
        await asyncio.sleep(0)
        self.sent.append((event_data, partition_key))

    async def close(self):
        self.closed = True


async def test_publish_sends_the_request_id_keyed_by_itself_on_one_producer():
    producer = FakeProducer()
    channel = EventHubChannel(producer)
    await asyncio.gather(*(channel.publish(f"rid-{i}") for i in range(5)))
    await channel.publish("rid-0")  # at least once: republishing is allowed
    assert sorted((e.body_as_str(encoding="UTF-8"), pk) for e, pk in producer.sent) == sorted(
        [(f"rid-{i}", f"rid-{i}") for i in range(5)] + [("rid-0", "rid-0")]
    )
    await channel.close()
    assert producer.closed


async def test_create_builds_an_identity_based_producer_without_io():
    class NoToken:
        async def get_token(self, *a, **k):
            raise AssertionError("no I/O expected")

    channel = EventHubChannel.create("ns.servicebus.windows.net", "exchanges", NoToken())
    assert channel.producer.eventhub_name == "exchanges"
    assert channel.producer._address.hostname == "ns.servicebus.windows.net"
    await channel.close()


async def test_an_event_that_carries_its_exchange_fits_the_service_limit_and_is_recorded_from_the_event():
    """Double: Event Hubs refuses events above 1 MB (Standard tier), as the strict fake does here."""
    from parser.handler import handle_batch
    from shared.exchange import exchange_event
    from testing.factories import exchange
    from testing.memory import memory_ports

    class StrictProducer(FakeProducer):
        async def send_event(self, event_data, *, partition_id=None, partition_key=None, timeout=None):
            assert len(b"".join(event_data.body)) <= 1_048_576, "MessageSizeExceededError"
            await super().send_event(event_data, partition_key=partition_key)

    producer = StrictProducer()
    ex = exchange(request_id="carried-1", body={"messages": [{"role": "user", "content": "体験 " * 100_000}]})
    event = exchange_event("carried-1", ex.to_json())
    assert event is not None and len(event) > 500_000
    await EventHubChannel(producer).publish_exchange("carried-1", event)
    ((sent, key),) = producer.sent
    assert key == "carried-1"
    ports = memory_ports()  # the exchange store never got it
    result = await handle_batch([b"".join(sent.body)], ports, delays=())
    assert result.recorded == ["carried-1"] and ports.records.records["carried-1"]["deployment"] == "gpt-4o"
    assert exchange_event("too-big", b"{" + b"x" * 1_000_000 + b"}") is None
