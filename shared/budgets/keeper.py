"""Admission and settlement against every budget that applies, through the shared budget store.

    admit   before forwarding: hold the request's worst case on every applicable budget (all or
            none); refuse, downgrade, or (store down) fail closed or open
    settle  when the usage record exists: replace each hold by the record's charge, once

Both sides compute the same budget keys: the budget's name and the start of its period.

One module because admission and settlement are the two halves of one ledger protocol (a hold
taken by one is released or charged by the other, exactly once); the pure steps are in
`ledger.py`, the periods and estimates beside it.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.budgets.config import Budget, BudgetBook
from shared.budgets.estimate import price_for, record_units, units, worst_case
from shared.budgets.ledger import (
    Ledger,
    Reserved,
    Settled,
    expire,
    held,
    new_ledger,
    release,
    remaining,
    reserve,
    settle,
)
from shared.budgets.periods import stamp, window
from shared.errors import BudgetExceeded, BudgetStoreDown, BudgetStoreUnavailable
from shared.normalize.record import UsageRecord
from shared.ports import BudgetStore
from shared.pricing.book import PriceBook, load_book
from shared.pricing.deployments import DeploymentModel, parse_deployment_models
from shared.settings import Settings

log = logging.getLogger(__name__)
#: The soft-threshold custom event (`AOAIBudgetThreshold` in App Insights customEvents) and its logger.
THRESHOLD_EVENT = "AOAIBudgetThreshold"
EVENT_LOGGER = "gateway.budget"


def event_logger(handler_logger: str = "") -> logging.Logger:
    """The event's logger, under the logger that carries the Azure Monitor handler (as the usage event's)."""
    inside = not handler_logger or EVENT_LOGGER == handler_logger or EVENT_LOGGER.startswith(handler_logger + ".")
    return logging.getLogger(EVENT_LOGGER if inside else f"{handler_logger}.{EVENT_LOGGER}")


#: Tries of a settlement before it waits for the next one (the store is down meanwhile).
SETTLE_TRIES = 3
SETTLE_BACKOFF_SECONDS = 0.2
#: A hold outlives the request's own deadline by this much (clocks of instances differ a little).
HOLD_GRACE_SECONDS = 5.0


@functools.cache
def shipped_book() -> PriceBook:
    return load_book()


@dataclass(slots=True)
class Admission:
    """What admission decided for one request (the proxy applies it; the exchange keeps `marks`)."""

    deployment: str | None
    downgraded_from: str | None = None
    #: Budget name -> ledger key, for every hold taken.
    holds: dict[str, str] = field(default_factory=dict)
    store_error: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)

    def marks(self) -> dict[str, Any]:
        """The exchange's `budget` object: what settlement cannot recompute from the record."""
        return {"holds": dict(self.holds), "downgraded_from": self.downgraded_from, "store_error": self.store_error}


@dataclass(frozen=True, slots=True)
class _Attempt:
    holds: dict[str, str]
    left: dict[str, tuple[int, str]]  # budget name -> (units left, reset)
    refused: Budget | None = None


