"""BUDGETS and BUDGET_TEAMS: which budgets exist, whom they bind, and what happens at the limit.

Parsed once at start-up; every mistake is a ConfigurationError whose one line names the setting and
the entry, so a bad budget stops the app instead of silently letting a team spend without limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shared.errors import ConfigurationError

Period = Literal["day", "week", "month"]
Unit = Literal["usd", "tokens"]
Action = Literal["refuse", "downgrade"]
OnStoreError = Literal["fail_closed", "fail_open"]

PERIODS: tuple[Period, ...] = ("day", "week", "month")
ACTIONS: tuple[Action, ...] = ("refuse", "downgrade")
STORE_ERROR_MODES: tuple[OnStoreError, ...] = ("fail_closed", "fail_open")
#: Integer units per dollar: the price book's costs have 9 decimals, so sums of units are exact.
UNITS_PER_USD = 1_000_000_000
#: Output tokens reserved when the client sets no maximum and the budget names no default.
DEFAULT_MAX_TOKENS = 4096

_NAME = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_KEYS = frozenset(
    {
        "name",
        "scope",
        "amount",
        "tokens",
        "period",
        "timezone",
        "soft_percent",
        "deployments",
        "action",
        "downgrade_to",
        "on_store_error",
        "default_max_tokens",
    }
)


@dataclass(frozen=True, slots=True)
class Scope:
    """Whom a budget binds: one subscription, every subscription of a product, or a team's subscriptions."""

    kind: Literal["subscription", "product", "team"]
    value: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    scope: Scope
    unit: Unit
    #: The hard limit in units (nano-dollars, or tokens).
    limit: int
    period: Period = "month"
    timezone: str = "UTC"
    #: The alert threshold in units (None: no alert).
    soft: int | None = None
    #: Deployments the budget counts (None: all).
    deployments: frozenset[str] | None = None
    action: Action = "refuse"
    downgrade_to: str | None = None
    #: fail_closed by default: a budget is a promise to whoever pays, and an outage of the store
    #: must not become the one window in which it can be broken (see docs/budgets.md).
    on_store_error: OnStoreError = "fail_closed"
    default_max_tokens: int = DEFAULT_MAX_TOKENS

    def counts(self, deployment: str | None) -> bool:
        return self.deployments is None or (deployment is not None and deployment in self.deployments)

    def show(self, units: int) -> str:
        """An amount of this budget's unit as people read it (`0.97 USD`, `12000 tokens`)."""
        if self.unit == "usd":
            return f"{units / UNITS_PER_USD:.6f} USD"
        return f"{units} tokens"


@dataclass(frozen=True, slots=True)
class BudgetBook:
    """Every configured budget and the teams (team name -> subscription ids)."""

    budgets: tuple[Budget, ...] = ()
    teams: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.budgets)

    def by_name(self, name: str) -> Budget | None:
        return next((b for b in self.budgets if b.name == name), None)

    def binds(self, budget: Budget, subscription_id: str | None, product: str | None) -> bool:
        scope = budget.scope
        if scope.kind == "subscription":
            return subscription_id == scope.value
        if scope.kind == "product":
            return product == scope.value
        return subscription_id is not None and subscription_id in self.teams.get(scope.value, frozenset())

    def applicable(self, subscription_id: str | None, product: str | None, deployment: str | None) -> list[Budget]:
        """Every budget that counts this call: budgets are additive, each one must have room."""
        return [b for b in self.budgets if b.counts(deployment) and self.binds(b, subscription_id, product)]


def parse_budget_book(budgets_raw: str | None, teams_raw: str | None) -> BudgetBook:
    """BUDGETS (a JSON list) and BUDGET_TEAMS (a JSON object, team -> subscription ids)."""
    teams = _parse_teams(teams_raw)
    data = _json("BUDGETS", budgets_raw, [])
    if not isinstance(data, list):
        raise ConfigurationError("BUDGETS must be a JSON list of budgets")
    budgets = [_parse_budget(i, entry, teams) for i, entry in enumerate(data)]
    seen: set[str] = set()
    for b in budgets:
        if b.name in seen:
            raise ConfigurationError(f"BUDGETS: the name {b.name!r} is used twice")
        seen.add(b.name)
    return BudgetBook(tuple(budgets), teams)


def _json(setting: str, raw: str | None, empty: Any) -> Any:
    if raw is None or not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{setting} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None


