"""The I/O boundaries, as small protocols. Each has an Azure adapter and an embedded one.

Azure: Cosmos DB (stores), Event Hubs (channel), Application Insights (sink).
Embedded: SQLite (stores, records included), an in-process queue (channel), a log line per record (sink).
Wiring picks one of each from app settings, in one place (`shared/wiring.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from shared.exchange import Exchange
from shared.normalize.record import UsageRecord

if TYPE_CHECKING:  # the Azure SDK behind it is imported only when Content Safety is configured
    from shared.safety.client import ContentSafety


class ExchangeStore(Protocol):
    """Raw exchanges, keyed by request id (split into <= 1 MB items by `shared.exchange.to_items`)."""

    async def save(self, exchange: Exchange) -> None: ...

    async def load(self, request_id: str) -> Exchange | None: ...


class EventChannel(Protocol):
    """Announces that an exchange is stored. Delivery is at least once."""

    async def publish(self, request_id: str) -> None: ...


class RecordStore(Protocol):
    """Usage records with the normalized request and consolidated response beside them.

    `add` is idempotent on `record["request_id"]`: it returns False when the record exists.
    """

    async def add(self, record: UsageRecord, details: Mapping[str, Any]) -> bool: ...

    async def get(self, request_id: str) -> UsageRecord | None: ...


class UsageSink(Protocol):
    """Where finished usage records are emitted (Application Insights `customEvents`)."""

    async def emit(self, record: UsageRecord) -> None: ...


class DeadLetterStore(Protocol):
    """Events or exchanges the parser could not turn into a record, with the reason."""

    async def put(self, key: str, reason: str, payload: str) -> None: ...


class AffinityStore(Protocol):
    """Responses API response id -> backend name that created it, with a time to live."""

    async def remember(self, response_id: str, backend: str, ttl_seconds: int) -> None: ...

    async def lookup(self, response_id: str) -> str | None: ...


class ResponseCache(Protocol):
    """Exact response cache entries (`shared.response_cache.Entry` bytes) by key, each with its own TTL."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None: ...


class SpillStore(Protocol):
    """Durable place for exchanges the log store could not take; drained back when it recovers."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def keys(self, limit: int = 100) -> list[str]: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class Ports:
    """One of each port, as chosen by the wiring (`shared/wiring.py`) from app settings.

    `safety` is the Content Safety analyser (`shared.safety.client.ContentSafety`), or None when
    CONTENT_SAFETY_ENDPOINT is not set: then records say `safety.status: "skipped"`.
    """

    __slots__ = ("exchanges", "channel", "records", "sink", "deadletters", "affinity", "safety", "cache")

    def __init__(
        self,
        *,
        exchanges: ExchangeStore,
        channel: EventChannel,
        records: RecordStore,
        sink: UsageSink,
        deadletters: DeadLetterStore,
        affinity: AffinityStore,
        safety: ContentSafety | None = None,
        cache: ResponseCache | None = None,
    ) -> None:
        self.exchanges = exchanges
        self.channel = channel
        self.records = records
        self.sink = sink
        self.deadletters = deadletters
        self.affinity = affinity
        self.safety = safety
        #: The exact response cache store (None: no audience enables the cache).
        self.cache = cache
