"""What `enforce` mode adds to a stream against `monitor`: time to first text byte and total time.

The enforcer runs as the proxy composes it (`proxy.enforcement.enforce`) over a synthetic AOAI chat
stream (a chunk of ~4 characters every `--interval-ms`), with the real SDK client calling the fake
Content Safety server on loopback (answering after `--latency-ms`, 20 ms by default), at each
concurrency. The proxy's own HTTP hops are not in this number (see the proxy bench for those).

Run: `python -m bench.enforcement [--chunks 300 --interval-ms 5 --latency-ms 20 --concurrency 1 32]`
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import orjson
from azure.core.credentials import AzureKeyCredential

from devhost.fakes.content_safety import FakeContentSafety
from proxy.enforcement import enforce
from shared.safety.client import AzureContentSafety
from shared.safety.config import StreamPolicy

WORDS = "the quick brown fox jumps over the lazy dog ".split()


def stream_events(chunks: int) -> list[bytes]:
    meta = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    events = [
        b"data: "
        + orjson.dumps({**meta, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        + b"\n\n"
    ]
    for i in range(chunks):
        piece = WORDS[i % len(WORDS)] + " "
        events.append(
            b"data: "
            + orjson.dumps({**meta, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
            + b"\n\n"
        )
    events.append(
        b"data: " + orjson.dumps({**meta, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n"
    )
    events.append(b"data: [DONE]\n\n")
    return events


async def upstream(events: list[bytes], interval: float):
    for event in events:
        await asyncio.sleep(interval)
        yield event


async def one(events, interval, client, policy) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    async for chunk in enforce(
        upstream(events, interval),
        api="chat.completions",
        analyser=client,
        config=policy,
        on_verdict=lambda outcome: None,
    ):
        if first is None and b'"content":"the' in chunk:
            first = time.perf_counter() - start
    return first or 0.0, time.perf_counter() - start


async def run(args: argparse.Namespace) -> None:
    fake = FakeContentSafety(key="bench", latency=args.latency_ms / 1000)
    await fake.start()
    events = stream_events(args.chunks)
    interval = args.interval_ms / 1000
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        client = AzureContentSafety(fake.base_url, AzureKeyCredential("bench"), session=session, max_retries=0)
        print(
            f"stream: {args.chunks} chunks every {args.interval_ms} ms; analyser latency {args.latency_ms} ms; "
            f"window {args.window}/{args.overlap} chars"
        )
        header = ("mode", "conc", "ttfb p50 ms", "ttfb p95 ms", "total p50 ms", "total p95 ms", "calls")
        print("{:8} {:>4} {:>12} {:>12} {:>13} {:>13} {:>6}".format(*header))
        for concurrency in args.concurrency:
            for mode in ("monitor", "enforce"):
                policy = StreamPolicy(mode=mode, window_chars=args.window, overlap_chars=args.overlap)
                before = len(fake.requests)
                results = await asyncio.gather(*(one(events, interval, client, policy) for _ in range(concurrency)))
                ttfb = sorted(r[0] * 1000 for r in results)
                total = sorted(r[1] * 1000 for r in results)
                print(
                    f"{mode:8} {concurrency:>4} {statistics.median(ttfb):>12.1f} {_p95(ttfb):>12.1f} "
                    f"{statistics.median(total):>13.1f} {_p95(total):>13.1f} {len(fake.requests) - before:>6}"
                )
        await client.close()
    await fake.stop()


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--overlap", type=int, default=100)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
