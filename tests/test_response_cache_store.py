"""The response cache stores: SQLite (the dev host's file) and Cosmos DB (the real azure-cosmos SDK
against the npm protocol server of tests/cosmos_server.py, and the strict double for what that
server cannot do: a 404 on a point read of a missing id)."""

from __future__ import annotations

import asyncio

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from shared.adapters.cosmos import CosmosResponseCache, open_cosmos_stores
from shared.adapters.sqlite import SqliteDatabase, SqliteResponseCache
from shared.settings import Settings
from tests.cosmos_server import KEY, cosmos_endpoint  # noqa: F401 - fixture
from tests.test_cosmos_adapter import FakeContainer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_sqlite_entries_expire_and_expired_rows_are_purged(tmp_path):
    clock = Clock()
    db = SqliteDatabase(tmp_path / "c.db")
    cache = SqliteResponseCache(db, clock)
    cache.PURGE_EVERY = 2
    try:
        await cache.put("k1", b"one", 10)
        assert await cache.get("k1") == b"one"
        assert await cache.get("nope") is None
        clock.now += 11
        assert await cache.get("k1") is None  # expired: never served, even before the purge
        await cache.put("k2", b"two", 10)  # the second write purges
        rows = await db.run(lambda c: c.execute("SELECT key FROM response_cache").fetchall())
        assert rows == [("k2",)]
    finally:
        await db.close()


async def test_cosmos_double_uses_item_ttl_and_misses_on_404():
    clock = Clock()
    container = FakeContainer("/id")
    cache = CosmosResponseCache(container, clock=clock)
    assert await cache.get("missing") is None
    await cache.put("k", b"\x00entry", 600)
    (_, item, _) = container.calls[-1]
    assert item["ttl"] == 600 and item["id"] == "k"  # Cosmos deletes it after the audience's TTL
    assert await cache.get("k") == b"\x00entry"
    clock.now += 601
    assert await cache.get("k") is None  # deletion runs in the background: the read checks too


@pytest.mark.usefixtures("cosmos_endpoint")
async def test_cosmos_sdk_round_trip_on_the_protocol_server(cosmos_endpoint):  # noqa: F811
    database = f"cache{asyncio.get_running_loop().time():.0f}".replace(".", "")
    async with CosmosClient(cosmos_endpoint, credential=KEY, connection_verify=False) as admin:
        db = await admin.create_database_if_not_exists(database)
        await db.create_container_if_not_exists("cache", partition_key=PartitionKey("/id"))
    settings = Settings.from_env(
        {"LOG_STORE": "cosmos", "COSMOS_ENDPOINT": cosmos_endpoint, "COSMOS_DATABASE": database}
    )
    stores = open_cosmos_stores(settings, KEY, connection_verify=False)
    try:
        assert stores.cache is not None
        entry = 'data: {"x": "ünïcødé"}\n\n'.encode() * 50
        await stores.cache.put("a" * 64, entry, 600)
        assert await stores.cache.get("a" * 64) == entry
        async with CosmosClient(cosmos_endpoint, credential=KEY, connection_verify=False) as admin:
            item = await admin.get_database_client(database).get_container_client("cache").read_item("a" * 64, "a" * 64)
        assert item["ttl"] == 600
    finally:
        await stores.close()
