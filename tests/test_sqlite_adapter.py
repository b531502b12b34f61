import asyncio
import base64
import os
import sqlite3

import pytest

from shared.adapters.sqlite import (
    SqliteAffinityStore,
    SqliteDatabase,
    SqliteDeadLetterStore,
    SqliteExchangeStore,
    SqliteRecordStore,
)
from shared.exchange import CapturedRequest, CapturedResponse, Exchange, Timings, encode_body


def make_exchange(
    rid: str, body: bytes = b'{"messages": [{"role": "user", "content": "hi"}]}', content_type: str = "application/json"
) -> Exchange:
    value, encoding = encode_body(body, content_type)
    return Exchange(
        request_id=rid,
        request=CapturedRequest(
            method="POST",
            path="/openai/deployments/gpt-4o/chat/completions",
            query={"api-version": "2024-10-21"},
            headers={"content-type": content_type},
            body=value,
            body_encoding=encoding,
            body_bytes=len(body),
        ),
        timings=Timings(received_at="2026-11-27T04:00:00.000Z", upstream_first_byte_ms=3.0, last_byte_ms=9.0),
        response=CapturedResponse(
            status=200, headers={"content-type": "text/event-stream"}, sse='data: {"choices": []}\n\ndata: [DONE]\n\n'
        ),
        backend="b1",
    )


def record(rid: str, ts: str, **extra) -> dict:
    return {"request_id": rid, "timestamp": ts, "prompt_tokens": 3, **extra}


@pytest.fixture
async def db(tmp_path):
    database = SqliteDatabase(tmp_path / "sub" / "gateway.db")
    yield database
    await database.close()


