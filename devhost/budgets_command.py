"""`python -m devhost budgets`: every budget's current period, its spend, holds in flight and reset time.

Reads the same settings file as `serve` (BUDGETS, BUDGET_TEAMS, the store) and the same ledgers the
running gateway writes, through the same keeper, so it shows what admission sees right now.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from devhost.host import load_settings_file
from devhost.usage_report import format_table
from shared.budgets.config import UNITS_PER_USD
from shared.errors import ConfigurationError
from shared.settings import Settings

COLUMNS = ("budget", "scope", "period", "limit", "spent", "in flight", "held", "remaining", "soft at", "resets")


def budgets_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", default="local.settings.json", help="Core Tools settings file to load")
    parser.add_argument("--json", action="store_true", help="one JSON object per budget instead of a table")


def budgets_command(args: argparse.Namespace) -> int:
    load_settings_file(Path(args.settings))
    try:
        rows = asyncio.run(budget_rows(Settings.from_env()))
    except ConfigurationError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not rows:
        print("No budgets configured (BUDGETS is empty).")
        return 0
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    print(format_table(COLUMNS, [_cells(row) for row in rows]))
    return 0


async def budget_rows(settings: Settings) -> list[dict[str, Any]]:
    """`BudgetKeeper.status()` over the configured store (the ledgers are not changed)."""
    from shared.wiring import build_budgets

    closers: list[Any] = []

    def credential() -> Any:
        from azure.identity.aio import DefaultAzureCredential

        made = DefaultAzureCredential()
        closers.append(made.close)
        return made

    keeper = build_budgets(settings, credential, closers)
    try:
        return await keeper.status() if keeper is not None else []
    finally:
        for close in reversed(closers):
            await close()


def _cells(row: dict[str, Any]) -> list[str]:
    def amount(units: int | None) -> str:
        if units is None:
            return "-"
        return f"{units / UNITS_PER_USD:.2f}" if row["unit"] == "usd" else str(units)

    unit = "USD" if row["unit"] == "usd" else "tokens"
    return [
        row["budget"],
        row["scope"],
        row["period"],
        f"{amount(row['limit'])} {unit}",
        amount(row["spent"]),
        str(row["in_flight"]),
        amount(row["held"]),
        amount(row["remaining"]),
        row["soft_at"] or "-",
        row["reset"],
    ]
