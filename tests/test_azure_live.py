"""Adapters against live Azure services, run only when environment variables name them.

GATEWAY_TEST_COSMOS_ENDPOINT (+ GATEWAY_TEST_COSMOS_DATABASE, default "gateway"; containers as
    in shared/adapters/cosmos.py) with a DefaultAzureCredential that has data-plane RBAC
GATEWAY_TEST_EVENTHUB_NAMESPACE (+ GATEWAY_TEST_EVENTHUB_NAME, default "exchanges") with
    Data Sender and Data Receiver roles
GATEWAY_TEST_APPINSIGHTS_CONNECTION_STRING
"""

import asyncio
import logging
import os
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.settings import Settings
from tests.test_cosmos_adapter import make_exchange

pytestmark = pytest.mark.azure

COSMOS = os.environ.get("GATEWAY_TEST_COSMOS_ENDPOINT")
EVENTHUB = os.environ.get("GATEWAY_TEST_EVENTHUB_NAMESPACE")
APPINSIGHTS = os.environ.get("GATEWAY_TEST_APPINSIGHTS_CONNECTION_STRING")


@pytest.mark.skipif(not COSMOS, reason="set GATEWAY_TEST_COSMOS_ENDPOINT to run against a live Cosmos DB account")
async def test_cosmos_stores_live():
    from azure.identity.aio import DefaultAzureCredential

    from shared.adapters.cosmos import open_cosmos_stores

    settings = Settings.from_env(
        {
            "LOG_STORE": "cosmos",
            "COSMOS_ENDPOINT": COSMOS,
            "COSMOS_DATABASE": os.environ.get("GATEWAY_TEST_COSMOS_DATABASE", "gateway"),
            "EXCHANGE_TTL_SECONDS": "3600",
        }
    )
    async with DefaultAzureCredential() as credential:
        stores = open_cosmos_stores(settings, credential)
        try:
            rid = uuid.uuid4().hex
            small = make_exchange(rid)
            await stores.exchanges.save(small)
            assert await stores.exchanges.load(rid) == small
            big = make_exchange(rid + "-big", os.urandom(5 * 1024 * 1024), "application/octet-stream")
            await stores.exchanges.save(big)
            assert await stores.exchanges.load(big.request_id) == big
            record = {"request_id": rid, "timestamp": "2026-11-27T04:00:00.000Z", "prompt_tokens": 1}
            assert await stores.records.add(record, {"request": {}}) is True
            assert await stores.records.add(record, {"request": {}}) is False
            assert await stores.records.get(rid) == record
            await stores.deadletters.put(rid, "live test", rid)
            await stores.affinity.remember("resp_" + rid, "b1", 60)
            assert await stores.affinity.lookup("resp_" + rid) == "b1"
        finally:
            await stores.close()


@pytest.mark.skipif(
    not EVENTHUB, reason="set GATEWAY_TEST_EVENTHUB_NAMESPACE to run against a live Event Hubs namespace"
)
async def test_event_hub_channel_live():
    from azure.eventhub.aio import EventHubConsumerClient
    from azure.identity.aio import DefaultAzureCredential

    from shared.adapters.eventhub import EventHubChannel

    name = os.environ.get("GATEWAY_TEST_EVENTHUB_NAME", "exchanges")
    rid = uuid.uuid4().hex
    since = datetime.now(UTC) - timedelta(seconds=5)
    received: asyncio.Future = asyncio.get_running_loop().create_future()
    async with DefaultAzureCredential() as credential:
        channel = EventHubChannel.create(EVENTHUB, name, credential)
        consumer = EventHubConsumerClient(EVENTHUB, name, "$Default", credential)

        async def on_event(_partition, event):
            if event is not None and event.body_as_str() == rid and not received.done():
                received.set_result(event.partition_key)

        task = asyncio.create_task(consumer.receive(on_event, starting_position=since))
        try:
            await channel.publish(rid)
            assert await asyncio.wait_for(received, 60) == rid
        finally:
            task.cancel()
            await consumer.close()
            await channel.close()


@pytest.mark.skipif(not APPINSIGHTS, reason="set GATEWAY_TEST_APPINSIGHTS_CONNECTION_STRING to send a test event")
async def test_app_insights_accepts_the_usage_event_live():
    from azure.monitor.opentelemetry.exporter import AzureMonitorLogExporter
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import (
        InMemoryLogRecordExporter,
        LogRecordExportResult,
        SimpleLogRecordProcessor,
    )

    from shared.adapters.appinsights import AppInsightsUsageSink

    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = logging.getLogger("test.live.usage")
    logger.addHandler(LoggingHandler(logger_provider=provider))
    logger.propagate = False
    await AppInsightsUsageSink(logger).emit(
        {
            "request_id": uuid.uuid4().hex,
            "timestamp": "2026-11-27T04:00:00.000Z",
            "prompt_tokens": 1,
            "api": "live-test",
        }
    )
    exporter = AzureMonitorLogExporter(connection_string=APPINSIGHTS, disable_offline_storage=True)
    assert exporter.export(memory.get_finished_logs()) == LogRecordExportResult.SUCCESS
