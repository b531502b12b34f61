"""Aggregates usage records into the dashboard's views: totals, chargeback, performance, safety, errors.

Pure functions over record dicts (the usage-record schema), so the same numbers can be computed
from SQLite, from a test's list, or from anything else that yields records.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Record = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    #: Sum of the costs that are known, rounded to micro-dollars.
    cost_usd: float
    #: Records whose cost is null (unknown model, provisioned): their tokens count, their cost cannot.
    uncosted_requests: int
    streamed_requests: int
    estimated_requests: int


@dataclass(frozen=True, slots=True)
class GroupUsage:
    key: tuple[str, ...]
    requests: int
    total_tokens: int
    cost_usd: float
    uncosted_requests: int


@dataclass(frozen=True, slots=True)
class Latency:
    deployment: str
    backend: str
    requests: int
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    p99_latency_ms: float | None
    p50_ttft_ms: float | None
    p95_ttft_ms: float | None


@dataclass(frozen=True, slots=True)
class BackendErrors:
    backend: str
    requests: int
    throttled: int
    client_errors: int
    server_errors: int
    retried: int
    error_codes: dict[str, int]
    #: Answers that did not reach the client whole, by `outcome` (upstream_broken, timeout, ...).
    incomplete: dict[str, int]


@dataclass(frozen=True, slots=True)
class Safety:
    content_filtered: int
    safety_flagged: int
    safety_errors: int
    prompt_attacks: int
    flagged_by: dict[str, int]
    max_severity: dict[str, int]


@dataclass(frozen=True, slots=True)
class Summary:
    totals: Totals
    by_day_model: list[GroupUsage]
    by_subscription: list[GroupUsage]
    latency: list[Latency]
    errors: list[BackendErrors]
    safety: Safety
    usage_sources: dict[str, int] = field(default_factory=dict)


def load_records(db_path: Path | str) -> list[dict[str, Any]]:
    """Every record in the SQLite `records` table, oldest first (read-only connection)."""
    uri = f"file:{Path(db_path).resolve()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        rows = conn.execute("SELECT record FROM records ORDER BY timestamp, request_id").fetchall()
    return [json.loads(row[0]) for row in rows]


def summarize(records: Iterable[Record]) -> Summary:
    records = list(records)
    return Summary(
        totals=totals(records),
        by_day_model=_group(records, lambda r: (str(r["timestamp"])[:10], r.get("model") or "(none)")),
        by_subscription=_group(
            records, lambda r: (r.get("subscription_name") or r.get("subscription_id") or "(none)",)
        ),
        latency=latency(records),
        errors=errors_by_backend(records),
        safety=safety(records),
        usage_sources=dict(Counter(r.get("usage_source") or "none" for r in records)),
    )


def totals(records: list[Record]) -> Totals:
    def s(name: str) -> int:
        return sum(int(r.get(name) or 0) for r in records)

    return Totals(
        requests=len(records),
        prompt_tokens=s("prompt_tokens"),
        completion_tokens=s("completion_tokens"),
        total_tokens=s("total_tokens"),
        cached_tokens=s("cached_tokens"),
        reasoning_tokens=s("reasoning_tokens"),
        cost_usd=_usd(r.get("cost") for r in records),
        uncosted_requests=sum(1 for r in records if r.get("cost") is None),
        streamed_requests=sum(1 for r in records if r.get("stream")),
        estimated_requests=sum(1 for r in records if r.get("usage_source") == "estimated"),
    )


def _usd(costs: Iterable[Any]) -> float:
    return round(sum(float(c) for c in costs if c is not None), 6)


def _group(records: list[Record], key) -> list[GroupUsage]:
    groups: dict[tuple[str, ...], list[Record]] = defaultdict(list)
    for r in records:
        groups[key(r)].append(r)
    return [
        GroupUsage(
            k,
            len(rs),
            sum(int(r.get("total_tokens") or 0) for r in rs),
            _usd(r.get("cost") for r in rs),
            sum(1 for r in rs if r.get("cost") is None),
        )
        for k, rs in sorted(groups.items())
    ]


def percentile(values: list[float], q: int) -> float | None:
    """The q-th percentile (inclusive method, like KQL's percentile on small sets); None without data."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0])
    return round(statistics.quantiles(values, n=100, method="inclusive")[q - 1], 3)


def latency(records: list[Record]) -> list[Latency]:
    """Percentiles over successful requests only, so fast failures do not flatter the numbers."""
    groups: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        if 200 <= int(r.get("status_code") or 0) < 300:
            groups[(r.get("deployment") or "(none)", r.get("backend") or "(gateway)")].append(r)
    out = []
    for (dep, backend), rs in sorted(groups.items()):
        lat = [float(r["latency_ms"]) for r in rs if r.get("latency_ms") is not None]
        ttft = [float(r["ttft_ms"]) for r in rs if r.get("ttft_ms") is not None]
        out.append(
            Latency(
                dep,
                backend,
                len(rs),
                percentile(lat, 50),
                percentile(lat, 95),
                percentile(lat, 99),
                percentile(ttft, 50),
                percentile(ttft, 95),
            )
        )
    return out


def errors_by_backend(records: list[Record]) -> list[BackendErrors]:
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        groups[r.get("backend") or "(gateway)"].append(r)
    out = []
    for backend, rs in sorted(groups.items()):
        codes = [int(r.get("status_code") or 0) for r in rs]
        out.append(
            BackendErrors(
                backend=backend,
                requests=len(rs),
                throttled=sum(1 for c in codes if c == 429),
                client_errors=sum(1 for c in codes if 400 <= c < 500 and c != 429),
                server_errors=sum(1 for c in codes if c >= 500),
                retried=sum(1 for r in rs if int(r.get("attempts") or 0) > 1),
                error_codes=dict(Counter(r["error_code"] for r in rs if r.get("error_code"))),
                incomplete=dict(Counter(r["outcome"] for r in rs if r.get("outcome", "complete") != "complete")),
            )
        )
    return out


def safety(records: list[Record]) -> Safety:
    flagged_by: Counter[str] = Counter()
    severity: dict[str, int] = {}
    filtered = flagged = errors = attacks = 0
    for r in records:
        if (r.get("content_filter") or {}).get("filtered"):
            filtered += 1
        s = r.get("safety") or {}
        flagged += s.get("status") == "flagged"
        errors += s.get("status") == "error"
        attacks += bool(s.get("prompt_attack"))
        flagged_by.update(s.get("flagged_by") or [])
        for side in ("prompt", "completion"):
            for category, level in (s.get(side) or {}).items():
                severity[category] = max(severity.get(category, 0), int(level))
    return Safety(filtered, flagged, errors, attacks, dict(flagged_by), severity)
