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


async def measure(direct_url: str, proxied_url: str, n: int, warmup: int) -> tuple[Samples, Samples]:
    """Alternate direct and proxied requests, so machine noise hits both paths alike."""
    out: tuple[Samples, Samples] = (([], []), ([], []))
    async with (
        httpx.AsyncClient(base_url=direct_url, timeout=30, headers={"api-key": KEY}) as direct,
        httpx.AsyncClient(base_url=proxied_url, timeout=30, headers={"api-key": KEY}) as proxied,
    ):
        for i in range(warmup + n):
            for (ttfb, total), client in zip(out, (direct, proxied)):
                first, whole = await one(client)
                if i >= warmup:
                    ttfb.append(first)
                    total.append(whole)
    return out


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] if p < 100 else max(values)


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
        settings.write_text(json.dumps({"Values": {
            "GATEWAY_BACKENDS": json.dumps([{"name": "sim", "endpoint": f"http://127.0.0.1:{sim_port}",
                                             "auth": {"type": "api_key", "value": "sim"}, "deployments": ["*"]}]),
            "LOCAL_SUBSCRIPTIONS": json.dumps({KEY: {"id": "bench", "name": "Bench", "product": "bench"}}),
            "SQLITE_PATH": str(Path(tmp) / "gateway.db"),
            "CAPTURE_OUTBOX_DIR": str(Path(tmp) / "outbox"),
        }}))
        env = {"PYTHONPATH": str(ROOT)}
        try:
            servers.append(start("simulator", [py, "-m", "devhost.simulator", "--port", str(sim_port), "--no-log"],
                                 sim_port, Path(tmp), env))
            servers.append(start("devhost", [py, "-m", "devhost", "--port", str(gw_port), "--settings", str(settings)],
                                 gw_port, Path(tmp), env))
            direct, proxied = asyncio.run(measure(servers[0].url, servers[1].url, args.requests, args.warmup))
        finally:
            for server in servers:
                server.stop()
    print(f"streamed chat completions, concurrency 1, {args.requests} requests each (after {args.warmup} warm-up)")
    print(f"{'':24}{'p50':>9}{'p90':>9}{'p99':>9}  (ms)")
    for label, (ttfb, total) in (("direct", direct), ("through dev host", proxied)):
        print(f"{label + ' ttfb':24}{pct(ttfb, 50):9.2f}{pct(ttfb, 90):9.2f}{pct(ttfb, 99):9.2f}")
        print(f"{label + ' total':24}{pct(total, 50):9.2f}{pct(total, 90):9.2f}{pct(total, 99):9.2f}")
    print(f"{'added ttfb':24}{pct(proxied[0], 50) - pct(direct[0], 50):9.2f}"
          f"{pct(proxied[0], 90) - pct(direct[0], 90):9.2f}{pct(proxied[0], 99) - pct(direct[0], 99):9.2f}")
    print(f"{'added total':24}{pct(proxied[1], 50) - pct(direct[1], 50):9.2f}"
          f"{pct(proxied[1], 90) - pct(direct[1], 90):9.2f}{pct(proxied[1], 99) - pct(direct[1], 99):9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
