"""Parser throughput on one core: exchanges per second through normalize + schema validation.

Three shapes: a streamed chat with 1,000 chunks (text, then parallel tool calls, no usage chunk so the
estimate path runs), a small non-stream chat with service usage, and an embeddings call. Run:
`python -m bench.parser_throughput [--seconds N] [--json]`. Targets: >= 300/s and >= 3,000/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parser.handler import build_record  # noqa: E402
from shared.exchange import Exchange  # noqa: E402
from tests.factories import chunk, delta, exchange, sse  # noqa: E402

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco and in Paris, and what time is it there?"},
]
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "description": "City name"}}}}},
    {"type": "function", "function": {"name": "get_time", "description": "Local time", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string", "description": "IANA zone"}}}}},
]


def streamed_tool_chat(chunks: int = 1000) -> Exchange:
    events = [{"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": [
        {"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}]}]
    events.append(chunk([delta(role="assistant", content="")]))
    text_chunks = chunks - 204
    events += [chunk([delta(content=f" word{i}")]) for i in range(text_chunks)]
    for call in range(2):
        events.append(chunk([delta(tool_calls=[{"index": call, "id": f"call_{call}", "type": "function",
                                                "function": {"name": ("get_weather", "get_time")[call], "arguments": ""}}])]))
        events += [chunk([delta(tool_calls=[{"index": call, "function": {"arguments": "ab"}}])]) for _ in range(100)]
    events.append(chunk([delta(finish_reason="tool_calls")]))
    return exchange(body={"messages": MESSAGES, "tools": TOOLS, "stream": True}, sse_text=sse(*events),
                    response_headers={"content-type": "text/event-stream"})


def small_chat() -> Exchange:
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?"}, "finish_reason": "stop",
                         "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27}}
    return exchange(body={"messages": MESSAGES}, response_body=body)


def embeddings() -> Exchange:
    vector = [round((i % 17) / 17 - 0.5, 6) for i in range(1536)]
    body = {"object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": i, "embedding": vector} for i in range(2)],
            "usage": {"prompt_tokens": 12, "total_tokens": 12}}
    return exchange(path="/openai/deployments/text-embedding-3-small/embeddings",
                    body={"input": ["The gateway forwards every token.", "東京 café"]}, response_body=body)


def measure(name: str, ex: Exchange, seconds: float) -> dict[str, object]:
    """Exchanges per second of this process's CPU time (one core; robust to a busy machine),
    and per second of wall time, from the stored JSON to a validated record."""
    raw = ex.to_json()
    build_record(Exchange.from_json(raw))  # warm the encoders and the schema validator
    count, cpu0, wall0 = 0, time.process_time(), time.perf_counter()
    while time.process_time() - cpu0 < seconds:
        build_record(Exchange.from_json(raw))
        count += 1
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    record, _ = build_record(Exchange.from_json(raw))
    return {"case": name, "exchanges_per_cpu_s": round(count / cpu, 1), "exchanges_per_wall_s": round(count / wall, 1),
            "ms_per_exchange": round(cpu / count * 1000, 3), "bytes": len(raw),
            "usage_source": record["usage_source"], "tool_calls": record["tool_call_count"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json", action="store_true", help="one JSON list on stdout (for python -m bench)")
    args = ap.parse_args()
    cases = [("stream_1000_chunks_tool_calls", streamed_tool_chat()), ("small_non_stream_chat", small_chat()),
             ("embeddings", embeddings())]
    results = []
    for name, ex in cases:
        results.append(measure(name, ex, args.seconds))
        if not args.json:
            print(json.dumps(results[-1]))
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
