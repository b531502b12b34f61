"""Budgets end to end: the official OpenAI SDK -> dev host (function_app.py) -> AOAI simulator, with
the budget ledgers in SQLite. Admission in the proxy, settlement in the parser, from the records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncAzureOpenAI, AzureOpenAI

import function_app
from devhost.simulator import SimulatorConfig
from shared.budgets.config import UNITS_PER_USD
from shared.budgets.estimate import worst_case
from tests.devhost_harness import DevHostGateway, dev_host

KEY_A = "key-team-a-0001"
KEY_B = "key-team-b-0002"
SIM_KEY = "sim-upstream-key"
API_VERSION = "2024-10-21"
MESSAGES = [{"role": "user", "content": "Tell me about budgets."}]
SUBSCRIPTIONS = {
    KEY_A: {"id": "sub-a", "name": "A", "product": "standard"},
    KEY_B: {"id": "sub-b", "name": "B", "product": "standard"},
}


class Gateway(DevHostGateway):
    def client(self, key: str = KEY_A) -> AzureOpenAI:
        return AzureOpenAI(api_key=key, azure_endpoint=self.url, api_version=API_VERSION, max_retries=0)

    def aclient(self, key: str = KEY_A) -> AsyncAzureOpenAI:
        return AsyncAzureOpenAI(api_key=key, azure_endpoint=self.url, api_version=API_VERSION, max_retries=0)

    def record(self, request_id: str) -> dict[str, Any]:
        self.settle()
        found = self.call(function_app.ports().records.get(request_id))
        assert found is not None, f"no record for {request_id}"
        return found

    def status(self) -> dict[str, dict[str, Any]]:
        rows = self.call(function_app.ports().budgets.status())
        return {row["budget"]: row for row in rows}


@contextlib.contextmanager
def _gateway(
    tmp: Path, budgets: list[dict[str, Any]], deployments: list[str] | None = None, **env: str
) -> Iterator[Gateway]:
    with dev_host(
        tmp,
        SUBSCRIPTIONS,
        {"sim": SimulatorConfig(api_key=SIM_KEY, completion_tokens=500, stream_chunks=8, deployments=deployments)},
        env={"BUDGETS": json.dumps(budgets), "BUDGET_TEAMS": json.dumps({"ab": ["sub-a", "sub-b"]}), **env},
        gateway=Gateway,
    ) as gateway:
        yield gateway


def test_one_dollar_and_64_parallel_streams_admit_what_the_arithmetic_allows_and_settle_to_the_cent(tmp_path):
    with _gateway(tmp_path, [{"name": "dollar", "scope": "team:ab", "amount": 1.00, "soft_percent": 50}]) as gw:
        ports = function_app.ports()
        announce = ports.channel.publish
        held: list[str] = []

        async def hold(request_id: str) -> None:  # the parser waits: no hold is settled during the burst
            held.append(request_id)

        ports.channel.publish = hold
        body = {"messages": MESSAGES, "max_completion_tokens": 800}
        worst = worst_case("chat.completions", body, "o1", 4096, "o1")
        reservation = math.ceil((worst.prompt_tokens * 15.0 + worst.output_tokens * 60.0) * 1000)  # o1 per 1M
        expected = UNITS_PER_USD // reservation
        assert 0.04 < reservation / UNITS_PER_USD < 0.05 and expected == 20

        async def one(i: int, client: AsyncAzureOpenAI) -> tuple[str, Any]:
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model="o1", stream=True, **body, extra_headers={"x-ms-client-request-id": f"burst-{i}"}
                )
                stream = raw.parse()
                async for _ in stream:
                    pass
                return "ok", raw.headers
            except openai.RateLimitError as exc:
                return "refused", exc

        async def burst() -> list[tuple[str, Any]]:
            async with gw.aclient() as a, gw.aclient(KEY_B) as b:
                return await asyncio.gather(*(one(i, a if i % 2 else b) for i in range(64)))

        results = asyncio.run(burst())
        gw.call(function_app.drain())  # every exchange stored and (held back from the parser) announced
        assert len(held) == 64
        admitted = [headers for kind, headers in results if kind == "ok"]
        refused = [exc for kind, exc in results if kind == "refused"]
        assert len(admitted) == expected and len(refused) == 64 - expected
        for exc in refused:
            error = exc.response.json()["error"]
            assert (error["code"], error["budget"]) == ("budget_exceeded", "dollar")
            assert error["reset_at"] == exc.response.headers["x-gateway-budget-reset"]
        assert all("x-gateway-budget-remaining" in h and h["x-gateway-budget-reset"].endswith("Z") for h in admitted)
        row = gw.status()["dollar"]
        assert row["in_flight"] == expected and row["held"] == expected * reservation <= UNITS_PER_USD

        ports.channel.publish = announce
        for request_id in held:
            gw.call(announce(request_id))
        records = [gw.record(rid) for rid in held]
        served = [r for r in records if r["status_code"] == 200]
        assert len(served) == expected and all(r["budget"]["settled"] for r in records)
        spent = sum(r["cost"] for r in served)
        assert 0.5 < spent <= 1.00 and all(0.02 < r["cost"] < 0.05 for r in served)
        row = gw.status()["dollar"]
        assert row["in_flight"] == 0 and row["spent"] == sum(round(r["cost"] * UNITS_PER_USD) for r in records)
        assert round(row["remaining"] / UNITS_PER_USD, 2) == round(1.00 - spent, 2)
        # The soft threshold (50 %) is crossed by exactly one settled request, settled concurrently with the rest.
        assert spent >= 0.5 and sum(len(r["budget"]["soft_crossed"]) for r in records) == 1
        assert row["soft_at"] is not None


def test_a_downgrade_routes_to_the_cheaper_deployment_and_the_record_names_both(tmp_path):
    budgets = [
        {
            "name": "gpt41",
            "scope": "subscription:sub-a",
            "amount": 0.01,
            "deployments": ["gpt-4.1"],
            "action": "downgrade",
            "downgrade_to": "gpt-4.1-mini",
        },
        {"name": "quota-b", "scope": "subscription:sub-b", "tokens": 100_000},
    ]
    with _gateway(tmp_path, budgets, deployments=["gpt-4.1", "gpt-4.1-mini", "gpt-4o"]) as gw:
        client = gw.client()
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4.1", messages=MESSAGES, max_tokens=2000, extra_headers={"x-ms-client-request-id": "down-1"}
        )
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-gateway-downgraded-from"] == "gpt-4.1"
        assert "/deployments/gpt-4.1-mini/" in gw.upstream("down-1").path
        record = gw.record(raw.headers["x-gateway-request-id"])
        assert record["deployment"] == "gpt-4.1-mini" and record["budget"]["downgraded_from"] == "gpt-4.1"
        assert record["budget"]["budgets"] == ["gpt41"] and record["cost"] > 0
        # On the v1 surface the deployment is the body's `model`: that is what is rewritten.
        v1 = openai.OpenAI(base_url=f"{gw.url}/openai/v1", api_key=KEY_A, max_retries=0)
        raw = v1.chat.completions.with_raw_response.create(
            model="gpt-4.1", messages=MESSAGES, max_tokens=2000, extra_headers={"x-ms-client-request-id": "down-v1"}
        )
        assert raw.headers["x-gateway-downgraded-from"] == "gpt-4.1"
        assert json.loads(gw.upstream("down-v1").body)["model"] == "gpt-4.1-mini"
        record = gw.record(raw.headers["x-gateway-request-id"])
        assert record["deployment"] == "gpt-4.1-mini" and record["budget"]["downgraded_from"] == "gpt-4.1"
        # Too big even for the cheaper deployment: refused with the budget's error.
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model="gpt-4.1", messages=MESSAGES, max_tokens=100_000)
        assert refused.value.response.json()["error"]["code"] == "budget_exceeded"
        # Admitted, then no backend serves the deployment: the error carries the budget headers too.
        with pytest.raises(openai.NotFoundError) as missing:
            gw.client(KEY_B).chat.completions.create(model="no-such-deployment", messages=MESSAGES, max_tokens=10)
        assert missing.value.response.headers["x-gateway-budget-remaining"].endswith(" tokens")
        # A budget that does not count the deployment leaves it alone (no header, no hold).
        other = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, max_tokens=50)
        assert "x-gateway-downgraded-from" not in other.headers and "x-gateway-budget-remaining" not in other.headers


def test_store_outage_fails_closed_or_open_per_budget_and_open_ones_are_reconciled(tmp_path):
    blocker = tmp_path / "down"
    blocker.write_text("a file where the budget store's directory should be")
    budgets = [
        {"name": "closed", "scope": "subscription:sub-a", "amount": 5},
        {"name": "open", "scope": "subscription:sub-b", "amount": 5, "on_store_error": "fail_open"},
    ]
    with _gateway(tmp_path / "gw", budgets, BUDGET_SQLITE_PATH=str(blocker / "budgets.db")) as gw:
        with pytest.raises(openai.InternalServerError) as closed:
            gw.client(KEY_A).chat.completions.create(
                model="gpt-4o", messages=MESSAGES, extra_headers={"x-ms-client-request-id": "closed-1"}
            )
        assert closed.value.status_code == 503
        assert closed.value.response.json()["error"]["code"] == "budget_store_unavailable"
        # Reading and listing run no model: no budget is consulted, so the outage does not touch them.
        listed = gw.client(KEY_A).models.with_raw_response.list()
        assert listed.http_response.status_code == 200 and "x-gateway-budget-remaining" not in listed.headers
        assert not [
            r for sim in gw.sims.values() for r in sim.requests if r.headers.get("x-ms-client-request-id") == "closed-1"
        ]

        raw = gw.client(KEY_B).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        assert raw.parse().choices[0].message.content
        first = gw.record(raw.headers["x-gateway-request-id"])
        assert first["budget"] == {
            "budgets": ["open"],
            "downgraded_from": None,
            "store_error": True,
            "settled": False,
            "soft_crossed": [],
        }
        blocker.unlink()  # the store is back
        again = gw.client(KEY_B).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        second = gw.record(again.headers["x-gateway-request-id"])
        assert second["budget"]["settled"] is True
        row = gw.status()["open"]
        assert row["spent"] == round(first["cost"] * UNITS_PER_USD) + round(second["cost"] * UNITS_PER_USD) > 0


def test_a_hold_whose_record_is_late_lapses_and_the_late_record_is_charged_once(tmp_path):
    with _gateway(tmp_path, [{"name": "small", "scope": "subscription:sub-a", "amount": 0.05}]) as gw:
        ports = function_app.ports()
        announce = ports.channel.publish
        held: list[str] = []

        async def hold(request_id: str) -> None:  # the parser is down: no record yet
            held.append(request_id)

        ports.channel.publish = hold
        body = {"messages": MESSAGES, "max_tokens": 4000}  # gpt-4o: ~$0.04 worst case, one fits
        raw = gw.client().chat.completions.with_raw_response.create(model="gpt-4o", **body)
        rid = raw.headers["x-gateway-request-id"]
        with pytest.raises(openai.RateLimitError):
            gw.client().chat.completions.create(model="gpt-4o", **body)
        # Past the request's deadline (UPSTREAM_TOTAL_TIMEOUT_SECONDS + grace) the hold lapses: room again.
        keeper = ports.budgets
        real_clock = keeper.clock
        keeper.clock = lambda: real_clock() + keeper.hold_seconds + 1
        again = gw.client().chat.completions.with_raw_response.create(model="gpt-4o", **body)
        row = gw.status()["small"]
        assert row["in_flight"] == 1 and row["lapsed"] == 1 and row["spent"] == 0
        # The parser comes back: the late record settles the lapsed hold; a redelivery charges nothing.
        gw.call(function_app.drain())
        ports.channel.publish = announce
        for request_id in [*held, rid]:
            gw.call(announce(request_id))
        first = gw.record(rid)
        second = gw.record(again.headers["x-gateway-request-id"])
        row = gw.status()["small"]
        assert row["in_flight"] == 0 and row["lapsed"] == 0
        assert row["spent"] == round(first["cost"] * UNITS_PER_USD) + round(second["cost"] * UNITS_PER_USD)
        assert gw.emitted[rid] == 1
