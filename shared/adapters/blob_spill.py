"""SpillStore on Azure Blob Storage: one block blob per spilled exchange, name = key.

In Azure the Function App reaches its storage account by identity (no key in settings): the
account URL (`AzureWebJobsStorage__blobServiceUri` style) plus DefaultAzureCredential or a managed
identity. Locally and in tests a connection string (Azurite's) does the same job. The container is
created on first use, so a fresh account needs no set-up step.
"""

from __future__ import annotations

import asyncio
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient, ContainerClient


class BlobSpillStore:
    """Keys are blob names; `keys` lists them in name order, at most `limit`."""

    def __init__(self, container: ContainerClient, owner: BlobServiceClient | None = None) -> None:
        self._container = container
        self._owner = owner
        self._ready = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_connection_string(cls, connection_string: str, container: str) -> BlobSpillStore:
        service = BlobServiceClient.from_connection_string(connection_string)
        return cls(service.get_container_client(container), service)

    @classmethod
    def from_account_url(cls, account_url: str, container: str, credential: Any) -> BlobSpillStore:
        """Identity-based: `credential` is an azure-identity async credential (managed identity)."""
        service = BlobServiceClient(account_url, credential=credential)
        return cls(service.get_container_client(container), service)

    async def _ensure_container(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                try:
                    await self._container.create_container()
                except ResourceExistsError:
                    pass
                self._ready = True

    async def put(self, key: str, data: bytes) -> None:
        await self._ensure_container()
        await self._container.upload_blob(key, data, overwrite=True)

    async def get(self, key: str) -> bytes | None:
        await self._ensure_container()
        try:
            stream = await self._container.download_blob(key)
        except ResourceNotFoundError:
            return None
        return bytes(await stream.readall())

    async def keys(self, limit: int = 100) -> list[str]:
        await self._ensure_container()
        names: list[str] = []
        async for blob in self._container.list_blobs():
            if len(names) >= limit:
                break
            names.append(blob.name)
        return names

    async def delete(self, key: str) -> None:
        """Deleting a key that is not there is not an error (a drain may race a second drain)."""
        await self._ensure_container()
        try:
            await self._container.delete_blob(key)
        except ResourceNotFoundError:
            pass

    async def close(self) -> None:
        await self._container.close()
        if self._owner is not None:
            await self._owner.close()
