"""What `enforce` mode adds to a stream against `monitor`: time to first byte, to first text, and total.

Two modes:

- `devhost` (default, `run(...)`): the real path. The AOAI simulator, the fake Content Safety server
  (answering after `latency_ms`, 20 ms by default) and the dev host (`python -m devhost`, the function
  app on uvicorn) run as separate processes on loopback; this process streams chat completions
  through the dev host with two subscription keys, one whose product monitors and one whose product
  enforces, in alternating rounds at each concurrency. Every answer is the same forced text
  (`x-sim-content`, `chunks` pieces of `piece_chars` characters, one every `interval_ms`).
- `transformer` (`run_transformer(...)`): `proxy.streams.enforcement.enforce` alone over a synthetic stream,
  with the real SDK client calling the fake in-process; no HTTP hop of the proxy.

Time to first byte is the first body byte (Azure's prompt annotation frame, which enforcement releases
at once); first text is the first byte of answer text, which enforcement holds until its window
(`window - overlap` characters, or the end of a shorter answer) is cleared.

Run: `python -m bench.enforcement [--mode devhost|transformer] [--concurrency 1 32] [--latency-ms 20]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import httpx
import orjson
from azure.core.credentials import AzureKeyCredential

from bench.servers import ROOT, Server, free_port, start
from proxy.streams.enforcement import enforce
from shared.safety.client import AzureContentSafety
from shared.safety.config import StreamPolicy
from testing.fakes.content_safety import FakeContentSafety

KEYS = {"monitor": "bench-monitor-key", "enforce": "bench-enforce-key"}
SAFETY_KEY = "bench-safety-key"
CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
#: Every forced piece starts with this, so the first text byte is easy to spot in raw chunks.
TEXT_MARK = b'"content":"w'


def answer_pieces(chunks: int, piece_chars: int) -> list[str]:
    """`chunks` pieces of exactly `piece_chars` characters ("w0001 ... "), none a trigger word."""
    return [f"w{i:04d} ".ljust(piece_chars, "x")[: piece_chars - 1] + " " for i in range(chunks)]


# --------------------------------------------------------------------------------- through the dev host


@contextmanager
def _processes(window: int, overlap: int, latency_ms: float, interval_ms: float):
    """Simulator, fake Content Safety and dev host as their own processes; yields the gateway URL."""
    py = sys.executable
    sim_port, safety_port, gw_port = free_port(), free_port(), free_port()
    servers: list[Server] = []
    env = {"PYTHONPATH": str(ROOT)}
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
                        "LOCAL_SUBSCRIPTIONS": json.dumps(
                            {key: {"id": mode, "name": mode, "product": mode} for mode, key in KEYS.items()}
                        ),
                        "SQLITE_PATH": str(Path(tmp) / "gateway.db"),
                        "CAPTURE_OUTBOX_DIR": str(Path(tmp) / "outbox"),
                        "CONTENT_SAFETY_ENDPOINT": f"http://127.0.0.1:{safety_port}",
                        "CONTENT_SAFETY_KEY": SAFETY_KEY,
                        "CONTENT_SAFETY_MODES": json.dumps({"default": "monitor", "enforce": "enforce"}),
                        "CONTENT_SAFETY_STREAM_WINDOW_CHARS": str(window),
                        "CONTENT_SAFETY_STREAM_WINDOW_OVERLAP": str(overlap),
                    }
                }
            )
        )
        commands = [
            (
                "simulator",
                [
                    py,
                    "-m",
                    "devhost.simulator",
                    "--port",
                    str(sim_port),
                    "--no-log",
                    "--token-delay-ms",
                    str(interval_ms),
                ],
                sim_port,
            ),
            (
                "content-safety",
                [
                    py,
                    "-m",
                    "testing.fakes.content_safety",
                    "--port",
                    str(safety_port),
                    "--latency-ms",
                    str(latency_ms),
                    "--key",
                    SAFETY_KEY,
                ],
                safety_port,
            ),
            ("devhost", [py, "-m", "devhost", "--port", str(gw_port), "--settings", str(settings)], gw_port),
        ]
        try:
            for name, command, port in commands:
                servers.append(start(name, command, port, Path(tmp), env))
            yield servers[-1].url, servers[-1].proc.pid
        finally:
            for server in reversed(servers):
                server.stop()


async def _one(client: httpx.AsyncClient, mode: str, headers: dict[str, str]) -> tuple[float, float, float]:
    """(first byte, first text, last byte) in ms for one streamed chat completion."""
    start = time.perf_counter()
    first = text = None
    body = {"messages": [{"role": "user", "content": "bench"}], "stream": True}
    async with client.stream("POST", CHAT, json=body, headers={"api-key": KEYS[mode], **headers}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{mode}: status {r.status_code}: {(await r.aread())[:300]!r}")
        async for chunk in r.aiter_raw():
            now = time.perf_counter()
            if first is None:
                first = now
            if text is None and TEXT_MARK in chunk:
                text = now
    end = time.perf_counter()
    if first is None or text is None:
        raise RuntimeError(f"{mode}: no answer text received")
    return (first - start) * 1000, (text - start) * 1000, (end - start) * 1000


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _measure(
    url: str, pid: int, concurrency: Sequence[int], rounds: dict[int, int], warmup: int, headers: dict[str, str]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=max(concurrency) * 2, max_keepalive_connections=max(concurrency) * 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for _ in range(warmup):
            for mode in KEYS:
                await _one(client, mode, headers)
        for conc in concurrency:
            samples: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in KEYS}
            cpu = dict.fromkeys(KEYS, 0.0)
            # Alternate the modes round by round, so the machine's noise hits both alike.
            for _ in range(rounds.get(conc, 2)):
                for mode in KEYS:
                    before = _cpu_seconds(pid) or 0.0
                    samples[mode] += await asyncio.gather(*(_one(client, mode, headers) for _ in range(conc)))
                    cpu[mode] += (_cpu_seconds(pid) or 0.0) - before
            for mode, rows in samples.items():
                results.append(
                    {
                        "mode": mode,
                        "concurrency": conc,
                        "requests": len(rows),
                        "devhost_cpu_ms_per_request": round(cpu[mode] * 1000 / len(rows), 2),
                        **_timings(rows),
                    }
                )
    return results


async def run(
    *,
    concurrency: Sequence[int] = (1, 32),
    latency_ms: float = 20.0,
    chunks: int = 150,
    piece_chars: int = 20,
    interval_ms: float = 5.0,
    window: int = 1000,
    overlap: int = 100,
    rounds: dict[int, int] | None = None,
    warmup: int = 3,
) -> dict[str, Any]:
    """`enforce` against `monitor` through the dev host; numbers in ms (p50/p95 per mode and concurrency)
    and `added` = enforce minus monitor at each concurrency."""
    rounds = rounds or {c: (20 if c == 1 else max(4, 128 // c)) for c in concurrency}
    pieces = answer_pieces(chunks, piece_chars)
    headers = {"x-sim-content": quote("".join(pieces)), "x-sim-chunks": str(chunks)}
    with _processes(window, overlap, latency_ms, interval_ms) as (url, pid):
        results = await _measure(url, pid, concurrency, rounds, warmup, headers)
    return _result(
        "client -> dev host (uvicorn, function app) -> simulator; analyser = fake Content Safety",
        results,
        chunks=chunks,
        piece_chars=piece_chars,
        interval_ms=interval_ms,
        latency_ms=latency_ms,
        window=window,
        overlap=overlap,
    )


# --------------------------------------------------------------------------------- the transformer alone


def stream_events(chunks: int, piece_chars: int = 4) -> list[bytes]:
    meta = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    events = [
        b"data: "
        + orjson.dumps({**meta, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        + b"\n\n"
    ]
    for piece in answer_pieces(chunks, piece_chars):
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


async def _upstream(events: list[bytes], interval: float) -> AsyncIterator[bytes]:
    for event in events:
        await asyncio.sleep(interval)
        yield event


async def _one_transformed(
    events: list[bytes], interval: float, client: AzureContentSafety, policy: StreamPolicy
) -> tuple[float, float, float]:
    start = time.perf_counter()
    first = text = None
    async for chunk in enforce(
        _upstream(events, interval),
        api="chat.completions",
        analyser=client,
        config=policy,
        on_verdict=lambda outcome: None,
    ):
        now = time.perf_counter()
        first = first or now
        if text is None and TEXT_MARK in chunk:
            text = now
    end = time.perf_counter()
    return ((first or end) - start) * 1000, ((text or end) - start) * 1000, (end - start) * 1000


async def run_transformer(
    *,
    concurrency: Sequence[int] = (1, 32),
    latency_ms: float = 20.0,
    chunks: int = 150,
    piece_chars: int = 20,
    interval_ms: float = 5.0,
    window: int = 1000,
    overlap: int = 100,
) -> dict[str, Any]:
    """`enforce` over a synthetic stream in this process (no proxy hop), same numbers as `run`."""
    fake = FakeContentSafety(key=SAFETY_KEY, latency=latency_ms / 1000)
    await fake.start()
    events = stream_events(chunks, piece_chars)
    results: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            client = AzureContentSafety(fake.base_url, AzureKeyCredential(SAFETY_KEY), session=session, max_retries=0)
            for conc in concurrency:
                for mode in ("monitor", "enforce"):
                    policy = StreamPolicy(mode=mode, window_chars=window, overlap_chars=overlap)  # type: ignore[arg-type]
                    rows = await asyncio.gather(
                        *(_one_transformed(events, interval_ms / 1000, client, policy) for _ in range(conc))
                    )
                    results.append(
                        {
                            "mode": mode,
                            "concurrency": conc,
                            "requests": len(rows),
                            **_timings(rows),
                        }
                    )
            await client.close()
    finally:
        await fake.stop()
    return _result(
        "proxy.streams.enforcement.enforce in-process; analyser = fake Content Safety",
        results,
        chunks=chunks,
        piece_chars=piece_chars,
        interval_ms=interval_ms,
        latency_ms=latency_ms,
        window=window,
        overlap=overlap,
    )


# --------------------------------------------------------------------------------- numbers


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return {"p50": round(statistics.median(ordered), 1), "p95": round(p95, 1)}


def _timings(rows: list[tuple[float, float, float]]) -> dict[str, dict[str, float]]:
    """p50/p95 of (first byte, first text, last byte) rows."""
    metrics = ("ttfb_ms", "first_text_ms", "total_ms")
    return {metric: _summary([r[i] for r in rows]) for i, metric in enumerate(metrics)}


def _result(
    path: str,
    results: list[dict[str, Any]],
    *,
    chunks: int,
    piece_chars: int,
    interval_ms: float,
    latency_ms: float,
    window: int,
    overlap: int,
) -> dict[str, Any]:
    """What `run` and `run_transformer` return: the setup, the rows and what enforce added."""
    return {
        "setup": {
            "path": path,
            "answer_chars": chunks * piece_chars,
            "chunks": chunks,
            "interval_ms": interval_ms,
            "analyser_latency_ms": latency_ms,
            "window": window,
            "overlap": overlap,
            "analyser_calls_per_request": _calls(chunks * piece_chars, window, overlap),
        },
        "results": results,
        "added": _added(results),
    }


def _added(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["mode"], r["concurrency"]): r for r in results}
    out = []
    for conc in sorted({r["concurrency"] for r in results}):
        mon, enf = by[("monitor", conc)], by[("enforce", conc)]
        out.append(
            {
                "concurrency": conc,
                **{
                    f"{metric}_{p}": round(enf[metric][p] - mon[metric][p], 1)
                    for metric in ("ttfb_ms", "first_text_ms", "total_ms")
                    for p in ("p50", "p95")
                },
            }
        )
    return out


def _calls(chars: int, window: int, overlap: int) -> int:
    """Windows per answer: every `window - overlap` new characters, plus the partial one at the end."""
    step = window - overlap
    return -(-chars // step)


def report(result: dict[str, Any]) -> str:
    setup = result["setup"]
    lines = [
        f"{setup['path']}",
        f"answer {setup['answer_chars']} chars in {setup['chunks']} chunks every {setup['interval_ms']} ms; "
        f"analyser latency {setup['analyser_latency_ms']} ms; window {setup['window']}/{setup['overlap']}; "
        f"{setup['analyser_calls_per_request']} analyser calls per enforced request",
        f"{'mode':8} {'conc':>4} {'n':>4} {'ttfb p50':>9} {'p95':>7} {'text p50':>9} {'p95':>7} "
        f"{'total p50':>10} {'p95':>7}  (ms)  devhost CPU ms/request",
    ]
    for r in result["results"]:
        lines.append(
            f"{r['mode']:8} {r['concurrency']:>4} {r['requests']:>4} {r['ttfb_ms']['p50']:>9} {r['ttfb_ms']['p95']:>7} "
            f"{r['first_text_ms']['p50']:>9} {r['first_text_ms']['p95']:>7} {r['total_ms']['p50']:>10} "
            f"{r['total_ms']['p95']:>7}        {r.get('devhost_cpu_ms_per_request', '-')}"
        )
    for a in result["added"]:
        lines.append(
            f"added by enforce at concurrency {a['concurrency']}: ttfb p50 {a['ttfb_ms_p50']} / p95 {a['ttfb_ms_p95']}, "
            f"first text p50 {a['first_text_ms_p50']} / p95 {a['first_text_ms_p95']}, "
            f"total p50 {a['total_ms_p50']} / p95 {a['total_ms_p95']} ms"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--mode", choices=("devhost", "transformer"), default="devhost")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--chunks", type=int, default=150)
    parser.add_argument("--piece-chars", type=int, default=20)
    parser.add_argument("--interval-ms", type=float, default=5.0)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--overlap", type=int, default=100)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    kwargs = dict(
        concurrency=args.concurrency,
        latency_ms=args.latency_ms,
        chunks=args.chunks,
        piece_chars=args.piece_chars,
        interval_ms=args.interval_ms,
        window=args.window,
        overlap=args.overlap,
    )
    result = asyncio.run(run(**kwargs) if args.mode == "devhost" else run_transformer(**kwargs))
    print(json.dumps(result, indent=2) if args.json else report(result))


if __name__ == "__main__":
    main()
