"""Budget periods: the calendar day, week (from Monday) or month that contains an instant, in a time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from shared.budgets.config import Period


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def window(period: Period, timezone: str, at: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the period containing `at`, both in UTC. Local midnights, so a Berlin month
    starts at 23:00 or 22:00 UTC the day before, and a day across a DST change is 23 or 25 hours."""
    zone = _zone(timezone)
    local = at.astimezone(zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if period == "day":
        start, end = day, day + timedelta(days=1)
    elif period == "week":
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return _utc(start, zone), _utc(end, zone)


def _utc(naive_local: datetime, zone: ZoneInfo) -> datetime:
    return naive_local.replace(tzinfo=zone).astimezone(UTC)


def stamp(at: datetime) -> str:
    """ISO 8601 UTC with a Z, to the second: period keys and reset times."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
