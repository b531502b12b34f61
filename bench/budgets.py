"""Added latency of budget admission and settlement with the store local: `python -m bench.budgets`.

The keeper and the SQLite budget store exactly as the dev host wires them (one file in WAL mode, a
dedicated connection thread, one `BEGIN IMMEDIATE` transaction per step). Per request it times, in
wall-clock time:
- admission: counting the prompt, pricing the worst case, one ledger step per budget that applies
  (two budgets here: a subscription budget and a team budget, as budgets are additive);
  each request is settled after it is admitted, so the holds in the ledger are the requests in flight;
- settlement: one ledger step per budget from the usage record;
- admission when no budget applies to the caller (the cost every other request pays).
At concurrency 1 and 16 (requests of one process contending for the ledger). Writes
`bench/results/budgets.md` and prints the same table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from shared.adapters.sqlite_budgets import SqliteBudgetStore
from shared.budgets.config import parse_budget_book
from shared.budgets.keeper import BudgetKeeper, shipped_book

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant for the platform team."},
    {"role": "user", "content": "Summarize the gateway's design in a few paragraphs. " * 8},
]
BODY = {"messages": MESSAGES, "max_tokens": 800, "stream": True}
RESULTS = Path(__file__).resolve().parent / "results" / "budgets.md"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def _one_concurrency(
    keeper: BudgetKeeper, concurrency: int, requests: int
) -> list[tuple[str, int, float, float]]:
    admit_ms: list[float] = []
    settle_ms: list[float] = []
    free_ms: list[float] = []
    gate = asyncio.Semaphore(concurrency)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    async def one(rid: str) -> None:
        # One request as the gateway sees it: admitted, answered, then settled from its record.
        async with gate:
            start = time.perf_counter()
            admission = await keeper.admit(rid, "s1", "p", "gpt-4o", "chat.completions", BODY)
            admit_ms.append((time.perf_counter() - start) * 1000)
            assert admission is not None
            record = {
                "request_id": rid,
                "timestamp": stamp,
                "subscription_id": "s1",
                "product": "p",
                "deployment": "gpt-4o",
                "cost": 0.0123,
                "prompt_tokens": 150,
                "completion_tokens": 400,
            }
            start = time.perf_counter()
            await keeper.settle(record, admission.marks())
            settle_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            await keeper.admit(f"x-{rid}", "s9", "p", "gpt-4o", "chat.completions", BODY)
            free_ms.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(one(f"c{concurrency}-{i}") for i in range(requests)))
    return [
        (name, concurrency, *_percentiles(samples))
        for name, samples in (
            ("admission (2 budgets)", admit_ms),
            ("settlement (2 budgets)", settle_ms),
            ("admission, no budget applies", free_ms),
        )
    ]


async def run(requests: int) -> list[tuple[str, int, float, float]]:
    rows: list[tuple[str, int, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteBudgetStore(Path(tmp) / "budgets.db")
        budgets = [
            {"name": "sub", "scope": "subscription:s1", "amount": 1_000_000},
            {"name": "team", "scope": "team:blue", "amount": 1_000_000, "soft_percent": 80},
        ]
        book = parse_budget_book(json.dumps(budgets), json.dumps({"blue": ["s1"]}))
        keeper = BudgetKeeper(book, store, shipped_book(), hold_seconds=1800)
        try:
            await keeper.admit("warm", "s1", "p", "gpt-4o", "chat.completions", BODY)  # opens the file, tables
            for concurrency in (1, 16):
                rows += await _one_concurrency(keeper, concurrency, requests)
        finally:
            await store.close()
    return rows


def markdown(rows: list[tuple[str, int, float, float]], requests: int) -> str:
    lines = [
        "# Budgets: added latency of admission and settlement (store local)",
        "",
        f"`python -m bench.budgets --requests {requests}`: the keeper over the SQLite budget store (WAL, one",
        "transaction per ledger step), wall-clock ms per request. Admission runs before the request is",
        "forwarded (on the time to first byte); settlement runs in the parser, after the response.",
        "",
        f"Machine load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared 2-core host).",
        "",
        "| step | concurrency | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {c} | {p50:.3f} | {p99:.3f} |" for name, c, p50, p99 in rows),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.budgets")
    parser.add_argument("--requests", type=int, default=2000, help="requests per step and concurrency")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.requests))
    text = markdown(rows, args.requests)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
