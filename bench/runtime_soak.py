"""Soak through azure-functions-runtime: RSS of the serving process per 10,000 requests, with the
app's fix for the runtime's per-invocation leak (proxy/runtime_leak.py) and without it.

    python -m bench.runtime_soak [--requests 30000] [--concurrency 8]

Non-stream chat against the simulator through `python -m devhost.runtime serve` (the runtime's own
HTTP v2 server behind the host's front). Loopback only; bounded by the request count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import aiohttp

from bench.servers import free_port, start
from devhost.simulator import SimulatorConfig
from devhost.simulator import run_in_thread as run_simulator

ROOT = Path(__file__).resolve().parent.parent
KEY = "soak-key"
CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
LOOP = "uvloop"
BODY = json.dumps({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}).encode()


async def _load(url: str, count: int, concurrency: int) -> int:
    failures = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        queue.put_nowait(i)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        while not queue.empty():
            queue.get_nowait()
            async with session.post(
                url + CHAT, data=BODY, headers={"api-key": KEY, "content-type": "application/json"}
            ) as r:
                await r.read()
                failures += r.status != 200

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return failures


async def _stats(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as session, session.get(url + "/_runtime/stats") as r:
        return await r.json()


async def _settle(url: str, timeout: float = 180) -> int:
    """Wait until captures are stored and announcements parsed; returns the backlog found first.

    The in-process store and parser fall behind a closed-loop burst on two cores; RSS is measured
    once they caught up, so what remains is what the process keeps, not work still queued."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    first = -1
    while True:
        stats = await _stats(url)
        backlog = stats.get("captures_pending", 0) + stats.get("announced_not_parsed", 0)
        first = backlog if first < 0 else first
        if backlog == 0 or loop.time() > deadline:
            await asyncio.sleep(1)  # the last batch's records are written after the queue empties
            return first
        await asyncio.sleep(0.5)


def soak(requests: int, concurrency: int, keep_leak: bool, sim_url: str, workdir: Path) -> list[dict[str, float]]:
    port = free_port()
    env = {
        "PYTHONPATH": str(ROOT),
        "GATEWAY_BACKENDS": json.dumps(
            [
                {
                    "name": "sim",
                    "endpoint": sim_url,
                    "auth": {"type": "api_key", "setting": "SIM_KEY"},
                    "deployments": ["*"],
                }
            ]
        ),
        "SIM_KEY": "sim-key",
        "LOG_STORE": "sqlite",
        "SQLITE_PATH": str(workdir / f"soak-{keep_leak}.db"),
        "EVENT_CHANNEL": "local",
        "EVENT_HUB_NAME": "exchanges",
        "EVENT_HUB_CONSUMER_GROUP": "$Default",
        "CAPTURE_OUTBOX_DIR": str(workdir / "outbox"),
        "LOCAL_SUBSCRIPTIONS": json.dumps({KEY: {"id": "soak", "name": "Soak", "product": "standard"}}),
    }
    argv = [sys.executable, "-m", "devhost.runtime", "serve", "--port", str(port), "--loop", LOOP] + (
        ["--keep-runtime-leak"] if keep_leak else []
    )
    server = start("runtime-leak" if keep_leak else "runtime-fixed", argv, port, workdir, env)
    rows = []
    try:
        asyncio.run(_load(server.url, 1000, concurrency))  # warm-up
        asyncio.run(_settle(server.url))
        base = server.rss_kb()
        step = 10_000
        done = 0
        while done < requests:
            failures = asyncio.run(_load(server.url, step, concurrency))
            done += step
            backlog = asyncio.run(_settle(server.url))
            stats = asyncio.run(_stats(server.url))
            rows.append(
                {
                    "requests": done,
                    "rss_mb": server.rss_kb() / 1024,
                    "delta_mb": (server.rss_kb() - base) / 1024,
                    "entries": stats.get("context_references", -1),
                    "failures": failures,
                    "peak_backlog": backlog,
                }
            )
            print(
                f"  {'without fix' if keep_leak else 'with fix':12} {done:>7,} requests  RSS {rows[-1]['rss_mb']:7.1f} MB "
                f"(+{rows[-1]['delta_mb']:.1f})  coordinator entries {stats.get('context_references', -1):>6}  "
                f"backlog after the burst {backlog:>6} (drained before measuring)  failures {failures}",
                flush=True,
            )
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sim = run_simulator(SimulatorConfig(api_key="sim-key", completion_tokens=8))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for keep_leak in (True, False):
                rows = soak(args.requests, args.concurrency, keep_leak, sim.url, Path(tmp))
                per_10k = (rows[-1]["delta_mb"] - rows[0]["delta_mb"]) / max(1, len(rows) - 1)
                print(
                    f"{'without fix' if keep_leak else 'with fix'}: RSS growth per 10,000 requests after the first "
                    f"10,000: {per_10k:+.2f} MB"
                )
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
