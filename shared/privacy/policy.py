"""What is kept for whom, and for how long: the capture level and the retention of each audience.

`CAPTURE_LEVELS` maps an APIM product name, or `subscription:<id>`, to a level; `RETENTION` maps
them to `{"exchanges_days": n, "records_days": n}` (-1: kept until deleted). A subscription's
entry wins over its product's (shared/audience.py); an entry `"default"` changes what unlisted
audiences get (else `full`, and EXCHANGE_TTL_SECONDS / records kept until deleted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import orjson

from shared.audience import Resolved, resolve
from shared.errors import ConfigurationError

CaptureLevel = Literal["full", "redacted", "metadata", "none"]
LEVELS: tuple[CaptureLevel, ...] = get_args(CaptureLevel)
DAY = 86_400
FOREVER = -1


def _table(raw: str, setting: str) -> dict[str, Any]:
    try:
        table = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{setting} is not valid JSON: {exc}") from None
    if not isinstance(table, dict):
        raise ConfigurationError(f"{setting} must be a JSON object (product or subscription:<id> -> value)")
    for key in table:
        if not key.strip() or key.strip() == "subscription:":
            raise ConfigurationError(f"{setting} has an empty audience key {key!r}")
    return table


@dataclass(frozen=True, slots=True)
class CapturePolicy:
    """CAPTURE_LEVELS, parsed and checked once."""

    table: Mapping[str, CaptureLevel] = field(default_factory=dict)
    default: CaptureLevel = "full"

    @classmethod
    def parse(cls, raw: str, setting: str = "CAPTURE_LEVELS") -> CapturePolicy:
        table = _table(raw, setting)
        for key, level in table.items():
            if level not in LEVELS:
                raise ConfigurationError(f"{setting}[{key!r}] must be one of {', '.join(LEVELS)}, got {level!r}")
        default = table.pop("default", "full")
        return cls(table, default)

    def level_for(self, product: str | None, subscription_id: str | None) -> Resolved[CaptureLevel]:
        return resolve(self.table, product=product, subscription_id=subscription_id, default=self.default)


@dataclass(frozen=True, slots=True)
class Retention:
    """Seconds an exchange (bodies) and a usage record are kept; -1: until deleted."""

    exchanges_seconds: int
    records_seconds: int

    @property
    def details_seconds(self) -> int:
        """The record's details hold content too: they go with the exchange, or with the record if sooner."""
        if self.exchanges_seconds == FOREVER:
            return self.records_seconds
        if self.records_seconds == FOREVER:
            return self.exchanges_seconds
        return min(self.exchanges_seconds, self.records_seconds)


def _seconds(entry: Mapping[str, Any], name: str, fallback: int, setting: str, key: str) -> int:
    if name not in entry:
        return fallback
    days = entry[name]
    if isinstance(days, bool) or not isinstance(days, (int, float)) or (days <= 0 and days != FOREVER):
        raise ConfigurationError(f"{setting}[{key!r}].{name} must be a positive number of days or -1, got {days!r}")
    return FOREVER if days == FOREVER else max(1, round(days * DAY))


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """RETENTION, parsed and checked once, over the defaults EXCHANGE_TTL_SECONDS and records forever."""

    table: Mapping[str, Retention] = field(default_factory=dict)
    default: Retention = Retention(7 * DAY, FOREVER)

    @classmethod
    def parse(cls, raw: str, exchange_ttl_seconds: int = 7 * DAY, setting: str = "RETENTION") -> RetentionPolicy:
        table = _table(raw, setting)
        base = Retention(exchange_ttl_seconds, FOREVER)
        out: dict[str, Retention] = {}
        for key, entry in table.items():
            if not isinstance(entry, dict) or set(entry) - {"exchanges_days", "records_days"}:
                raise ConfigurationError(
                    f"{setting}[{key!r}] must be an object with exchanges_days and/or records_days, got {entry!r}"
                )
        if "default" in table:
            entry = table.pop("default")
            base = Retention(
                _seconds(entry, "exchanges_days", base.exchanges_seconds, setting, "default"),
                _seconds(entry, "records_days", base.records_seconds, setting, "default"),
            )
        for key, entry in table.items():
            out[key] = Retention(
                _seconds(entry, "exchanges_days", base.exchanges_seconds, setting, key),
                _seconds(entry, "records_days", base.records_seconds, setting, key),
            )
        return cls(out, base)

    def for_audience(self, product: str | None, subscription_id: str | None) -> Retention:
        return resolve(self.table, product=product, subscription_id=subscription_id, default=self.default).value
