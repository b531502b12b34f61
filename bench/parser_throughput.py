"""Parser throughput on one core: exchanges per second through the parser's record path.

The record path is `parser.handler.make_record`: normalize, cost from the price book, content
safety (off here: `skipped`, plus the AOAI-verdict merge) and schema validation. Two shapes: a
streamed chat with 1,000 chunks (text, then parallel tool calls, no usage chunk so the estimate
path runs), a small non-stream chat with service usage and an embeddings call; then whole batches of 100 small chats
through `handle_batch` over memory ports. With `--safety-latency-ms N` it also times batches of 100
against the fake Content Safety server answering in N ms, events handled one at a time versus
PARSER_MAX_CONCURRENCY at once. Run: `python bench/parser_throughput.py [--seconds N]
[--safety-latency-ms 20] [--json]` (`--json`: the per-exchange cases as one JSON list, for
`python -m bench`). Targets: >= 300/s and >= 3,000/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parser.enrich import Enricher  # noqa: E402
from parser.handler import DEFAULT_CONCURRENCY, handle_batch, make_record  # noqa: E402
from shared.exchange import Exchange  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.wiring import build_content_safety  # noqa: E402
from testing.factories import chunk, delta, exchange, sse  # noqa: E402
from testing.fakes.content_safety import FakeContentSafety  # noqa: E402
from testing.memory import memory_ports  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco and in Paris, and what time is it there?"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Local time",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string", "description": "IANA zone"}}},
        },
    },
]


def streamed_tool_chat(chunks: int = 1000) -> Exchange:
    events = [
        {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "choices": [],
            "prompt_filter_results": [
                {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}
            ],
        }
    ]
    events.append(chunk([delta(role="assistant", content="")]))
    text_chunks = chunks - 204
    events += [chunk([delta(content=f" word{i}")]) for i in range(text_chunks)]
    for call in range(2):
        events.append(
            chunk(
                [
                    delta(
                        tool_calls=[
                            {
                                "index": call,
                                "id": f"call_{call}",
                                "type": "function",
                                "function": {"name": ("get_weather", "get_time")[call], "arguments": ""},
                            }
                        ]
                    )
                ]
            )
        )
        events += [chunk([delta(tool_calls=[{"index": call, "function": {"arguments": "ab"}}])]) for _ in range(100)]
    events.append(chunk([delta(finish_reason="tool_calls")]))
    return exchange(
        body={"messages": MESSAGES, "tools": TOOLS, "stream": True},
        sse_text=sse(*events),
        response_headers={"content-type": "text/event-stream"},
    )


def small_chat() -> Exchange:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help?"},
                "finish_reason": "stop",
                "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
            }
        ],
        "prompt_filter_results": [
            {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
    }
    return exchange(body={"messages": MESSAGES}, response_body=body)


def embeddings() -> Exchange:
    vector = [round((i % 17) / 17 - 0.5, 6) for i in range(1536)]
    body = {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(2)],
        "usage": {"prompt_tokens": 12, "total_tokens": 12},
    }
    return exchange(
        path="/openai/deployments/text-embedding-3-small/embeddings",
        body={"input": ["The gateway forwards every token.", "東京 café"]},
        response_body=body,
    )


async def measure(name: str, ex: Exchange, seconds: float, quiet: bool = False) -> dict[str, object]:
    """Exchanges per second of this process's CPU time (one core; robust to a busy machine),
    and per second of wall time, from the stored JSON to a priced, validated record."""
    raw = ex.to_json()
    enricher = Enricher()
    await make_record(Exchange.from_json(raw), enricher)  # warm the encoders, the book and the schema validator
    count, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < seconds:
        await make_record(Exchange.from_json(raw), enricher)
        count += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    record, _ = await make_record(Exchange.from_json(raw), enricher)
    result = {
        "case": name,
        "exchanges_per_cpu_s": round(count / cpu, 1),
        "exchanges_per_wall_s": round(count / wall, 1),
        "ms_per_exchange": round(cpu / count * 1000, 3),
        "bytes": len(raw),
        "usage_source": record["usage_source"],
        "tool_calls": record["tool_call_count"],
        "cost": record["cost"],
        "safety": record["safety"]["status"],
    }
    if not quiet:
        print(json.dumps(result))
    return result


def _batch(prefix: str, size: int = 100) -> list[Exchange]:
    template = small_chat()
    batch = []
    for i in range(size):
        ex = Exchange.from_json(template.to_json())
        ex.request_id = f"{prefix}-{i}"
        batch.append(ex)
    return batch


async def measure_batches(seconds: float) -> None:
    """Whole batches of 100 through handle_batch over memory ports (no content safety)."""
    ports, enricher, batches = memory_ports(), Enricher(), 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < seconds:
        batch = _batch(f"b{batches}")
        for ex in batch:
            await ports.exchanges.save(ex)
        await handle_batch([ex.request_id for ex in batch], ports, enricher=enricher)
        batches += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    assert len(ports.sink.emitted) == batches * 100
    print(
        json.dumps(
            {
                "case": "handle_batch_100_small_no_safety",
                "records_per_cpu_s": round(batches * 100 / cpu, 1),
                "records_per_wall_s": round(batches * 100 / wall, 1),
                "note": "includes saving the exchanges",
            }
        )
    )


async def measure_safety_batches(latency_ms: float, rounds: int = 3) -> None:
    """Wall time of a batch of 100 when every record waits on a Content Safety call of `latency_ms`."""
    fake = FakeContentSafety(key="bench-key", latency=latency_ms / 1000)
    await fake.start()
    settings = Settings.from_env({"CONTENT_SAFETY_ENDPOINT": fake.base_url, "CONTENT_SAFETY_KEY": "bench-key"})
    enricher, client = Enricher.from_settings(settings), build_content_safety(settings)
    try:
        for concurrency in (1, DEFAULT_CONCURRENCY):
            times = []
            for r in range(rounds):
                ports = memory_ports()
                ports.safety = client
                batch = _batch(f"s{concurrency}-{r}")
                for ex in batch:
                    await ports.exchanges.save(ex)
                t0 = time.perf_counter()
                await handle_batch([ex.request_id for ex in batch], ports, enricher=enricher, concurrency=concurrency)
                times.append(time.perf_counter() - t0)
                assert (
                    all(rec["safety"]["status"] == "ok" for rec in ports.sink.emitted)
                    and len(ports.sink.emitted) == 100
                )
            print(
                json.dumps(
                    {
                        "case": "handle_batch_100_with_safety",
                        "analyser_ms": latency_ms,
                        "concurrency": concurrency,
                        "batch_wall_ms_best": round(min(times) * 1000, 1),
                        "batch_wall_ms_median": round(sorted(times)[len(times) // 2] * 1000, 1),
                    }
                )
            )
    finally:
        await client.close()
        await fake.stop()


async def run(args: argparse.Namespace) -> None:
    cases = [
        ("stream_1000_chunks_tool_calls", streamed_tool_chat()),
        ("small_non_stream_chat", small_chat()),
        ("embeddings", embeddings()),
    ]
    results = [await measure(name, ex, args.seconds, quiet=args.json) for name, ex in cases]
    if args.json:
        print(json.dumps(results))
        return
    await measure_batches(args.seconds)
    if args.safety_latency_ms:
        await measure_safety_batches(args.safety_latency_ms)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--safety-latency-ms", type=float, default=0.0, help="also time batches against a fake analyser")
    ap.add_argument("--json", action="store_true", help="only the per-exchange cases, as one JSON list")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
