"""Erasure by data subject: every stored exchange of a user (or subscription) removed, their usage
records kept for billing with the identity replaced by a salted hash and the content (details) gone.

The same steps for both stores: `erase_sqlite` (the dev host's file: `python -m devhost erase`) and
`erase_cosmos` (Azure, with the deployer's identity: `python -m shared.privacy.erasure`). Dead
letters of the same requests go too (they can hold a record or an event). What was done is
returned as an `ErasureReport`, which the commands print.

The salt is random per run unless given: hashes from one run can be summed per subject, and no
one can recompute them from a user id afterwards. Application Insights keeps its own copy of the
usage events; docs/privacy.md says how to purge it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import secrets
import sqlite3
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shared.exchange import Exchange, from_items


@dataclass(frozen=True, slots=True)
class Subject:
    """Whose data: a user id (APIM's `x-gateway-user-id`) or a subscription id."""

    user_id: str | None = None
    subscription_id: str | None = None

    def __post_init__(self) -> None:
        if (self.user_id is None) == (self.subscription_id is None):
            raise ValueError("name exactly one of user_id and subscription_id")

    def matches(self, user_id: Any, subscription_id: Any) -> bool:
        if self.user_id is not None:
            return user_id == self.user_id
        return subscription_id == self.subscription_id

    def __str__(self) -> str:
        return f"user {self.user_id!r}" if self.user_id is not None else f"subscription {self.subscription_id!r}"


@dataclass(slots=True)
class ErasureReport:
    subject: str
    exchanges_removed: list[str] = field(default_factory=list)
    records_anonymized: list[str] = field(default_factory=list)
    details_removed: int = 0
    deadletters_removed: int = 0
    outbox_files_removed: int = 0

    def lines(self) -> list[str]:
        return [
            f"erasure of {self.subject}",
            f"  exchanges removed:    {len(self.exchanges_removed)}",
            f"  records anonymized:   {len(self.records_anonymized)}",
            f"  record details removed: {self.details_removed}",
            f"  dead letters removed: {self.deadletters_removed}",
            f"  outbox files removed: {self.outbox_files_removed}",
            *(f"  request {rid}" for rid in sorted(set(self.exchanges_removed) | set(self.records_anonymized))),
        ]


def pseudonym(value: str, salt: bytes) -> str:
    return "anon-" + hmac.new(salt, value.encode("utf-8"), hashlib.sha256).hexdigest()[:24]


def anonymize(record: Mapping[str, Any], subject: Subject, salt: bytes) -> dict[str, Any]:
    """The record with who-called replaced: usage, cost, timings and model stay for billing."""
    out = dict(record)
    if out.get("user_id") is not None:
        out["user_id"] = pseudonym(str(out["user_id"]), salt)
    if subject.subscription_id is not None:
        out["subscription_id"] = pseudonym(str(out.get("subscription_id")), salt)
        out["subscription_name"] = out["subscription_id"]
    out["client_ip"] = None
    out["user_agent"] = None
    return out


def new_salt() -> bytes:
    return secrets.token_bytes(32)


# --- SQLite (the dev host) -------------------------------------------------------------------------


def erase_sqlite_file(
    path: str | Path, subject: Subject, salt: bytes | None = None, outbox_dir: Path | None = None
) -> ErasureReport:
    """Erase one subject from the dev host's SQLite file (one transaction) and its capture outbox."""
    salt = salt or new_salt()
    report = ErasureReport(str(subject))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=10000")  # the dev host may be writing
        conn.execute("PRAGMA secure_delete=ON")  # deleted cells are zeroed, not left in free pages
        conn.execute("BEGIN IMMEDIATE")
        try:
            _erase_sqlite(conn, subject, salt, report)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        # Copies from before (pages freed by earlier deletes, the write-ahead log) go too.
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    if outbox_dir is not None and outbox_dir.is_dir():
        for file in outbox_dir.glob("*.json"):
            try:
                ident = Exchange.from_json(file.read_bytes()).identity
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if subject.matches(ident.user_id, ident.subscription_id):
                file.unlink(missing_ok=True)
                report.outbox_files_removed += 1
    return report


def _erase_sqlite(conn: sqlite3.Connection, subject: Subject, salt: bytes, report: ErasureReport) -> None:
    column = "$.user_id" if subject.user_id is not None else "$.subscription_id"
    value = subject.user_id if subject.user_id is not None else subject.subscription_id
    rows = conn.execute(
        f"SELECT request_id, record, details IS NOT NULL FROM records WHERE json_extract(record, '{column}') = ?",
        (value,),
    ).fetchall()
    ids: set[str] = set()
    for rid, raw, had_details in rows:
        record = anonymize(orjson.loads(raw), subject, salt)
        conn.execute(
            "UPDATE records SET record = ?, details = NULL WHERE request_id = ?", (orjson.dumps(record).decode(), rid)
        )
        report.records_anonymized.append(rid)
        report.details_removed += int(bool(had_details))
        ids.add(rid)
    ident = "$.exchange.identity.user_id" if subject.user_id is not None else "$.exchange.identity.subscription_id"
    ids.update(
        r[0]
        for r in conn.execute(
            f"SELECT request_id FROM exchange_items WHERE seq = 0 AND count = 1 AND json_extract(item, '{ident}') = ?",
            (value,),
        )
    )
    for (rid,) in conn.execute("SELECT request_id FROM exchange_items WHERE seq = 0 AND count > 1").fetchall():
        items = [
            orjson.loads(r[0]) for r in conn.execute("SELECT item FROM exchange_items WHERE request_id = ?", (rid,))
        ]
        try:
            who = from_items(items).identity
        except ValueError:
            continue
        if subject.matches(who.user_id, who.subscription_id):
            ids.add(rid)
    for rid in sorted(ids):
        if conn.execute("DELETE FROM exchange_items WHERE request_id = ?", (rid,)).rowcount:
            report.exchanges_removed.append(rid)
        report.deadletters_removed += conn.execute("DELETE FROM deadletters WHERE key = ?", (rid,)).rowcount


# --- Cosmos DB (Azure) ---------------------------------------------------------------------------


async def erase_cosmos(
    database: Any,
    subject: Subject,
    salt: bytes | None = None,
    *,
    exchanges: str = "exchanges",
    records: str = "records",
    deadletters: str = "deadletters",
) -> ErasureReport:
    """Erase one subject through the Cosmos SDK (`database`: an aio DatabaseProxy). Cross-partition
    queries find the subject's items; deletes and replaces are per partition (request id)."""
    salt = salt or new_salt()
    report = ErasureReport(str(subject))
    ex, rec, dead = (database.get_container_client(n) for n in (exchanges, records, deadletters))
    field_name, value = (
        ("user_id", subject.user_id) if subject.user_id is not None else ("subscription_id", subject.subscription_id)
    )
    params = [{"name": "@v", "value": value}]
    ids: set[str] = set()
    async for item in rec.query_items(
        f"SELECT * FROM c WHERE c.kind = 'record' AND c.record.{field_name} = @v", parameters=params
    ):
        rid = item["requestId"]
        await rec.upsert_item({**item, "record": anonymize(item["record"], subject, salt)})
        report.records_anonymized.append(rid)
        ids.add(rid)
        for details in await _all(
            rec.query_items(
                "SELECT c.id FROM c WHERE c.requestId = @r AND c.kind = 'details'",
                parameters=[{"name": "@r", "value": rid}],
                partition_key=rid,
            )
        ):
            await rec.delete_item(details["id"], partition_key=rid)
            report.details_removed += 1
    # `subject` sits on every exchange item, the readable first item carries the whole identity.
    subject_field = "userId" if subject.user_id is not None else "subscriptionId"
    async for item in ex.query_items(
        f"SELECT c.requestId FROM c WHERE c.{subject_field} = @v OR c.exchange.identity.{field_name} = @v",
        parameters=params,
    ):
        ids.add(item["requestId"])
    for rid in sorted(ids):
        one = [{"name": "@r", "value": rid}]
        items = await _all(
            ex.query_items("SELECT c.id FROM c WHERE c.requestId = @r", parameters=one, partition_key=rid)
        )
        for it in items:
            await ex.delete_item(it["id"], partition_key=rid)
        if items:
            report.exchanges_removed.append(rid)
        for it in await _all(
            dead.query_items("SELECT c.id FROM c WHERE c.requestId = @r", parameters=one, partition_key=rid)
        ):
            await dead.delete_item(it["id"], partition_key=rid)
            report.deadletters_removed += 1
    return report


async def _all(pages: Any) -> list[dict[str, Any]]:
    return [item async for item in pages]


def subject_from(args: argparse.Namespace) -> Subject:
    return Subject(user_id=args.user_id, subscription_id=args.subscription)


def add_subject_arguments(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--user-id", help="erase this user (APIM's x-gateway-user-id)")
    who.add_argument("--subscription", help="erase this APIM subscription id")
    parser.add_argument("--salt", help="hex salt for the pseudonyms (default: random for this run)")


def salt_from(args: argparse.Namespace) -> bytes:
    return bytes.fromhex(args.salt) if args.salt else new_salt()


def main(argv: Iterable[str] | None = None) -> int:
    """`python -m shared.privacy.erasure --endpoint https://<account>.documents.azure.com:443/ --user-id U`
    with the deployer's identity (DefaultAzureCredential: `az login`), which needs the Cosmos DB
    Built-in Data Contributor role on the account."""
    parser = argparse.ArgumentParser(prog="python -m shared.privacy.erasure", description=main.__doc__)
    parser.add_argument("--endpoint", required=True, help="Cosmos DB account endpoint")
    parser.add_argument("--database", default="gateway")
    parser.add_argument("--key", help="account key (the emulator's); default: your Entra ID identity")
    parser.add_argument("--insecure", action="store_true", help="accept a self-signed certificate (emulator)")
    add_subject_arguments(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    report = asyncio.run(_main(args))
    print("\n".join(report.lines()))
    return 0


async def _main(args: argparse.Namespace) -> ErasureReport:
    return await erase_cosmos_account(
        args.endpoint, args.database, subject_from(args), salt_from(args), key=args.key, verify=not args.insecure
    )


async def erase_cosmos_account(
    endpoint: str,
    database: str,
    subject: Subject,
    salt: bytes | None = None,
    *,
    key: str | None = None,
    verify: bool = True,
    containers: Mapping[str, str] | None = None,
) -> ErasureReport:
    """`erase_cosmos` over a client of its own: the key when given, else DefaultAzureCredential
    (`az login`, a managed identity). `containers`: exchanges/records/deadletters names."""
    from azure.cosmos.aio import CosmosClient

    credential: Any = key
    if credential is None:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
    try:
        async with CosmosClient(endpoint, credential=credential, connection_verify=verify) as client:
            return await erase_cosmos(client.get_database_client(database), subject, salt, **(containers or {}))
    finally:
        if not isinstance(credential, str):
            await credential.close()


if __name__ == "__main__":
    sys.exit(main())
