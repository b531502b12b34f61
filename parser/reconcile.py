"""The reconciler: stored exchanges that ended up with neither a record nor a dead letter are
announced again, so "one record per request" holds eventually whatever failed on the way.

An exchange is stored before it is announced, and the parser turns each announcement into a
record or a dead letter. Both can fail together (the record store and the dead-letter store down
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
    dead = await ports.deadletters.existing(stored)
    missing = [rid for rid in stored if rid not in recorded and rid not in dead]
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
