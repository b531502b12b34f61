"""The local usage sink: one JSON line per record at DEBUG on logger `gateway.usage`.

Locally the record store already keeps every record (SQLite), so the sink only makes records
visible in logs when someone turns DEBUG on for `gateway.usage`.
"""

from __future__ import annotations

import logging

import orjson

from shared.ports import UsageRecord

LOGGER_NAME = "gateway.usage"


class LogUsageSink:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(LOGGER_NAME)

    async def emit(self, record: UsageRecord) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            text = orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode("utf-8")
            self.logger.debug("%s", text, extra={"usage_record": record})  # the dev host prints a line from it

    async def close(self) -> None:
        return None
