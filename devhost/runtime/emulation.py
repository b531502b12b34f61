"""The CPU the dev host spends playing the Functions host, apart from the app's.

In Azure the host is another process: its routing, key check (APIM's, here) and invocation message
cost the app's instance nothing. Here they run on the app's own thread, so they are timed with the
thread's CPU clock, each around code that never yields to the event loop (nothing else can run in
it), and served at `PATH` for the benchmark to report the app's CPU and the emulation's apart.
"""

from __future__ import annotations

import time

import orjson

from devhost.host import Receive, Scope, Send

#: GET: `{"requests": n, "emulation_cpu_s": s}` since start (loopback tools; no secrets in it).
PATH = "/_devhost/cpu"


class EmulationClock:
    """Thread CPU time of the host's part of each request, summed."""

    __slots__ = ("ns", "requests")

    def __init__(self) -> None:
        self.ns = 0
        self.requests = 0

    @staticmethod
    def now() -> int:
        return time.thread_time_ns()

    def add(self, started_ns: int) -> None:
        """Count the CPU since `started_ns` (a `now()` taken where the same code began, no yield since)."""
        self.ns += time.thread_time_ns() - started_ns

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = orjson.dumps({"requests": self.requests, "emulation_cpu_s": self.ns / 1e9})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
