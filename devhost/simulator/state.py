"""One simulator instance's memory: its config, dice, request log, stored responses, rate window."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .batches import FileStore
from .config import SimulatorConfig

if TYPE_CHECKING:
    from .wire import StoredResponse


@dataclass(slots=True)
class LoggedRequest:
    """One request as received and the exact bytes answered (for byte-for-byte pass-through tests)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    received: float  # time.monotonic() when the handler started
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response: bytes = b""
    #: True when the simulator cut the connection on purpose (drop_rate / x-sim-drop-after).
    dropped: bool = False
    #: True when the client went away before the stream ended.
    client_disconnected: bool = False
    #: time.monotonic() when the last byte was written.
    finished: float = 0.0

    @property
    def json(self) -> Any:
        """The request body parsed as JSON."""
        return orjson.loads(self.body)


class SimulatorState:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.faults = random.Random(config.seed ^ 0x5EED)
        self.requests: list[LoggedRequest] = []
        #: Responses API objects by id, for GET/DELETE /responses/{id}.
        self.responses: dict[str, StoredResponse] = {}
        #: Files (batch input and output) and batches, for the Files and Batch APIs.
        self.files = FileStore()
        self._fail_turn = 0
        self._window = 0
        self._window_requests = 0
        self._window_tokens = 0

    def roll(self, rate: float) -> bool:
        return rate > 0 and (rate >= 1 or self.faults.random() < rate)

    def next_fail_status(self) -> int | None:
        statuses = self.config.fail_statuses
        if not statuses or not self.roll(self.config.fail_rate):
            return None
        status = statuses[self._fail_turn % len(statuses)]
        self._fail_turn += 1
        return int(status)

    def spend(self, tokens: int) -> tuple[int, int]:
        """Account one request in the current 60 s window; return remaining (requests, tokens)."""
        window = int(time.monotonic() // 60)
        if window != self._window:
            self._window, self._window_requests, self._window_tokens = window, 0, 0
        self._window_requests += 1
        self._window_tokens += tokens
        return (
            max(0, self.config.ratelimit_requests - self._window_requests),
            max(0, self.config.ratelimit_tokens - self._window_tokens),
        )
