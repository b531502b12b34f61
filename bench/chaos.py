"""Chaos soak: the dev host against hostile backends, a store outage, aborting and slow clients.

    python -m bench chaos [--requests 3000] [--concurrency 16] [--seed 15]
    python -m bench.chaos ...

One dev host process (`python -m devhost serve`, the Functions runtime, SQLite, the parser in
process) routes one deployment to two backends on loopback:

- the AOAI simulator, with 6% 429s (`retry-after-ms`), 3% 500/503 and 3% cut streams;
- a hostile backend that does what each request's `x-chaos` header asks: 429, 500, 503, a stream cut
  mid-way, a stream that stalls past the gateway's idle timeout, malformed SSE, an 8 MB answer, and
  answers that echo the gateway's upstream key in a header and in the body.

Meanwhile the load generator aborts a tenth of its streams after the first bytes, a store outage
holds the SQLite database's write lock for `--outage` seconds, and `--loris` slow-loris
connections trickle headers a byte a second. Every request carries canary secrets (a header, a
query parameter, a body field). At the end the gateway is stopped and started once more (what a
Function App instance does; spilled exchanges are replayed), then it reports, per client request
(`x-chaos-id`, kept in the stored exchange): lost (no record), duplicated (more than one),
canaries found in any stored byte (database, WAL, outbox, log), RSS and open files per 1,000
requests, and what the slow-loris connections got. Writes `bench/results/chaos.json` and `.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from bench.servers import ROOT, Server, free_port, start
from devhost.simulator import SimulatorConfig
from devhost.simulator import run_in_thread as run_simulator
from shared.exchange import from_items

DEPLOYMENT = "gpt-4o"
PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21"
KEYS = {
    "chaos-key-team-a": {"id": "team-a", "name": "Team A", "product": "standard"},
    "chaos-key-team-b": {"id": "team-b", "name": "Team B", "product": "standard"},
}
UPSTREAM_KEY = "upstream-CANARY-7d1f0c2e9b"
CANARIES = {
    "header": "sk-CANARYheader0123456789abcdef",
    "query": "CANARY-query-sig-5a4b3c2d1e",
    "body": "CANARY-body-password-9f8e7d6c",
    "upstream": UPSTREAM_KEY,
}
MODES = ("ok",) * 10 + ("429", "500", "503", "cut", "stall", "malformed", "big", "echo")
STALL_SECONDS = 4.0
IDLE_TIMEOUT = 2.0


# --------------------------------------------------------------------------------- hostile backend
def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunk(text: str, final: bool = False) -> dict[str, Any]:
    return {
        "id": "chatcmpl-chaos",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": "stop" if final else None}],
    }


async def _hostile(request: web.Request) -> web.StreamResponse:
    try:
        return await _hostile_answer(request)
    except ConnectionError:  # the gateway went away first (its client aborted): nothing to answer
        return web.Response(status=499)


async def _hostile_answer(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    mode = request.headers.get("x-chaos", "ok")
    try:
        stream = bool(orjson.loads(body).get("stream"))
    except (orjson.JSONDecodeError, AttributeError):
        stream = False
    if mode == "429":
        return web.json_response(
            {"error": {"code": "429", "message": "Rate limit."}},
            status=429,
            headers={"retry-after": "1", "retry-after-ms": "200"},
        )
    if mode in ("500", "503"):
        return web.json_response({"error": {"code": "InternalServerError", "message": "boom"}}, status=int(mode))
    if mode == "echo":  # a backend that echoes the gateway's upstream key
        key = request.headers.get("api-key", "")
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "echo": key,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": f"key {key}"}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
            headers={"x-echo-key": key},
        )
    if mode == "big":
        text = "x" * (8 * 1024 * 1024)
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )
    if not stream:
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    await response.write(_sse(_chunk("one ")))
    if mode == "cut":
        await response.write(_sse(_chunk("two ")))
        assert request.transport is not None
        request.transport.abort()
        return response
    if mode == "stall":
        await asyncio.sleep(STALL_SECONDS)
    if mode == "malformed":
        await response.write(b'data: {not json\n\ndata: \xff\xfe\n\nevent: x\ndata: [DON\n\n: comment\n\ndata: {"a":')
        return response
    await response.write(_sse(_chunk("two", final=True)))
    await response.write(b"data: [DONE]\n\n")
    return response


class Hostile:
    """The hostile backend on its own thread and loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", _hostile)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


