"""Cost of the capture levels: `python -m bench.privacy [--out bench/results]`.

On one core (one thread; CPU time from time.process_time):
- redaction throughput: `PiiRedactor.text` in MB/s over prose with personal data every ~2 KB,
  over prose with none, and over digit-dense text (order lists, dates, amounts);
- added time per exchange: `reduce` at `redacted` and `metadata` (normalize, placeholders, the
  copy) minus the work `full` does, p50 and p99 over repeated runs, for a 2 KB and a 200 KB chat,
  non-stream and streamed. This runs in the capture task after the client's last byte, so it is
  CPU the instance spends, never time a client waits.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from shared.exchange import CapturedRequest, CapturedResponse, Exchange, Identity, Timings
from shared.privacy.capture import reduce
from shared.privacy.pii import PiiRedactor, Placeholders

PII = (
    "Please reply to jane.roe@example.org or call +44 20 7946 0958; my card is 4111 1111 1111 1111 "
    "and the refund goes to IBAN DE89 3704 0044 0532 0130 00. Server 10.20.30.40 logged it. "
)
PROSE = (
    "The committee reviewed the quarterly budget and agreed to revisit the hiring plan after the "
    "product launch, noting that customer feedback had improved across every region. "
)
DIGITS = "Order 48213 shipped 2026-11-30, 3 items at 19.99 each, total 59.97, ref A-77213, qty 12, lot 2026/118. "


def _text(unit: str, size: int, pii_every: int = 0) -> str:
    out, n = [], 0
    while n < size:
        piece = PII if pii_every and len(out) % pii_every == pii_every - 1 else unit
        out.append(piece)
        n += len(piece)
    return "".join(out)[:size]


def chat_exchange(size: int, *, stream: bool) -> Exchange:
    """A chat whose messages total about `size` bytes, with personal data every ~2 KB."""
    turns = max(1, size // 2000)
    # Every message differs (a turn number in front): no text is redacted twice from a cache.
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"Turn {i}: " + _text(PROSE, 1900, 10) + PII[:100]}
        for i in range(turns)
    ]
    body = {"messages": messages, "model": "gpt-4o", "stream": stream}
    answer = "Sure. " + _text(PROSE, 600, 3)
    usage = {"prompt_tokens": size // 4, "completion_tokens": 150, "total_tokens": size // 4 + 150}
    if stream:
        events = [
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": answer[i : i + 20]}, "finish_reason": None}],
            }
            for i in range(0, len(answer), 20)
        ]
        events.append(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            }
        )
        events.append({"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o", "choices": [], "usage": usage})
        sse = "".join(f"data: {orjson.dumps(e).decode()}\n\n" for e in events) + "data: [DONE]\n\n"
        response = CapturedResponse(200, {"content-type": "text/event-stream"}, body_bytes=len(sse), sse=sse)
    else:
        rbody = {
            "id": "c1",
            "object": "chat.completion",
            "model": "gpt-4o",
            "usage": usage,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
        }
        response = CapturedResponse(200, {"content-type": "application/json"}, rbody, "json", len(orjson.dumps(rbody)))
    return Exchange(
        request_id="bench",
        request=CapturedRequest(
            "POST",
            "/openai/deployments/gpt-4o/chat/completions",
            {"api-version": "2024-10-21"},
            {"content-type": "application/json"},
            body,
            "json",
            len(orjson.dumps(body)),
        ),
        timings=Timings("2026-12-06T00:00:00.000Z", 100.0, 900.0, 1.0),
        identity=Identity("sub", "Sub", "standard", "user-1"),
        response=response,
    )


def _cpu(fn: Callable[[], object], runs: int) -> list[float]:
    fn()
    out = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        out.append((time.process_time() - start) * 1000)
    return out


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m bench.privacy")
    parser.add_argument("--out", default="bench/results", help="folder for privacy.md and privacy.json")
    parser.add_argument(
        "--runs", type=int, default=200, help="runs per 2 KB cell (a tenth of that for 200 KB, at least 20)"
    )
    args = parser.parse_args(argv)
    pii = PiiRedactor(secrets=False)  # as the capture runs it: secrets were redacted before, at every level
    with_secrets = PiiRedactor()
    throughput = {}
    for name, text in (
        ("prose with personal data every ~2 KB", _text(PROSE, 1_000_000, 10)),
        ("prose without personal data", _text(PROSE, 1_000_000)),
        ("digit-dense text (orders, dates, amounts)", _text(DIGITS, 1_000_000)),
    ):
        for label, redactor in (("personal data", pii), ("personal data + secrets", with_secrets)):
            times = _cpu(lambda text=text, redactor=redactor: redactor.text(text, Placeholders()), 3)
            throughput[f"{name}: {label}"] = round(len(text.encode()) / 1e6 / (statistics.median(times) / 1000), 2)
    added: dict[str, dict[str, float]] = {}
    for size, label in ((2_000, "2 KB"), (200_000, "200 KB")):
        runs = args.runs if size < 10_000 else max(20, args.runs // 10)
        for stream in (False, True):
            exchange = chat_exchange(size, stream=stream)
            full = _cpu(lambda exchange=exchange: reduce(exchange, "full", "default", pii), runs)
            for level in ("redacted", "metadata"):
                cost = _cpu(lambda exchange=exchange, level=level: reduce(exchange, level, level, pii), runs)
                base = statistics.median(full)
                added[f"{label} chat, {'streamed' if stream else 'non-stream'}, {level}"] = {
                    "p50_ms": round(_pct(cost, 50) - base, 3),
                    "p99_ms": round(_pct(cost, 99) - base, 3),
                    "runs": runs,
                }
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "load_average": round(os.getloadavg()[0], 2),
        "throughput_mb_per_s": throughput,
        "added_per_exchange_ms": added,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "privacy.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Capture levels: redaction cost (one core)",
        "",
        f"{result['date']}, Python {result['python']}, {result['cpu']}, load average {result['load_average']}"
        " (CPU time of one thread)",
        "",
        "| text | MB/s |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in throughput.items()),
        "",
        "| exchange, level | added p50 ms | added p99 ms | runs |",
        "|---|---:|---:|---:|",
        *(f"| {k} | {v['p50_ms']} | {v['p99_ms']} | {v['runs']} |" for k, v in added.items()),
        "",
    ]
    (out / "privacy.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
