"""Schema-valid usage records for tests, stored through the real SQLite record store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema

from shared.adapters.sqlite import SqliteDatabase, SqliteRecordStore

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "shared" / "normalize" / "schema" / "usage-record.schema.json"
_VALIDATOR = jsonschema.Draft202012Validator(
    json.loads(SCHEMA_PATH.read_text()), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def make_record(n: int, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "request_id": f"req-{n:04d}",
        "timestamp": "2025-09-15T10:00:00Z",
        "subscription_id": "team-a",
        "subscription_name": "Team A",
        "product": "standard",
        "user_id": "alice",
        "client_ip": "10.0.0.1",
        "user_agent": "openai-python/1.0",
        "method": "POST",
        "path": "/openai/deployments/chat/chat/completions",
        "api": "chat.completions",
        "operation": "create",
        "billable": True,
        "deployment": "chat",
        "model": "gpt-4o-2024-08-06",
        "api_version": "2024-10-21",
        "backend": "aoai-eastus",
        "attempts": 1,
        "region": "East US",
        "stream": False,
        "outcome": "complete",
        "status_code": 200,
        "error_code": None,
        "latency_ms": 800.0,
        "ttft_ms": 800.0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "usage_source": "service",
        "finish_reasons": ["stop"],
        "tool_call_count": 0,
        "image_count": 0,
        "content_filter": {"prompt": {}, "completion": {}, "filtered": False},
        "safety": {"status": "ok", "flagged_by": [], "prompt": {}, "completion": {}},
        "client_disconnected": False,
        "parse_error": None,
        "deployment_type": "global",
        "cost": None,
        "cost_reason": None,
        "price_version": None,
    }
    record.update(fields)
    record["total_tokens"] = record["prompt_tokens"] + record["completion_tokens"]
    return record


def validate(record: Mapping[str, Any]) -> None:
    _VALIDATOR.validate(record)


def write_records_db(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Stores the records with SqliteRecordStore, as the parser does in the dev host."""

    async def fill() -> None:
        db = SqliteDatabase(path)
        try:
            store = SqliteRecordStore(db)
            for record in records:
                assert await store.add(dict(record), {})
        finally:
            await db.close()

    asyncio.run(fill())
    return path
