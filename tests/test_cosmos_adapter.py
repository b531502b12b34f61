"""Cosmos adapters against a fake of the azure-cosmos aio ContainerProxy surface they call.

The fake enforces the service rules that matter here (2 MB items and batch requests, 100
operations per batch, one partition per batch, atomic batches, 409 on create of an existing id,
404 on a missing read) and records every call so partition keys, queries and TTLs can be checked.
"""

import asyncio
import os
import re

import orjson
import pytest
from azure.cosmos.exceptions import CosmosBatchOperationError, CosmosHttpResponseError, CosmosResourceNotFoundError

from shared.adapters.cosmos import (
    CosmosAffinityStore,
    CosmosDeadLetterStore,
    CosmosExchangeStore,
    CosmosRecordStore,
    open_cosmos_stores,
)
from shared.exchange import CapturedRequest, CapturedResponse, Exchange, Timings, encode_body
from shared.settings import Settings

MB2 = 2 * 1024 * 1024


class FakeContainer:
    def __init__(self, pk_path: str) -> None:
        self.pk_field = pk_path.lstrip("/")
        self.items: dict[tuple[str, str], dict] = {}
        self.calls: list[tuple] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def _io(self):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.001)
        self.in_flight -= 1

    def _check_item(self, item):
        assert isinstance(item["id"], str) and not re.search(r"[/\\?#]", item["id"])
        if len(orjson.dumps(item)) > MB2:
            raise CosmosHttpResponseError(status_code=413, message="Request size is too large")
        return (item[self.pk_field], item["id"])

    async def upsert_item(self, body, **kwargs):
        self.calls.append(("upsert_item", body, kwargs))
        key = self._check_item(body)
        await self._io()
        self.items[key] = dict(body)
        return body

    async def create_item(self, body, **kwargs):
        self.calls.append(("create_item", body, kwargs))
        key = self._check_item(body)
        await self._io()
        if key in self.items:
            raise CosmosHttpResponseError(status_code=409, message="Conflict")
        self.items[key] = dict(body)
        return body

    async def read_item(self, item, partition_key, **kwargs):
        self.calls.append(("read_item", item, partition_key))
        await self._io()
        try:
            return dict(self.items[(partition_key, item)])
        except KeyError:
            raise CosmosResourceNotFoundError(status_code=404, message="Not found") from None

    async def execute_item_batch(self, batch_operations, partition_key, **kwargs):
        self.calls.append(("execute_item_batch", batch_operations, partition_key))
        if len(batch_operations) > 100:
            raise CosmosHttpResponseError(status_code=400, message="too many operations")
        if len(orjson.dumps([op[1][0] for op in batch_operations])) > MB2:
            raise CosmosHttpResponseError(status_code=413, message="Request size is too large")
        await self._io()
        staged = dict(self.items)
        for index, (kind, args) in enumerate(batch_operations):
            body = args[0]
            key = self._check_item(body)
            assert key[0] == partition_key, "every operation of a batch must be in its partition"
            if kind == "create" and key in staged:
                responses = [{"statusCode": 424} for _ in batch_operations]
                responses[index] = {"statusCode": 409}
                raise CosmosBatchOperationError(
                    error_index=index, headers={}, status_code=409, message="conflict", operation_responses=responses
                )
            assert kind in ("create", "upsert")
            staged[key] = dict(body)
        self.items = staged
        return [{"statusCode": 201} for _ in batch_operations]

    def query_items(self, query, *, parameters=None, partition_key=None, **kwargs):
        self.calls.append(("query_items", query, parameters, partition_key))
        # Only the query the adapter is expected to send is understood, parameterized.
        assert query == "SELECT * FROM c WHERE c.requestId = @requestId"
        (param,) = parameters
        assert param["name"] == "@requestId" and partition_key == param["value"]
        matches = [dict(v) for (pk, _), v in self.items.items() if pk == partition_key]

        async def pages():
            for item in matches:
                await asyncio.sleep(0)
                yield item

        return pages()


def make_exchange(
    rid: str, body: bytes = b'{"messages": [{"role": "user", "content": "hi"}]}', content_type: str = "application/json"
) -> Exchange:
    value, encoding = encode_body(body, content_type)
    return Exchange(
        request_id=rid,
        request=CapturedRequest(
            method="POST",
            path="/openai/deployments/d/chat/completions",
            query={"api-version": "2024-10-21"},
            headers={"content-type": content_type},
            body=value,
            body_encoding=encoding,
            body_bytes=len(body),
        ),
        timings=Timings(received_at="2026-11-27T04:00:00.000Z", upstream_first_byte_ms=1.0, last_byte_ms=2.0),
        response=CapturedResponse(status=200, headers={}, body={"ok": True}, body_encoding="json", body_bytes=11),
    )


async def test_small_exchange_is_one_upsert_with_ttl_and_loads_by_parameterized_query():
    container = FakeContainer("/requestId")
    store = CosmosExchangeStore(container, ttl_seconds=3600)
    ex = make_exchange("rid-1")
    await store.save(ex)
    (call,) = container.calls
    assert call[0] == "upsert_item"
    assert call[1]["requestId"] == "rid-1" and call[1]["ttl"] == 3600
    assert await store.load("rid-1") == ex
    query = container.calls[-1]
    assert query[0] == "query_items" and query[3] == "rid-1"
    assert "rid-1" not in query[1]  # the id travels as a parameter, never inside the SQL text
    assert await store.load("nope") is None


