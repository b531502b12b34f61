"""Quick check of the proxy's added time to first byte: direct to the simulator vs through the dev host.

    .venv/bin/python bench/quick_proxy.py [--requests 300] [--warmup 30]

Starts the AOAI simulator and the dev host as separate processes on loopback ports, then sends
streamed chat completions one at a time (concurrency 1), alternating direct and proxied, and reports p50/p90/p99 time to the first
body byte and to the last byte, for both paths, and the difference. Not a test: the full benchmark
(concurrency 32, rps, memory) lives in `python -m bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

if not __package__:  # run as `python bench/quick_proxy.py`: make the `bench` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.servers import ROOT, Server, free_port, start  # noqa: E402

KEY = "bench-key"
BODY = {"messages": [{"role": "user", "content": "Say hello"}], "stream": True}
PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


async def one(client: httpx.AsyncClient) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    async with client.stream("POST", PATH, json=BODY) as r:
        async for _ in r.aiter_raw():
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    if r.status_code != 200 or first is None:
        raise RuntimeError(f"status {r.status_code}")
    return (first - start) * 1000, (end - start) * 1000


Samples = tuple[list[float], list[float]]


async def measure(urls: list[str], n: int, warmup: int) -> list[Samples]:
    """Alternate between the URLs request by request, so machine noise hits every path alike."""
    out: list[Samples] = [([], []) for _ in urls]
    clients = [httpx.AsyncClient(base_url=u, timeout=30, headers={"api-key": KEY}) for u in urls]
    try:
        for i in range(warmup + n):
            for (ttfb, total), client in zip(out, clients, strict=False):
                first, whole = await one(client)
                if i >= warmup:
                    ttfb.append(first)
                    total.append(whole)
    finally:
        for client in clients:
            await client.aclose()
    return out


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if p < 100 else max(values)


def print_table(
    requests: int, warmup: int, base: tuple[str, Samples], other: tuple[str, Samples], diff_label: str
) -> None:
    """p50/p90/p99 of both paths, then `other` minus `base` per percentile."""
    print(f"streamed chat completions, concurrency 1, {requests} requests each (after {warmup} warm-up)")
    print(f"{'':24}{'p50':>9}{'p90':>9}{'p99':>9}  (ms)")
    for label, (ttfb, total) in (base, other):
        print(f"{label + ' ttfb':24}{pct(ttfb, 50):9.2f}{pct(ttfb, 90):9.2f}{pct(ttfb, 99):9.2f}")
        print(f"{label + ' total':24}{pct(total, 50):9.2f}{pct(total, 90):9.2f}{pct(total, 99):9.2f}")
    for i, what in ((0, "ttfb"), (1, "total")):
        diffs = [pct(other[1][i], p) - pct(base[1][i], p) for p in (50, 90, 99)]
        print(f"{diff_label + ' ' + what:24}" + "".join(f"{d:9.2f}" for d in diffs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args()
    py = sys.executable
    sim_port, gw_port = free_port(), free_port()
    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Path(tmp) / "local.settings.json"
        settings.write_text(
            json.dumps(
                {
                    "Values": {
                        "GATEWAY_BACKENDS": json.dumps(
                            [
                                {
                                    "name": "sim",
                                    "endpoint": f"http://127.0.0.1:{sim_port}",
                                    "auth": {"type": "api_key", "value": "sim"},
                                    "deployments": ["*"],
                                }
                            ]
                        ),
                        "LOCAL_SUBSCRIPTIONS": json.dumps({KEY: {"id": "bench", "name": "Bench", "product": "bench"}}),
                        "SQLITE_PATH": str(Path(tmp) / "gateway.db"),
                        "CAPTURE_OUTBOX_DIR": str(Path(tmp) / "outbox"),
                    }
                }
            )
        )
        env = {"PYTHONPATH": str(ROOT)}
        try:
            servers.append(
                start(
                    "simulator",
                    [py, "-m", "devhost.simulator", "--port", str(sim_port), "--no-log"],
                    sim_port,
                    Path(tmp),
                    env,
                )
            )
            servers.append(
                start(
                    "devhost",
                    [py, "-m", "devhost", "--port", str(gw_port), "--settings", str(settings)],
                    gw_port,
                    Path(tmp),
                    env,
                )
            )
            direct, proxied = asyncio.run(measure([s.url for s in servers], args.requests, args.warmup))
        finally:
            for server in servers:
                server.stop()
    print_table(args.requests, args.warmup, ("direct", direct), ("through dev host", proxied), "added")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
