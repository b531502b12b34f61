"""The embedded budget store: ledgers in a SQLite table, one `BEGIN IMMEDIATE` transaction per step.

SQLite's write lock is per database file, across processes, so several dev hosts (or app instances)
on one file see one set of totals: a step reads, changes and writes its ledger while every other
writer waits (`busy_timeout`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson

from shared.adapters.sqlite import SqliteDatabase

T = TypeVar("T")

_TABLE = "CREATE TABLE IF NOT EXISTS budget_ledgers (key TEXT PRIMARY KEY, ledger TEXT NOT NULL)"


class SqliteBudgetStore:
    def __init__(self, path: str | Path) -> None:
        # Its own connection and thread: an admission never queues behind a large exchange write.
        self.db = SqliteDatabase(path)
        self._ready = False

    async def apply(self, key: str, fresh: Callable[[], dict[str, Any]], step: Callable[[dict[str, Any]], T]) -> T:
        def _apply(conn: sqlite3.Connection) -> T:
            if not self._ready:
                conn.execute(_TABLE)
                self._ready = True
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT ledger FROM budget_ledgers WHERE key = ?", (key,)).fetchone()
                ledger = orjson.loads(row[0]) if row else fresh()
                before = orjson.dumps(ledger)
                result = step(ledger)
                after = orjson.dumps(ledger)
                if after != before:  # a refusal or a read changes nothing: no write
                    conn.execute(
                        "INSERT INTO budget_ledgers (key, ledger) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET ledger = excluded.ledger",
                        (key, after.decode()),
                    )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self.db.run(_apply)

    async def ledgers(self) -> list[dict[str, Any]]:
        def _all(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            conn.execute(_TABLE)
            return [orjson.loads(row[0]) for row in conn.execute("SELECT ledger FROM budget_ledgers ORDER BY key")]

        return await self.db.run(_all)

    async def close(self) -> None:
        await self.db.close()
