"""Budgets across processes: two dev host processes (`python -m devhost`) share one SQLite store.

The guarantee holds across instances (no spend above the budget, the ledger equal to the sum of the
recorded costs after settlement), and an instance killed mid-stream leaves a hold that lapses at the
request's deadline without being charged. `python -m devhost budgets` reads the same ledgers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncAzureOpenAI, AzureOpenAI

from devhost.simulator import SimulatorConfig
from devhost.simulator import run_in_thread as run_simulator
from shared.adapters.sqlite import SqliteDatabase, SqliteRecordStore
from shared.adapters.sqlite_budgets import SqliteBudgetStore
from shared.budgets.config import UNITS_PER_USD
from shared.budgets.ledger import expire

ROOT = Path(__file__).resolve().parent.parent
KEY = "key-team-a-0001"
SIM_KEY = "sim-upstream-key"
API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Tell me about budgets."}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _instance(settings: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m devhost serve` in its own process; yields its URL once it answers."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDGET", "GATEWAY_", "SQLITE", "LOCAL_"))}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "devhost", "serve", "--port", str(port), "--settings", str(settings)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/openai/models?api-version={API_VERSION}", headers={"api-key": KEY}).status_code:
                    break
            assert time.monotonic() < deadline, "the dev host did not answer: " + log.read_text()
            time.sleep(0.2)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _settings(tmp: Path, sim_url: str, budgets: list[dict[str, Any]], **values: str) -> Path:
    path = tmp / "local.settings.json"
    backends = [
        {"name": "sim", "endpoint": sim_url, "auth": {"type": "api_key", "setting": "SIM_KEY"}, "deployments": ["*"]}
    ]
    path.write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {
                    "GATEWAY_BACKENDS": json.dumps(backends),
                    "SIM_KEY": SIM_KEY,
                    "SQLITE_PATH": str(tmp / "shared.db"),
                    "LOCAL_SUBSCRIPTIONS": json.dumps({KEY: {"id": "sub-a", "name": "A", "product": "standard"}}),
                    "BUDGETS": json.dumps(budgets),
                    "CAPTURE_OUTBOX_DIR": str(tmp / "outbox"),
                    **values,
                },
            }
        )
    )
    return path


def _budgets_cli(settings: Path) -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "devhost", "budgets", "--settings", str(settings), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("BUDGET", "SQLITE"))},
    )
    return {row["budget"]: row for row in map(json.loads, out.stdout.splitlines())}


def _records(db: Path) -> list[dict[str, Any]]:
    """The chat records (the start-up probes list models)."""

    async def read() -> list[dict[str, Any]]:
        database = SqliteDatabase(db)
        try:
            return [r for r in await SqliteRecordStore(database).list_records() if r["api"] == "chat.completions"]
        finally:
            await database.close()

    return asyncio.run(read())


def _until(fetch: Callable[[], Any], ok: Callable[[Any], bool], what: str, timeout: float = 60) -> Any:
    """`fetch()` once `ok` accepts it (the other processes settle in their own time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


@pytest.fixture
def sim() -> Iterator[str]:
    handle = run_simulator(SimulatorConfig(api_key=SIM_KEY, completion_tokens=500, stream_chunks=8, log_requests=False))
    try:
        yield handle.url
    finally:
        handle.stop()


def test_two_dev_host_processes_on_one_store_never_overspend_and_settle_to_the_cent(tmp_path: Path, sim: str) -> None:
    settings = _settings(tmp_path, sim, [{"name": "dollar", "scope": "subscription:sub-a", "amount": 1.00}])
    with _instance(settings, tmp_path / "a.log") as (url_a, _), _instance(settings, tmp_path / "b.log") as (url_b, _):

        async def one(i: int, client: AsyncAzureOpenAI) -> str:
            try:
                stream = await client.chat.completions.create(
                    model="o1", stream=True, messages=MESSAGES, max_completion_tokens=800
                )
                async for _ in stream:
                    pass
                return "ok"
            except openai.RateLimitError as exc:
                assert exc.response.json()["error"]["code"] == "budget_exceeded"
                return "refused"

        async def burst() -> list[str]:
            a = AsyncAzureOpenAI(api_key=KEY, azure_endpoint=url_a, api_version=API_VERSION, max_retries=0)
            b = AsyncAzureOpenAI(api_key=KEY, azure_endpoint=url_b, api_version=API_VERSION, max_retries=0)
            async with a, b:
                return await asyncio.gather(*(one(i, a if i % 2 else b) for i in range(64)))

        outcomes = asyncio.run(burst())
        admitted = outcomes.count("ok")
        # Holds of ~$0.0485 each: at least 20 fit; records settled during the burst free room for more.
        assert admitted >= 20 and outcomes.count("refused") == 64 - admitted
        records = _until(lambda: _records(tmp_path / "shared.db"), lambda r: len(r) == 64, "64 records")
        row = _until(lambda: _budgets_cli(settings)["dollar"], lambda b: b["in_flight"] == 0, "no holds")
        served = [r for r in records if r["status_code"] == 200]
        spent = sum(r["cost"] for r in served)
        assert len(served) == admitted and spent <= 1.00
        assert row["spent"] == sum(round(r["cost"] * UNITS_PER_USD) for r in records)
        assert round(row["remaining"] / UNITS_PER_USD, 2) == round(1.00 - spent, 2)


def test_an_instance_killed_mid_stream_leaves_a_hold_that_lapses_uncharged(tmp_path: Path) -> None:
    slow = run_simulator(SimulatorConfig(api_key=SIM_KEY, token_delay_ms=300, stream_chunks=40, log_requests=False))
    try:
        # Room for one worst case only; a request's deadline (and so its hold) is 120 s + 5 s of grace.
        budgets = [{"name": "one", "scope": "subscription:sub-a", "amount": 0.05}]
        settings = _settings(tmp_path, slow.url, budgets, UPSTREAM_TOTAL_TIMEOUT_SECONDS="120")
        body = {"model": "gpt-4o", "messages": MESSAGES, "max_tokens": 4000}  # ~$0.04 worst case
        quick = {"x-sim-chunks": "1"}
        with _instance(settings, tmp_path / "a.log") as (url_a, process_a):
            client = AzureOpenAI(api_key=KEY, azure_endpoint=url_a, api_version=API_VERSION, max_retries=0)
            stream = client.chat.completions.create(stream=True, **body)
            next(iter(stream))  # the first chunk is here: the request is mid-stream
            process_a.kill()
            process_a.wait()
        [ledger] = asyncio.run(_ledgers(tmp_path / "shared.db"))
        [(dead_id, (units, expires_at))] = ledger["holds"].items()
        row = _budgets_cli(settings)["one"]
        assert row["in_flight"] == 1 and row["spent"] == 0 and row["held"] == units
        with _instance(settings, tmp_path / "b.log") as (url_b, _):
            client = AzureOpenAI(api_key=KEY, azure_endpoint=url_b, api_version=API_VERSION, max_retries=0)
            with pytest.raises(openai.RateLimitError):  # the dead instance's hold still counts
                client.chat.completions.create(**body, extra_headers=quick)
            # The deadline passes: the ledger step every instance runs first then frees the hold.
            asyncio.run(_expire(tmp_path / "shared.db", ledger["id"], expires_at + 1))
            [ledger] = asyncio.run(_ledgers(tmp_path / "shared.db"))
            assert ledger["holds"] == {} and list(ledger["lapsed"]) == [dead_id] and ledger["spent"] == 0
            reply = client.chat.completions.with_raw_response.create(**body, extra_headers=quick)
            assert reply.parse().choices[0].message.content
            records = _until(lambda: _records(tmp_path / "shared.db"), lambda r: len(r) == 2, "2 records")
            row = _until(lambda: _budgets_cli(settings)["one"], lambda b: b["in_flight"] == 0, "settled")
            # Only what the records say was used is charged: the killed request never produced a
            # record, so nothing is charged for it (a late record is charged once: test_budgets_e2e).
            assert row["spent"] == sum(round(r["cost"] * UNITS_PER_USD) for r in records) > 0
    finally:
        slow.stop()


async def _ledgers(db: Path) -> list[dict[str, Any]]:
    store = SqliteBudgetStore(db)
    try:
        return await store.ledgers()
    finally:
        await store.close()


async def _expire(db: Path, key: str, at: float) -> None:
    store = SqliteBudgetStore(db)
    try:
        await store.apply(key, dict, lambda ledger: expire(ledger, at))
    finally:
        await store.close()
