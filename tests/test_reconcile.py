"""The reconciler over the real stores (SQLite; Cosmos through the npm Cosmos DB server), and the
whole loop through the dev host on the real Functions runtime: a request nested 300 deep, a record
lost with its dead letter, a stream AOAI cuts, each ending as exactly one truthful record."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient
from openai import AzureOpenAI

import function_app
from devhost.host import timer_interval
from devhost.simulator import SimulatorConfig
from parser.handler import handle_batch
from parser.reconcile import reconcile
from shared.adapters.cosmos import CosmosStores, open_cosmos_stores
from shared.settings import Settings
from shared.wiring import build_ports
from testing.factories import exchange
from tests.cosmos_server import KEY, cosmos_endpoint  # noqa: F401 - fixture
from tests.devhost_harness import DevHostGateway, dev_host

CLIENT_KEY = "sk-team-rc-CLIENT-7171"
UPSTREAM_KEY = "upstream-RC-9191"


# ------------------------------------------------------------------------ the reconciler itself
async def test_only_exchanges_with_neither_record_nor_dead_letter_are_announced_again(tmp_path: Path) -> None:
    async with build_ports(Settings.from_env({"SQLITE_PATH": str(tmp_path / "g.db")})) as ports:
        for rid in ("recorded", "dead", "lost", "outage", "outages", "recent"):
            await ports.exchanges.save(exchange(request_id=rid, body={"messages": []}))
        await handle_batch(["recorded"], ports)
        await ports.deadletters.put("dead", "poison exchange: stored exchange is not JSON", "dead")
        # Dead-lettered for an outage: not final, announced again (up to three times).
        await ports.deadletters.put("outage", "record store unavailable: OperationalError: disk I/O error", "x")
        for _ in range(3):
            await ports.deadletters.put("outages", "exchange store unavailable: TimeoutError: ", "x")
        await ports.channel.join()  # nothing pending
        # "recent" was stored a moment ago: make the others ten minutes old.
        with sqlite3.connect(tmp_path / "g.db") as conn:
            conn.execute(
                "UPDATE exchange_items SET created_at = '2020-01-01T00:00:00.000Z' WHERE request_id != 'recent'"
            )
        clock = lambda: time.time()  # noqa: E731
        found = await reconcile(ports, after_seconds=300, lookback_seconds=10 * 365 * 86400, clock=clock)
        assert sorted(found) == ["lost", "outage"]
        batches = ports.channel.batches(max_batch=10, max_wait=0.05)
        batch = await asyncio.wait_for(batches.__anext__(), 5)
        await batches.aclose()
        assert sorted(batch) == ["lost", "outage"]
        result = await handle_batch(batch, ports)
        assert sorted(result.recorded) == ["lost", "outage"]
        assert await reconcile(ports, after_seconds=300, lookback_seconds=10 * 365 * 86400, clock=clock) == []
        # Outside the lookback: left alone.
        assert await reconcile(ports, after_seconds=300, lookback_seconds=60) == []


def test_the_dev_host_runs_the_app_timer_on_its_schedule() -> None:
    assert timer_interval(function_app.RECONCILE_SCHEDULE) == 300
    assert timer_interval("*/10 * * * * *") == 10 and timer_interval("0 0 3 * * *") == 60


@pytest_asyncio.fixture
async def cosmos(cosmos_endpoint: str):  # noqa: F811
    database = f"rc{uuid.uuid4().hex[:10]}"
    async with CosmosClient(cosmos_endpoint, credential=KEY, connection_verify=False) as admin:
        db = await admin.create_database_if_not_exists(database)
        for name, key in {
            "exchanges": "/requestId",
            "records": "/requestId",
            "deadletters": "/requestId",
            "affinity": "/id",
        }.items():
            await db.create_container_if_not_exists(name, partition_key=PartitionKey(key))
        settings = Settings.from_env(
            {"LOG_STORE": "cosmos", "COSMOS_ENDPOINT": cosmos_endpoint, "COSMOS_DATABASE": database}
        )
        stores = open_cosmos_stores(settings, KEY, connection_verify=False)
        try:
            yield stores, db
        finally:
            await stores.close()


async def test_the_cosmos_stores_answer_the_reconcilers_questions(cosmos: tuple[CosmosStores, Any]) -> None:
    stores, db = cosmos
    before = time.time() - 1
    for rid in ("c-recorded", "c-dead", "c-lost"):
        await stores.exchanges.save(exchange(request_id=rid, body={"messages": []}))
    # The server has no transactional batch (RecordStore.add): the record item as `add` writes it.
    await db.get_container_client("records").create_item(
        {"id": "c-recorded", "requestId": "c-recorded", "kind": "record", "record": {"request_id": "c-recorded"}}
    )
    await stores.deadletters.put("c-dead", "reason", "payload")
    stored = await stores.exchanges.stored_between(before, time.time() + 1, 100)
    assert sorted(stored) == ["c-dead", "c-lost", "c-recorded"]
    assert await stores.exchanges.stored_between(before - 3600, before, 100) == []
    assert await stores.records.existing(stored) == {"c-recorded"}
    assert await stores.deadletters.reasons(stored) == {"c-dead": ["reason"]}


# ------------------------------------------------------------------------ through the dev host
class Gateway(DevHostGateway):
    def client(self) -> AzureOpenAI:
        return AzureOpenAI(api_key=CLIENT_KEY, azure_endpoint=self.url, api_version="2024-10-21", max_retries=0)

    def record(self, request_id: str) -> dict[str, Any] | None:
        self.settle()
        return self.call(function_app.ports().records.get(request_id))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory):
    with dev_host(
        tmp_path_factory.mktemp("reconcile"),
        {CLIENT_KEY: {"id": "team-rc", "name": "Team RC", "product": "standard"}},
        {"sim": SimulatorConfig(api_key=UPSTREAM_KEY)},
        env={"RECONCILE_AFTER_SECONDS": "0"},
        gateway=Gateway,
    ) as gateway:
        yield gateway


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_request_nested_300_deep_gets_its_answer_and_exactly_one_record(gw: Gateway) -> None:
    for stream in (False, True):
        raw = gw.client().chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,
            extra_body={"metadata_tree": _nested(300)},
        )
        rid = raw.headers["x-gateway-request-id"]
        if stream:
            assert list(raw.parse())  # every event arrives
        else:
            assert raw.parse().choices[0].message.content
        stored = gw.exchange(rid)
        assert stored is not None and stored.request.body_encoding == "base64"
        record = gw.record(rid)
        assert record is not None and record["status_code"] == 200 and record["deployment"] == "gpt-4o"
        assert gw.published.count(rid) == 1 and gw.emitted[rid] == 1
        assert record["stream"] is stream and record["outcome"] == "complete"


def test_a_record_lost_with_its_dead_letter_comes_back_through_the_timer_function(gw: Gateway) -> None:
    raw = gw.client().chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    rid = raw.headers["x-gateway-request-id"]
    assert gw.record(rid) is not None
    # The outage: the record (and no dead letter) never made it.
    with sqlite3.connect(gw.db) as conn:
        conn.execute("DELETE FROM records WHERE request_id = ?", (rid,))
    assert gw.record(rid) is None
    gw.call(gw.host.run_timers())  # the `reconcile` timer function, invoked through the runtime
    record = gw.record(rid)
    assert record is not None and record["request_id"] == rid
    assert gw.published.count(rid) == 2  # announced by the proxy, then by the reconciler
    gw.call(gw.host.run_timers())
    gw.settle()
    assert gw.published.count(rid) == 2  # nothing left to catch up


def test_a_stream_aoai_cuts_is_recorded_as_upstream_broken(gw: Gateway) -> None:
    with pytest.raises((openai.APIConnectionError, httpx.RemoteProtocolError)):
        stream = gw.client().chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-sim-drop-after": "3", "x-ms-client-request-id": "cut-1"},
        )
        for _ in stream:
            pass
    gw.settle()
    records = [r for r in gw.call(function_app.ports().records.list_records()) if r["outcome"] != "complete"]
    assert [(r["status_code"], r["stream"], r["outcome"]) for r in records] == [(200, True, "upstream_broken")]
