"""The load generator: one implementation for every arm, run in its own process.

`python -m bench.loadgen SPEC.json` sends `requests` POSTs at a fixed `concurrency` (after
`warmup` untimed requests on the same connections) and prints one JSON line: time to first body
byte and total time per request (ms), wall time, and the failed checks. It stops by itself after
the request count or `time_limit` seconds, whichever comes first. Responses are kept in memory and
checked after the timed loop (`bench.checks`), so checking never slows the measurement and is
never skipped.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp
import orjson

from bench.checks import Expected, check_chat, check_stream


async def _one(session: aiohttp.ClientSession, spec: dict[str, Any], body: bytes) -> tuple[float, float, int, bytes]:
    start = time.perf_counter()
    first = 0.0
    parts: list[bytes] = []
    async with session.post(spec["url"], data=body, headers=spec["headers"]) as resp:
        while True:
            piece = await resp.content.readany()
            if not piece:
                break
            if not first:
                first = time.perf_counter()
            parts.append(piece)
        status = resp.status
    end = time.perf_counter()
    return ((first or end) - start) * 1000, (end - start) * 1000, status, b"".join(parts)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    body = spec["body"].encode()
    concurrency, total = spec["concurrency"], spec["requests"]
    results: list[tuple[float, float, int, bytes] | str] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=spec.get("request_timeout", 60))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as session:

        async def batch(count: int, sink: list[Any] | None, deadline: float) -> None:
            remaining = count

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0 and time.monotonic() < deadline:
                    remaining -= 1
                    try:
                        outcome: Any = await _one(session, spec, body)
                    except Exception as exc:  # a refused or broken connection is an error, not a crash
                        outcome = f"{type(exc).__name__}: {exc}"[:200]
                    if sink is not None:
                        sink.append(outcome)

            await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))

        if spec.get("warmup"):
            await batch(spec["warmup"], None, time.monotonic() + spec.get("time_limit", 60))
        started = time.perf_counter()
        await batch(total, results, time.monotonic() + spec.get("time_limit", 60))
        wall = time.perf_counter() - started

    expected = Expected(**spec["expected"])
    check = check_stream if spec["stream"] else check_chat
    ttfb: list[float] = []
    latency: list[float] = []
    errors: dict[str, int] = {}
    for outcome in results:
        reason = outcome if isinstance(outcome, str) else check(outcome[2], outcome[3], expected)
        if reason is None:
            assert not isinstance(outcome, str)
            ttfb.append(outcome[0])
            latency.append(outcome[1])
        else:
            errors[reason] = errors.get(reason, 0) + 1
    return {
        "sent": len(results),
        "ok": len(ttfb),
        "errors": sum(errors.values()),
        "error_reasons": errors,
        "stopped_by_time_limit": len(results) < total,
        "wall_s": wall,
        "ttfb_ms": ttfb,
        "total_ms": latency,
    }


def main() -> None:
    spec = orjson.loads(open(sys.argv[1], "rb").read())
    import uvloop  # the load generator must not be the bottleneck

    result = uvloop.run(run(spec))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")


if __name__ == "__main__":
    main()
