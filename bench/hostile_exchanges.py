"""What hostile stored exchanges cost the parser: wall time and peak memory (max RSS) per case,
each in its own process, through `handle_batch` with the default `ParserBudget` (30 s, 64 MB).

Cases: a Responses stream whose one delta has `content_index` 300,000,000; 200,000 function-call
argument deltas (20 MB of arguments, no terminal event); one 50 MB event (a chat chunk whose
content is 50 MB without a space). Run: `python -m bench.hostile_exchanges [--json]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("content_index_300m", "arguments_20mb", "event_50mb")


def _exchange(case: str):
    from testing.factories import exchange, responses_sse, text_stream

    headers = {"response_headers": {"content-type": "text/event-stream"}}
    responses = {"path": "/openai/v1/responses", "body": {"model": "gpt-4o", "input": "hi", "stream": True}}
    if case == "content_index_300m":
        delta = {"type": "response.output_text.delta", "output_index": 0, "content_index": 300_000_000, "delta": "x"}
        return exchange(**responses, sse_text=responses_sse(delta), **headers)
    if case == "arguments_20mb":
        added = {
            "type": "response.output_item.added",
            "output_index": 0,
            "item": {"type": "function_call", "name": "f", "arguments": ""},
        }
        delta = {"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "abcdefghij" * 10}
        return exchange(**responses, sse_text=responses_sse(added, *[delta] * 200_000), **headers)
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    return exchange(body=chat, sse_text=text_stream(["x" * 50_000_000]), **headers)


def run_case(case: str) -> dict:
    from parser.handler import ParserBudget, handle_batch
    from testing.memory import memory_ports

    ports = memory_ports()
    ex = _exchange(case)
    asyncio.run(ports.exchanges.save(ex))
    started = time.perf_counter()
    result = asyncio.run(handle_batch([ex.request_id], ports, budget=ParserBudget()))
    record = ports.records.records[ex.request_id]  # type: ignore[attr-defined]
    return {
        "case": case,
        "seconds": round(time.perf_counter() - started, 2),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
        "recorded": len(result.recorded),
        "dead_lettered": len(result.deadlettered),
        "parse_error": (record.get("parse_error") or "")[:80] or None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--case", choices=CASES)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case)))
        return
    rows = []
    for case in CASES:
        done = subprocess.run(
            [sys.executable, "-m", "bench.hostile_exchanges", "--case", case],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(rows))
        return
    for row in rows:
        print(
            f"{row['case']:<20} {row['seconds']:>6} s  {row['max_rss_mb']:>5} MB  recorded {row['recorded']}  "
            f"dead-lettered {row['dead_lettered']}  {row['parse_error'] or ''}"
        )


if __name__ == "__main__":
    main()
