"""The parser under poison, over the real SQLite stores: what can never be read is dead-lettered at
once with its real reason (and still recorded when the request part is readable); only real store
failures are retried; every exchange has a time and a size budget; indexes are bounded by what
the stream holds; `outcome` says how the answer reached the client."""

from __future__ import annotations

import itertools
import sqlite3
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from parser.handler import ParserBudget, handle_batch
from shared.exchange import Attempt
from shared.normalize import record_schema
from shared.normalize.consolidate import consolidate
from shared.normalize.usage import normalize
from shared.settings import Settings
from shared.wiring import WiredPorts, build_ports
from testing.factories import exchange, responses_sse, text_stream

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def ports(tmp_path: Path) -> AsyncIterator[WiredPorts]:
    async with build_ports(Settings.from_env({"SQLITE_PATH": str(tmp_path / "g.db")})) as wired:
        yield wired


def put_raw(db: Path, rid: str, item: str) -> None:
    """A stored item as a broken writer (or a hand edit) left it."""
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO exchange_items (request_id, seq, count, item, created_at) VALUES (?, 0, 1, ?, '2026-01-01')",
            (rid, item),
        )


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.calls.append(delay)


def item(data: object, rid: str) -> str:
    return orjson.dumps({"id": f"{rid}.0", "requestId": rid, "seq": 0, "count": 1, "exchange": data}).decode()


# ------------------------------------------------------------------------ poison vs outage
async def test_poison_is_dead_lettered_at_once_with_its_reason_and_recorded_when_the_request_is_readable(
    ports: WiredPorts, tmp_path: Path
) -> None:
    db = tmp_path / "g.db"
    await ports.exchanges.save(exchange(request_id="warm"))  # creates the tables
    good = orjson.loads(exchange(request_id="p-timings", body=CHAT).to_json())
    no_timings = {k: v for k, v in good.items() if k != "timings"}
    wrong_types = {**good, "request_id": "p-types", "response": "not an object", "attempts": 5}
    put_raw(db, "p-json", "this is not JSON")
    put_raw(db, "p-timings", item(no_timings, "p-timings"))
    put_raw(db, "p-types", item(wrong_types, "p-types"))
    put_raw(db, "p-norequest", item({"request_id": "p-norequest"}, "p-norequest"))
    sleeps = Sleeps()
    ids = ["p-json", "p-timings", "p-types", "p-norequest"]
    result = await handle_batch(ids, ports, sleep=sleeps)
    assert sleeps.calls == []  # nothing retried: no delay spent on poison
    assert sorted(result.deadlettered) == sorted(ids)
    letters = {d["key"]: d["reason"] for d in await ports.deadletters.list_letters()}
    assert len(letters) == 4
    assert letters["p-json"].startswith("poison exchange: stored exchange is not JSON")
    assert "missing field 'timings'" in letters["p-timings"]
    assert letters["p-types"].startswith("poison exchange: stored exchange is not readable: ")
    assert "unavailable" not in " ".join(letters.values())
    # The request part was readable: a record anyway, saying why it is thin.
    assert sorted(result.recorded) == ["p-timings", "p-types"]
    for rid in ("p-timings", "p-types"):
        record = await ports.records.get(rid)
        record_schema.validate(record)
        assert record["deployment"] == "gpt-4o" and record["parse_error"].startswith("poison exchange")
    # Redelivered: no second record, no second dead letter.
    again = await handle_batch(ids, ports, sleep=sleeps)
    assert sorted(again.duplicates) == ["p-timings", "p-types"]
    assert len(await ports.deadletters.list_letters()) == 4 + 2  # the two unreadable ones, again


async def test_a_real_store_failure_is_still_retried(ports: WiredPorts) -> None:
    await ports.exchanges.save(exchange(request_id="s-1", body=CHAT))
    load, failures = ports.exchanges.load, iter([sqlite3.OperationalError("database is locked")] * 2)

    async def flaky(rid: str):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return await load(rid)

    ports.exchanges.load = flaky  # type: ignore[method-assign]
    sleeps = Sleeps()
    result = await handle_batch(["s-1"], ports, sleep=sleeps)
    assert result.recorded == ["s-1"] and len(sleeps.calls) == 2


# ------------------------------------------------------------------------ bounds and budgets
def test_a_content_index_of_300_million_allocates_nothing() -> None:
    stream = responses_sse(
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 300_000_000, "delta": "x"},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "delta": "ok"},
        {"type": "response.content_part.added", "output_index": 2**40, "content_index": 0, "part": {}},
    )
    tracemalloc.start()
    try:
        result = consolidate("responses", stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000
    assert result.body["output"] == [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}
    ]
    assert any("beyond what the stream holds" in note for note in result.notes)


class Clock:
    """A clock that moves one second each time it is read."""

    def __init__(self) -> None:
        self.ticks = itertools.count()

    def __call__(self) -> float:
        return float(next(self.ticks))


async def test_an_exchange_over_its_time_budget_gets_a_record_with_parse_error_and_one_dead_letter(
    ports: WiredPorts,
) -> None:
    pieces = ["word "] * 2000  # > 256 events: the consolidation loop checks the clock
    await ports.exchanges.save(
        exchange(
            request_id="slow",
            body={**CHAT, "stream": True},
            sse_text=text_stream(pieces),
            response_headers={"content-type": "text/event-stream"},
        )
    )
    budget = ParserBudget(seconds=3, clock=Clock())
    result = await handle_batch(["slow", "slow"], ports, budget=budget)
    assert result.recorded == ["slow"] and result.duplicates == ["slow"] and result.deadlettered == ["slow"]
    record = await ports.records.get("slow")
    record_schema.validate(record)
    assert "budget of 3 s" in record["parse_error"] and record["status_code"] == 200
    letters = await ports.deadletters.list_letters()
    assert [(d["key"], d["reason"].split(":")[0]) for d in letters] == [("slow", "over the parser's budget")]


