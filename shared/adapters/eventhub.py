"""The Azure event channel: Event Hubs (azure-eventhub aio) with an identity-based connection.

One long-lived producer per process (opening an AMQP link per request would cost a round trip or
more). The event body is the request id as UTF-8 and the partition key is the request id, so
events spread evenly over partitions; the parser needs no ordering between requests.
"""

from __future__ import annotations

from typing import Any

from azure.eventhub import EventData
from azure.eventhub.aio import EventHubProducerClient

Producer = Any  # azure.eventhub.aio.EventHubProducerClient, or a test double with send_event/close


class EventHubChannel:
    def __init__(self, producer: Producer) -> None:
        self.producer = producer

    @classmethod
    def create(cls, fully_qualified_namespace: str, eventhub_name: str, credential: Any) -> EventHubChannel:
        """A channel over a new producer (no I/O until the first publish)."""

        return cls(
            EventHubProducerClient(
                fully_qualified_namespace=fully_qualified_namespace,
                eventhub_name=eventhub_name,
                credential=credential,
            )
        )

    async def publish(self, request_id: str) -> None:

        await self.producer.send_event(EventData(request_id.encode("utf-8")), partition_key=request_id)

    async def publish_exchange(self, request_id: str, event: bytes) -> None:
        """An event that carries its exchange (`shared.exchange.exchange_event`, at most 1 MB)."""
        await self.producer.send_event(EventData(event), partition_key=request_id)

    async def close(self) -> None:
        await self.producer.close()
