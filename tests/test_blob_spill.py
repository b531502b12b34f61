"""BlobSpillStore against azurite (a real Blob Storage protocol server on loopback)."""

from __future__ import annotations

import asyncio
import os
import uuid

from azure.storage.blob.aio import BlobServiceClient

from shared.adapters.blob_spill import BlobSpillStore
from shared.ports import SpillStore
from tests.azurite_server import azurite_connection_string  # noqa: F401  (session fixture)


def _container() -> str:
    return "spill-" + uuid.uuid4().hex[:12]


def test_put_get_keys_delete_and_missing_key(azurite_connection_string: str) -> None:  # noqa: F811
    async def scenario() -> None:
        store: SpillStore = BlobSpillStore.from_connection_string(azurite_connection_string, _container())
        try:
            assert await store.keys() == []
            assert await store.get("absent") is None
            await store.put("b/2", b'{"n": 2}')
            await store.put("a/1", "体験🙂".encode())
            assert await store.get("a/1") == "体験🙂".encode()
            assert await store.keys() == ["a/1", "b/2"]
            assert await store.keys(limit=1) == ["a/1"]
            await store.put("a/1", b"replaced")
            assert await store.get("a/1") == b"replaced"
            await store.delete("a/1")
            await store.delete("a/1")  # twice: not an error
            assert await store.get("a/1") is None
            assert await store.keys() == ["b/2"]
        finally:
            await store.close()

    asyncio.run(scenario())


def test_creates_its_container_and_keeps_large_payloads(azurite_connection_string: str) -> None:  # noqa: F811
    name = _container()
    payload = os.urandom(9 * 1024 * 1024 + 7)  # above the SDK's single-put size: uploaded in blocks

    async def scenario() -> None:
        store = BlobSpillStore.from_connection_string(azurite_connection_string, name)
        try:
            await store.put("big", payload)
            assert await store.get("big") == payload
        finally:
            await store.close()
        async with BlobServiceClient.from_connection_string(azurite_connection_string) as service:
            names = [c.name async for c in service.list_containers()]
            assert name in names
        again = BlobSpillStore.from_connection_string(azurite_connection_string, name)  # container exists
        try:
            assert await again.keys() == ["big"]
        finally:
            await again.close()

    asyncio.run(scenario())


def test_many_keys_are_listed_up_to_the_limit(azurite_connection_string: str) -> None:  # noqa: F811
    async def scenario() -> None:
        store = BlobSpillStore.from_connection_string(azurite_connection_string, _container())
        try:
            await asyncio.gather(*(store.put(f"k{i:03d}", b"x") for i in range(120)))
            assert len(await store.keys()) == 100
            assert await store.keys(limit=500) == [f"k{i:03d}" for i in range(120)]
        finally:
            await store.close()

    asyncio.run(scenario())