async def test_an_exchange_over_the_size_budget_is_not_consolidated(ports: WiredPorts) -> None:
    await ports.exchanges.save(
        exchange(
            request_id="big",
            body={**CHAT, "stream": True},
            sse_text=text_stream(["x" * 50_000]),
            response_headers={"content-type": "text/event-stream"},
        )
    )
    result = await handle_batch(["big"], ports, budget=ParserBudget(max_bytes=10_000))
    assert result.recorded == ["big"] and result.deadlettered == ["big"]
    record = await ports.records.get("big")
    assert "over the parser's limit of 10000" in record["parse_error"] and record["completion_tokens"] == 0


# ------------------------------------------------------------------------ outcome and stream
def _record(attempts: list[Attempt] | None = None, **kwargs) -> dict:
    ex = exchange(**kwargs)
    if attempts is not None:
        ex.attempts = attempts
    record, _ = normalize(ex)
    record_schema.validate(record)
    return record


def test_outcome_says_how_the_answer_reached_the_client() -> None:
    sse = {"response_headers": {"content-type": "text/event-stream"}, "body": {**CHAT, "stream": True}}
    assert _record(**sse, sse_text=text_stream(["a", "b"]))["outcome"] == "complete"
    cut = _record(
        **sse,
        sse_text=text_stream(["a"])[: -len("data: [DONE]\n\n")],
        attempts=[Attempt("east", 200, 5.0, "served", "stream broken: ClientPayloadError")],
    )
    assert (cut["outcome"], cut["status_code"], cut["stream"]) == ("upstream_broken", 200, True)
    silent = _record(
        **sse, sse_text=text_stream(["a"])[:20], attempts=[Attempt("east", 200, 5.0, "served", "stream idle timeout")]
    )
    assert silent["outcome"] == "timeout"
    ended_early = _record(**sse, sse_text=text_stream(["a"])[: -len("data: [DONE]\n\n")])
    assert ended_early["outcome"] == "upstream_broken"
    left = _record(**sse, sse_text=text_stream(["a"])[:30], client_disconnected=True)
    assert left["outcome"] == "client_disconnected"
    filtered = _record(status=400, body=CHAT, response_body={"error": {"code": "content_filter", "message": "x"}})
    assert filtered["outcome"] == "blocked"
    enforced = _record(**sse, sse_text=text_stream(["a"]), enforcement={"mode": "enforce", "action": "blocked"})
    assert enforced["outcome"] == "blocked"
    timeout = _record(
        status=504,
        body=CHAT,
        gateway_error={"code": "GatewayTimeout", "message": "t"},
        response_body={"error": {"code": "GatewayTimeout", "message": "t"}},
    )
    assert timeout["outcome"] == "timeout"


def test_stream_reflects_what_the_client_was_sent() -> None:
    # A stream request answered with a JSON error: the client received JSON.
    record = _record(status=429, body={**CHAT, "stream": True}, response_body={"error": {"code": "429"}})
    assert record["stream"] is False and record["outcome"] == "complete"


def test_long_prose_is_counted_in_pieces_exactly_and_a_run_without_spaces_still_gets_a_count() -> None:
    from shared.normalize.tokens import TokenCounter

    counter = TokenCounter("o200k_base")
    words = ["hello", "world", "gateway", "Überweisung", "体験", "stream"]
    prose = " ".join(words[i % len(words)] for i in range(30_000))  # > 64,000 characters: in pieces
    assert len(prose) > 100_000
    assert counter.text(prose) == len(counter._enc.encode(prose, disallowed_special=()))
    assert counter.text("abcdefghij" * 20_000) == 40_000


def test_the_local_dashboard_counts_answers_that_did_not_arrive_whole() -> None:
    from devhost.usage_summary import summarize
    from tests.usage_records import make_record

    records = [make_record(i) for i in range(3)]
    records[1]["outcome"] = "upstream_broken"
    records[2]["outcome"] = "timeout"
    (errors,) = summarize(records).errors
    assert errors.incomplete == {"upstream_broken": 1, "timeout": 1}


async def test_a_large_exchange_is_normalized_off_the_event_loop_under_the_same_budget(ports: WiredPorts) -> None:
    pieces = ["word " * 120] * 2000  # > 1 MB stored: normalized on a worker thread
    await ports.exchanges.save(
        exchange(
            request_id="large",
            body={**CHAT, "stream": True},
            sse_text=text_stream(pieces),
            response_headers={"content-type": "text/event-stream"},
        )
    )
    result = await handle_batch(["large"], ports, budget=ParserBudget(seconds=3, clock=Clock()))
    assert result.recorded == ["large"] and result.deadlettered == ["large"]
    assert "budget of 3 s" in (await ports.records.get("large"))["parse_error"]
    await ports.exchanges.save(
        exchange(
            request_id="large-ok",
            body={**CHAT, "stream": True},
            sse_text=text_stream(pieces),
            response_headers={"content-type": "text/event-stream"},
        )
    )
    fine = await handle_batch(["large-ok"], ports)  # the default budget: plenty
    record = await ports.records.get("large-ok")
    assert fine.recorded == ["large-ok"] and record["parse_error"] is None and record["completion_tokens"] > 200_000
