"""The Azure budget store: one Cosmos DB item per budget and period, changed with optimistic concurrency.

A step reads the item, changes it and replaces it only if its `_etag` is unchanged (If-Match); on a
conflict (412: another instance wrote first) it reads again and repeats the step, so every instance
works on the newest totals. Container `budgets`, partition key /id: each ledger is its own
partition, so a busy budget never throttles another.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from azure.core import MatchConditions

from shared.adapters.cosmos import Container, WarmUp, _no_warm_up, _Once, _status
from shared.errors import BudgetConflict
from shared.settings import Settings

T = TypeVar("T")

#: Conflicts tolerated for one step (64 requests on one budget at once stay far below).
MAX_CONFLICTS = 100
_SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts")


async def _nothing() -> None:
    return None


class CosmosBudgetStore:
    def __init__(
        self, container: Container, warm_up: WarmUp = _no_warm_up, close: Callable[[], Awaitable[None]] = _nothing
    ) -> None:
        self.container = container
        self._warm_up = warm_up
        self._close = close
        #: Ledgers this process knows exist; for the others the first step tries to create the item
        #: (a conflict means another instance did), so a new period costs no failed read.
        self._known: set[str] = set()

    async def apply(self, key: str, fresh: Callable[[], dict[str, Any]], step: Callable[[dict[str, Any]], T]) -> T:
        await self._warm_up()
        for attempt in range(MAX_CONFLICTS):
            if key not in self._known:
                ledger = fresh()
                result = step(ledger)
                try:
                    await self.container.create_item(ledger)
                    self._known.add(key)
                    return result
                except Exception as exc:
                    if _status(exc) != 409:
                        raise
                    self._known.add(key)
            item = await self.container.read_item(item=key, partition_key=key)
            ledger = {k: v for k, v in item.items() if k not in _SYSTEM}
            before = orjson.dumps(ledger)
            result = step(ledger)
            if orjson.dumps(ledger) == before:
                return result  # nothing changed (a refusal, a repeated settlement): no write
            try:
                await self.container.replace_item(
                    item=key, body=ledger, etag=item["_etag"], match_condition=MatchConditions.IfNotModified
                )
                return result
            except Exception as exc:
                if _status(exc) != 412:
                    raise
            await asyncio.sleep(random.uniform(0, 0.002 * min(attempt + 1, 20)))
        raise BudgetConflict(f"budget ledger {key} changed {MAX_CONFLICTS} times during one step")

    async def ledgers(self) -> list[dict[str, Any]]:
        await self._warm_up()
        items = self.container.query_items("SELECT * FROM c")
        return [{k: v for k, v in item.items() if k not in _SYSTEM} async for item in items]

    async def close(self) -> None:
        await self._close()


def open_cosmos_budget_store(settings: Settings, credential: Any, **client_options: Any) -> CosmosBudgetStore:
    """The store on the COSMOS_BUDGETS_CONTAINER container, over its own client. No I/O until first use."""
    from azure.cosmos.aio import CosmosClient

    client = CosmosClient(settings.cosmos_endpoint or "", credential=credential, **client_options)
    container = client.get_database_client(settings.cosmos_database).get_container_client(
        settings.cosmos_budgets_container
    )
    return CosmosBudgetStore(container, _Once(client), client.close)
