"""The I/O boundaries, as small protocols. Each has an Azure adapter and an embedded one.

Azure: Cosmos DB (stores), Event Hubs (channel), Application Insights (sink).
Embedded: SQLite (stores, records included), an in-process queue (channel), a log line per record (sink).
Wiring picks one of each from app settings, in one place (`shared/wiring.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from shared.exchange import Exchange
from shared.normalize.record import UsageRecord

if TYPE_CHECKING:  # the Azure SDK behind it is imported only when Content Safety is configured
    from shared.budgets.keeper import BudgetKeeper
    from shared.safety.client import ContentSafety

#: One budget period's ledger document (shared/budgets/ledger.py).
Ledger = dict[str, Any]
T = TypeVar("T")


class ExchangeStore(Protocol):
    """Raw exchanges, keyed by request id (split into <= 1 MB items by `shared.exchange.to_items`)."""

    async def save(self, exchange: Exchange) -> None: ...

    async def load(self, request_id: str) -> Exchange | None: ...

    async def stored_between(self, since: float, until: float, limit: int) -> list[str]:
        """Request ids of exchanges stored in [since, until) (epoch seconds), oldest first."""
        ...


class EventChannel(Protocol):
    """Announces that an exchange is stored. Delivery is at least once."""

    async def publish(self, request_id: str) -> None: ...


class RecordStore(Protocol):
    """Usage records with the normalized request and consolidated response beside them.

    `add` is idempotent on `record["request_id"]`: it returns False when the record exists.
    """

    async def add(self, record: UsageRecord, details: Mapping[str, Any]) -> bool: ...

    async def get(self, request_id: str) -> UsageRecord | None: ...

    async def existing(self, request_ids: Sequence[str]) -> set[str]:
        """Which of these request ids have a record."""
        ...


class UsageSink(Protocol):
    """Where finished usage records are emitted (Application Insights `customEvents`)."""

    async def emit(self, record: UsageRecord) -> None: ...


class DeadLetterStore(Protocol):
    """Events or exchanges the parser could not turn into a record, with the reason."""

    async def put(self, key: str, reason: str, payload: str) -> None: ...

    async def reasons(self, keys: Sequence[str]) -> dict[str, list[str]]:
        """The reasons of the dead letters of these keys (request ids), for those that have any."""
        ...


class AffinityStore(Protocol):
    """Responses API response id -> backend name that created it, with a time to live."""

    async def remember(self, response_id: str, backend: str, ttl_seconds: int) -> None: ...

    async def lookup(self, response_id: str) -> str | None: ...


class ResponseCache(Protocol):
    """Exact response cache entries (`shared.response_cache.Entry` bytes) by key, each with its own TTL."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None: ...


class BudgetStore(Protocol):
    """Budget ledgers (one per budget and period, see shared/budgets/ledger.py), shared by every instance.

    `apply` runs `step` on the stored ledger (`fresh()` when there is none yet), stores the changed
    ledger and returns what `step` returned, atomically with respect to every other writer on any
    instance: a transaction, or a conditional replace retried with the newest ledger on conflict
    (so `step` may run more than once and must depend only on the ledger it is given).
    """

    async def apply(self, key: str, fresh: Callable[[], Ledger], step: Callable[[Ledger], T]) -> T: ...

    async def ledgers(self) -> list[Ledger]: ...

    async def close(self) -> None: ...


class OwnershipStore(Protocol):
    """Which subscription created a stored object (a response, a file, a batch), by kind and id.

    `claim` keeps the first owner of an id (a later claim by anyone is ignored); `owner` is None
    for an id nobody claimed.
    """

    async def claim(self, kind: str, object_id: str, owner: str) -> None: ...

    async def owner(self, kind: str, object_id: str) -> str | None: ...


class SpillStore(Protocol):
    """Durable place for exchanges the log store could not take; drained back when it recovers."""

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def keys(self, limit: int = 100) -> list[str]: ...

    async def delete(self, key: str) -> None: ...

    async def close(self) -> None: ...


class Ports:
    """One of each port, as chosen by the wiring (`shared/wiring.py`) from app settings.

    `owners` is None only for a partial set built by a test; the wiring always sets it.
    `safety` is the Content Safety analyser (`shared.safety.client.ContentSafety`), or None when
    CONTENT_SAFETY_ENDPOINT is not set: then records say `safety.status: "skipped"`.
    `budgets` admits and settles against BUDGETS (`shared.budgets.keeper.BudgetKeeper` over a
    `BudgetStore`), or None when no budget is configured. `spill` is the spill store (Azure Blob)
    when CAPTURE_SPILL_* is set, else None.
    """

    __slots__ = (
        "exchanges",
        "channel",
        "records",
        "sink",
        "deadletters",
        "affinity",
        "safety",
        "cache",
        "budgets",
        "spill",
        "owners",
    )

    def __init__(
        self,
        *,
        exchanges: ExchangeStore,
        channel: EventChannel,
        records: RecordStore,
        sink: UsageSink,
        deadletters: DeadLetterStore,
        affinity: AffinityStore,
        owners: OwnershipStore | None = None,
        safety: ContentSafety | None = None,
        cache: ResponseCache | None = None,
        budgets: BudgetKeeper | None = None,
        spill: SpillStore | None = None,
    ) -> None:
        self.exchanges = exchanges
        self.channel = channel
        self.records = records
        self.sink = sink
        self.deadletters = deadletters
        self.affinity = affinity
        self.owners = owners
        self.safety = safety
        #: The exact response cache store (None: no audience enables the cache).
        self.cache = cache
        self.budgets = budgets
        #: Where the proxy spills exchanges the log store could not take (None: local outbox only).
        self.spill = spill