def _parse_teams(raw: str | None) -> dict[str, frozenset[str]]:
    data = _json("BUDGET_TEAMS", raw, {})
    if not isinstance(data, Mapping):
        raise ConfigurationError('BUDGET_TEAMS must be a JSON object: {"<team>": ["<subscription id>", ...]}')
    teams: dict[str, frozenset[str]] = {}
    for team, ids in data.items():
        if not _NAME.match(team):
            raise ConfigurationError(f"BUDGET_TEAMS: team name {team!r} must be 1-64 letters, digits, '.', '_' or '-'")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise ConfigurationError(f"BUDGET_TEAMS[{team!r}] must be a non-empty list of subscription ids")
        teams[team] = frozenset(ids)
    return teams


def _parse_budget(index: int, entry: Any, teams: Mapping[str, frozenset[str]]) -> Budget:
    where = f"BUDGETS[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where} must be an object")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigurationError(f"{where}.name must be 1-64 letters, digits, '.', '_' or '-'")
    where = f"BUDGETS[{name!r}]"
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    scope = _scope(where, entry.get("scope"), teams)
    unit, limit = _limit(where, entry)
    period = entry.get("period", "month")
    if period not in PERIODS:
        raise ConfigurationError(f"{where}.period must be one of {', '.join(PERIODS)}, got {period!r}")
    timezone = entry.get("timezone", "UTC")
    try:
        ZoneInfo(timezone) if isinstance(timezone, str) else None
    except (ZoneInfoNotFoundError, ValueError):
        timezone = None
    if not isinstance(timezone, str):
        raise ConfigurationError(f"{where}.timezone must be an IANA time zone name such as 'UTC' or 'Europe/Berlin'")
    soft = _soft(where, entry.get("soft_percent"), limit)
    deployments = _deployments(where, entry.get("deployments"))
    action = entry.get("action", "refuse")
    if action not in ACTIONS:
        raise ConfigurationError(f"{where}.action must be one of {', '.join(ACTIONS)}, got {action!r}")
    downgrade_to = entry.get("downgrade_to")
    if action == "downgrade" and (not isinstance(downgrade_to, str) or not downgrade_to):
        raise ConfigurationError(f"{where}: action 'downgrade' needs downgrade_to, the cheaper deployment")
    if action != "downgrade" and downgrade_to is not None:
        raise ConfigurationError(f"{where}: downgrade_to is only read with action 'downgrade'")
    on_store_error = entry.get("on_store_error", "fail_closed")
    if on_store_error not in STORE_ERROR_MODES:
        raise ConfigurationError(
            f"{where}.on_store_error must be one of {', '.join(STORE_ERROR_MODES)}, got {on_store_error!r}"
        )
    default_max = entry.get("default_max_tokens", DEFAULT_MAX_TOKENS)
    if isinstance(default_max, bool) or not isinstance(default_max, int) or default_max < 1:
        raise ConfigurationError(f"{where}.default_max_tokens must be a positive integer")
    return Budget(
        name=name,
        scope=scope,
        unit=unit,
        limit=limit,
        period=period,
        timezone=timezone,
        soft=soft,
        deployments=deployments,
        action=action,
        downgrade_to=downgrade_to,
        on_store_error=on_store_error,
        default_max_tokens=default_max,
    )


def _scope(where: str, raw: Any, teams: Mapping[str, frozenset[str]]) -> Scope:
    kind, _, value = raw.partition(":") if isinstance(raw, str) else ("", "", "")
    if kind not in ("subscription", "product", "team") or not value:
        raise ConfigurationError(
            f"{where}.scope must be 'subscription:<id>', 'product:<name>' or 'team:<name>', got {raw!r}"
        )
    if kind == "team" and value not in teams:
        raise ConfigurationError(f"{where}.scope names team {value!r}, which BUDGET_TEAMS does not define")
    return Scope(kind, value)  # type: ignore[arg-type]


def _limit(where: str, entry: Mapping[str, Any]) -> tuple[Unit, int]:
    amount, tokens = entry.get("amount"), entry.get("tokens")
    if (amount is None) == (tokens is None):
        raise ConfigurationError(f"{where} needs exactly one of amount (price-book currency) or tokens")
    if amount is not None:
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount > 0:
            raise ConfigurationError(f"{where}.amount must be a positive number")
        return "usd", round(amount * UNITS_PER_USD)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ConfigurationError(f"{where}.tokens must be a positive integer")
    return "tokens", tokens


def _soft(where: str, raw: Any, limit: int) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 < raw <= 100:
        raise ConfigurationError(f"{where}.soft_percent must be a number above 0 and at most 100")
    return round(limit * raw / 100)


def _deployments(where: str, raw: Any) -> frozenset[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not raw or not all(isinstance(d, str) and d for d in raw):
        raise ConfigurationError(
            f"{where}.deployments must be a non-empty list of deployment names (or left out for all)"
        )
    return frozenset(raw)
