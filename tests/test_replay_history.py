"""Replay takes history as it is: exchanges with only a request and a response are re-parsed (the
record says what was missing), bad lines are reported by number and the rest parsed; the dev host
exports stored exchanges as JSON lines that replay reads."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import orjson

from devhost.__main__ import main as devhost_main
from parser.__main__ import replay
from shared.adapters.sqlite import SqliteDatabase, SqliteExchangeStore
from shared.exchange import Identity
from shared.normalize import record_schema
from testing.factories import exchange

_CHAT = {
    "request": {
        "method": "POST",
        "path": "/openai/deployments/gpt-4o/chat/completions",
        "body": {"messages": [{"role": "user", "content": "hi"}]},
    },
    "response": {
        "status": 200,
        "body": {
            "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": 8, "completion_tokens": 2, "total_tokens": 10},
        },
    },
}


def test_an_exchange_with_only_request_and_response_is_replayed_and_says_what_was_missing(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text(
        "\n".join([json.dumps(_CHAT), "{not json", json.dumps({"request": {"method": "POST"}}), json.dumps(_CHAT)])
        + "\n"
    )
    out, err = io.StringIO(), io.StringIO()
    status = replay([str(path)], out, err)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(records) == 2, "the good lines are parsed although others are bad"
    for record in records:
        record_schema.validate(record)
        assert record["exchange_missing"] == ["request_id", "timings", "attempts", "identity"]
        assert (record["prompt_tokens"], record["completion_tokens"], record["usage_source"]) == (8, 2, "service")
        assert record["cost"] > 0 and record["subscription_id"] == "unknown"
    assert records[0]["request_id"] == records[1]["request_id"], "a replayed line always gets the same id"
    problems = err.getvalue().splitlines()
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:2", f"{path}:3"]
    assert "not JSON" in problems[0] and "method and path" in problems[1]
    assert status == 1


def _stored(db_path: Path) -> None:
    async def save() -> None:
        db = SqliteDatabase(db_path)
        store = SqliteExchangeStore(db)
        for rid, team in (("r-a1", "team-a"), ("r-b1", "team-b"), ("r-a2", "team-a")):
            ex = exchange(
                request_id=rid,
                body={"messages": [{"role": "user", "content": "hi"}]},
                response_body=_CHAT["response"]["body"],
            )
            ex.identity = Identity(subscription_id=team, subscription_name=team, product="standard")
            await store.save(ex)
        await db.close()

    asyncio.run(save())


def test_exchanges_export_writes_json_lines_that_replay_reads(tmp_path, monkeypatch, capsys):
    db_path = tmp_path / "gateway.db"
    _stored(db_path)
    monkeypatch.setenv("SQLITE_PATH", str(db_path))
    out_file = tmp_path / "team-a.jsonl"
    assert (
        devhost_main(
            [
                "exchanges",
                "export",
                "--settings",
                str(tmp_path / "none.json"),
                "--since",
                "2000-01-01",
                "--subscription",
                "team-a",
                "--out",
                str(out_file),
            ]
        )
        == 0
    )
    lines = [orjson.loads(line) for line in out_file.read_text().splitlines()]
    assert [line["request_id"] for line in lines] == ["r-a1", "r-a2"]
    out, err = io.StringIO(), io.StringIO()
    assert replay([str(out_file)], out, err) == 0, err.getvalue()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["request_id"] for r in records] == ["r-a1", "r-a2"] and all("exchange_missing" not in r for r in records)
    assert (
        devhost_main(
            [
                "exchanges",
                "export",
                "--settings",
                str(tmp_path / "none.json"),
                "--since",
                "2999-01-01",
                "--out",
                str(tmp_path / "none.jsonl"),
            ]
        )
        == 0
    )
    assert (tmp_path / "none.jsonl").read_text() == ""
