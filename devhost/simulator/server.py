"""Running the simulator: an async context manager for async tests, a thread for sync ones."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from .app import STATE, create_app
from .config import SimulatorConfig
from .state import LoggedRequest


@dataclass(slots=True)
class SimulatorHandle:
    url: str
    app: web.Application
    requests: list[LoggedRequest]
    _stop: threading.Event | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def config(self) -> SimulatorConfig:
        return self.app[STATE].config

    def __enter__(self) -> SimulatorHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop a simulator started with `run_in_thread` (waits for the thread to finish)."""
        if self._stop is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@contextlib.asynccontextmanager
async def serve(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[SimulatorHandle]:
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    try:
        bound = runner.addresses[0]
        yield SimulatorHandle(url=f"http://{host}:{bound[1]}", app=app, requests=app[STATE].requests)
    finally:
        await runner.cleanup()


def run_in_thread(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> SimulatorHandle:
    """Start the simulator on its own event loop in a daemon thread; call `.stop()` when done."""
    ready = threading.Event()
    stop = threading.Event()
    box: dict[str, object] = {}

    async def main() -> None:
        try:
            async with serve(config, host, port) as handle:
                box["handle"] = handle
                ready.set()
                while not stop.is_set():  # noqa: ASYNC110 - a threading.Event, set from the caller's thread
                    await asyncio.sleep(0.02)
        except BaseException as exc:  # surface start-up failures to the caller
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="aoai-simulator", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if "error" in box:
        error = box["error"]
        raise RuntimeError("simulator failed to start") from (error if isinstance(error, BaseException) else None)
    handle = box["handle"]
    assert isinstance(handle, SimulatorHandle)
    handle._stop, handle._thread = stop, thread
    return handle
