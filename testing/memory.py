"""In-memory implementations of every port, for unit tests of code that sits behind the ports."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from shared.exchange import Exchange, from_items, to_items
from shared.ports import Ports, UsageRecord


class MemoryExchangeStore:
    def __init__(self) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {}

    async def save(self, exchange: Exchange) -> None:
        self.items[exchange.request_id] = to_items(exchange)

    async def load(self, request_id: str) -> Exchange | None:
        items = self.items.get(request_id)
        return from_items(items) if items else None


class MemoryEventChannel:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, request_id: str) -> None:
        self.published.append(request_id)


class MemoryRecordStore:
    def __init__(self) -> None:
        self.records: dict[str, UsageRecord] = {}
        self.details: dict[str, Mapping[str, Any]] = {}

    async def add(self, record: UsageRecord, details: Mapping[str, Any]) -> bool:
        rid = record["request_id"]
        if rid in self.records:
            return False
        self.records[rid] = record
        self.details[rid] = details
        return True

    async def get(self, request_id: str) -> UsageRecord | None:
        return self.records.get(request_id)


class MemoryUsageSink:
    def __init__(self) -> None:
        self.emitted: list[UsageRecord] = []

    async def emit(self, record: UsageRecord) -> None:
        self.emitted.append(record)


class MemoryDeadLetterStore:
    def __init__(self) -> None:
        self.letters: list[tuple[str, str, str]] = []

    async def put(self, key: str, reason: str, payload: str) -> None:
        self.letters.append((key, reason, payload))


class MemoryAffinityStore:
    def __init__(self, clock=time.time) -> None:
        self._clock = clock
        self.entries: dict[str, tuple[str, float]] = {}

    async def remember(self, response_id: str, backend: str, ttl_seconds: int) -> None:
        self.entries[response_id] = (backend, self._clock() + ttl_seconds)

    async def lookup(self, response_id: str) -> str | None:
        entry = self.entries.get(response_id)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]


class MemoryOwnershipStore:
    def __init__(self) -> None:
        self.owners: dict[tuple[str, str], str] = {}

    async def claim(self, kind: str, object_id: str, owner: str) -> None:
        self.owners.setdefault((kind, object_id), owner)

    async def owner(self, kind: str, object_id: str) -> str | None:
        return self.owners.get((kind, object_id))


def memory_ports() -> Ports:
    return Ports(
        exchanges=MemoryExchangeStore(),
        channel=MemoryEventChannel(),
        records=MemoryRecordStore(),
        sink=MemoryUsageSink(),
        deadletters=MemoryDeadLetterStore(),
        affinity=MemoryAffinityStore(),
        owners=MemoryOwnershipStore(),
    )
