"""The response cache's hit path: `python -m bench.cache_hit`.

In process, through `Proxy.handle` (the HTTP trigger's logic) with the real SQLite cache store and
capture (exchange stored, announced on the local channel), against the AOAI simulator on loopback
for the one live call that fills the cache. Per hit, for a non-stream and a streamed request (the
stream served from the stored body, so the conversion to chunk events is included):
- time from the call to the last body byte, p50 and p99: the whole hit path, which is the time the
  gateway adds (no upstream call is made);
- CPU per hit (process time over the run, capture included: joined, redacted, stored, announced).
For comparison, the same numbers for the live call through the same proxy (a miss that stores).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request

from devhost.simulator import SimulatorConfig
from devhost.simulator import run_in_thread as run_simulator
from proxy.handler import build_proxy
from shared.settings import Settings
from shared.wiring import build_ports

PATH = "/openai/deployments/gpt-4o/chat/completions"


def _request(body: bytes, headers: Mapping[str, str]) -> Request:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": PATH,
        "raw_path": PATH.encode(),
        "query_string": b"api-version=2024-10-21",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": ("127.0.0.1", 7071),
        "client": ("127.0.0.1", 50000),
        "path_params": {"path": PATH.removeprefix("/openai/")},
    }
    return Request(scope, receive)


async def _call(proxy: Any, body: bytes, headers: Mapping[str, str]) -> tuple[str, bytes]:
    response = await proxy.handle(_request(body, headers))
    cache = response.headers.get("x-gateway-cache", "")
    if hasattr(response, "body_iterator"):
        chunks = [c if isinstance(c, bytes) else c.encode() async for c in response.body_iterator]
        end = getattr(getattr(response, "_relay", None), "end", None)
        if end is not None:
            end()
        return cache, b"".join(chunks)
    return cache, bytes(response.body)


async def _measure(proxy: Any, body: bytes, headers: Mapping[str, str], n: int) -> dict[str, float]:
    times: list[float] = []
    cpu = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        cache, payload = await _call(proxy, body, headers)
        times.append((time.perf_counter() - start) * 1000)
        assert cache == "hit" and payload, cache
    await proxy.capture.drain()
    cpu_us = (time.process_time() - cpu) / n * 1e6
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
        "cpu_us_per_hit": round(cpu_us, 1),
    }


async def _run(n: int, tmp: Path, sim_url: str) -> dict[str, Any]:
    env = {
        "GATEWAY_BACKENDS": orjson.dumps(
            [
                {
                    "name": "sim",
                    "endpoint": sim_url,
                    "auth": {"type": "api_key", "setting": "SIM_KEY"},
                    "deployments": ["*"],
                }
            ]
        ).decode(),
        "SIM_KEY": "bench-key",
        "SQLITE_PATH": str(tmp / "bench.db"),
        "CAPTURE_OUTBOX_DIR": str(tmp / "outbox"),
        "AUDIENCE_POLICIES": '{"standard": {"cache": {"ttl_seconds": 3600}}}',
    }
    settings = Settings.from_env(env)
    ports = build_ports(settings)
    proxy = build_proxy(settings, lambda: ports)
    headers = {
        "content-type": "application/json",
        "x-gateway-product": "standard",
        "x-gateway-subscription-id": "bench",
    }
    messages = [{"role": "user", "content": "Summarise the benefits of caching in two sentences."}]
    body = orjson.dumps({"messages": messages, "temperature": 0, "max_tokens": 200})
    stream_body = orjson.dumps({"messages": messages, "temperature": 0, "max_tokens": 200, "stream": True})
    try:
        start = time.perf_counter()
        cpu = time.process_time()
        cache, _ = await _call(proxy, body, headers)  # the live call that stores
        await proxy.capture.drain()
        assert cache == "store", cache
        live = {
            "ms": round((time.perf_counter() - start) * 1000, 3),
            "cpu_us": round((time.process_time() - cpu) * 1e6, 1),
        }
        results = {
            "non-stream hit": await _measure(proxy, body, headers, n),
            "stream hit (from a stored body)": await _measure(proxy, stream_body, headers, n),
            "first live call (cold process: the proxy warms up)": live,
        }
    finally:
        await proxy.aclose()
        await ports.close()
    return results


def main(n: int = 2000) -> dict[str, Any]:
    sim = run_simulator(SimulatorConfig(api_key="bench-key"))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return asyncio.run(_run(n, Path(tmp), sim.url))
    finally:
        sim.stop()


if __name__ == "__main__":
    import json
    import sys

    measured = main()
    if "--json" in sys.argv:
        print(json.dumps(measured))
    else:
        for name, numbers in measured.items():
            print(f"{name:34s} {numbers}")
