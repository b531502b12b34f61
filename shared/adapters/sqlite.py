"""The embedded stores: one SQLite file (WAL) behind the store ports, for the dev host and tests.

stdlib `sqlite3` is blocking, so every call runs on ONE dedicated worker thread that owns the only
connection: the event loop never waits on disk, and writes never contend for the database lock.
Writes are batched (`SqliteDatabase.write`): the writes that arrive while one batch is on the worker
go together in the next, one executor hop and one transaction per batch, each write in its own
savepoint so one that fails leaves the others committed. Under load that is one hand-off per
batch rather than one per request; alone, a write still runs at once.

One module because every store shares the one connection, worker thread and write batch; each
store class is a few queries.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import orjson

from shared.errors import PoisonExchange
from shared.exchange import Exchange, from_items, to_item_rows, utc_now_iso
from shared.ports import UsageRecord
from shared.privacy.policy import RetentionPolicy
from shared.privacy.retention import purge

T = TypeVar("T")
log = logging.getLogger(__name__)

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
CREATE TABLE IF NOT EXISTS response_cache (key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS response_cache_expires ON response_cache (expires_at);
CREATE TABLE IF NOT EXISTS owners (
    kind TEXT, id TEXT, owner TEXT NOT NULL, created_at TEXT, PRIMARY KEY (kind, id));
"""


#: Writes in one transaction at most (see `SqliteDatabase.write`).
MAX_BATCH = 64


