"""Budget admission in the request path: the one call between preparing a request and forwarding it.

`BudgetGate.admit(call)` holds the request's worst case on every budget that applies (or raises the
AOAI-shaped 429 `budget_exceeded` / 503 `budget_store_unavailable`), reroutes a downgraded request to
the cheaper deployment, and leaves on the exchange what settlement needs (`ExchangeRecorder.budget`).
Settlement happens where the usage record is made (the parser), from the record's actual cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from shared.budgets.keeper import BudgetKeeper
from shared.normalize.apis import billable, operation

if TYPE_CHECKING:
    from proxy.call import ProxyCall

DOWNGRADED_HEADER = "x-gateway-downgraded-from"


class BudgetGate:
    def __init__(self, keeper: Callable[[], BudgetKeeper | None]) -> None:
        #: Looked up per call: the ports (and the keeper in them) are built lazily, in the worker's loop.
        self._keeper = keeper

    async def admit(self, call: ProxyCall) -> None:
        """Raises BudgetExceeded or BudgetStoreUnavailable; else the call may be forwarded."""
        keeper = self._keeper()
        if keeper is None or not billable(call.route.api, operation(call.method, call.path, call.route)):
            return  # reading, listing, deleting: no model runs, nothing to hold
        rec = call.recorder
        body = call.json_body if call.json_body is not None else _json(call.body)
        identity = rec.identity
        admission = await keeper.admit(
            call.request_id, identity.subscription_id, identity.product, call.deployment, call.route.api, body
        )
        if admission is None:
            return
        headers = list(admission.headers)
        if admission.downgraded_from is not None and admission.deployment is not None:
            _reroute(call, admission.deployment)
            headers.append((DOWNGRADED_HEADER, admission.downgraded_from))
        rec.budget = admission.marks()
        call.extra["budget_headers"] = headers


def _reroute(call: ProxyCall, target: str) -> None:
    """Send the call to `target`: in the path, or in the body's `model` on the v1 surface."""
    if call.route.surface == "v1":
        call.body = orjson.dumps({**orjson.loads(call.body), "model": target})
        if isinstance(call.json_body, dict):
            call.json_body = {**call.json_body, "model": target}
        call.recorder.reroute(call.path, target)
    else:
        call.path = call.path.replace(f"/deployments/{call.deployment}/", f"/deployments/{target}/", 1)
        call.recorder.reroute(call.path, None)
    call.deployment = target


def _json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
