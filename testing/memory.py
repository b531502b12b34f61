"""In-memory implementations of every port, for unit tests of code that sits behind the ports."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from shared.exchange import Exchange, from_items, to_items
from shared.ports import Ports, UsageRecord


class MemoryExchangeStore:
    def __init__(self, clock=time.time) -> None:
        self.items: dict[str, list[dict[str, Any]]] = {}
        self.saved_at: dict[str, float] = {}
        self._clock = clock

    async def save(self, exchange: Exchange) -> None:
        self.items[exchange.request_id] = to_items(exchange)
        self.saved_at[exchange.request_id] = self._clock()

    async def stored_between(self, since: float, until: float, limit: int) -> list[str]:
        found = sorted((t, rid) for rid, t in self.saved_at.items() if since <= t < until)
        return [rid for _, rid in found[:limit]]

    async def load(self, request_id: str) -> Exchange | None:
        items = self.items.get(request_id)
        return from_items(items) if items else None


class MemoryEventChannel:
    def __init__(self) -> None:
        self.published: list[str] = []
        #: Events that carry their exchange (published while the store was down).
        self.carried: list[bytes] = []

    async def publish(self, request_id: str) -> None:
        self.published.append(request_id)

    async def publish_exchange(self, request_id: str, event: bytes) -> None:
        self.carried.append(event)


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

    async def existing(self, request_ids: Sequence[str]) -> set[str]:
        return {rid for rid in request_ids if rid in self.records}


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

    async def reasons(self, keys: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for key, reason, _ in self.letters:
            if key in keys:
                found.setdefault(key, []).append(reason)
        return found


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