async def test_small_exchange_round_trip_and_file_is_wal(db):
    store = SqliteExchangeStore(db)
    ex = make_exchange("rid-small")
    await store.save(ex)
    assert await store.load("rid-small") == ex
    assert await store.load("missing") is None
    # Items are JSON text (readable with any SQLite tool), though bound from bytes.
    kind = await db.run(
        lambda c: c.execute("SELECT typeof(item) FROM exchange_items WHERE request_id = 'rid-small'").fetchone()[0]
    )
    assert kind == "text"
    mode = await db.run(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
    assert mode == "wal"
    assert db.path.exists()


async def test_five_megabyte_exchange_is_split_and_rebuilt_whole(db):
    store = SqliteExchangeStore(db)
    audio = os.urandom(5 * 1024 * 1024)
    ex = make_exchange("rid-big", audio, "multipart/form-data; boundary=x")
    await store.save(ex)
    rows = await db.run(
        lambda c: c.execute(
            "SELECT seq, count, length(item) FROM exchange_items WHERE request_id = ? ORDER BY seq", ("rid-big",)
        ).fetchall()
    )
    assert len(rows) > 5  # 5 MB of base64 in <= 1 MB items
    assert [r[0] for r in rows] == list(range(len(rows)))
    assert all(r[1] == len(rows) for r in rows)
    assert all(r[2] <= 1_000_000 for r in rows)
    loaded = await store.load("rid-big")
    assert loaded == ex
    assert base64.b64decode(loaded.request.body["base64"]) == audio


async def test_resave_replaces_all_items(db):
    store = SqliteExchangeStore(db)
    await store.save(make_exchange("rid", os.urandom(3_000_000), "application/octet-stream"))
    small = make_exchange("rid")
    await store.save(small)
    assert await store.load("rid") == small
    n = await db.run(lambda c: c.execute("SELECT count(*) FROM exchange_items WHERE request_id='rid'").fetchone()[0])
    assert n == 1


async def test_many_concurrent_saves_all_land(db):
    store = SqliteExchangeStore(db)
    exchanges = [make_exchange(f"rid-{i}") for i in range(200)]
    exchanges.append(make_exchange("rid-big", os.urandom(2_500_000), "application/octet-stream"))
    await asyncio.gather(*(store.save(ex) for ex in exchanges))
    loaded = await asyncio.gather(*(store.load(ex.request_id) for ex in exchanges))
    assert loaded == exchanges


async def test_large_save_does_not_block_the_event_loop(db):
    store = SqliteExchangeStore(db)
    ex = make_exchange("rid-5mb", os.urandom(5 * 1024 * 1024), "application/octet-stream")
    ticks = 0
    stop = asyncio.Event()

    async def ticker():
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await store.save(ex)
    await store.load("rid-5mb")
    stop.set()
    await task
    # The loop kept running other tasks while the save and load were on the worker thread.
    assert ticks - before > 10


async def test_records_are_idempotent_and_listed_by_time(db):
    store = SqliteRecordStore(db)
    assert await store.add(record("b", "2026-11-27T04:00:02.000Z"), {"request": {"x": 1}}) is True
    assert await store.add(record("a", "2026-11-27T04:00:01.000Z"), {}) is True
    assert await store.add(record("b", "2026-11-27T05:00:00.000Z", prompt_tokens=99), {"other": 1}) is False
    assert await store.get("b") == record("b", "2026-11-27T04:00:02.000Z")
    assert await store.get_details("b") == {"request": {"x": 1}}
    assert await store.get("zzz") is None
    assert [r["request_id"] for r in await store.list_records()] == ["a", "b"]
    assert [r["request_id"] for r in await store.list_records(since="2026-11-27T04:00:02.000Z")] == ["b"]


async def test_concurrent_duplicate_adds_yield_one_record(db):
    store = SqliteRecordStore(db)
    results = await asyncio.gather(*(store.add(record("dup", "2026-11-27T04:00:00.000Z"), {}) for _ in range(20)))
    assert results.count(True) == 1 and results.count(False) == 19


async def test_dead_letters_keep_key_reason_payload(db):
    store = SqliteDeadLetterStore(db)
    await store.put("rid-1", "exchange missing after 3 tries", "rid-1")
    await store.put("?", "unreadable event body", "\x00\xff")
    letters = await store.list_letters()
    assert [(d["key"], d["reason"], d["payload"]) for d in letters] == [
        ("rid-1", "exchange missing after 3 tries", "rid-1"),
        ("?", "unreadable event body", "\x00\xff"),
    ]
    assert all(d["created_at"].endswith("Z") for d in letters)


async def test_affinity_expires_after_ttl(db):
    now = [1000.0]
    store = SqliteAffinityStore(db, clock=lambda: now[0])
    await store.remember("resp_1", "eastus", 60)
    assert await store.lookup("resp_1") == "eastus"
    assert await store.lookup("resp_2") is None
    now[0] += 59
    assert await store.lookup("resp_1") == "eastus"
    now[0] += 2
    assert await store.lookup("resp_1") is None
    await store.remember("resp_1", "westus", 60)  # remembering again renews
    assert await store.lookup("resp_1") == "westus"


async def test_affinity_purges_expired_rows(db):
    now = [0.0]
    store = SqliteAffinityStore(db, clock=lambda: now[0])
    store.PURGE_EVERY = 3
    await store.remember("old", "a", 10)
    now[0] = 100
    await store.remember("new1", "b", 10)
    await store.remember("new2", "b", 10)  # third write purges
    rows = await db.run(lambda c: c.execute("SELECT response_id FROM affinity ORDER BY response_id").fetchall())
    assert rows == [("new1",), ("new2",)]


async def test_data_survives_reopen_and_tables_match_the_guide(tmp_path):
    path = tmp_path / "g.db"
    db = SqliteDatabase(path)
    await SqliteRecordStore(db).add(record("r", "2026-11-27T04:00:00.000Z"), {})
    await db.close()
    with pytest.raises(RuntimeError):
        await db.run(lambda c: None)
    conn = sqlite3.connect(path)
    cols = {
        t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")]
        for t in ("exchange_items", "records", "deadletters", "affinity")
    }
    conn.close()
    assert cols == {
        "exchange_items": ["request_id", "seq", "count", "item", "created_at"],
        "records": ["request_id", "timestamp", "record", "details"],
        "deadletters": ["id", "key", "reason", "payload", "created_at"],
        "affinity": ["response_id", "backend", "expires_at"],
    }
    db2 = SqliteDatabase(path)
    assert (await SqliteRecordStore(db2).get("r"))["request_id"] == "r"
    await db2.close()


async def test_all_calls_run_on_one_worker_thread(db):
    import threading

    names = await asyncio.gather(*(db.run(lambda c: threading.current_thread().name) for _ in range(20)))
    assert len(set(names)) == 1 and names[0].startswith("sqlite")
    assert names[0] != threading.current_thread().name


async def test_concurrent_writes_share_batches_and_a_failing_write_spares_the_others(tmp_path, monkeypatch):
    db = SqliteDatabase(tmp_path / "batch.db")
    batches: list[int] = []
    original = db._write_batch

    def counting(fns):
        batches.append(len(fns))
        return original(fns)

    monkeypatch.setattr(db, "_write_batch", counting)
    await db.run(lambda c: c.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)"))

    def insert(k: int):
        def _insert(conn):
            if k == 13:
                raise ValueError("unlucky")
            conn.execute("INSERT INTO t (k) VALUES (?)", (k,))
            return k

        return _insert

    results = await asyncio.gather(*(db.write(insert(k)) for k in range(40)), return_exceptions=True)
    assert [r for r in results if isinstance(r, Exception)][0].args == ("unlucky",)
    assert [r for r in results if not isinstance(r, Exception)] == [k for k in range(40) if k != 13]
    rows = await db.run(lambda c: [r[0] for r in c.execute("SELECT k FROM t ORDER BY k")])
    assert rows == [k for k in range(40) if k != 13]
    assert sum(batches) == 40 and len(batches) < 40  # one hand-off per batch, not per write
    await db.close()


async def test_close_finishes_accepted_writes(tmp_path):
    db = SqliteDatabase(tmp_path / "close.db")
    await db.run(lambda c: c.execute("CREATE TABLE t (k INTEGER)"))
    writes = [
        asyncio.ensure_future(db.write(lambda c, k=k: c.execute("INSERT INTO t VALUES (?)", (k,)))) for k in range(5)
    ]
    await asyncio.sleep(0)
    await db.close()
    await asyncio.gather(*writes)
    again = SqliteDatabase(tmp_path / "close.db")
    assert await again.run(lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]) == 5
    await again.close()
