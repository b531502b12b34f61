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
