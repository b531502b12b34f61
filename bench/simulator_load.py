"""Load check for the AOAI simulator alone: requests/s for small chat and long streams.

Starts `python -m devhost.simulator --no-log` in its own process (so the load generator does
not share its event loop), then drives it with aiohttp at a fixed concurrency.

    .venv/bin/python -m bench.simulator_load [--concurrency 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp

SMALL_CHAT = b'{"messages":[{"role":"user","content":"Say hello"}],"max_tokens":16}'
STREAM_200 = b'{"messages":[{"role":"user","content":"Say hello"}],"stream":true}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to report capacity per core under shared load."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def simulator_process(port: int) -> Iterator[tuple[str, int]]:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost.simulator", "--port", str(port), "--no-log"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "listening on ..."
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def _run(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float, pid: int
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = 0.0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal errors
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - t0)

        # Warm-up so connection set-up and caches are not measured.
        async with session.post(url, data=body, headers=headers) as r:
            await r.read()
        cpu_before = cpu_seconds(pid)
        start = time.monotonic()
        deadline = start + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(pid) - cpu_before
    latencies.sort()
    return {
        "requests": len(latencies),
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "errors": errors,
        # Requests per CPU-second of the simulator: its capacity on one core, even when the
        # machine is shared and wall-clock throughput is not.
        "per_core": len(latencies) / max(cpu, 1e-9),
    }


def _event_loop_run(coro):  # type: ignore[no-untyped-def]
    """uvloop when installed (the load generator must not be the bottleneck), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    port = _free_port()
    with simulator_process(port) as (base, pid):
        url = f"{base}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        cases = [
            ("small non-stream chat", SMALL_CHAT, {"api-key": "bench", "content-type": "application/json"}),
            (
                "200-chunk stream",
                STREAM_200,
                {"api-key": "bench", "content-type": "application/json", "x-sim-chunks": "200"},
            ),
        ]
        for name, body, headers in cases:
            result = _event_loop_run(_run(url, body, headers, args.concurrency, args.seconds, pid))
            print(
                f"{name:24s} c={args.concurrency}: {result['rps']:8.0f} req/s  p50 {result['p50_ms']:.2f} ms  "
                f"p99 {result['p99_ms']:.2f} ms  ({result['requests']} requests, {result['errors']} errors; "
                f"{result['per_core']:.0f} req per simulator CPU-second)"
            )


if __name__ == "__main__":
    main()