# --------------------------------------------------------------------------------- gateway process
def _settings(workdir: Path, sim_url: str, hostile_url: str) -> Path:
    backends = [
        {
            "name": "simulator",
            "endpoint": sim_url,
            "auth": {"type": "api_key", "setting": "UPSTREAM_KEY"},
            "deployments": ["*"],
        },
        {
            "name": "hostile",
            "endpoint": hostile_url,
            "auth": {"type": "api_key", "setting": "UPSTREAM_KEY"},
            "deployments": ["*"],
        },
    ]
    values = {
        "GATEWAY_BACKENDS": json.dumps(backends),
        "UPSTREAM_KEY": UPSTREAM_KEY,
        "LOCAL_SUBSCRIPTIONS": json.dumps(KEYS),
        "SQLITE_PATH": str(workdir / "chaos.db"),
        "CAPTURE_OUTBOX_DIR": str(workdir / "outbox"),
        "UPSTREAM_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
        "DEVHOST_HEADER_TIMEOUT_SECONDS": "3",
        "REQUEST_BODY_TIMEOUT_SECONDS": "5",
        "MAX_REQUEST_BODY_BYTES": str(1024 * 1024),
    }
    path = workdir / "chaos.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def start_gateway(workdir: Path, settings: Path, name: str) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "devhost",
        "serve",
        "--port",
        str(port),
        "--settings",
        str(settings),
        "--log-level",
        "warning",
    ]
    return start(name, argv, port, workdir, {"PYTHONPATH": str(ROOT)})


def open_files(server: Server) -> int:
    try:
        return len(os.listdir(f"/proc/{server.proc.pid}/fd"))
    except OSError:
        return -1


# --------------------------------------------------------------------------------- load
async def one(session: aiohttp.ClientSession, url: str, n: int, rng: random.Random, stats: Counter[str]) -> None:
    mode = rng.choice(MODES)
    stream = rng.random() < 0.5
    abort = stream and rng.random() < 0.1
    key = rng.choice(list(KEYS))
    body = {
        "messages": [{"role": "user", "content": f"chaos {n}"}],
        "stream": stream,
        "max_tokens": 16,
        "metadata": {"password": CANARIES["body"]},
    }
    headers = {
        "api-key": key,
        "content-type": "application/json",
        "x-chaos": mode,
        "x-chaos-id": str(n),
        "x-upstream-token": CANARIES["header"],
    }
    target = url + PATH + f"&sig={CANARIES['query']}"
    try:
        async with session.post(target, data=orjson.dumps(body), headers=headers) as r:
            stats[f"status {r.status}"] += 1
            if abort:
                await r.content.read(1)
                stats["client aborts"] += 1
                r.close()
                return
            await r.read()
    except (TimeoutError, aiohttp.ClientError) as exc:
        stats[f"client saw {type(exc).__name__}"] += 1


async def drive(url: str, count: int, concurrency: int, seed: int, on_progress: Any, first: int = 0) -> Counter[str]:
    """`count` requests numbered (`x-chaos-id`) from `first`, `concurrency` at a time."""
    rng = random.Random(seed)
    stats: Counter[str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(first, first + count):
        queue.put_nowait(i)
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            await one(session, url, n, rng, stats)
            on_progress(n)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return stats


async def loris(url: str, connections: int, seconds: float) -> dict[str, Any]:
    """Connections that trickle a request head one byte a second; what the server did with them."""
    host, port = url.removeprefix("http://").split(":")
    head = f"POST {PATH} HTTP/1.1\r\nhost: x\r\napi-key: chaos-key-team-a\r\nx-slow: " + "a" * 200
    closed: list[float] = []
    answers: Counter[int] = Counter()

    async def trickle() -> None:
        started = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError:
            answers[-1] += 1  # refused at connect
            return
        try:
            for byte in head.encode():
                if time.monotonic() - started > seconds:
                    answers[0] += 1  # still open when the client gave up
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(4096), 1.0)
                except TimeoutError:
                    continue
                closed.append(time.monotonic() - started)
                answers[int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else -2] += 1
                return
        except (ConnectionError, OSError):
            closed.append(time.monotonic() - started)
            answers[-2] += 1
        finally:
            writer.close()

    await asyncio.gather(*(trickle() for _ in range(connections)))
    return {
        "connections": connections,
        "closed_by_server": len(closed),
        "longest_open_s": round(max(closed), 1) if closed else None,
        "answers": dict(answers),
    }