class SqliteDatabase:
    """One database file, one connection, one worker thread. Shared by the four SQLite stores."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._writing = False

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the worker thread and return its result."""
        if self._closed:
            raise RuntimeError(f"SQLite database {self.path} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn)

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` inside the next write batch's transaction and return its result."""
        if self._closed:
            raise RuntimeError(f"SQLite database {self.path} is closed")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, future))
        if not self._writing:
            self._start_batch()
        return await future

    def _start_batch(self) -> None:
        # At most MAX_BATCH writes a transaction: after an outage the backlog goes in bounded steps,
        # so the exchanges being serialized at once (and the memory for them) stay bounded too.
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._writing = True
        done = asyncio.get_running_loop().run_in_executor(self._executor, self._write_batch, [fn for fn, _ in batch])

        def settle(outcome: asyncio.Future[list[tuple[bool, Any]]]) -> None:
            self._writing = False
            error = outcome.exception() if not outcome.cancelled() else asyncio.CancelledError()
            results = outcome.result() if error is None else [(False, error)] * len(batch)
            for (_, future), (ok, value) in zip(batch, results, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            if self._pending and not self._closed:
                self._start_batch()

        done.add_done_callback(settle)

    def _write_batch(self, fns: list[Callable[[sqlite3.Connection], Any]]) -> list[tuple[bool, Any]]:
        conn = self._call(lambda c: c)
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for fn in fns:
                conn.execute("SAVEPOINT write")
                try:
                    results.append((True, fn(conn)))
                except Exception as exc:  # this write only; the batch goes on
                    conn.execute("ROLLBACK TO write")
                    results.append((False, exc))
                conn.execute("RELEASE write")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = self._open()
        return fn(self._conn)

    def _open(self) -> sqlite3.Connection:
        if str(self.path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are explicit, one per write batch (`_write_batch`).
        conn = sqlite3.connect(self.path, isolation_level=None)
        # 16 KB pages (a new file only): a 128 KB exchange is 8 overflow pages, not 32; its write
        # costs about a third less CPU, and a small row about the same as with 4 KB pages.
        conn.execute("PRAGMA page_size=16384")
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
        while self._writing or self._pending:  # writes already accepted are finished first
            if not self._writing:
                self._start_batch()
            await asyncio.sleep(0.001)
        self._closed = True
        loop = asyncio.get_running_loop()

        def _close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await loop.run_in_executor(self._executor, _close)
        self._executor.shutdown(wait=False)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode("utf-8")


class SqliteExchangeStore:
    """Exchanges as `shared.exchange.to_item_rows` items, one row per item, one transaction per save.

    Given a retention policy, a save purges what is past its retention (shared/privacy/retention.py)
    once every PURGE_INTERVAL: the embedded stand-in for Cosmos DB's item TTLs."""

    PURGE_INTERVAL = timedelta(minutes=10)

    def __init__(
        self,
        db: SqliteDatabase,
        *,
        retention: RetentionPolicy | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.db = db
        self.retention = retention
        self._clock = clock
        self._last_purge = clock()

    async def save(self, exchange: Exchange) -> None:
        def _save(conn: sqlite3.Connection) -> None:
            # Serializing a 5 MB exchange takes milliseconds: do it here, off the event loop.
            now = utc_now_iso()
            # JSON bytes bound as TEXT by SQLite itself: no Python str copy (4 bytes per character
            # once a stream holds an emoji), which made 64 streams ending at once cost ~40 MB.
            rows = [(exchange.request_id, seq, count, item, now) for seq, count, item in to_item_rows(exchange)]
            # A re-save replaces the exchange whole, even when it now has fewer items.
            conn.execute("DELETE FROM exchange_items WHERE request_id = ?", (exchange.request_id,))
            conn.executemany(
                "INSERT INTO exchange_items (request_id, seq, count, item, created_at) VALUES (?, ?, ?, CAST(? AS TEXT), ?)",
                rows,
            )
            if policy is not None:
                log.info("retention: %s", purge(conn, policy, moment).line())

        moment = self._clock()
        policy = None
        if self.retention is not None and moment - self._last_purge >= self.PURGE_INTERVAL:
            policy, self._last_purge = self.retention, moment
        await self.db.write(_save)

    async def load(self, request_id: str) -> Exchange | None:
        def _load(conn: sqlite3.Connection) -> Exchange | None:
            rows = conn.execute(
                "SELECT item FROM exchange_items WHERE request_id = ? ORDER BY seq", (request_id,)
            ).fetchall()
            if not rows:
                return None
            try:
                items = [orjson.loads(r[0]) for r in rows]
            except orjson.JSONDecodeError as exc:
                raise PoisonExchange(f"stored exchange is not JSON: {exc}") from exc
            return from_items(items)

        return await self.db.run(_load)

    async def stored_between(self, since: float, until: float, limit: int) -> list[str]:
        low, high = _iso(since), _iso(until)

        def _ids(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT request_id FROM exchange_items WHERE seq = 0 AND created_at >= ? AND created_at < ?"
                " ORDER BY created_at LIMIT ?",
                (low, high, limit),
            ).fetchall()
            return [r[0] for r in rows]

        return await self.db.run(_ids)


def _iso(epoch: float) -> str:
    """Epoch seconds in the stores' timestamp form (`utc_now_iso`), so that text order is time order."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _existing(conn: sqlite3.Connection, table: str, column: str, keys: Sequence[str]) -> set[str]:
    found: set[str] = set()
    keys = list(dict.fromkeys(keys))
    for start in range(0, len(keys), 500):  # SQLite binds at most 999 parameters per statement
        part = keys[start : start + 500]
        marks = ",".join("?" * len(part))
        found.update(r[0] for r in conn.execute(f"SELECT {column} FROM {table} WHERE {column} IN ({marks})", part))
    return found


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

        return await self.db.write(_add)

    async def get(self, request_id: str) -> UsageRecord | None:
        def _get(conn: sqlite3.Connection) -> UsageRecord | None:
            row = conn.execute("SELECT record FROM records WHERE request_id = ?", (request_id,)).fetchone()
            return orjson.loads(row[0]) if row else None

        return await self.db.run(_get)

    async def existing(self, request_ids: Sequence[str]) -> set[str]:
        return await self.db.run(lambda conn: _existing(conn, "records", "request_id", request_ids))

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

        await self.db.write(_put)

    async def reasons(self, keys: Sequence[str]) -> dict[str, list[str]]:
        def _reasons(conn: sqlite3.Connection) -> dict[str, list[str]]:
            found: dict[str, list[str]] = {}
            wanted = list(dict.fromkeys(keys))
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                rows = conn.execute(
                    f"SELECT key, reason FROM deadletters WHERE key IN ({','.join('?' * len(part))}) ORDER BY id", part
                )
                for key, reason in rows:
                    found.setdefault(key, []).append(reason)
            return found

        return await self.db.run(_reasons)

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
            conn.execute(
                "INSERT OR REPLACE INTO affinity (response_id, backend, expires_at) VALUES (?, ?, ?)",
                (response_id, backend, now + ttl_seconds),
            )
            if purge:
                conn.execute("DELETE FROM affinity WHERE expires_at <= ?", (now,))

        await self.db.write(_remember)

    async def lookup(self, response_id: str) -> str | None:
        now = self._clock()

        def _lookup(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT backend FROM affinity WHERE response_id = ? AND expires_at > ?", (response_id, now)
            ).fetchone()
            return row[0] if row else None

        return await self.db.run(_lookup)


class SqliteResponseCache:
    """Exact response cache entries with an expiry: expired rows are never returned, and are purged
    on every `PURGE_EVERY`-th write, so the table holds at most about one TTL's worth of answers."""

    PURGE_EVERY = 100

    def __init__(self, db: SqliteDatabase, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        self._writes = 0

    async def get(self, key: str) -> bytes | None:
        now = self._clock()

        def _get(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM response_cache WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            return bytes(row[0]) if row else None

        return await self.db.run(_get)

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        now = self._clock()
        self._writes += 1
        purge = self._writes % self.PURGE_EVERY == 0

        def _put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO response_cache (key, value, expires_at) VALUES (?, ?, ?)",
                (key, value, now + ttl_seconds),
            )
            if purge:
                conn.execute("DELETE FROM response_cache WHERE expires_at <= ?", (now,))

        await self.db.write(_put)


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

        await self.db.write(_claim)

    async def owner(self, kind: str, object_id: str) -> str | None:
        def _owner(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT owner FROM owners WHERE kind = ? AND id = ?", (kind, object_id)).fetchone()
            return row[0] if row else None

        return await self.db.run(_owner)