async def test_double_two_item_exchange_goes_in_one_batch_because_cosmosdb_server_has_no_batch():
    container = FakeContainer("/requestId")
    store = CosmosExchangeStore(container, ttl_seconds=60)
    ex = make_exchange("rid-2", os.urandom(900_000), "application/octet-stream")  # ~1.2 MB of base64
    await store.save(ex)
    (call,) = container.calls
    assert call[0] == "execute_item_batch" and call[2] == "rid-2"
    ops = call[1]
    assert [op[0] for op in ops] == ["upsert", "upsert"]
    assert all(op[1][0]["ttl"] == 60 and op[1][0]["requestId"] == "rid-2" for op in ops)
    assert await store.load("rid-2") == ex


async def test_double_upsert_concurrency_is_bounded_because_cosmosdb_server_cannot_report_in_flight():
    container = FakeContainer("/requestId")
    store = CosmosExchangeStore(container, ttl_seconds=60)
    ex = make_exchange("rid-5", os.urandom(5 * 1024 * 1024), "application/octet-stream")
    await store.save(ex)
    assert {c[0] for c in container.calls} == {"upsert_item"}
    assert len(container.calls) >= 7
    assert 1 < container.max_in_flight <= 4
    assert all(c[1]["ttl"] == 60 and c[1]["requestId"] == "rid-5" for c in container.calls)
    assert await store.load("rid-5") == ex


async def test_double_record_and_details_in_one_batch_because_cosmosdb_server_has_no_batch():
    container = FakeContainer("/requestId")
    store = CosmosRecordStore(container)
    record = {"request_id": "r1", "timestamp": "2026-11-27T04:00:00.000Z", "prompt_tokens": 5}
    assert await store.add(record, {"request": {"messages": []}}) is True
    call = container.calls[0]
    assert call[0] == "execute_item_batch" and call[2] == "r1"
    assert [op[0] for op in call[1]] == ["create", "upsert"]
    assert await store.add({**record, "prompt_tokens": 99}, {"other": 1}) is False
    assert await store.get("r1") == record
    assert container.items[("r1", "r1.details")]["details"] == {"request": {"messages": []}}
    assert await store.get("missing") is None


async def test_double_oversized_details_become_a_note_because_cosmosdb_server_has_no_2mb_limit():
    container = FakeContainer("/requestId")
    store = CosmosRecordStore(container)
    record = {"request_id": "r2", "timestamp": "2026-11-27T04:00:00.000Z"}
    assert await store.add(record, {"request": {"image": "A" * 3_000_000}}) is True
    details = container.items[("r2", "r2.details")]
    assert details["details"] is None and "exceed" in details["omitted"]
    assert await store.get("r2") == record


async def test_double_batch_failures_propagate_because_cosmosdb_server_has_no_batch():
    class Unavailable(FakeContainer):
        async def execute_item_batch(self, *a, **k):
            raise CosmosHttpResponseError(status_code=503, message="unavailable")

    with pytest.raises(CosmosHttpResponseError):
        await CosmosRecordStore(Unavailable("/requestId")).add({"request_id": "x", "timestamp": "t"}, {})


async def test_dead_letters_are_created_in_the_keys_partition_and_capped():
    container = FakeContainer("/requestId")
    store = CosmosDeadLetterStore(container)
    await store.put("rid-9", "exchange missing", "rid-9")
    await store.put("rid-9", "huge", "x" * 3_000_000)
    first, second = (c[1] for c in container.calls)
    assert first["requestId"] == "rid-9" and first["reason"] == "exchange missing" and first["payload"] == "rid-9"
    assert first["id"] != second["id"]
    assert second["payloadTruncated"] is True and len(second["payload"]) < 3_000_000


async def test_affinity_uses_item_ttl_and_ignores_expired_entries():
    container = FakeContainer("/id")
    now = [100.0]
    store = CosmosAffinityStore(container, clock=lambda: now[0])
    await store.remember("resp_1", "eastus", 30)
    assert container.calls[0][1]["ttl"] == 30
    assert await store.lookup("resp_1") == "eastus"
    assert container.calls[-1] == ("read_item", "resp_1", "resp_1")
    now[0] += 31  # Cosmos may not have deleted it yet
    assert await store.lookup("resp_1") is None
    assert await store.lookup("resp_2") is None


async def test_open_cosmos_stores_builds_without_io_and_closes():
    class NoToken:
        async def get_token(self, *a, **k):
            raise AssertionError("no I/O expected")

    settings = Settings.from_env(
        {
            "LOG_STORE": "cosmos",
            "COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/",
            "COSMOS_AFFINITY_CONTAINER": "aff",
        }
    )
    stores = open_cosmos_stores(settings, NoToken())
    assert stores.exchanges.container.id == "exchanges"
    assert stores.records.container.id == "records"
    assert stores.deadletters.container.id == "deadletters"
    assert stores.affinity.container.id == "aff"
    assert stores.exchanges.ttl_seconds == 604800
    await stores.close()
