"""`python -m devhost erase` and `python -m devhost purge`: erasure by data subject and the
retention purge, on the store the settings file names: the dev host's SQLite file (SQLITE_PATH),
or with LOG_STORE=cosmos the Cosmos DB account (COSMOS_ENDPOINT, your `az login` identity)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from devhost.commands import database_path
from proxy.capture import default_outbox_dir
from shared.adapters.sqlite import SqliteDatabase
from shared.privacy.erasure import (
    add_subject_arguments,
    erase_cosmos_account,
    erase_sqlite_file,
    salt_from,
    subject_from,
)
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
    settings = Settings.from_env()
    if settings.log_store == "cosmos":
        containers = {
            "exchanges": settings.cosmos_exchanges_container,
            "records": settings.cosmos_records_container,
            "deadletters": settings.cosmos_deadletters_container,
        }
        report = asyncio.run(
            erase_cosmos_account(
                settings.cosmos_endpoint or "",
                settings.cosmos_database,
                subject_from(args),
                salt_from(args),
                containers=containers,
            )
        )
    elif not db_path.is_file():
        print(f"No database at {db_path}: nothing stored, nothing to erase.")
        return 0
    else:
        outbox = Path(settings.capture_outbox_dir) if settings.capture_outbox_dir else default_outbox_dir()
        report = erase_sqlite_file(db_path, subject_from(args), salt_from(args), outbox)
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