class BudgetKeeper:
    def __init__(
        self,
        book: BudgetBook,
        store: BudgetStore,
        prices: PriceBook,
        deployment_models: Mapping[str, DeploymentModel] | None = None,
        *,
        hold_seconds: float,
        clock: Callable[[], float] = time.time,
        events: logging.Logger | None = None,
    ) -> None:
        self.book, self.store, self.prices = book, store, prices
        self.deployment_models = deployment_models or {}
        #: How long a hold lives: the request's own deadline (UPSTREAM_TOTAL_TIMEOUT_SECONDS) plus grace.
        self.hold_seconds = hold_seconds + HOLD_GRACE_SECONDS
        self.clock = clock
        self.events = events or event_logger()
        #: Settlements the store could not take: retried before the next one.
        self._unsettled: list[tuple[UsageRecord, dict[str, Any] | None]] = []

    @classmethod
    def from_settings(cls, settings: Settings, book: BudgetBook, store: BudgetStore) -> BudgetKeeper:
        """Prices from the shipped book and DEPLOYMENT_MODELS, as the parser prices records; a hold
        lives as long as the request may (UPSTREAM_TOTAL_TIMEOUT_SECONDS)."""
        return cls(
            book,
            store,
            shipped_book(),
            parse_deployment_models(settings.deployment_models_json),
            hold_seconds=settings.upstream_total_timeout,
            events=event_logger(settings.appinsights_logger_name),
        )

    # --- keys -------------------------------------------------------------------------------------

    def key(self, budget: Budget, at: datetime) -> tuple[str, Callable[[], Ledger], str]:
        """(ledger key, a fresh ledger for it, reset time) of the budget's period containing `at`."""
        start, end = window(budget.period, budget.timezone, at)
        key = f"{budget.name}@{stamp(start)}"
        return (
            key,
            lambda: new_ledger(key, budget.name, budget.unit, budget.limit, budget.soft, stamp(start), stamp(end)),
            stamp(end),
        )

    # --- admission --------------------------------------------------------------------------------

    async def admit(
        self, request_id: str, subscription_id: str, product: str, deployment: str | None, api: str, body: Any
    ) -> Admission | None:
        """Hold the worst case on every budget that applies; None when none applies. Raises
        BudgetExceeded (no room, no downgrade that fits) or BudgetStoreUnavailable (fail closed)."""
        budgets = self.book.applicable(subscription_id, product, deployment)
        if not budgets:
            return None
        now = self.clock()
        try:
            tried = await self._hold_all(request_id, budgets, deployment, api, body, now)
            target = deployment
            downgraded_from = None
            if tried.refused is not None and tried.refused.action == "downgrade":
                first = tried.refused
                target = first.downgrade_to
                # The budget that asked for the downgrade still counts the cheaper call.
                again = [first, *(b for b in self.book.applicable(subscription_id, product, target) if b is not first)]
                tried = await self._hold_all(request_id, again, target, api, body, now)
                downgraded_from = deployment
        except BudgetStoreDown as exc:
            closed = [b.name for b in budgets if b.on_store_error == "fail_closed"]
            if closed:
                raise BudgetStoreUnavailable(
                    f"The budget store cannot be reached and the budget {closed[0]!r} fails closed; try again shortly."
                ) from exc
            log.warning("budget store unavailable, forwarding %s unreserved (fail_open): %s", request_id, exc)
            return Admission(deployment, store_error=True)
        if tried.refused is not None:
            raise self._refusal(tried.refused, *tried.left[tried.refused.name])
        return Admission(target, downgraded_from, tried.holds, headers=self._headers(tried.left))

    @staticmethod
    def _refusal(budget: Budget, left: int, reset: str) -> BudgetExceeded:
        shown = budget.show(max(left, 0))
        return BudgetExceeded(
            f"The budget {budget.name!r} ({budget.scope}) has {shown} left, less than this request may cost; "
            f"it resets at {reset}.",
            budget=budget.name,
            reset_at=reset,
            headers={"x-gateway-budget-remaining": shown, "x-gateway-budget-reset": reset},
        )

    async def _hold_all(
        self, request_id: str, budgets: Sequence[Budget], deployment: str | None, api: str, body: Any, now: float
    ) -> _Attempt:
        at = datetime.fromtimestamp(now, UTC)
        model, price = price_for(self.prices, self.deployment_models, deployment, at.date())
        default_max = max(b.default_max_tokens for b in budgets)
        worst = worst_case(api, body, deployment, default_max, model)
        holds: dict[str, str] = {}
        left: dict[str, tuple[int, str]] = {}
        expires_at = now + self.hold_seconds
        try:
            for budget in budgets:
                key, fresh, reset = self.key(budget, at)
                need = units(budget, worst, price)
                if need is None:  # a dollar budget cannot bound an unpriced deployment: no room
                    left[budget.name] = (await self._peek(key, fresh, now), reset)
                    return await self._undo(request_id, holds, _Attempt({}, left, budget))
                step = functools.partial(reserve, request_id=request_id, units=need, expires_at=expires_at, now=now)
                got: Reserved = await self._apply(key, fresh, step)
                left[budget.name] = (got.remaining, reset)
                if not got.ok:
                    return await self._undo(request_id, holds, _Attempt({}, left, budget))
                holds[budget.name] = key
        except BudgetStoreDown:
            await self._undo(request_id, holds, _Attempt({}, left))
            raise
        return _Attempt(holds, left)

    async def _peek(self, key: str, fresh: Callable[[], Ledger], now: float) -> int:
        return await self._apply(key, fresh, remaining)

    async def _undo(self, request_id: str, holds: Mapping[str, str], result: _Attempt) -> _Attempt:
        """Give back the holds already taken when a later budget refuses (or the store fails)."""
        for name, key in holds.items():
            budget = self.book.by_name(name)
            if budget is None:
                continue
            try:
                await self._apply(key, self._fresh_for(budget, key), lambda ledger: release(ledger, request_id))
            except BudgetStoreDown:  # the hold lapses at its deadline instead
                log.warning("could not release the hold of %s on %s", request_id, name)
        return result

    def _fresh_for(self, budget: Budget, key: str) -> Callable[[], Ledger]:
        start = key.rpartition("@")[2]
        _, fresh, _ = self.key(budget, datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC))
        return fresh

    def _headers(self, left: Mapping[str, tuple[int, str]]) -> list[tuple[str, str]]:
        """The tightest budget: the smallest share of its limit left."""
        name, (units_left, reset) = min(left.items(), key=lambda item: item[1][0] / max(self._budget(item[0]).limit, 1))
        return [("x-gateway-budget-remaining", self._budget(name).show(units_left)), ("x-gateway-budget-reset", reset)]

    def _budget(self, name: str) -> Budget:
        budget = self.book.by_name(name)
        assert budget is not None
        return budget

    async def _apply(self, key: str, fresh: Callable[[], Ledger], step: Callable[[Ledger], Any]) -> Any:
        try:
            return await self.store.apply(key, fresh, step)
        except Exception as exc:  # any failure of the store: the caller decides (closed, open, later)
            raise BudgetStoreDown(f"{type(exc).__name__}: {exc}") from exc

    # --- settlement -------------------------------------------------------------------------------

    async def settle(self, record: UsageRecord, marks: Mapping[str, Any] | None) -> None:
        """Charge the record to every budget it counts against and set its `budget` field. Never
        raises: when the store is down the settlement waits (in this process) for the next one."""
        await self._retry_unsettled()
        field_ = await self._settle(record, marks)
        if field_ is not None:
            record["budget"] = field_

    async def _retry_unsettled(self) -> None:
        pending, self._unsettled = self._unsettled, []
        for record, marks in pending:
            outcome = await self._settle(record, marks, requeue=True)
            if outcome is not None and outcome.get("settled"):
                log.info("budget: settled %s after the store came back", record.get("request_id"))

    async def _settle(
        self, record: UsageRecord, marks: Mapping[str, Any] | None, *, requeue: bool = True
    ) -> dict[str, Any] | None:
        holds: dict[str, str] = dict((marks or {}).get("holds") or {})
        at = _parse_time(record.get("timestamp"))
        deployment = record.get("deployment")
        budgets = {
            b.name: b for b in self.book.applicable(record.get("subscription_id"), record.get("product"), deployment)
        }
        for name in holds:
            budget = self.book.by_name(name)
            if budget is not None:
                budgets.setdefault(name, budget)
        if not budgets:
            return None
        now = self.clock()
        rid = str(record.get("request_id"))
        crossed: list[str] = []
        at_iso = stamp(datetime.fromtimestamp(now, UTC))
        try:
            for name, budget in budgets.items():
                key = holds.get(name) or self.key(budget, at)[0]
                charge = record_units(budget, record)
                step = functools.partial(
                    settle, request_id=rid, units=charge, now=now, at_iso=at_iso, held=name in holds
                )
                result: Settled = await self._apply(key, self._fresh_for(budget, key), step)
                if result.crossed_soft:
                    crossed.append(name)
                    self._threshold_event(budget, key, rid, result)
        except BudgetStoreDown as exc:
            log.warning("budget store unavailable, settlement of %s deferred: %s", rid, exc)
            if requeue:
                self._unsettled.append((record, dict(marks or {})))
            settled = False
        else:
            settled = True
        return {
            "budgets": sorted(budgets),
            "downgraded_from": (marks or {}).get("downgraded_from"),
            "store_error": bool((marks or {}).get("store_error")),
            "settled": settled,
            "soft_crossed": crossed,
        }

    def _threshold_event(self, budget: Budget, key: str, request_id: str, result: Settled) -> None:
        """The custom event an Azure Monitor alert rule fires on; exactly one per budget and period,
        because the step that sets `soft_at` is the one atomic write that crosses it."""
        self.events.warning(
            "budget %s crossed its soft threshold",
            budget.name,
            extra={
                "microsoft.custom_event.name": THRESHOLD_EVENT,
                "budget": budget.name,
                "scope": str(budget.scope),
                "period": key.rpartition("@")[2],
                "unit": budget.unit,
                "limit": budget.show(budget.limit),
                "remaining": budget.show(result.remaining),
                "request_id": request_id,
            },
        )

    @property
    def unsettled(self) -> int:
        return len(self._unsettled)

    # --- status -----------------------------------------------------------------------------------

    async def status(self, at: datetime | None = None) -> list[dict[str, Any]]:
        """Every budget's current period: spend, holds in flight, remaining and reset (the CLI's
        view). Holds past their deadline are shown as freed; nothing is written."""
        at = at or datetime.fromtimestamp(self.clock(), UTC)
        now = at.timestamp()

        def view(stored: Ledger) -> dict[str, Any]:
            ledger = copy.deepcopy(stored)
            expire(ledger, now)
            return {
                "spent": ledger["spent"],
                "held": held(ledger),
                "in_flight": len(ledger["holds"]),
                "lapsed": len(ledger["lapsed"]),
                "remaining": remaining(ledger),
                "soft_at": ledger["soft_at"],
            }

        rows = []
        for budget in self.book.budgets:
            key, fresh, reset = self.key(budget, at)
            state = await self._apply(key, fresh, view)
            rows.append(
                {
                    "budget": budget.name,
                    "scope": str(budget.scope),
                    "unit": budget.unit,
                    "period": budget.period,
                    "limit": budget.limit,
                    "soft": budget.soft,
                    "reset": reset,
                    **state,
                }
            )
        return rows


def _parse_time(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    return datetime.now(UTC)
