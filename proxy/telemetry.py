"""Timing the gateway reports about itself: how long it held a request before the first byte.

`x-gateway-overhead-ms` is the time from the request's arrival to the moment the answer's first
byte (the response head) leaves the gateway, minus the time spent waiting on upstream for that
answer (every attempt, failed-over ones included, counts as upstream time). What remains is the
gateway's own work: reading and classifying the request, credentials, routing, policy checks.
Pure functions only; the proxy handler calls them at the edge.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from shared.exchange import Attempt

if TYPE_CHECKING:
    from proxy.recorder import ExchangeRecorder

OVERHEAD_HEADER = "x-gateway-overhead-ms"


def upstream_wait_ms(attempts: Iterable[Attempt]) -> float:
    """Milliseconds spent waiting on upstream across all attempts."""
    return sum(a.duration_ms for a in attempts)


def overhead_ms(first_byte_ms: float, attempts: Iterable[Attempt]) -> float:
    """Gateway-added time before the first byte; never negative (clock rounding aside)."""
    return round(max(0.0, first_byte_ms - upstream_wait_ms(attempts)), 3)


def overhead_header(first_byte_ms: float, attempts: Iterable[Attempt]) -> tuple[str, str]:
    """The header pair sent on every answer, the gateway's own errors included."""
    return OVERHEAD_HEADER, f"{overhead_ms(first_byte_ms, attempts):.3f}"


def stamp_overhead(rec: ExchangeRecorder, first_byte_ms: float) -> tuple[str, str]:
    """Compute the overhead once, keep it on the exchange (for the record), return the header."""
    rec.overhead_ms = overhead_ms(first_byte_ms, rec.attempts)
    return OVERHEAD_HEADER, f"{rec.overhead_ms:.3f}"
