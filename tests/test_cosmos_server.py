"""The Cosmos adapters with the real azure-cosmos SDK against a Cosmos DB protocol server.

`@vercel/cosmosdb-server` (tests/cosmos_server.py) serves the SDK over HTTPS on loopback. What it
cannot do (transactional batch: the record store's atomic record + details write; the 2 MB item
limit; 429 throttling; a 404 for a point read of a missing id, which it answers with a 500) is
covered by the strict double in tests/test_cosmos_adapter.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from shared.adapters.cosmos import CosmosStores, open_cosmos_stores
from shared.exchange import CapturedRequest, CapturedResponse, Exchange, Timings, to_items
from shared.settings import Settings
from tests.cosmos_server import KEY, cosmos_endpoint  # noqa: F401 - fixture

MB2 = 2 * 1024 * 1024
CONTAINERS = {
    "exchanges": "/requestId",
    "records": "/requestId",
    "deadletters": "/requestId",
    "affinity": "/id",
    "owners": "/id",
}


@pytest_asyncio.fixture
async def stores(cosmos_endpoint: str) -> AsyncIterator[tuple[CosmosStores, list[int]]]:  # noqa: F811
    """The four stores as the app opens them (open_cosmos_stores), on a fresh database, plus the
    size of every request body the SDK sent."""
    database = f"gw{asyncio.get_running_loop().time():.0f}".replace(".", "")
    async with CosmosClient(cosmos_endpoint, credential=KEY, connection_verify=False) as admin:
        db = await admin.create_database_if_not_exists(database)
        for name, key in CONTAINERS.items():
            await db.create_container_if_not_exists(name, partition_key=PartitionKey(key))
    settings = Settings.from_env(
        {"LOG_STORE": "cosmos", "COSMOS_ENDPOINT": cosmos_endpoint, "COSMOS_DATABASE": database}
    )
    sizes: list[int] = []

    def hook(response: Any) -> None:
        body = response.http_request.body
        sizes.append(len(body) if isinstance(body, (bytes, bytearray)) else len((body or "").encode()))

    opened = open_cosmos_stores(settings, KEY, connection_verify=False, raw_request_hook=hook)
    try:
        yield opened, sizes
    finally:
        await opened.close()


def _exchange(rid: str, text: str) -> Exchange:
    return Exchange(
        request_id=rid,
        request=CapturedRequest(
            method="POST",
            path="/openai/deployments/gpt-4o/chat/completions",
            query={"api-version": "2024-10-21"},
            headers={"content-type": "application/json"},
            body={"messages": [{"role": "user", "content": text}]},
            body_encoding="json",
        ),
        response=CapturedResponse(
            status=200,
            headers={"content-type": "application/json"},
            body={"choices": [{"message": {"role": "assistant", "content": "ok"}}]},
            body_encoding="json",
        ),
        timings=Timings(received_at="2026-12-05T00:00:00Z", upstream_first_byte_ms=1.0, last_byte_ms=2.0),
    )


async def test_a_small_exchange_round_trips(stores: tuple[CosmosStores, list[int]]) -> None:
    s, _ = stores
    exchange = _exchange("rid-small", "Hello")
    await s.exchanges.save(exchange)
    assert (await s.exchanges.load("rid-small")).to_dict() == exchange.to_dict()
    assert await s.exchanges.load("rid-none") is None


@pytest.mark.parametrize("name, unit", [("cjk", "漢字テキスト"), ("emoji", "😀🚀"), ("mixed", "Ωmega 漢 😀 é ")])
async def test_non_latin_items_go_on_the_wire_as_compact_utf8(
    stores: tuple[CosmosStores, list[int]], name: str, unit: str
) -> None:
    """An exchange just under the one-item size: UTF-8 on the wire, not 2-3x larger `\\uXXXX` escapes."""
    s, sizes = stores
    text = unit * (980_000 // len(unit.encode()))
    exchange = _exchange(f"rid-{name}", text)
    assert len(to_items(exchange)) == 1 and len(exchange.to_json()) > 950_000
    sizes.clear()
    await s.exchanges.save(exchange)
    assert max(sizes) < 1_050_000, f"{max(sizes)} bytes on the wire for a {len(exchange.to_json())}-byte item"
    assert (await s.exchanges.load(f"rid-{name}")).to_dict() == exchange.to_dict()


async def test_a_multi_megabyte_exchange_is_stored_in_pieces_and_joined(stores: tuple[CosmosStores, list[int]]) -> None:
    s, sizes = stores
    exchange = _exchange("rid-big", "漢字" * 700_000)  # 4.2 MB of UTF-8: too large for one batch request
    sizes.clear()
    await s.exchanges.save(exchange)
    writes = [n for n in sizes if n]
    assert len(writes) == len(to_items(exchange)) > 1 and max(writes) < MB2
    assert (await s.exchanges.load("rid-big")).to_dict() == exchange.to_dict()


@pytest.mark.parametrize("unit", ["漢", "😀"])
async def test_a_huge_non_latin_dead_letter_fits_in_one_item(stores: tuple[CosmosStores, list[int]], unit: str) -> None:
    s, sizes = stores
    payload = unit * 600_000  # 1.8 MB (CJK) or 2.4 MB (emoji) of UTF-8
    sizes.clear()
    await s.deadletters.put("rid-dead", "poison: not JSON", payload)
    assert max(sizes) < 1_600_000
    container = s.deadletters.container
    items = [
        i
        async for i in container.query_items(
            "SELECT * FROM c WHERE c.requestId = @r",
            parameters=[{"name": "@r", "value": "rid-dead"}],
            partition_key="rid-dead",
        )
    ]
    item = next(i for i in items if i["payload"].startswith(unit))
    assert item["reason"] == "poison: not JSON" and item["payloadTruncated"] is True
    assert payload.startswith(item["payload"]) and len(orjson.dumps(item)) < MB2


async def test_affinity_remembers_and_forgets(stores: tuple[CosmosStores, list[int]]) -> None:
    s, _ = stores
    await s.affinity.remember("resp_1", "eastus", 60)
    assert await s.affinity.lookup("resp_1") == "eastus"
    # A point read of a missing id: Cosmos answers 404 (-> None); cosmosdb-server 1.0.1 answers a
    # 500 ("Cannot read properties of undefined"), so that case stays with the double.
    await s.affinity.remember("resp_2", "westus", 0)  # already expired: never routed on
    assert await s.affinity.lookup("resp_2") is None


async def test_owners_keep_the_first_claim(stores: tuple[CosmosStores, list[int]]) -> None:
    s, _ = stores
    assert await s.owners.owner("response", "resp_1") is None  # unknown: nobody's
    await s.owners.claim("response", "resp_1", "team-b")
    await s.owners.claim("response", "resp_1", "team-a")  # 409 from the server: the first claim stands
    assert await s.owners.owner("response", "resp_1") == "team-b"
    assert await s.owners.owner("file", "resp_1") is None  # kinds are separate
    await s.owners.claim("file", "a/b", "team-a")  # an id Cosmos cannot hold is nobody's, never an error
    assert await s.owners.owner("file", "a/b") is None
