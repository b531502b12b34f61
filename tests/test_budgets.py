"""Budgets: settings, periods, the ledger steps and the keeper over the real SQLite store."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.sqlite_budgets import SqliteBudgetStore
from shared.budgets.config import UNITS_PER_USD, parse_budget_book
from shared.budgets.estimate import worst_case
from shared.budgets.keeper import BudgetKeeper, shipped_book
from shared.budgets.ledger import new_ledger, remaining, reserve, settle
from shared.budgets.periods import stamp, window
from shared.errors import BudgetExceeded, BudgetStoreUnavailable, ConfigurationError

MESSAGES = [{"role": "user", "content": "Write a long poem about the sea."}]
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp()


def book(*budgets: dict[str, Any], teams: dict[str, list[str]] | None = None):
    return parse_budget_book(json.dumps(list(budgets)), json.dumps(teams or {}))


def keeper(store, *budgets: dict[str, Any], teams=None, clock=lambda: NOW, hold=60.0) -> BudgetKeeper:
    return BudgetKeeper(book(*budgets, teams=teams), store, shipped_book(), hold_seconds=hold, clock=clock)


@pytest.fixture
async def store(tmp_path: Path):
    s = SqliteBudgetStore(tmp_path / "budgets.db")
    yield s
    await s.close()


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budgets", "teams", "names"),
    [
        ("[{", "{}", "BUDGETS is not valid JSON"),
        ('{"name": "a"}', "{}", "BUDGETS must be a JSON list"),
        ('[{"name": "a", "scope": "team:x", "amount": 1}]', "{}", "BUDGETS['a'].scope names team 'x'"),
        ('[{"name": "a", "scope": "subscription:s", "amount": 1, "tokens": 5}]', "{}", "exactly one of amount"),
        ('[{"name": "a", "scope": "subscription:s", "amount": -1}]', "{}", "BUDGETS['a'].amount must be a positive"),
        ('[{"name": "a", "scope": "owner:s", "amount": 1}]', "{}", "BUDGETS['a'].scope must be"),
        ('[{"name": "a", "scope": "product:p", "amount": 1, "period": "year"}]', "{}", "BUDGETS['a'].period"),
        ('[{"name": "a", "scope": "product:p", "amount": 1, "timezone": "Mars/Base"}]', "{}", "BUDGETS['a'].timezone"),
        ('[{"name": "a", "scope": "product:p", "amount": 1, "action": "downgrade"}]', "{}", "needs downgrade_to"),
        ('[{"name": "a", "scope": "product:p", "amount": 1, "on_store_error": "x"}]', "{}", "on_store_error"),
        ('[{"name": "a", "scope": "product:p", "amount": 1, "soft_percent": 120}]', "{}", "soft_percent"),
        ('[{"name": "a", "scope": "product:p", "amount": 1, "limit": 2}]', "{}", "unknown key(s) limit"),
        (
            '[{"name": "a", "scope": "product:p", "amount": 1}, {"name": "a", "scope": "product:q", "amount": 1}]',
            "{}",
            "used twice",
        ),
        ("[]", '{"t": "s1"}', "BUDGET_TEAMS['t'] must be a non-empty list"),
        ("[]", "[1]", "BUDGET_TEAMS must be a JSON object"),
    ],
)
def test_a_bad_budget_setting_stops_start_up_naming_it(budgets: str, teams: str, names: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_budget_book(budgets, teams)
    message = str(caught.value)
    assert names in message and "\n" not in message


def test_budgets_apply_by_subscription_product_and_team_and_deployment_filter() -> None:
    b = book(
        {"name": "sub", "scope": "subscription:s1", "amount": 1},
        {"name": "prod", "scope": "product:premium", "tokens": 1000},
        {"name": "team", "scope": "team:blue", "amount": 5, "deployments": ["gpt-4.1"]},
        teams={"blue": ["s1", "s2"]},
    )
    assert [x.name for x in b.applicable("s1", "premium", "gpt-4.1")] == ["sub", "prod", "team"]
    assert [x.name for x in b.applicable("s2", "standard", "gpt-4o")] == []
    assert [x.name for x in b.applicable("s2", "standard", "gpt-4.1")] == ["team"]
    assert b.by_name("sub").limit == UNITS_PER_USD


# --- periods ----------------------------------------------------------------------------------


def test_periods_are_calendar_periods_in_the_budgets_time_zone() -> None:
    at = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # a Sunday, the day Berlin moves to summer time
    assert [stamp(x) for x in window("month", "UTC", at)] == ["2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"]
    assert [stamp(x) for x in window("month", "Europe/Berlin", at)] == ["2026-02-28T23:00:00Z", "2026-03-31T22:00:00Z"]
    assert [stamp(x) for x in window("week", "UTC", at)] == ["2026-03-23T00:00:00Z", "2026-03-30T00:00:00Z"]
    start, end = window("day", "Europe/Berlin", at)
    assert (end - start).total_seconds() == 23 * 3600
    assert [stamp(x) for x in window("month", "UTC", datetime(2026, 12, 31, 23, 59, tzinfo=UTC))][
        1
    ] == "2027-01-01T00:00:00Z"


# --- ledger -----------------------------------------------------------------------------------


def test_a_hold_settles_to_the_actual_charge_once_and_lapses_after_its_deadline() -> None:
    ledger = new_ledger("k", "b", "usd", 100, 50, "s", "e")
    assert reserve(ledger, "r1", 60, expires_at=10, now=0).ok
    assert not reserve(ledger, "r2", 41, expires_at=10, now=1).ok
    assert reserve(ledger, "r2", 40, expires_at=10, now=1).remaining == 0
    first = settle(ledger, "r1", 30, now=2, at_iso="t", held=True)
    assert (first.charged, first.crossed_soft, remaining(ledger)) == (30, False, 30)
    assert settle(ledger, "r1", 30, now=3, at_iso="t", held=True).charged == 0  # redelivered: charged once
    # r2's instance died: at its deadline the hold is freed, and its late record is still charged once.
    assert remaining(ledger) == 30
    assert reserve(ledger, "r3", 60, expires_at=30, now=11).ok
    assert ledger["lapsed"] == {"r2": [40, 11]}
    late = settle(ledger, "r2", 25, now=12, at_iso="t", held=True)
    assert (late.charged, late.crossed_soft, ledger["spent"], ledger["lapsed"]) == (25, True, 55, {})
    assert settle(ledger, "r2", 25, now=13, at_iso="t", held=True).charged == 0
    assert (
        settle(ledger, "r3", 1, now=14, at_iso="t", held=True).crossed_soft is False
    )  # the soft event is once per period
    # Charged without a hold (the store was down at admission): remembered, so charged once too.
    assert settle(ledger, "r4", 5, now=15, at_iso="t", held=False).charged == 5
    assert settle(ledger, "r4", 5, now=16, at_iso="t", held=False).charged == 0
    assert ledger["spent"] == 61 and list(ledger["settled"]) == ["r4"]


def test_worst_case_counts_the_prompt_and_the_largest_output_the_request_allows() -> None:
    plain = worst_case("chat.completions", {"messages": MESSAGES}, "gpt-4o", 4096)
    assert plain.output_tokens == 4096 and 20 < plain.prompt_tokens < 40
    capped = worst_case(
        "chat.completions", {"messages": MESSAGES, "max_completion_tokens": 100, "n": 2}, "gpt-4o", 4096
    )
    assert capped.output_tokens == 200
    assert worst_case("responses", {"input": "hi", "max_output_tokens": 7}, "gpt-4o", 4096).output_tokens == 7
    assert worst_case("embeddings", {"input": ["a", "b"]}, "text-embedding-3-small", 4096).output_tokens == 0


# --- keeper over SQLite ------------------------------------------------------------------------


def record(rid: str, cost: float, *, sub: str = "s1", deployment: str = "gpt-4o", tokens: tuple[int, int] = (10, 20)):
    return {
        "request_id": rid,
        "timestamp": "2026-12-06T12:00:00Z",
        "subscription_id": sub,
        "product": "p",
        "deployment": deployment,
        "cost": cost,
        "prompt_tokens": tokens[0],
        "completion_tokens": tokens[1],
    }


async def test_concurrent_admissions_never_hold_more_than_the_budget(store: SqliteBudgetStore) -> None:
    k = keeper(store, {"name": "b", "scope": "subscription:s1", "amount": 1.0})
    body = {"messages": MESSAGES, "max_completion_tokens": 4000}
    results = await asyncio.gather(
        *(k.admit(f"r{i}", "s1", "p", "gpt-4o", "chat.completions", body) for i in range(64)), return_exceptions=True
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    each = await k.admit("probe", "s9", "p", "gpt-4o", "chat.completions", body)  # no budget applies
    assert each is None
    worst = worst_case("chat.completions", body, "gpt-4o", 4096)
    per_request = -(-(worst.prompt_tokens * 2.5 + worst.output_tokens * 10.0) * 1000 // 1)
    assert len(admitted) == UNITS_PER_USD // per_request
    assert len(admitted) + len(refused) == 64
    assert refused[0].budget == "b" and refused[0].reset_at == "2027-01-01T00:00:00Z"
    assert refused[0].body()["error"]["code"] == "budget_exceeded"
    [row] = await k.status()
    assert row["held"] == len(admitted) * per_request <= UNITS_PER_USD


async def test_the_soft_threshold_is_crossed_exactly_once_under_concurrency(store: SqliteBudgetStore, caplog) -> None:
    k = keeper(store, {"name": "b", "scope": "subscription:s1", "amount": 1.0, "soft_percent": 50})
    records = [record(f"r{i}", 0.1) for i in range(10)]
    with caplog.at_level("WARNING", logger="gateway.budget"):
        await asyncio.gather(*(k.settle(r, None) for r in records))
    crossed = [r for r in records if r["budget"]["soft_crossed"]]
    assert len(crossed) == 1
    events = [r for r in caplog.records if getattr(r, "microsoft.custom_event.name", None) == "AOAIBudgetThreshold"]
    assert len(events) == 1 and events[0].budget == "b"
    [row] = await k.status()
    assert row["spent"] == UNITS_PER_USD and row["soft_at"] is not None


async def test_budgets_are_additive_and_a_refusal_gives_back_the_holds_already_taken(store: SqliteBudgetStore) -> None:
    k = keeper(
        store,
        {"name": "team", "scope": "team:blue", "amount": 100},
        {"name": "tokens", "scope": "subscription:s1", "tokens": 300, "period": "day"},
        teams={"blue": ["s1"]},
    )
    body = {"messages": MESSAGES, "max_tokens": 200}
    admitted = await k.admit("r1", "s1", "p", "gpt-4o", "chat.completions", body)
    assert admitted is not None and set(admitted.holds) == {"team", "tokens"}
    with pytest.raises(BudgetExceeded) as refused:
        await k.admit("r2", "s1", "p", "gpt-4o", "chat.completions", body)
    assert refused.value.budget == "tokens"
    team, tokens = await k.status()
    assert team["in_flight"] == 1 and tokens["in_flight"] == 1  # r2's hold on "team" was given back
    await k.settle(record("r1", 0.001, tokens=(30, 50)), admitted.marks())
    team, tokens = await k.status()
    assert (tokens["spent"], tokens["remaining"], team["spent"]) == (80, 220, 1_000_000)


async def test_downgrade_reroutes_when_the_budget_is_short_and_refuses_when_even_that_does_not_fit(
    store: SqliteBudgetStore,
) -> None:
    k = keeper(
        store,
        {
            "name": "b",
            "scope": "subscription:s1",
            "amount": 0.05,
            "deployments": ["gpt-4.1"],
            "action": "downgrade",
            "downgrade_to": "gpt-4.1-mini",
        },
    )
    body = {"messages": MESSAGES, "max_tokens": 4000}  # gpt-4.1: ~$0.032 worst case, mini ~$0.0064
    first = await k.admit("r1", "s1", "p", "gpt-4.1", "chat.completions", body)
    assert first is not None and first.downgraded_from is None
    second = await k.admit("r2", "s1", "p", "gpt-4.1", "chat.completions", body)
    assert second is not None and (second.deployment, second.downgraded_from) == ("gpt-4.1-mini", "gpt-4.1")
    assert second.holds == {"b": first.holds["b"]}
    third = await k.admit("r3", "s1", "p", "gpt-4.1", "chat.completions", body)  # $0.0114 left: one more mini
    assert third is not None and third.deployment == "gpt-4.1-mini"
    with pytest.raises(BudgetExceeded) as refused:
        await k.admit("r4", "s1", "p", "gpt-4.1", "chat.completions", body)
    assert refused.value.budget == "b"
    [row] = await k.status()
    assert row["in_flight"] == 3


async def test_store_errors_fail_closed_or_open_and_open_ones_are_reconciled(tmp_path: Path) -> None:
    blocker = tmp_path / "down"
    blocker.write_text("a file where the store's directory should be")
    store = SqliteBudgetStore(blocker / "budgets.db")
    closed = keeper(store, {"name": "c", "scope": "subscription:s1", "amount": 1})
    body = {"messages": MESSAGES, "max_tokens": 10}
    with pytest.raises(BudgetStoreUnavailable):
        await closed.admit("r1", "s1", "p", "gpt-4o", "chat.completions", body)
    opened = keeper(store, {"name": "o", "scope": "subscription:s1", "amount": 1, "on_store_error": "fail_open"})
    admission = await opened.admit("r2", "s1", "p", "gpt-4o", "chat.completions", body)
    assert admission is not None and admission.store_error and not admission.holds
    late = record("r2", 0.25)
    await opened.settle(late, admission.marks())
    assert late["budget"]["settled"] is False and late["budget"]["store_error"] is True
    assert opened.unsettled == 1
    blocker.unlink()  # the store is back
    await opened.settle(record("r3", 0.5), None)
    assert opened.unsettled == 0
    [row] = await opened.status()
    assert row["spent"] == round(0.75 * UNITS_PER_USD)
    await store.close()


async def test_an_image_generation_reserves_its_dearest_image_and_an_unpriced_deployment_has_no_room(
    store: SqliteBudgetStore,
) -> None:
    k = keeper(store, {"name": "b", "scope": "subscription:s1", "amount": 0.25})
    admitted = await k.admit("i1", "s1", "p", "dall-e-3", "images.generations", {"prompt": "a cat", "n": 2})
    assert admitted is not None
    [row] = await k.status()
    assert row["held"] == 2 * 120_000_000  # hd/1792x1024 at $0.12, twice
    with pytest.raises(BudgetExceeded) as refused:
        await k.admit("u1", "s1", "p", "my-unknown-deployment", "chat.completions", {"messages": MESSAGES})
    assert refused.value.budget == "b"


def test_a_bad_budget_stops_the_app_when_it_loads() -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    bad = {"BUDGETS": '[{"name": "a", "scope": "team:blue", "amount": 5}]', "BUDGET_TEAMS": "{}"}
    done = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=root,
        env={**os.environ, **bad},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "ConfigurationError: BUDGETS['a'].scope names team 'blue', which BUDGET_TEAMS does not define" in done.stderr


async def test_the_soft_threshold_event_is_an_app_insights_custom_event(store: SqliteBudgetStore) -> None:
    import logging
    import uuid

    from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope
    from opentelemetry.instrumentation.logging.handler import LoggingHandler
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"test.budget.{uuid.uuid4().hex}")
    logger.addHandler(LoggingHandler(logger_provider=provider))
    logger.propagate = False
    k = BudgetKeeper(
        book({"name": "b", "scope": "subscription:s1", "amount": 1.0, "soft_percent": 10}),
        store,
        shipped_book(),
        hold_seconds=60,
        clock=lambda: NOW,
        events=logger,
    )
    await k.settle(record("r1", 0.2), None)
    (log,) = exporter.get_finished_logs()
    envelope = _convert_log_to_envelope(log)
    assert envelope.name == "Microsoft.ApplicationInsights.Event" and envelope.data.base_type == "EventData"
    data = envelope.data.base_data
    assert data.name == "AOAIBudgetThreshold"
    assert data.properties["budget"] == "b" and data.properties["request_id"] == "r1"
    assert data.properties["period"] == "2026-12-01T00:00:00Z" and data.properties["remaining"] == "0.800000 USD"
