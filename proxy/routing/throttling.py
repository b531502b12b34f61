"""How long a throttled AOAI backend asks to be left alone, read from its 429's headers.

AOAI (and the OpenAI SDKs that honour it) use, in order of precision: `retry-after-ms`
(milliseconds), `retry-after` (seconds, or an HTTP date), and `x-ratelimit-reset-requests` /
`x-ratelimit-reset-tokens` (Go-style durations such as "1s", "6m0s", "250ms", or plain seconds).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value >= 0 and value == value and value != float("inf") else None


def parse_duration(text: str) -> float | None:
    """Seconds in "6m0s", "1h2m3.5s", "20ms" or a plain number ("1", "0.5"); None if unreadable."""
    text = text.strip()
    plain = _number(text)
    if plain is not None:
        return plain
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match[1]) * _UNIT_SECONDS[match[2]]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def parse_retry_after(text: str, now_wall: float) -> float | None:
    """`retry-after`: delay seconds, or an HTTP date turned into seconds from now (never negative)."""
    seconds = _number(text.strip())
    if seconds is not None:
        return seconds
    try:
        when: datetime = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; be lenient with ones that omit it
        return None
    return max(0.0, when.timestamp() - now_wall)


def _lower(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k.lower(): v for k, v in items}


def throttle_seconds(headers: Mapping[str, str] | Iterable[tuple[str, str]], now_wall: float) -> float | None:
    """Seconds until a 429'd backend may be called again, per its headers; None when none says.

    With only the `x-ratelimit-reset-*` pair, the one whose `x-ratelimit-remaining-*` is 0 tells
    which limit was hit; when that is unknown, the later reset wins, so the gateway never calls a
    backend that is still throttled.
    """
    h = _lower(headers)
    if "retry-after-ms" in h:
        ms = _number(h["retry-after-ms"].strip())
        if ms is not None:
            return ms / 1000.0
    if "retry-after" in h:
        seconds = parse_retry_after(h["retry-after"], now_wall)
        if seconds is not None:
            return seconds
    resets: dict[str, float] = {}
    for kind in ("requests", "tokens"):
        raw = h.get(f"x-ratelimit-reset-{kind}")
        value = parse_duration(raw) if raw is not None else None
        if value is not None:
            resets[kind] = value
    if not resets:
        return None
    exhausted = [k for k in resets if (h.get(f"x-ratelimit-remaining-{k}") or "").strip() == "0"]
    return max(resets[k] for k in (exhausted or resets))
