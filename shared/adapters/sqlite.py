"""The embedded stores: one SQLite file (WAL) behind the store ports, for the dev host and tests.

stdlib `sqlite3` is blocking, so every call runs on ONE dedicated worker thread that owns the only
connection: the event loop never waits on disk, and writes never contend for the database lock.
Each `save`/`add` is one transaction. Table layout is fixed by the project guide (see GUIDE.md).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from shared.exchange import Exchange, from_items, to_items, utc_now_iso
from shared.ports import UsageRecord

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exchange_items (
    request_id TEXT, seq INTEGER, count INTEGER, item TEXT, created_at TEXT,
    PRIMARY KEY (request_id, seq));
CREATE TABLE IF NOT EXISTS records (
    request_id TEXT PRIMARY KEY, timestamp TEXT NOT NULL, record TEXT NOT NULL, details TEXT);
CREATE INDEX IF NOT EXISTS records_timestamp ON records (timestamp);
CREATE TABLE IF NOT EXISTS deadletters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT, reason TEXT, payload TEXT, created_at TEXT);
CREATE TABLE IF NOT EXISTS affinity (response_id TEXT PRIMARY KEY, backend TEXT, expires_at REAL);
CREATE INDEX IF NOT EXISTS affinity_expires ON affinity (expires_at);
CREATE TABLE IF NOT EXISTS owners (
    kind TEXT, id TEXT, owner TEXT NOT NULL, created_at TEXT, PRIMARY KEY (kind, id));
"""


class SqliteDatabase:
    """One database file, one connection, one worker thread. Shared by the four SQLite stores."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the worker thread and return its result."""
        if self._closed:
            raise RuntimeError(f"SQLite database {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._open()
        return fn(self._conn)

    def _open(self) -> sqlite3.Connection:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit (`with transaction(conn)`), one per write.
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against application crashes in WAL mode; only an OS crash can lose
        # the last transactions, acceptable for a local log store and much faster than FULL.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        return conn

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await loop.run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=False)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


class SqliteExchangeStore:
    """Exchanges as `shared.exchange.to_items` items, one row per item, one transaction per save."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def save(self, exchange: Exchange) -> None:
        def _save(conn: sqlite3.Connection) -> None:
            # Serializing a 5 MB exchange takes milliseconds: do it here, off the event loop.
            items = to_items(exchange)
            now = utc_now_iso()
            # JSON bytes bound as TEXT by SQLite itself: no Python str copy (4 bytes per character
            # once a stream holds an emoji), which made 64 streams ending at once cost ~40 MB.
            rows = [(exchange.request_id, it["seq"], it["count"], orjson.dumps(it), now) for it in items]
            with _Transaction(conn):
                # A re-save replaces the exchange whole, even when it now has fewer items.
                conn.execute("DELETE FROM exchange_items WHERE request_id = ?", (exchange.request_id,))
                conn.executemany(
                    "INSERT INTO exchange_items (request_id, seq, count, item, created_at) VALUES (?, ?, ?, CAST(? AS TEXT), ?)",
                    rows,
                )

        await self.db.run(_save)

    async def load(self, request_id: str) -> Exchange | None:
        def _load(conn: sqlite3.Connection) -> Exchange | None:
            rows = conn.execute(
                "SELECT item FROM exchange_items WHERE request_id = ? ORDER BY seq", (request_id,)
            ).fetchall()
            return from_items([orjson.loads(r[0]) for r in rows]) if rows else None

        return await self.db.run(_load)


class SqliteRecordStore:
    """Usage records, with the normalized request and consolidated response in `details`."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def add(self, record: UsageRecord, details: Mapping[str, Any]) -> bool:
        def _add(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT OR IGNORE INTO records (request_id, timestamp, record, details) VALUES (?, ?, ?, ?)",
                (record["request_id"], record["timestamp"], _dumps(record), _dumps(dict(details))),
            )
            return cur.rowcount == 1

        return await self.db.run(_add)

    async def get(self, request_id: str) -> UsageRecord | None:
        def _get(conn: sqlite3.Connection) -> UsageRecord | None:
            row = conn.execute("SELECT record FROM records WHERE request_id = ?", (request_id,)).fetchone()
            return orjson.loads(row[0]) if row else None

        return await self.db.run(_get)

    async def get_details(self, request_id: str) -> dict[str, Any] | None:
        def _get(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute("SELECT details FROM records WHERE request_id = ?", (request_id,)).fetchone()
            return orjson.loads(row[0]) if row and row[0] is not None else None

        return await self.db.run(_get)

    async def list_records(self, since: str | None = None) -> list[UsageRecord]:
        """Records ordered by timestamp, those at or after `since` (ISO-8601 UTC) when given."""

        def _list(conn: sqlite3.Connection) -> list[UsageRecord]:
            if since is None:
                rows = conn.execute("SELECT record FROM records ORDER BY timestamp, request_id").fetchall()
            else:
                rows = conn.execute(
                    "SELECT record FROM records WHERE timestamp >= ? ORDER BY timestamp, request_id", (since,)
                ).fetchall()
            return [orjson.loads(r[0]) for r in rows]

        return await self.db.run(_list)


class SqliteDeadLetterStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def put(self, key: str, reason: str, payload: str) -> None:
        def _put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO deadletters (key, reason, payload, created_at) VALUES (?, ?, ?, ?)",
                (key, reason, payload, utc_now_iso()),
            )

        await self.db.run(_put)

    async def list_letters(self) -> list[dict[str, Any]]:
        """Every dead letter, oldest first: {"id", "key", "reason", "payload", "created_at"}."""

        def _list(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT id, key, reason, payload, created_at FROM deadletters ORDER BY id").fetchall()
            return [dict(zip(("id", "key", "reason", "payload", "created_at"), r, strict=False)) for r in rows]

        return await self.db.run(_list)


class SqliteAffinityStore:
    """Response id -> backend with an expiry; expired rows are ignored, and purged now and then."""

    #: Purge expired rows once every this many `remember` calls (keeps the table small, cheaply).
    PURGE_EVERY = 500

    def __init__(self, db: SqliteDatabase, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        self._writes = 0

    async def remember(self, response_id: str, backend: str, ttl_seconds: int) -> None:
        now = self._clock()
        self._writes += 1
        purge = self._writes % self.PURGE_EVERY == 0

        def _remember(conn: sqlite3.Connection) -> None:
            with _Transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO affinity (response_id, backend, expires_at) VALUES (?, ?, ?)",
                    (response_id, backend, now + ttl_seconds),
                )
                if purge:
                    conn.execute("DELETE FROM affinity WHERE expires_at <= ?", (now,))

        await self.db.run(_remember)

    async def lookup(self, response_id: str) -> str | None:
        now = self._clock()

        def _lookup(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT backend FROM affinity WHERE response_id = ? AND expires_at > ?", (response_id, now)
            ).fetchone()
            return row[0] if row else None

        return await self.db.run(_lookup)


class SqliteOwnershipStore:
    """(kind, id) -> owning subscription; the first claim stands, so an id is never handed over."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    async def claim(self, kind: str, object_id: str, owner: str) -> None:
        def _claim(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO owners (kind, id, owner, created_at) VALUES (?, ?, ?, ?)",
                (kind, object_id, owner, utc_now_iso()),
            )

        await self.db.run(_claim)

    async def owner(self, kind: str, object_id: str) -> str | None:
        def _owner(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT owner FROM owners WHERE kind = ? AND id = ?", (kind, object_id)).fetchone()
            return row[0] if row else None

        return await self.db.run(_owner)
