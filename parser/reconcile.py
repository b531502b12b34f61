"""The reconciler: stored exchanges that ended up with neither a record nor a dead letter are
announced again, so "one record per request" holds eventually whatever failed on the way.

An exchange is stored before it is announced, and the parser turns each announcement into a
record or a dead letter. A dead letter for an outage (the exchange or record store down past the
parser's retries) is not the end either: such an exchange is announced again too, up to
`MAX_TRANSIENT` times. Both can fail together (the record store and the dead-letter store down
in the same outage; a batch the Functions host checkpointed past after its retries; an event
lost between store and announce). Every few minutes (`reconcile` timer function in Azure, a loop
in the dev host) this looks at exchanges stored between RECONCILE_LOOKBACK_SECONDS and
RECONCILE_AFTER_SECONDS ago and announces again those with neither; record writes are idempotent,
so an exchange whose record is merely late costs one duplicate event, never a second record.
The catch-up count is the `gateway.reconciler.reannounced` metric and a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from shared.ports import Ports

log = logging.getLogger(__name__)

#: Exchanges looked at per run (the rest wait for the next run).
BATCH = 1000
#: Dead-letter reasons that say an outage, not the exchange, stopped the parser (parser/handler.py):
#: such an exchange is announced again, up to `MAX_TRANSIENT` dead letters.
TRANSIENT = (
    "exchange store unavailable",
    "record store unavailable",
    "exchange not found after retries",
    "exchange incomplete after retries",
)
MAX_TRANSIENT = 3


def settled(reasons: list[str]) -> bool:
    """Whether an exchange without a record is done with: a dead letter for the exchange itself
    (poison, over budget), or outages dead-lettered it `MAX_TRANSIENT` times already."""
    return any(not reason.startswith(TRANSIENT) for reason in reasons) or len(reasons) >= MAX_TRANSIENT


_counter: Any = None


def _reannounced() -> Any:
    global _counter
    if _counter is None:
        from opentelemetry import metrics

        _counter = metrics.get_meter("aoai-gateway.reconciler").create_counter(
            "gateway.reconciler.reannounced",
            unit="{exchange}",
            description="Stored exchanges with neither record nor dead letter, announced again",
        )
    return _counter


async def reconcile(
    ports: Ports,
    *,
    after_seconds: float,
    lookback_seconds: float,
    clock: Callable[[], float] = time.time,
    limit: int = BATCH,
) -> list[str]:
    """Announce again every exchange stored in the window with neither record nor dead letter;
    returns their request ids."""
    now = clock()
    stored = await ports.exchanges.stored_between(now - lookback_seconds, now - after_seconds, limit)
    if not stored:
        return []
    recorded = await ports.records.existing(stored)
    dead = await ports.deadletters.reasons(stored)
    missing = [rid for rid in stored if rid not in recorded and not settled(dead.get(rid, []))]
    for rid in missing:
        await ports.channel.publish(rid)
    if missing:
        _reannounced().add(len(missing))
        log.warning(
            "reconciler: %d stored exchange(s) had neither record nor dead letter; announced again: %s",
            len(missing),
            missing[:10],
        )
    return missing
