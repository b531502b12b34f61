"""Retention and erasure on the embedded store (SQLite) and on Cosmos DB (the real azure-cosmos SDK
against the npm Cosmos DB protocol server, tests/cosmos_server.py)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from devhost.__main__ import main as devhost_main
from shared.adapters.cosmos import open_cosmos_stores
from shared.adapters.sqlite import SqliteDatabase, SqliteExchangeStore, SqliteRecordStore
from shared.exchange import CapturedRequest, CapturedResponse, Exchange, Identity, Timings, to_items
from shared.privacy.erasure import Subject, anonymize, erase_cosmos, erase_sqlite_file, pseudonym
from shared.privacy.erasure import main as erasure_main
from shared.privacy.policy import DAY, RetentionPolicy
from shared.privacy.retention import purge
from shared.settings import Settings
from tests.cosmos_server import KEY, cosmos_endpoint  # noqa: F401 - fixture

RETENTION = '{"standard": {"exchanges_days": 30, "records_days": 400}, "subscription:team-hr": {"exchanges_days": 1}}'


def exchange(
    rid: str,
    *,
    user: str | None = "u-1",
    sub: str = "team-a",
    product: str = "standard",
    text: str = "Hello from alice@example.com",
    received: str = "2026-12-06T00:00:00.000Z",
) -> Exchange:
    return Exchange(
        request_id=rid,
        request=CapturedRequest(
            "POST",
            "/openai/deployments/gpt-4o/chat/completions",
            {"api-version": "2024-10-21"},
            {"content-type": "application/json"},
            {"messages": [{"role": "user", "content": text}]},
            "json",
            60,
        ),
        response=CapturedResponse(200, {"content-type": "application/json"}, {"choices": []}, "json", 14),
        timings=Timings(received, 1.0, 2.0),
        identity=Identity(sub, sub.title(), product, user, "203.0.113.7"),
    )


def record(ex: Exchange) -> dict[str, Any]:
    return {
        "request_id": ex.request_id,
        "timestamp": ex.timings.received_at,
        "subscription_id": ex.identity.subscription_id,
        "subscription_name": ex.identity.subscription_name,
        "product": ex.identity.product,
        "user_id": ex.identity.user_id,
        "client_ip": ex.identity.client_ip,
        "user_agent": "openai-python/3",
        "prompt_tokens": 9,
        "completion_tokens": 3,
        "total_tokens": 12,
        "cost": 0.0001,
    }


# --- retention --------------------------------------------------------------------------------------


async def test_the_local_purge_follows_each_audiences_retention(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.db")
    exchanges, records = SqliteExchangeStore(db), SqliteRecordStore(db)
    now = datetime.now(UTC)
    old = (now - timedelta(days=40)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    ancient = (now - timedelta(days=500)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    cases = {
        "std-new": exchange("std-new"),
        "std-old": exchange("std-old", received=old),
        "std-ancient": exchange("std-ancient", received=ancient),
        "hr": exchange("hr", sub="team-hr"),
        "other": exchange("other", product="premium", received=old),
    }
    for ex in cases.values():
        await exchanges.save(ex)
        await records.add(record(ex), {"request": ex.request.body})
    policy = RetentionPolicy.parse(RETENTION, exchange_ttl_seconds=7 * DAY)

    # Exchanges are aged from when they were stored: two days on, team-hr's (1 day) has gone.
    report = await db.run(lambda conn: purge(conn, policy, now + timedelta(days=2)))
    assert (report.exchanges, report.details, report.records) == (1, 3, 1)
    assert await exchanges.load("hr") is None and await exchanges.load("std-new") is not None
    # Details go with the exchange retention, records stay for their own.
    assert await records.get_details("std-old") is None and await records.get("std-old") is not None
    assert await records.get_details("std-new") is not None
    assert await records.get("std-ancient") is None  # past the 400 days of records
    assert await records.get_details("other") is None  # premium: EXCHANGE_TTL_SECONDS (7 days) for details

    report = await db.run(lambda conn: purge(conn, policy, now + timedelta(days=31)))
    assert await exchanges.load("std-new") is None and await exchanges.load("other") is None
    await db.close()


async def test_the_sqlite_store_purges_by_itself_when_given_a_policy(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "g.db")
    policy = RetentionPolicy.parse('{"standard": {"exchanges_days": 1}}')
    clock = [datetime.now(UTC)]
    exchanges = SqliteExchangeStore(db, retention=policy, clock=lambda: clock[0])
    await exchanges.save(exchange("a"))
    clock[0] += timedelta(days=2)
    await exchanges.save(exchange("b", product="premium"))  # a save after the purge interval purges
    assert await exchanges.load("a") is None and await exchanges.load("b") is not None
    await db.close()


# --- erasure, SQLite ----------------------------------------------------------------------------


async def _seed_sqlite(path: Path) -> None:
    db = SqliteDatabase(path)
    exchanges, records = SqliteExchangeStore(db), SqliteRecordStore(db)
    for ex in (exchange("r1"), exchange("r2"), exchange("r3", user="u-2"), exchange("r4", user="u-2", sub="team-b")):
        await exchanges.save(ex)
        await records.add(record(ex), {"request": ex.request.body})
    await exchanges.save(exchange("big", text="alice " * 400_000))  # split into base64 items, no record yet
    await db.run(lambda c: c.execute("INSERT INTO deadletters (key, reason, payload) VALUES ('r1', 'x', '{}')"))
    await db.close()


def test_devhost_erase_removes_a_users_exchanges_and_anonymizes_their_records(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    path = tmp_path / "g.db"
    asyncio.run(_seed_sqlite(path))
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "spilled.json").write_bytes(exchange("spilled").to_json())
    (outbox / "other.json").write_bytes(exchange("other", user="u-9").to_json())
    settings = tmp_path / "missing.settings.json"
    monkeypatch.setenv("SQLITE_PATH", str(path))
    monkeypatch.setenv("CAPTURE_OUTBOX_DIR", str(outbox))
    assert devhost_main(["erase", "--settings", str(settings), "--user-id", "u-1", "--salt", "00" * 16]) == 0
    out = capsys.readouterr().out
    assert "exchanges removed:    3" in out and "records anonymized:   2" in out
    assert "dead letters removed: 1" in out and "outbox files removed: 1" in out

    conn = sqlite3.connect(path)
    left = {r[0] for r in conn.execute("SELECT DISTINCT request_id FROM exchange_items")}
    assert left == {"r3", "r4"}
    rows = {r[0]: (json.loads(r[1]), r[2]) for r in conn.execute("SELECT request_id, record, details FROM records")}
    salt = bytes(16)
    for rid in ("r1", "r2"):
        rec, details = rows[rid]
        assert rec["user_id"] == pseudonym("u-1", salt) and rec["client_ip"] is None and rec["user_agent"] is None
        assert rec["total_tokens"] == 12 and rec["cost"] == 0.0001 and details is None  # billing stays
    assert rows["r3"][0]["user_id"] == "u-2" and rows["r3"][1] is not None
    on_disk = b"".join(p.read_bytes() for p in tmp_path.glob("g.db*"))
    assert b'"u-1"' not in on_disk and b"alice@example.com" in on_disk  # u-2's requests stay
    assert conn.execute("SELECT count(*) FROM deadletters").fetchone()[0] == 0
    assert not (outbox / "spilled.json").exists() and (outbox / "other.json").exists()

    assert devhost_main(["erase", "--settings", str(settings), "--subscription", "team-b"]) == 0
    rec = json.loads(conn.execute("SELECT record FROM records WHERE request_id = 'r4'").fetchone()[0])
    assert rec["subscription_id"].startswith("anon-") and rec["subscription_name"] == rec["subscription_id"]
    assert rec["user_id"].startswith("anon-") and "team-b" not in json.dumps(rec)


def test_anonymize_keeps_usage_and_replaces_identity() -> None:
    rec = record(exchange("r"))
    out = anonymize(rec, Subject(user_id="u-1"), b"s")
    assert out["user_id"] == pseudonym("u-1", b"s") != pseudonym("u-1", b"t")
    assert {k: out[k] for k in ("total_tokens", "cost", "subscription_id")} == {
        "total_tokens": 12,
        "cost": 0.0001,
        "subscription_id": "team-a",
    }
    with pytest.raises(ValueError):
        Subject()


# --- Cosmos DB ---------------------------------------------------------------------------------------


@pytest_asyncio.fixture
async def cosmos_db(cosmos_endpoint: str) -> AsyncIterator[tuple[str, str]]:  # noqa: F811
    database = f"priv{uuid.uuid4().hex[:12]}"
    async with CosmosClient(cosmos_endpoint, credential=KEY, connection_verify=False) as admin:
        db = await admin.create_database_if_not_exists(database)
        for name in ("exchanges", "records", "deadletters", "affinity"):
            await db.create_container_if_not_exists(
                name, partition_key=PartitionKey("/id" if name == "affinity" else "/requestId")
            )
    yield cosmos_endpoint, database


async def test_cosmos_items_carry_the_ttl_of_their_audience(cosmos_db: tuple[str, str]) -> None:
    endpoint, database = cosmos_db
    settings = Settings.from_env(
        {
            "LOG_STORE": "cosmos",
            "COSMOS_ENDPOINT": endpoint,
            "COSMOS_DATABASE": database,
            "RETENTION": RETENTION,
            "EXCHANGE_TTL_SECONDS": "3600",
        }
    )
    stores = open_cosmos_stores(settings, KEY, connection_verify=False)
    try:
        await stores.exchanges.save(exchange("std"))
        await stores.exchanges.save(exchange("hr", sub="team-hr"))
        await stores.exchanges.save(exchange("other", product="premium"))
        items = {it["requestId"]: it async for it in stores.exchanges.container.query_items("SELECT * FROM c")}
        assert {rid: it["ttl"] for rid, it in items.items()} == {"std": 30 * DAY, "hr": DAY, "other": 3600}
        assert items["std"]["userId"] == "u-1" and items["std"]["subscriptionId"] == "team-a"
        # The record store writes record and details in one transactional batch, which the protocol
        # server lacks: their TTLs are checked on the items the store builds.
        rec_item, details_item = stores.records.items(record(exchange("std")), {"request": {}})
        assert rec_item["ttl"] == 400 * DAY and details_item["ttl"] == 30 * DAY
        rec_item, details_item = stores.records.items(record(exchange("x", product="premium")), {})
        assert "ttl" not in rec_item and details_item["ttl"] == 3600  # records: the container default
    finally:
        await stores.close()


async def test_cosmos_erasure_with_the_sdk(cosmos_db: tuple[str, str]) -> None:
    endpoint, database = cosmos_db
    settings = Settings.from_env({"LOG_STORE": "cosmos", "COSMOS_ENDPOINT": endpoint, "COSMOS_DATABASE": database})
    stores = open_cosmos_stores(settings, KEY, connection_verify=False)
    try:
        for ex in (exchange("c1"), exchange("c2"), exchange("c3", user="u-2")):
            await stores.exchanges.save(ex)
            for item in stores.records.items(record(ex), {"request": ex.request.body}):
                await stores.records.container.upsert_item(item)
        await stores.exchanges.save(exchange("c4", text="x" * 1_500_000))  # two base64 items
        await stores.deadletters.put("c1", "test", "{}")
    finally:
        await stores.close()
    async with CosmosClient(endpoint, credential=KEY, connection_verify=False) as client:
        db = client.get_database_client(database)
        report = await erase_cosmos(db, Subject(user_id="u-1"), b"salt")
        assert sorted(report.exchanges_removed) == ["c1", "c2", "c4"]
        assert sorted(report.records_anonymized) == ["c1", "c2"] and report.details_removed == 2
        assert report.deadletters_removed == 1
        ex_left = [
            it["requestId"]
            async for it in db.get_container_client("exchanges").query_items("SELECT c.requestId FROM c")
        ]
        assert sorted(set(ex_left)) == ["c3"]
        recs = {it["id"]: it async for it in db.get_container_client("records").query_items("SELECT * FROM c")}
        assert set(recs) == {"c1", "c2", "c3", "c3.details"}
        assert (
            recs["c1"]["record"]["user_id"] == pseudonym("u-1", b"salt") and recs["c1"]["record"]["total_tokens"] == 12
        )
        assert recs["c3"]["record"]["user_id"] == "u-2"


def test_the_azure_erasure_script_runs_against_cosmos(cosmos_db: tuple[str, str], capsys) -> None:
    """`python -m shared.privacy.erasure` as a deployer runs it (here with the emulator key)."""
    endpoint, database = cosmos_db

    async def seed() -> None:
        settings = Settings.from_env({"LOG_STORE": "cosmos", "COSMOS_ENDPOINT": endpoint, "COSMOS_DATABASE": database})
        stores = open_cosmos_stores(settings, KEY, connection_verify=False)
        try:
            await stores.exchanges.save(exchange("s1", sub="team-z"))
            await stores.exchanges.save(exchange("s2", sub="team-y"))
        finally:
            await stores.close()

    asyncio.run(seed())
    argv = ["--endpoint", endpoint, "--database", database, "--key", KEY, "--insecure", "--subscription", "team-z"]
    assert erasure_main(argv) == 0
    out = capsys.readouterr().out
    assert "erasure of subscription 'team-z'" in out and "exchanges removed:    1" in out and "request s1" in out


def test_devhost_purge_applies_the_retention_now(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "g.db"
    old = (datetime.now(UTC) - timedelta(days=3)).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    async def seed() -> None:
        db = SqliteDatabase(path)
        records = SqliteRecordStore(db)
        await records.add(record(exchange("old", received=old)), {"request": {"messages": ["hello"]}})
        await records.add(record(exchange("new")), {"request": {"messages": ["hello"]}})
        await db.close()

    asyncio.run(seed())
    monkeypatch.setenv("SQLITE_PATH", str(path))
    monkeypatch.setenv("RETENTION", '{"standard": {"exchanges_days": 1, "records_days": 2}}')
    assert devhost_main(["purge", "--settings", str(tmp_path / "none.json")]) == 0
    assert capsys.readouterr().out.strip() == "purged 0 exchanges, 0 record details, 1 records"


def test_devhost_erase_with_cosmos_settings_erases_in_the_account(
    cosmos_db: tuple[str, str], capsys, monkeypatch
) -> None:
    """With LOG_STORE=cosmos the same command erases in Cosmos DB (here with the emulator key in
    place of the deployer's `az login` identity)."""
    from devhost import privacy_commands
    from shared.privacy import erasure

    endpoint, database = cosmos_db

    async def seed() -> None:
        settings = Settings.from_env({"LOG_STORE": "cosmos", "COSMOS_ENDPOINT": endpoint, "COSMOS_DATABASE": database})
        stores = open_cosmos_stores(settings, KEY, connection_verify=False)
        try:
            await stores.exchanges.save(exchange("d1", user="u-7"))
        finally:
            await stores.close()

    asyncio.run(seed())
    real = erasure.erase_cosmos_account

    async def with_emulator_key(*args, **kwargs):
        return await real(*args, **kwargs, key=KEY, verify=False)

    monkeypatch.setattr(privacy_commands, "erase_cosmos_account", with_emulator_key)
    for name, value in {"LOG_STORE": "cosmos", "COSMOS_ENDPOINT": endpoint, "COSMOS_DATABASE": database}.items():
        monkeypatch.setenv(name, value)
    assert devhost_main(["erase", "--settings", "none.json", "--user-id", "u-7"]) == 0
    assert "exchanges removed:    1" in capsys.readouterr().out
