"""The Azure stores: Cosmos DB for NoSQL (azure-cosmos aio) with an identity-based connection.

Containers (created by bicep, not here: data-plane RBAC cannot create them):
  exchanges    partition key /requestId, default TTL -1 (items carry `ttl`: RETENTION, else EXCHANGE_TTL_SECONDS)
  records      partition key /requestId (the record item and its details item side by side; details
               carry the exchange retention as `ttl`, records RETENTION's records_days when set)
  deadletters  partition key /requestId
  affinity     partition key /id,        default TTL -1 (items carry their own `ttl`)
  cache        partition key /id,        default TTL -1 (items carry the audience's cache `ttl`)
  owners       partition key /id,        default TTL -1 (items never expire)

One module because the stores share one client, database and the item-size and retry rules of
the service; each store class is a few calls.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shared.exchange import Exchange, from_items, to_items, utc_now_iso
from shared.ports import UsageRecord
from shared.privacy.policy import FOREVER, RetentionPolicy
from shared.settings import Settings

#: A transactional batch holds at most 100 operations and 2 MB of request; keep a margin for headers.
BATCH_MAX_OPERATIONS = 100
BATCH_MAX_BYTES = 1_800_000
#: Concurrent upserts for an exchange too large for one batch (each item is up to 1 MB).
UPSERT_CONCURRENCY = 4
#: Details bigger than this (e.g. a 5 MB base64 image in the request) are not stored beside the
#: record; the raw exchange (TTL-bound) keeps them. Leaves room for the record in the same batch.
DETAILS_MAX_BYTES = 1_500_000
#: Dead-letter payloads are cut to this many UTF-8 bytes (as they go on the wire, compact) so an
#: item always fits in 2 MB, whatever the script (a character is 1 to 4 bytes).
DEADLETTER_PAYLOAD_MAX_BYTES = 1_500_000

Container = Any  # azure.cosmos.aio.ContainerProxy, or a test double with the same methods
WarmUp = Callable[[], Awaitable[None]]


async def _no_warm_up() -> None:
    return None


def _status(exc: BaseException) -> int | None:
    """The status code of a failed operation, inside a failed transactional batch too."""
    responses = getattr(exc, "operation_responses", None)
    index = getattr(exc, "error_index", None)
    if responses and index is not None and index < len(responses):
        code = responses[index].get("statusCode")
        if code is not None:
            return int(code)
    return getattr(exc, "status_code", None)


async def _point_read(container: Container, item_id: str) -> dict[str, Any] | None:
    """The item whose id is also its partition key, or None when there is none (404)."""
    try:
        return await container.read_item(item=item_id, partition_key=item_id)
    except Exception as exc:
        if _status(exc) == 404:
            return None
        raise


class CosmosExchangeStore:
    """Every item carries its own `ttl` (the audience's exchange retention, else `ttl_seconds`) and
    the caller's `userId` and `subscriptionId`, so an erasure finds split exchanges too."""

    def __init__(
        self,
        container: Container,
        ttl_seconds: int,
        warm_up: WarmUp = _no_warm_up,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self.container = container
        self.ttl_seconds = ttl_seconds
        self._warm_up = warm_up
        self.retention = retention

    async def save(self, exchange: Exchange) -> None:
        # Splitting a multi-MB exchange is CPU work: keep it off the event loop.
        items = await asyncio.to_thread(to_items, exchange)
        who = exchange.identity
        ttl = self.ttl_seconds
        if self.retention is not None:
            ttl = self.retention.for_audience(who.product, who.subscription_id).exchanges_seconds
        for item in items:
            item["ttl"] = ttl
            item["userId"], item["subscriptionId"] = who.user_id, who.subscription_id
        await self._warm_up()
        rid = exchange.request_id
        if len(items) == 1:
            await self.container.upsert_item(items[0])
            return
        size = sum(len(orjson.dumps(it)) for it in items)
        if len(items) <= BATCH_MAX_OPERATIONS and size <= BATCH_MAX_BYTES:
            await self.container.execute_item_batch([("upsert", (it,)) for it in items], partition_key=rid)
            return
        # Too large for one request: the parser sees the exchange only after every item landed,
        # because the request id is published after save returns.
        gate = asyncio.Semaphore(UPSERT_CONCURRENCY)

        async def upsert(item: dict[str, Any]) -> None:
            async with gate:
                await self.container.upsert_item(item)

        await asyncio.gather(*(upsert(it) for it in items))

    async def load(self, request_id: str) -> Exchange | None:
        await self._warm_up()
        pages = self.container.query_items(
            "SELECT * FROM c WHERE c.requestId = @requestId",
            parameters=[{"name": "@requestId", "value": request_id}],
            partition_key=request_id,
        )
        items = [item async for item in pages]
        if not items:
            return None
        return await asyncio.to_thread(from_items, items)

    async def stored_between(self, since: float, until: float, limit: int) -> list[str]:
        """By the items' `_ts` (seconds the item was last written), across partitions."""
        await self._warm_up()
        pages = self.container.query_items(
            "SELECT TOP @limit c.requestId FROM c WHERE c.seq = 0 AND c._ts >= @since AND c._ts < @until"
            " ORDER BY c._ts",
            parameters=[
                {"name": "@limit", "value": int(limit)},
                {"name": "@since", "value": int(since)},
                {"name": "@until", "value": int(until)},
            ],
        )
        return [item["requestId"] async for item in pages]


async def _existing(container: Container, kind_filter: str, field: str, keys: Sequence[str]) -> set[str]:
    """Which `keys` have an item (cross-partition, ARRAY_CONTAINS over at most 100 ids per query)."""
    found: set[str] = set()
    wanted = list(dict.fromkeys(keys))
    for start in range(0, len(wanted), 100):
        pages = container.query_items(
            f"SELECT VALUE c.{field} FROM c WHERE {kind_filter}ARRAY_CONTAINS(@ids, c.{field})",
            parameters=[{"name": "@ids", "value": wanted[start : start + 100]}],
        )
        found.update([value async for value in pages])
    return found


class CosmosRecordStore:
    """Record item `id` = request id; details item `id` = "<request id>.details", written atomically together."""

    def __init__(
        self, container: Container, warm_up: WarmUp = _no_warm_up, retention: RetentionPolicy | None = None
    ) -> None:
        self.container = container
        self._warm_up = warm_up
        self.retention = retention

    async def add(self, record: UsageRecord, details: Mapping[str, Any]) -> bool:
        rid = record["request_id"]
        record_item, details_item = self.items(record, details)
        await self._warm_up()
        try:
            # `create` fails with 409 when the record exists, and then the batch writes nothing.
            await self.container.execute_item_batch(
                [("create", (record_item,)), ("upsert", (details_item,))], partition_key=rid
            )
        except Exception as exc:
            if _status(exc) == 409:
                return False
            raise
        return True

    def items(self, record: UsageRecord, details: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The record item and the details item. Each carries its `ttl`: the record's retention, and
        for the details (content) the exchange's, so content never outlives the exchange."""
        rid = record["request_id"]
        details_json = orjson.dumps(dict(details))
        details_item: dict[str, Any] = {"id": f"{rid}.details", "requestId": rid, "kind": "details"}
        if len(details_json) <= DETAILS_MAX_BYTES:
            details_item["details"] = dict(details)
        else:
            details_item["details"] = None
            details_item["omitted"] = f"details of {len(details_json)} bytes exceed {DETAILS_MAX_BYTES}"
        record_item: dict[str, Any] = {
            "id": rid,
            "requestId": rid,
            "kind": "record",
            "timestamp": record["timestamp"],
            "record": record,
        }
        retention = self.retention or RetentionPolicy()
        kept = retention.for_audience(record.get("product"), record.get("subscription_id"))
        details_item["ttl"] = kept.details_seconds
        if kept.records_seconds != FOREVER:  # else the container's default TTL (bicep recordsTtlSeconds)
            record_item["ttl"] = kept.records_seconds
        return record_item, details_item

    async def get(self, request_id: str) -> UsageRecord | None:
        await self._warm_up()
        item = await _point_read(self.container, request_id)
        if item is None:
            return None
        return item["record"]

    async def existing(self, request_ids: Sequence[str]) -> set[str]:
        await self._warm_up()
        return await _existing(self.container, "c.kind = 'record' AND ", "requestId", request_ids)


class CosmosDeadLetterStore:
    def __init__(self, container: Container, warm_up: WarmUp = _no_warm_up) -> None:
        self.container = container
        self._warm_up = warm_up

    async def put(self, key: str, reason: str, payload: str) -> None:
        encoded = payload.encode("utf-8", "surrogatepass")
        truncated = len(encoded) > DEADLETTER_PAYLOAD_MAX_BYTES
        if truncated:
            payload = encoded[:DEADLETTER_PAYLOAD_MAX_BYTES].decode("utf-8", "ignore")  # never half a character
        await self._warm_up()
        await self.container.create_item(
            {
                "id": uuid.uuid4().hex,
                "requestId": key,
                "key": key,
                "reason": reason,
                "payload": payload,
                "payloadTruncated": truncated,
                "createdAt": utc_now_iso(),
            }
        )

    async def reasons(self, keys: Sequence[str]) -> dict[str, list[str]]:
        await self._warm_up()
        found: dict[str, list[str]] = {}
        wanted = list(dict.fromkeys(keys))
        for start in range(0, len(wanted), 100):
            pages = self.container.query_items(
                "SELECT c.key, c.reason FROM c WHERE ARRAY_CONTAINS(@ids, c.key)",
                parameters=[{"name": "@ids", "value": wanted[start : start + 100]}],
            )
            async for item in pages:
                found.setdefault(item["key"], []).append(item["reason"])
        return found


class CosmosAffinityStore:
    """Item `id` = response id, partition key /id, Cosmos item TTL = the affinity's time to live."""

    def __init__(
        self, container: Container, warm_up: WarmUp = _no_warm_up, clock: Callable[[], float] = time.time
    ) -> None:
        self.container = container
        self._warm_up = warm_up
        self._clock = clock

    async def remember(self, response_id: str, backend: str, ttl_seconds: int) -> None:
        await self._warm_up()
        await self.container.upsert_item(
            {"id": response_id, "backend": backend, "ttl": ttl_seconds, "expiresAt": self._clock() + ttl_seconds}
        )

    async def lookup(self, response_id: str) -> str | None:
        await self._warm_up()
        item = await _point_read(self.container, response_id)
        if item is None:
            return None
        # Cosmos deletes expired items in the background; never route on a stale entry meanwhile.
        if float(item.get("expiresAt", 0)) <= self._clock():
            return None
        return item.get("backend")


class CosmosResponseCache:
    """Item `id` = cache key, partition key /id; the entry as base64 text and Cosmos' per-item `ttl`
    = the audience's cache TTL, so the service deletes it; reads also check `expiresAt` (deletion
    of expired items runs in the background)."""

    def __init__(
        self, container: Container, warm_up: WarmUp = _no_warm_up, clock: Callable[[], float] = time.time
    ) -> None:
        self.container = container
        self._warm_up = warm_up
        self._clock = clock

    async def get(self, key: str) -> bytes | None:
        await self._warm_up()
        item = await _point_read(self.container, key)
        if item is None:
            return None
        if float(item.get("expiresAt", 0)) <= self._clock() or not isinstance(item.get("entry"), str):
            return None
        return base64.b64decode(item["entry"])

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        await self._warm_up()
        await self.container.upsert_item(
            {
                "id": key,
                "entry": base64.b64encode(value).decode("ascii"),
                "ttl": ttl_seconds,
                "expiresAt": self._clock() + ttl_seconds,
            }
        )


class CosmosOwnershipStore:
    """Item `id` = "<kind>:<object id>", partition key /id; created once, so the first claim stands.

    Reads are queries, not point reads: an unknown id is an empty result on every Cosmos server
    (a point read of a missing item is a 404 on Azure, a 500 on some emulators).
    """

    def __init__(self, container: Container, warm_up: WarmUp = _no_warm_up) -> None:
        self.container = container
        self._warm_up = warm_up

    @staticmethod
    def item_id(kind: str, object_id: str) -> str | None:
        """The item id, or None for an object id Cosmos cannot hold in an id (nobody owns those)."""
        if not object_id or any(c in object_id for c in "/\\?#") or len(object_id) > 200:
            return None
        return f"{kind}:{object_id}"

    async def claim(self, kind: str, object_id: str, owner: str) -> None:
        item_id = self.item_id(kind, object_id)
        if item_id is None:
            return
        await self._warm_up()
        try:
            await self.container.create_item({"id": item_id, "kind": kind, "owner": owner, "createdAt": utc_now_iso()})
        except Exception as exc:
            if _status(exc) != 409:  # 409: claimed before, and the first claim stands
                raise

    async def owner(self, kind: str, object_id: str) -> str | None:
        item_id = self.item_id(kind, object_id)
        if item_id is None:
            return None
        await self._warm_up()
        pages = self.container.query_items(
            "SELECT c.owner FROM c WHERE c.id = @id",
            parameters=[{"name": "@id", "value": item_id}],
            partition_key=item_id,
        )
        async for item in pages:
            owner = item.get("owner")
            return owner if isinstance(owner, str) else None
        return None


@dataclass(slots=True)
class CosmosStores:
    exchanges: CosmosExchangeStore
    records: CosmosRecordStore
    deadletters: CosmosDeadLetterStore
    affinity: CosmosAffinityStore
    owners: CosmosOwnershipStore
    close: Callable[[], Awaitable[None]]
    cache: CosmosResponseCache | None = None


class _Once:
    """Enters the aio CosmosClient (reads the account's regions) once, on first use, not at import."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = asyncio.Lock()
        self._done = False

    async def __call__(self) -> None:
        if self._done:
            return
        async with self._lock:
            if not self._done:
                await self._client.__aenter__()
                self._done = True


def open_cosmos_stores(settings: Settings, credential: Any, **client_options: Any) -> CosmosStores:
    """The Cosmos stores over one client. No I/O until first use.

    `client_options` go to the SDK client as they are (an emulator's self-signed certificate:
    `connection_verify=False`; tests: request hooks)."""
    from azure.cosmos.aio import CosmosClient

    # Compact UTF-8: by default the SDK escapes every non-ASCII character (`\uXXXX`, 6 bytes for a
    # 3-byte CJK character), so an item sized in UTF-8 bytes could exceed the 2 MB limit on the wire.
    client = CosmosClient(
        settings.cosmos_endpoint or "", credential=credential, enable_compact_utf8_item_writes=True, **client_options
    )
    database = client.get_database_client(settings.cosmos_database)
    warm_up = _Once(client)
    retention = RetentionPolicy.parse(settings.retention_json, settings.exchange_ttl_seconds)
    return CosmosStores(
        exchanges=CosmosExchangeStore(
            database.get_container_client(settings.cosmos_exchanges_container),
            settings.exchange_ttl_seconds,
            warm_up,
            retention,
        ),
        records=CosmosRecordStore(database.get_container_client(settings.cosmos_records_container), warm_up, retention),
        deadletters=CosmosDeadLetterStore(
            database.get_container_client(settings.cosmos_deadletters_container), warm_up
        ),
        affinity=CosmosAffinityStore(database.get_container_client(settings.cosmos_affinity_container), warm_up),
        owners=CosmosOwnershipStore(database.get_container_client(settings.cosmos_owners_container), warm_up),
        close=client.close,
        cache=CosmosResponseCache(database.get_container_client(settings.cosmos_cache_container), warm_up),
    )
