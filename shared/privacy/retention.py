"""Retention in the embedded store: the periodic purge Cosmos DB does by itself with item TTLs.

Exchanges older than their audience's exchange retention are deleted; a record's details (the
normalized prompt and answer) are cleared at the same age (or the record's, if sooner); records
older than the record retention are deleted. Ages are counted from when the exchange was stored
and from the record's timestamp.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from shared.exchange import from_items
from shared.privacy.policy import FOREVER, RetentionPolicy


@dataclass(frozen=True, slots=True)
class PurgeReport:
    exchanges: int
    details: int
    records: int

    def line(self) -> str:
        return f"purged {self.exchanges} exchanges, {self.details} record details, {self.records} records"


def _cutoff(now: datetime, seconds: int) -> str | None:
    if seconds == FOREVER:
        return None
    return (now - timedelta(seconds=seconds)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def purge(conn: sqlite3.Connection, policy: RetentionPolicy, now: datetime | None = None) -> PurgeReport:
    """Delete what is past its retention (one transaction). Runs on the store's worker thread."""
    now = now or datetime.now(UTC)
    cutoffs: dict[tuple[str | None, str | None], tuple[str | None, str | None, str | None]] = {}

    def cut(product: str | None, subscription: str | None) -> tuple[str | None, str | None, str | None]:
        key = (product, subscription)
        if key not in cutoffs:
            r = policy.for_audience(product, subscription)
            cutoffs[key] = (
                _cutoff(now, r.exchanges_seconds),
                _cutoff(now, r.details_seconds),
                _cutoff(now, r.records_seconds),
            )
        return cutoffs[key]

    expired: list[str] = []
    rows = conn.execute(
        "SELECT request_id, count, created_at, json_extract(item, '$.exchange.identity.product'),"
        " json_extract(item, '$.exchange.identity.subscription_id') FROM exchange_items WHERE seq = 0"
    ).fetchall()
    for rid, count, created, product, subscription in rows:
        if count > 1:  # split: the identity is inside the base64 pieces
            items = [
                orjson.loads(r[0]) for r in conn.execute("SELECT item FROM exchange_items WHERE request_id = ?", (rid,))
            ]
            try:
                ident = from_items(items).identity
                product, subscription = ident.product, ident.subscription_id
            except ValueError:
                pass
        limit = cut(product, subscription)[0]
        if limit is not None and created < limit:
            expired.append(rid)
    details: list[str] = []
    records: list[str] = []
    rows = conn.execute(
        "SELECT request_id, timestamp, json_extract(record, '$.product'), json_extract(record, '$.subscription_id'),"
        " details IS NOT NULL FROM records"
    ).fetchall()
    for rid, timestamp, product, subscription, has_details in rows:
        _, details_limit, records_limit = cut(product, subscription)
        if records_limit is not None and timestamp < records_limit:
            records.append(rid)
        elif has_details and details_limit is not None and timestamp < details_limit:
            details.append(rid)
    conn.execute("SAVEPOINT purge")  # its own transaction, or a part of the caller's
    try:
        conn.executemany("DELETE FROM exchange_items WHERE request_id = ?", [(r,) for r in expired])
        conn.executemany("UPDATE records SET details = NULL WHERE request_id = ?", [(r,) for r in details])
        conn.executemany("DELETE FROM records WHERE request_id = ?", [(r,) for r in records])
        conn.execute("RELEASE purge")
    except BaseException:
        conn.execute("ROLLBACK TO purge")
        conn.execute("RELEASE purge")
        raise
    return PurgeReport(len(expired), len(details), len(records))
