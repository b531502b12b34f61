"""A completed batch job's output file, turned into one usage record per line plus one for the batch.

Pure: the caller reads the output file (from the account that ran the batch) and says who created
the batch. Each line record carries the line's `custom_id`, the service's usage, model and status,
the batch's id, and the creator's identity, so chargeback sees every line on the team that paid
for it. The batch record itself is not billable (its lines are) and sums them in `usage_details`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.normalize.apis import classify
from shared.normalize.usage import service_usage

#: Fields of the seen record a line record starts from (the rest belonged to that one call).
_BASE_FIELDS = frozenset(
    {"request_id", "timestamp", "method", "path", "api_version", "backend", "attempts", "region", "status_code"}
)
#: Identity fields a line record takes from the batch's creator.
OWNER_FIELDS = ("subscription_id", "subscription_name", "product", "user_id", "client_ip")


def line_request_id(batch_id: str, custom_id: str) -> str:
    """Deterministic: polling the completed batch again never duplicates a line's record."""
    return f"{batch_id}:{custom_id}"


def batch_request_id(batch_id: str) -> str:
    return f"batch:{batch_id}"


def completed_batch(record: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """An answer that shows a batch whose output file is ready."""
    return (
        record.get("api") == "batches"
        and isinstance(body.get("id"), str)
        and body.get("object") == "batch"
        and body.get("status") == "completed"
        and isinstance(body.get("output_file_id"), str)
    )


def line_records(
    seen: Mapping[str, Any], batch: Mapping[str, Any], output: bytes, owner: Mapping[str, Any] | None
) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """(line records, the batch record, problems) from the record of the call that saw the batch
    completed (`seen`), the batch object, its output file and its creator's identity (None: unknown,
    then the lines are attributed to whoever saw it complete and say so)."""
    batch_id = str(batch["id"])
    endpoint = str(batch.get("endpoint") or "")
    route = classify("/openai/v1" + endpoint) if endpoint.startswith("/") else None
    api = route.api if route is not None else "other"
    stamp = _iso(batch.get("completed_at")) or str(seen["timestamp"])
    source = owner if owner is not None else seen
    identity = {k: source.get(k) for k in OWNER_FIELDS}
    for k in ("subscription_id", "subscription_name", "product"):
        identity[k] = identity[k] if isinstance(identity[k], str) and identity[k] else "unknown"
    problems: list[str] = []
    lines: list[dict[str, Any]] = []
    totals = {"lines": 0, "succeeded": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0}
    for number, raw in enumerate(output.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = orjson.loads(raw)
            custom_id = str(item["custom_id"])
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            problems.append(f"output line {number}: {type(exc).__name__}")
            continue
        response: Mapping[str, Any] = item["response"] if isinstance(item.get("response"), Mapping) else {}
        body: Mapping[str, Any] = response["body"] if isinstance(response.get("body"), Mapping) else {}
        status: int = response["status_code"] if isinstance(response.get("status_code"), int) else 500
        usage = service_usage(body.get("usage")) or {}
        model = body.get("model") if isinstance(body.get("model"), str) else None
        error = item.get("error") if isinstance(item.get("error"), Mapping) else body.get("error")
        record = {
            **_neutral(seen),
            **identity,
            "request_id": line_request_id(batch_id, custom_id),
            "timestamp": stamp,
            "method": "POST",
            "path": endpoint,
            "api": api,
            "operation": "create",
            "billable": True,
            "deployment": model,
            "model": model,
            "status_code": status,
            "error_code": (str(error.get("code")) if isinstance(error, Mapping) and error.get("code") else None),
            "usage_source": "service" if usage else "none",
            "usage_quality": "exact" if usage else "none",
            "finish_reasons": [
                c.get("finish_reason") if isinstance(c.get("finish_reason"), str) else None
                for c in body.get("choices") or []
                if isinstance(c, Mapping)
            ],
            "batch_id": batch_id,
            "custom_id": custom_id,
            "object_id": item.get("id") if isinstance(item.get("id"), str) else None,
        }
        record.update(usage)
        if owner is None:
            record["estimation_notes"] = ["batch creator unknown: attributed to the caller that saw it complete"]
        lines.append(record)
        totals["lines"] += 1
        totals["succeeded" if 200 <= status < 300 else "failed"] += 1
        for key in ("prompt_tokens", "completion_tokens", "cached_tokens"):
            totals[key] += int(record.get(key) or 0)
    summary = {
        **_neutral(seen),
        **identity,
        "request_id": batch_request_id(batch_id),
        "timestamp": stamp,
        "method": "POST",
        "path": "/openai/batches",
        "api": "batches",
        "operation": "create",
        "billable": False,
        "status_code": 200,
        "batch_id": batch_id,
        "object_id": batch_id,
        "usage_details": {
            "batch": {
                **totals,
                "endpoint": endpoint,
                "output_file_id": batch.get("output_file_id"),
                "request_counts": batch.get("request_counts"),
            }
        },
    }
    return lines, summary, problems


def _neutral(seen: Mapping[str, Any]) -> dict[str, Any]:
    """The seen record's shape with everything that belonged to that one call reset."""
    return {
        **{k: v for k, v in seen.items() if k in _BASE_FIELDS},
        "user_agent": None,
        "trace_id": None,
        "api_version": seen.get("api_version"),
        "deployment": None,
        "model": None,
        "stream": False,
        "error_code": None,
        "latency_ms": None,
        "ttft_ms": None,
        "gateway_overhead_ms": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
        "usage_details": None,
        "usage_source": "none",
        "usage_quality": "none",
        "usage_injected": False,
        "finish_reasons": [],
        "tool_call_count": 0,
        "image_count": 0,
        "content_filter": {"prompt": {}, "completion": {}, "filtered": False},
        "client_disconnected": False,
        "outcome": "complete",
        "parse_error": None,
        "object_id": None,
    }


def _iso(epoch: Any) -> str | None:
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool) or epoch <= 0:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
