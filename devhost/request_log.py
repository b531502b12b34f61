"""One concise terminal line per request while `python -m devhost` runs.

Every request that reaches the gateway ends as one usage record; the local usage sink logs it on
`gateway.usage` (shared/adapters/log_sink.py) and this handler prints it as a line a person reads
at a glance: status, deployment, API, time, tokens and who called. Errors are red on a terminal.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from shared.adapters.log_sink import LOGGER_NAME

_RED, _BOLD, _RESET = "\x1b[31m", "\x1b[1m", "\x1b[0m"


def request_line(record: Mapping[str, Any], *, color: bool = False) -> str:
    """`200 gpt-4o chat.completions stream 812 ms tokens 12+40=52 team-a` (errors add their code)."""
    status = record.get("status_code")
    parts = [
        str(status if status is not None else "-"),
        str(record.get("deployment") or "-"),
        str(record.get("api") or record.get("operation") or "-"),
    ]
    if record.get("stream"):
        parts.append("stream")
    latency = record.get("latency_ms")
    parts.append(f"{latency:.0f} ms" if isinstance(latency, int | float) else "- ms")
    total = record.get("total_tokens")
    if total is not None:
        estimated = " est." if record.get("usage_source") == "estimated" else ""
        parts.append(
            f"tokens {record.get('prompt_tokens') or 0}+{record.get('completion_tokens') or 0}={total}{estimated}"
        )
    parts.append(str(record.get("subscription_id") or "-"))
    error = isinstance(status, int) and status >= 400
    if error and record.get("error_code"):
        parts.append(f"error {record['error_code']}")
    line = "  ".join(parts)
    return f"{_BOLD}{_RED}{line}{_RESET}" if error and color else line


class RequestLineHandler(logging.Handler):
    """Prints each usage record the local sink logs as one `request_line`."""

    def __init__(self, stream: TextIO | None = None, *, color: bool | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.stream = stream or sys.stdout
        isatty = getattr(self.stream, "isatty", lambda: False)()
        self.color = (isatty and "NO_COLOR" not in os.environ) if color is None else color

    def emit(self, record: logging.LogRecord) -> None:
        usage = getattr(record, "usage_record", None)
        if not isinstance(usage, Mapping):
            return
        try:
            self.stream.write(request_line(usage, color=self.color) + "\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 - a terminal problem must not fail the parser
            self.handleError(record)


#: The usage records, and the requests the dev host's front door refused (401, 404, 405) itself.
LOGGERS = (LOGGER_NAME, "devhost.front_door")


def print_requests(stream: TextIO | None = None) -> RequestLineHandler:
    """Turn the per-request lines on (the JSON records stay off the terminal)."""
    handler = RequestLineHandler(stream)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    return handler
