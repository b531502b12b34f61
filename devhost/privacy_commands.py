"""`python -m devhost erase` and `python -m devhost purge`: erasure by data subject and the
retention purge, on the dev host's SQLite file (SQLITE_PATH, after the settings file)."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path

from devhost.commands import database_path
from shared.adapters.sqlite import SqliteDatabase
from shared.privacy.erasure import add_subject_arguments, erase_sqlite_file, salt_from, subject_from
from shared.privacy.policy import RetentionPolicy
from shared.privacy.retention import purge
from shared.settings import Settings


def erase_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings", default="local.settings.json", help="settings file (SQLITE_PATH, CAPTURE_OUTBOX_DIR)"
    )
    add_subject_arguments(parser)


def erase_command(args: argparse.Namespace) -> int:
    db_path = database_path(args.settings)
    if not db_path.is_file():
        print(f"No database at {db_path}: nothing stored, nothing to erase.")
        return 0
    outbox = os.environ.get("CAPTURE_OUTBOX_DIR")
    report = erase_sqlite_file(db_path, subject_from(args), salt_from(args), Path(outbox) if outbox else None)
    print("\n".join(report.lines()))
    return 0


def purge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default="local.settings.json", help="settings file (SQLITE_PATH, RETENTION)")


def purge_command(args: argparse.Namespace) -> int:
    db_path = database_path(args.settings)
    settings = Settings.from_env()
    policy = RetentionPolicy.parse(settings.retention_json, settings.exchange_ttl_seconds)

    async def run() -> str:
        db = SqliteDatabase(db_path)
        try:
            return (await db.run(lambda conn: purge(conn, policy))).line()
        finally:
            await db.close()

    print(asyncio.run(run()))
    return 0
