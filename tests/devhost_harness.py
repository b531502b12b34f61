"""The end-to-end tests' gateway: the dev host (function_app.py on uvicorn, SQLite, the local event
channel) in front of AOAI simulators on loopback, with what the tests look at.

`dev_host(...)` starts the simulators, points `GATEWAY_BACKENDS` at them, serves the app, counts
announcements (`published`) and emitted records (`emitted`), and undoes all of it on exit. A test
module subclasses `DevHostGateway` for its own client and look-ups.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

import function_app
from devhost.host import run_in_thread
from devhost.runtime.host import RuntimeDevHost
from devhost.simulator import LoggedRequest, SimulatorConfig, SimulatorHandle
from devhost.simulator import run_in_thread as run_simulator
from devhost.subscriptions import parse_subscriptions
from shared.exchange import Exchange


class DevHostGateway:
    """A running dev host and its simulators (by backend name)."""

    def __init__(self, host: RuntimeDevHost, sims: Mapping[str, SimulatorHandle], db: Path) -> None:
        self.host, self.sims, self.db = host, dict(sims), db
        self.url = ""
        #: Request ids announced on the event channel, in order (once each, when all is well).
        self.published: list[str] = []
        #: Records the parser emitted, per request id.
        self.emitted: Counter[str] = Counter()

    @property
    def sim(self) -> SimulatorHandle:
        """The first (often the only) simulator."""
        return next(iter(self.sims.values()))

    def call(self, coro: Awaitable[Any], timeout: float = 30) -> Any:
        return self.host.call(coro, timeout)

    def upstream(self, client_request_id: str, *, finished: bool = False, timeout: float = 10) -> LoggedRequest:
        """A simulator's log entry for a request, found by the `x-ms-client-request-id` it was sent
        with (with `finished`: once its last byte was written)."""
        deadline = time.monotonic() + timeout
        while True:
            for sim in self.sims.values():
                for logged in list(sim.requests):
                    if {k.lower(): v for k, v in logged.headers.items()}.get(
                        "x-ms-client-request-id"
                    ) == client_request_id:
                        if logged.finished or not finished:
                            return logged
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{client_request_id} never {'completed at' if finished else 'reached'} the simulator"
                )
            time.sleep(0.01)

    def exchange(self, request_id: str, timeout: float = 10) -> Exchange | None:
        """The stored exchange, once every capture so far is stored and announced.

        The client can hold the last byte a moment before the server hands the capture over (the
        response finishes in the runtime's web app, then the capture is submitted), so a request
        whose capture is not submitted yet is waited for, up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            self.call(function_app.drain())
            found = self.call(function_app.ports().exchanges.load(request_id))
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def settle(self) -> None:
        """Every capture stored and announced, every announced id handled by the parser."""
        self.call(function_app.drain())
        self.call(function_app.ports().channel.join())


G = TypeVar("G", bound=DevHostGateway)


@contextlib.contextmanager
def dev_host(
    tmp: Path,
    subscriptions: Mapping[str, Mapping[str, str]],
    sims: Mapping[str, SimulatorConfig],
    *,
    deployments: list[str] | None = None,
    key_setting: str = "SIM_KEY",
    env: Mapping[str, str] | None = None,
    gateway: type[G] = DevHostGateway,  # type: ignore[assignment]
    mounts: Callable[[Path], Mapping[str, Any]] | None = None,
    backend_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Iterator[G]:
    """Simulators (one backend each, named by `sims`' keys, serving `deployments` or all), the app's
    settings for SQLite and the local channel (plus `env`), and the dev host serving on loopback.

    The backends authenticate with the simulators' common `api_key`, read from the app setting
    `key_setting`. `subscriptions` are the dev host's `LOCAL_SUBSCRIPTIONS` (key -> id, name, product).
    """
    keys = {config.api_key for config in sims.values()}
    assert len(keys) == 1, "the simulators of one dev host share their api key"
    db = tmp / "gateway.db"
    mp = pytest.MonkeyPatch()
    started: dict[str, SimulatorHandle] = {}
    try:
        for name, config in sims.items():
            started[name] = run_simulator(config)
        backends = [
            {
                "name": name,
                "endpoint": sim.url,
                "auth": {"type": "api_key", "setting": key_setting},
                "deployments": deployments or ["*"],
                **(backend_options or {}).get(name, {}),
            }
            for name, sim in started.items()
        ]
        settings = {
            "GATEWAY_BACKENDS": json.dumps(backends),
            key_setting: keys.pop(),
            "SQLITE_PATH": str(db),
            "CAPTURE_OUTBOX_DIR": str(tmp / "outbox"),
            "LOG_STORE": "sqlite",
            "EVENT_CHANNEL": "local",
            **(env or {}),
        }
        for name, value in settings.items():
            mp.setenv(name, value)
        host = RuntimeDevHost(
            Path(function_app.__file__).parent,
            parse_subscriptions(json.dumps(subscriptions)),
            mounts=mounts(db) if mounts else None,
        )
        gw = gateway(host, started, db)
        _spy(gw)
        running = run_in_thread(host)
        gw.url = running.url
        try:
            yield gw
        finally:
            running.stop()
    finally:
        for sim in started.values():
            sim.stop()
        mp.undo()


def _spy(gw: DevHostGateway) -> None:
    """Count announcements and emitted records, then deliver them as usual."""
    ports = function_app.ports()
    publish, emit = ports.channel.publish, ports.sink.emit

    async def spy_publish(request_id: str) -> None:
        gw.published.append(request_id)
        await publish(request_id)

    async def spy_emit(record: dict[str, Any]) -> None:
        gw.emitted[record["request_id"]] += 1
        await emit(record)

    ports.channel.publish, ports.sink.emit = spy_publish, spy_emit
