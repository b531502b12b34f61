"""One simulator instance's memory: its config, dice, request log, stored responses, rate window."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .batches import FileStore
from .catalog import Deployment, resolve
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
        #: The served deployments by name (None: any name).
        self.served: dict[str, Deployment] | None = resolve(config.deployments)
        self._windows: dict[str, _Window] = {}

    def roll(self, rate: float) -> bool:
        return rate > 0 and (rate >= 1 or self.faults.random() < rate)

    def next_fail_status(self) -> int | None:
        statuses = self.config.fail_statuses
        if not statuses or not self.roll(self.config.fail_rate):
            return None
        status = statuses[self._fail_turn % len(statuses)]
        self._fail_turn += 1
        return int(status)

    def _window(self, deployment: str) -> _Window:
        now = time.monotonic()
        window = self._windows.get(deployment)
        if window is None or now - window.start >= 60:
            window = self._windows[deployment] = _Window(now)
        return window

    def limits(self, deployment: str) -> tuple[int, int]:
        """(requests, tokens) per minute a deployment advertises: its own enforced limits, else the config's."""
        spec = (self.served or {}).get(deployment)
        requests = spec.requests_per_minute if spec and spec.requests_per_minute is not None else None
        tokens = spec.tokens_per_minute if spec and spec.tokens_per_minute is not None else None
        return (
            self.config.ratelimit_requests if requests is None else requests,
            self.config.ratelimit_tokens if tokens is None else tokens,
        )

    def throttled(self, deployment: str) -> tuple[str, float] | None:
        """("call" | "token", seconds until its minute ends) when the deployment's enforced limit is spent."""
        spec = (self.served or {}).get(deployment)
        if spec is None:
            return None
        window = self._window(deployment)
        if spec.requests_per_minute is not None and window.requests >= spec.requests_per_minute:
            kind = "call"
        elif spec.tokens_per_minute is not None and window.tokens >= spec.tokens_per_minute:
            kind = "token"
        else:
            return None
        return kind, max(0.001, 60 - (time.monotonic() - window.start))

    def spend(self, deployment: str, tokens: int, *, counted: bool = True) -> tuple[int, int]:
        """Account one request in the deployment's minute (a refused one is not counted); remaining
        (requests, tokens)."""
        window = self._window(deployment)
        if counted:
            window.requests += 1
            window.tokens += tokens
        requests, limit_tokens = self.limits(deployment)
        return max(0, requests - window.requests), max(0, limit_tokens - window.tokens)


@dataclass(slots=True)
class _Window:
    """One deployment's current minute, from its first request on."""

    start: float
    requests: int = 0
    tokens: int = 0
