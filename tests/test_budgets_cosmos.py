"""The Cosmos DB budget store with the real azure-cosmos SDK against the Cosmos DB protocol server.

`@vercel/cosmosdb-server` (tests/cosmos_server.py) honours If-Match on replace (412 on a stale
ETag), which is what the store's optimistic concurrency rests on; these tests check that first, then
run concurrent admissions through the keeper on one ledger item.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from azure.core import MatchConditions
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient
from azure.cosmos.exceptions import CosmosAccessConditionFailedError

from shared.adapters.cosmos_budgets import CosmosBudgetStore, open_cosmos_budget_store
from shared.budgets.config import UNITS_PER_USD, parse_budget_book
from shared.budgets.estimate import worst_case
from shared.budgets.keeper import BudgetKeeper, shipped_book
from shared.errors import BudgetExceeded
from shared.settings import Settings
from tests.cosmos_server import KEY, cosmos_endpoint  # noqa: F401 - fixture

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()
BODY = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4000}


@pytest_asyncio.fixture
async def store(cosmos_endpoint: str) -> AsyncIterator[CosmosBudgetStore]:  # noqa: F811
    database = f"budgets{uuid.uuid4().hex[:12]}"
    async with CosmosClient(cosmos_endpoint, credential=KEY, connection_verify=False) as admin:
        db = await admin.create_database_if_not_exists(database)
        await db.create_container_if_not_exists("budgets", partition_key=PartitionKey("/id"))
    settings = Settings.from_env(
        {"LOG_STORE": "cosmos", "COSMOS_ENDPOINT": cosmos_endpoint, "COSMOS_DATABASE": database}
    )
    opened = open_cosmos_budget_store(settings, KEY, connection_verify=False)
    try:
        yield opened
    finally:
        await opened.close()


def _keeper(store: CosmosBudgetStore, amount: float) -> BudgetKeeper:
    book = parse_budget_book(json.dumps([{"name": "b", "scope": "subscription:s1", "amount": amount}]), "{}")
    return BudgetKeeper(book, store, shipped_book(), hold_seconds=60, clock=lambda: NOW)


async def test_the_server_refuses_a_replace_with_a_stale_etag(store: CosmosBudgetStore) -> None:
    container = store.container
    await store._warm_up()
    created = await container.create_item({"id": "etag-check", "n": 0})
    await container.replace_item(
        "etag-check", {"id": "etag-check", "n": 1}, etag=created["_etag"], match_condition=MatchConditions.IfNotModified
    )
    with pytest.raises(CosmosAccessConditionFailedError):
        await container.replace_item(
            "etag-check",
            {"id": "etag-check", "n": 2},
            etag=created["_etag"],
            match_condition=MatchConditions.IfNotModified,
        )


async def test_concurrent_admissions_on_one_item_never_hold_more_than_the_budget(store: CosmosBudgetStore) -> None:
    conflicts = 0
    replace = store.container.replace_item

    async def counting(*args, **kwargs):
        nonlocal conflicts
        try:
            return await replace(*args, **kwargs)
        except CosmosAccessConditionFailedError:
            conflicts += 1
            raise

    store.container.replace_item = counting
    keeper = _keeper(store, 0.5)
    results = await asyncio.gather(
        *(keeper.admit(f"r{i}", "s1", "p", "gpt-4o", "chat.completions", BODY) for i in range(32)),
        return_exceptions=True,
    )
    admitted = {f"r{i}": r for i, r in enumerate(results) if not isinstance(r, BaseException)}
    assert all(isinstance(r, BudgetExceeded) for r in results if isinstance(r, BaseException))
    worst = worst_case("chat.completions", BODY, "gpt-4o", 4096)
    each = -(-(worst.prompt_tokens * 2.5 + worst.output_tokens * 10.0) * 1000 // 1)
    assert len(admitted) == int(0.5 * UNITS_PER_USD // each)
    assert conflicts > 0  # the race happened, and lost writes were retried on the newest item
    [row] = await keeper.status()
    assert row["in_flight"] == len(admitted) and row["held"] == len(admitted) * each

    def record(rid: str) -> dict[str, object]:
        return {
            "request_id": rid,
            "timestamp": "2026-12-06T12:00:00Z",
            "subscription_id": "s1",
            "product": "p",
            "deployment": "gpt-4o",
            "cost": 0.0123,
        }

    await asyncio.gather(*(keeper.settle(record(rid), a.marks()) for rid, a in admitted.items()))
    await asyncio.gather(*(keeper.settle(record(rid), a.marks()) for rid, a in admitted.items()))  # redelivered
    [row] = await keeper.status()
    assert row["in_flight"] == 0 and row["spent"] == len(admitted) * 12_300_000
    assert [ledger["id"] for ledger in await store.ledgers()] == ["b@2026-12-01T00:00:00Z"]