async def health(url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(url + "/health", headers={"api-key": next(iter(KEYS))}) as r:
        return r.status


def outage(db: Path, seconds: float, done: threading.Event) -> None:
    """A store outage: another process holds SQLite's write lock, so every write fails after its busy timeout."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    done.wait(seconds)
    conn.execute("ROLLBACK")
    conn.close()


def settle(db: Path, idle: float = 60.0, limit: float = 900.0) -> int:
    """Wait until every stored exchange has its record, or nothing moved (records, exchanges) for
    `idle` seconds: after a store outage the backlog drains slowly (each write waits for the lock
    before it fails), so a short pause is not the end. Returns the record count."""
    deadline = time.monotonic() + limit
    last: tuple[int, int] = (-1, -1)
    since = time.monotonic()
    while time.monotonic() < deadline:
        try:
            with sqlite3.connect(db, timeout=30) as conn:
                records = conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
                exchanges = conn.execute("SELECT COUNT(DISTINCT request_id) FROM exchange_items").fetchone()[0]
        except sqlite3.Error:
            records, exchanges = last
        if (records, exchanges) != last:
            last, since = (records, exchanges), time.monotonic()
        elif records >= exchanges > 0 and time.monotonic() - since >= 3 or time.monotonic() - since >= idle:
            return records
        time.sleep(1)
    return last[0]


# --------------------------------------------------------------------------------- analysis
def analyse(workdir: Path, sent: int) -> dict[str, Any]:
    db = workdir / "chaos.db"
    with sqlite3.connect(db) as conn:
        items: dict[str, list[dict[str, Any]]] = {}
        for rid, item in conn.execute("SELECT request_id, item FROM exchange_items"):
            items.setdefault(rid, []).append(orjson.loads(item))
        records = {r[0]: orjson.loads(r[1]) for r in conn.execute("SELECT request_id, record FROM records")}
        details = b"".join((r[0] or "").encode() for r in conn.execute("SELECT details FROM records"))
        letters = conn.execute("SELECT key, reason, payload FROM deadletters").fetchall()
    by_chaos: dict[str, list[str]] = {}
    found: dict[str, set[str]] = {}

    def grep(where: str, data: bytes) -> None:
        for name, canary in CANARIES.items():
            if canary.encode() in data:
                found.setdefault(name, set()).add(where)

    for rid, parts in items.items():
        exchange = from_items(parts)  # base64 pieces joined: a canary cannot hide in them
        grep("exchanges", exchange.to_json())
        headers = exchange.request.headers if isinstance(exchange.request.headers, dict) else {}
        cid = headers.get("x-chaos-id")
        if cid is not None:
            by_chaos.setdefault(str(cid), []).append(rid)
    grep("records", orjson.dumps(list(records.values())) + details)
    grep("dead letters", orjson.dumps(letters))
    for path in [db, Path(str(db) + "-wal"), *sorted((workdir / "outbox").glob("*")), *workdir.glob("gateway*.log")]:
        if path.is_file():
            grep(path.name, path.read_bytes())
    recorded = {cid: sum(1 for rid in rids if rid in records) for cid, rids in by_chaos.items()}
    lost = [str(n) for n in range(sent) if recorded.get(str(n), 0) == 0]
    duplicated = [cid for cid, rids in by_chaos.items() if len(rids) > 1 or recorded[cid] > 1]
    statuses = Counter(r.get("status_code") for r in records.values())
    return {
        "sent": sent,
        "exchanges": len(items),
        "records": len(records),
        "dead_letters": len(letters),
        "dead_letter_reasons": dict(Counter(r[1].split(":")[0] for r in letters)),
        "lost": len(lost),
        "lost_ids": lost[:20],
        "duplicated": len(duplicated),
        "secrets_found": {k: sorted(v) for k, v in found.items()},
        "record_statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "outbox_left": len(list((workdir / "outbox").glob("*"))) if (workdir / "outbox").exists() else 0,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--outage", type=float, default=15.0, help="seconds the store is unwritable (default 15)")
    ap.add_argument("--loris", type=int, default=200, help="slow-loris connections (default 200)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--workdir", default=None, help="keep the database and logs here (default: a temporary directory)")
    args = ap.parse_args(argv)
    sim = run_simulator(
        SimulatorConfig(
            throttle_rate=0.06,
            retry_after_ms=200,
            fail_statuses=(500, 503),
            fail_rate=0.03,
            drop_rate=0.03,
            seed=args.seed,
            completion_tokens=24,
            log_requests=False,
        )
    )
    hostile = Hostile()
    result: dict[str, Any] = {"settings": vars(args)}
    try:
        with tempfile.TemporaryDirectory(prefix="aoai-chaos-") as tmp:
            workdir = Path(args.workdir or tmp)
            workdir.mkdir(parents=True, exist_ok=True)
            settings = _settings(workdir, sim.url, hostile.url)
            gateway = start_gateway(workdir, settings, "gateway")
            try:
                # Warm-up (counted too): ids after the run's.
                asyncio.run(drive(gateway.url, 200, 8, args.seed + 1, lambda n: None, first=args.requests))
                settle(workdir / "chaos.db", idle=10)
                rss0, fds0 = gateway.rss_kb(), open_files(gateway)
                lock_done = threading.Event()
                started = time.monotonic()
                outage_at = args.requests * 2 // 5
                threads: list[threading.Thread] = []

                samples: list[tuple[int, int, int]] = []  # (requests done, RSS KB, open files)
                done = [0]

                def progress(n: int) -> None:
                    done[0] += 1
                    if done[0] % 500 == 0:
                        samples.append((done[0], gateway.rss_kb(), open_files(gateway)))
                    if n == outage_at and not threads:
                        t = threading.Thread(
                            target=outage, args=(workdir / "chaos.db", args.outage, lock_done), daemon=True
                        )
                        t.start()
                        threads.append(t)

                async def run_all() -> tuple[Counter[str], dict[str, Any], int]:
                    load = asyncio.create_task(drive(gateway.url, args.requests, args.concurrency, args.seed, progress))
                    slow = asyncio.create_task(loris(gateway.url, args.loris, 30.0))
                    await asyncio.sleep(2)
                    during = await health(gateway.url)
                    return await load, await slow, during

                stats, slow, health_during = asyncio.run(run_all())
                for t in threads:
                    t.join()
                elapsed = time.monotonic() - started
                settle(workdir / "chaos.db")
                rss1, fds1 = gateway.rss_kb(), open_files(gateway)
                samples.append((args.requests, rss1, fds1))
                # The second half's slope: growth once caches, pools and the outage's backlog settled.
                half = next((s for s in samples if s[0] >= args.requests // 2), samples[0])
                span = max(1, args.requests - half[0])
            finally:
                gateway.stop()
            # What a recycled instance does: start again (spilled exchanges are replayed) and settle.
            again = start_gateway(workdir, settings, "gateway-restarted")
            try:
                asyncio.run(drive(again.url, 1, 1, 0, lambda n: None, first=args.requests + 200))
                settle(workdir / "chaos.db")
            finally:
                again.stop()
            total = args.requests + 200 + 1
            report = analyse(workdir, total)
            per_k = 1000 / args.requests
            result.update(
                {
                    "client": dict(sorted(stats.items())),
                    "elapsed_s": round(elapsed, 1),
                    "slow_loris": slow,
                    "health_during_loris": health_during,
                    "rss_kb_per_1000": round((rss1 - rss0) * per_k, 1),
                    "open_files_per_1000": round((fds1 - fds0) * per_k, 2),
                    "rss_mb": [round(rss0 / 1024, 1), round(rss1 / 1024, 1)],
                    "second_half_rss_kb_per_1000": round((rss1 - half[1]) * 1000 / span, 1),
                    "second_half_open_files_per_1000": round((fds1 - half[2]) * 1000 / span, 2),
                    "samples": samples,
                    "open_files": [fds0, fds1],
                    **report,
                }
            )
    finally:
        hostile.stop()
        sim.stop()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(result, indent=1))
    (out / "chaos.md").write_text(markdown(result))
    print(markdown(result), flush=True)
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 and not result["secrets_found"] else 1


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Chaos soak",
        "",
        f"{r['settings']['requests']} requests at concurrency {r['settings']['concurrency']} (seed {r['settings']['seed']}), "
        f"{r['elapsed_s']} s; store outage {r['settings']['outage']} s; {r['settings']['loris']} slow-loris connections.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| requests sent (with warm-up and the restart's probe) | {r['sent']} |",
        f"| exchanges stored / records | {r['exchanges']} / {r['records']} |",
        f"| **lost** (no record) | **{r['lost']}** |",
        f"| **duplicated** | **{r['duplicated']}** |",
        f"| **secrets found in stored bytes** | **{r['secrets_found'] or 0}** |",
        f"| dead letters | {r['dead_letters']} |",
        f"| outbox files left | {r['outbox_left']} |",
        f"| RSS per 1,000 requests | {r['rss_kb_per_1000']:+} KB ({r['rss_mb'][0]} -> {r['rss_mb'][1]} MB) |",
        f"| open files per 1,000 requests | {r['open_files_per_1000']:+} ({r['open_files'][0]} -> {r['open_files'][1]}) |",
        f"| second half: RSS / open files per 1,000 requests | {r['second_half_rss_kb_per_1000']:+} KB / "
        f"{r['second_half_open_files_per_1000']:+} |",
        f"| slow-loris connections closed by the gateway | {r['slow_loris']['closed_by_server']} of "
        f"{r['slow_loris']['connections']} (longest open {r['slow_loris']['longest_open_s']} s, answers {r['slow_loris']['answers']}) |",
        f"| `/health` while they trickled | {r['health_during_loris']} |",
        "",
        "Client side: " + ", ".join(f"{k}: {v}" for k, v in r["client"].items()),
        "",
        "Record statuses: " + ", ".join(f"{k}: {v}" for k, v in r["record_statuses"].items()),
    ]
    if r["lost_ids"]:
        lines += ["", "First lost `x-chaos-id`s: " + ", ".join(r["lost_ids"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
