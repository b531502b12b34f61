"""Usage records as text: one line per record, and totals by subscription, deployment and day.

Pure functions over record dicts (the usage-record schema); `devhost/commands.py` reads them from
SQLite and prints what these return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Record = Mapping[str, Any]

RECORD_COLUMNS = (
    "timestamp",
    "request_id",
    "subscription",
    "api",
    "deployment",
    "status",
    "error_code",
    "stream",
    "prompt",
    "completion",
    "total",
    "usage_source",
    "cost_usd",
    "latency_ms",
    "operation",
    "billable",
    "cached",
    "quality",
)
REPORT_COLUMNS = (
    "subscription",
    "deployment",
    "day",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "errors",
    "cost_usd",
)


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """One line of the report: the records of one subscription and deployment on one UTC day."""

    subscription: str
    deployment: str
    day: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    #: Records whose status code is 400 or more (the gateway's own answers and 499 included).
    errors: int
    #: Sum of the known costs (USD); None when no record of the group has one.
    cost_usd: float | None
    #: Records of the group without a cost (unknown model, provisioned, not costed).
    uncosted: int


def since_filter(value: str) -> str:
    """An ISO-8601 date or time as the UTC string records are stored with, so strings compare as times.

    A date (`2025-09-15`) means its start; a time without an offset is taken as UTC.
    Raises ValueError for anything else.
    """
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _subscription(record: Record) -> str:
    return str(record.get("subscription_name") or record.get("subscription_id") or "(none)")


def _int(record: Record, name: str) -> int:
    return int(record.get(name) or 0)


def is_error(record: Record) -> bool:
    return _int(record, "status_code") >= 400


def report(records: Iterable[Record]) -> list[UsageTotals]:
    """Totals per (subscription, deployment, day), sorted by those keys."""
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for r in records:
        key = (_subscription(r), str(r.get("deployment") or "(none)"), str(r.get("timestamp") or "")[:10])
        groups.setdefault(key, []).append(r)
    out = []
    for (subscription, deployment, day), rs in sorted(groups.items()):
        costs = [float(r["cost"]) for r in rs if r.get("cost") is not None]
        out.append(
            UsageTotals(
                subscription=subscription,
                deployment=deployment,
                day=day,
                requests=len(rs),
                prompt_tokens=sum(_int(r, "prompt_tokens") for r in rs),
                completion_tokens=sum(_int(r, "completion_tokens") for r in rs),
                total_tokens=sum(_int(r, "total_tokens") for r in rs),
                errors=sum(1 for r in rs if is_error(r)),
                cost_usd=round(sum(costs), 6) if costs else None,
                uncosted=len(rs) - len(costs),
            )
        )
    return out


def grand_total(lines: Sequence[UsageTotals]) -> UsageTotals:
    costs = [x.cost_usd for x in lines if x.cost_usd is not None]
    return UsageTotals(
        subscription="TOTAL",
        deployment="",
        day="",
        requests=sum(x.requests for x in lines),
        prompt_tokens=sum(x.prompt_tokens for x in lines),
        completion_tokens=sum(x.completion_tokens for x in lines),
        total_tokens=sum(x.total_tokens for x in lines),
        errors=sum(x.errors for x in lines),
        cost_usd=round(sum(costs), 6) if costs else None,
        uncosted=sum(x.uncosted for x in lines),
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)


def record_row(r: Record) -> list[str]:
    values = (
        r.get("timestamp"),
        r.get("request_id"),
        _subscription(r),
        r.get("api"),
        r.get("deployment"),
        r.get("status_code"),
        r.get("error_code"),
        bool(r.get("stream")),
        _int(r, "prompt_tokens"),
        _int(r, "completion_tokens"),
        _int(r, "total_tokens"),
        r.get("usage_source"),
        r.get("cost"),
        round(float(r["latency_ms"])) if r.get("latency_ms") is not None else None,
        r.get("operation"),
        r.get("billable"),
        _int(r, "cached_tokens"),
        r.get("usage_quality"),
    )
    return [_cell(v) for v in values]


def report_row(x: UsageTotals) -> list[str]:
    return [
        _cell(v)
        for v in (
            x.subscription,
            x.deployment,
            x.day,
            x.requests,
            x.prompt_tokens,
            x.completion_tokens,
            x.total_tokens,
            x.errors,
            x.cost_usd,
        )
    ]


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain-text table: left-aligned text, right-aligned numbers, one space-padded column each."""
    rows = [list(r) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(_numeric(r[i]) for r in rows) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric, strict=False)
        ).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _numeric(cell: str) -> bool:
    return cell == "-" or cell.replace(".", "", 1).lstrip("-").isdigit()
