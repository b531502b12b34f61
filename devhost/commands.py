"""The dev host's read-side commands: `records`, `report` and `dashboard` over the SQLite records.

Each reads the same settings file as `serve` (SQLITE_PATH names the database), so a developer can
look at what the running gateway recorded from another terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from devhost.host import load_settings_file
from devhost.usage_report import (
    RECORD_COLUMNS,
    REPORT_COLUMNS,
    format_table,
    grand_total,
    record_row,
    report,
    report_row,
    since_filter,
)
from shared.adapters.sqlite import SqliteDatabase, SqliteExchangeStore, SqliteRecordStore
from shared.exchange import Exchange
from shared.settings import Settings


def database_path(settings_file: str) -> Path:
    """SQLITE_PATH after loading the settings file (the environment wins, as for `serve`)."""
    load_settings_file(Path(settings_file))
    return Settings.from_env().sqlite_path


def read_records(db_path: Path, since: str | None = None) -> list[dict[str, Any]]:
    """The records, oldest first, through the same store the parser writes with."""

    async def read() -> list[dict[str, Any]]:
        db = SqliteDatabase(db_path)
        try:
            return [dict(r) for r in await SqliteRecordStore(db).list_records(since)]
        finally:
            await db.close()

    return asyncio.run(read())


def _missing(db_path: Path) -> int:
    print(
        f"No records database at {db_path}: start the gateway (python -m devhost, or make run), "
        "send a request, then try again.",
        file=sys.stderr,
    )
    return 1


def _database_since(args: argparse.Namespace, example: str = "") -> tuple[Path, str | None] | int:
    """The database and the `--since` filter, or the exit code once the user has been told why not."""
    db_path = database_path(args.settings)
    try:
        since = since_filter(args.since) if args.since else None
    except ValueError:
        print(f"--since: {args.since!r} is not an ISO-8601 date or time{example}", file=sys.stderr)
        return 2
    if not db_path.is_file():
        return _missing(db_path)
    return db_path, since


def _records_since(args: argparse.Namespace, example: str = "") -> tuple[Path, list[dict[str, Any]]] | int:
    """The database and its records from `--since` on, or the exit code once the user has been told why not."""
    found = _database_since(args, example)
    if isinstance(found, int):
        return found
    db_path, since = found
    return db_path, read_records(db_path, since)


def _settings_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default="local.settings.json", help="Core Tools settings file to load")


# --------------------------------------------------------------------------------------- records
def records_arguments(parser: argparse.ArgumentParser) -> None:
    _settings_argument(parser)
    parser.add_argument("--since", help="only records at or after this ISO-8601 date or time (UTC unless it says)")
    parser.add_argument("--json", action="store_true", help="one JSON record per line instead of a table")


def records_command(args: argparse.Namespace) -> int:
    loaded = _records_since(args, example=" (e.g. 2025-09-15 or 2025-09-15T10:00:00Z)")
    if isinstance(loaded, int):
        return loaded
    db_path, records = loaded
    if args.json:
        for record in records:
            print(json.dumps(record, ensure_ascii=False, sort_keys=True))
    else:
        print(format_table(RECORD_COLUMNS, (record_row(r) for r in records)))
        print(f"{len(records)} record(s) in {db_path}")
    return 0


# --------------------------------------------------------------------------------------- report
def report_arguments(parser: argparse.ArgumentParser) -> None:
    _settings_argument(parser)
    parser.add_argument("--since", help="only records at or after this ISO-8601 date or time")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def report_command(args: argparse.Namespace) -> int:
    loaded = _records_since(args)
    if isinstance(loaded, int):
        return loaded
    lines = report(loaded[1])
    if args.json:
        for line in lines:
            print(json.dumps(asdict(line), sort_keys=True))
        return 0
    total = grand_total(lines)
    print(format_table(REPORT_COLUMNS, [report_row(x) for x in lines] + [report_row(total)]))
    if total.uncosted:
        print(
            f"{total.uncosted} request(s) without a cost (unknown model, provisioned or not costed): "
            "their tokens are counted, their cost is not."
        )
    return 0


# --------------------------------------------------------------------------------------- dashboard
def dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    _settings_argument(parser)
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7072, help="port (default 7072)")


def dashboard_command(args: argparse.Namespace) -> int:
    from devhost.dashboard import serve_dashboard

    db_path = database_path(args.settings)
    if not db_path.is_file():
        return _missing(db_path)
    serve_dashboard(db_path, args.host, args.port)
    return 0


# --------------------------------------------------------------------------------------- exchanges
def exchanges_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    export = actions.add_parser(
        "export", help="write stored exchanges as JSON lines (input for python -m parser replay)"
    )
    _settings_argument(export)
    export.add_argument("--since", help="only exchanges stored at or after this ISO-8601 date or time")
    export.add_argument("--subscription", help="only exchanges of this subscription id")
    export.add_argument("--out", help="file to write (default: standard output)")


def exchanges_command(args: argparse.Namespace) -> int:
    found = _database_since(args)
    if isinstance(found, int):
        return found
    db_path, since = found
    exchanges = asyncio.run(export_exchanges(db_path, since, args.subscription))
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115 - stdout is not ours to close
    try:
        for exchange in exchanges:
            out.write(exchange.to_json().decode("utf-8") + "\n")
    finally:
        if args.out:
            out.close()
    print(f"{len(exchanges)} exchange(s) from {db_path}", file=sys.stderr)
    return 0


async def export_exchanges(db_path: Path, since: str | None, subscription: str | None) -> list[Exchange]:
    """Stored exchanges, oldest first, through the store the proxy writes with (pieces joined)."""
    db = SqliteDatabase(db_path)
    try:

        def ids(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT request_id FROM exchange_items WHERE seq = 0 AND (? IS NULL OR created_at >= ?) ORDER BY created_at",
                (since, since),
            ).fetchall()
            return [row[0] for row in rows]

        store = SqliteExchangeStore(db)
        found = []
        for request_id in await db.run(ids):
            exchange = await store.load(request_id)
            if exchange is not None and (subscription is None or exchange.identity.subscription_id == subscription):
                found.append(exchange)
        return found
    finally:
        await db.close()
