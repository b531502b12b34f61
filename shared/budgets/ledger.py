"""One budget period's ledger, as a plain JSON document, and the pure steps that change it.

The store (SQLite locally, one Cosmos DB item in Azure) keeps one document per budget and period and
applies a step atomically (a transaction, or a replace conditioned on the item's ETag, retried on
conflict), so every instance sees the same totals. Amounts are integer units (nano-dollars or
tokens): sums stay exact.

    spent     settled charges of the period
    holds     request id -> [units, expires_at]: reservations in flight
    lapsed    request id -> [units, lapsed_at]: holds whose request never settled in time (freed;
              charged if its record still arrives)
    settled   request id -> settled_at: requests charged without a hold (fail_open), so a redelivered
              record is charged once (a held request is settled once by removing its hold)
    soft_at   when the soft threshold was first crossed in the period (None: not yet)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Ledger = dict[str, Any]

#: How long a settlement without a hold is remembered (seconds): Event Hubs redelivers within minutes.
SETTLED_MEMORY_SECONDS = 24 * 3600
#: Lapsed holds wait this long for a late record (the exchange store's default time to live: an
#: exchange older than that can no longer become a record).
LAPSED_MEMORY_SECONDS = 7 * 24 * 3600


def new_ledger(key: str, budget: str, unit: str, limit: int, soft: int | None, start: str, end: str) -> Ledger:
    return {
        "id": key,
        "budget": budget,
        "unit": unit,
        "limit": limit,
        "soft": soft,
        "period_start": start,
        "period_end": end,
        "spent": 0,
        "holds": {},
        "lapsed": {},
        "settled": {},
        "soft_at": None,
    }


def held(ledger: Ledger) -> int:
    return sum(int(h[0]) for h in ledger["holds"].values())


def remaining(ledger: Ledger) -> int:
    """What a new request may still reserve: the limit minus settled spend minus holds in flight."""
    return int(ledger["limit"]) - int(ledger["spent"]) - held(ledger)


def expire(ledger: Ledger, now: float) -> None:
    """Free the holds whose request's deadline passed; forget old settlements and lapses."""
    holds, lapsed = ledger["holds"], ledger["lapsed"]
    for rid in [rid for rid, (_, expires_at) in holds.items() if expires_at <= now]:
        units, _ = holds.pop(rid)
        lapsed[rid] = [units, now]
    for rid in [rid for rid, (_, at) in lapsed.items() if at <= now - LAPSED_MEMORY_SECONDS]:
        del lapsed[rid]
    settled = ledger["settled"]
    for rid in [rid for rid, at in settled.items() if at <= now - SETTLED_MEMORY_SECONDS]:
        del settled[rid]


@dataclass(frozen=True, slots=True)
class Reserved:
    ok: bool
    #: Units left after this reservation (when refused: before it).
    remaining: int


def reserve(ledger: Ledger, request_id: str, units: int, expires_at: float, now: float) -> Reserved:
    """Hold `units` for a request when they fit under the limit with everything else in flight."""
    expire(ledger, now)
    if request_id in ledger["holds"]:  # a retried step after a lost answer: already held
        return Reserved(True, remaining(ledger))
    left = remaining(ledger)
    if units > left:
        return Reserved(False, left)
    ledger["holds"][request_id] = [units, expires_at]
    return Reserved(True, left - units)


def release(ledger: Ledger, request_id: str) -> None:
    """Drop a hold without charging (the request went elsewhere or was refused by another budget)."""
    ledger["holds"].pop(request_id, None)


@dataclass(frozen=True, slots=True)
class Settled:
    #: Units charged by this step (0 when it was settled before).
    charged: int
    #: This settlement crossed the soft threshold first in the period (true for exactly one request).
    crossed_soft: bool
    remaining: int
    first_time: bool


def settle(ledger: Ledger, request_id: str, units: int | None, now: float, at_iso: str, *, held: bool) -> Settled:
    """Replace the request's hold (live or lapsed) by its actual charge; `units` None (no price)
    charges the hold as it stands. Idempotent: `held` says admission took a hold for this request,
    so a held request without a hold here was settled before. A request charged without a hold
    (the store was down at admission, fail_open) is remembered in `settled` instead."""
    expire(ledger, now)
    hold = ledger["holds"].pop(request_id, None) or ledger["lapsed"].pop(request_id, None)
    if hold is None:
        if held or request_id in ledger["settled"] or not units:
            return Settled(0, False, remaining(ledger), False)
        ledger["settled"][request_id] = now
    charge = units if units is not None else int(hold[0])
    ledger["spent"] = int(ledger["spent"]) + charge
    crossed = False
    soft = ledger.get("soft")
    if soft is not None and ledger["soft_at"] is None and ledger["spent"] >= soft:
        ledger["soft_at"] = at_iso
        crossed = True
    return Settled(charge, crossed, remaining(ledger), True)
