"""`python -m bench` (`make bench`): the published benchmark, direct vs this gateway vs LiteLLM's proxy.

Starts, each in its own process on loopback: the AOAI simulator, the dev host (this gateway, with the
simulator as its only backend, a local subscription key and stream-usage injection on, as in
production) and LiteLLM's proxy (installed into `bench/.venv-litellm`). One load generator
(`bench.loadgen`, aiohttp + uvloop, its own process) drives every arm with the same requests:

- non-stream chat and streamed chat (200 content chunks, multibyte text, one chunk of 8 KiB);
- concurrency 1, 8, 32, 64; a fixed request count each, the same untimed warm-up for every arm;
- every response checked for completeness (`bench.checks`).

Then: routing overhead (one backend vs three), RSS growth per concurrent stream, the content-safety
enforcement cost, and parser throughput on one core. Writes `bench/results/latest.md` and `.json`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import peer, report
from bench.checks import expected_from_chat, expected_from_stream
from bench.estimates import exchange_census
from bench.servers import ROOT, Server, free_port, process_tree, start, start_devhost

DEPLOYMENT = "gpt-4o"
PATH = f"/openai/deployments/{DEPLOYMENT}/chat/completions?api-version=2024-10-21"
MESSAGES = [{"role": "user", "content": "Summarize the gateway's design in a few paragraphs."}]
BODIES = {
    "chat": json.dumps({"messages": MESSAGES}),
    "stream": json.dumps({"messages": MESSAGES, "stream": True}),
}
SIM_KEY = "simulator-key"
GATEWAY_KEY = "bench-subscription-key"
CONCURRENCY = (1, 8, 32, 64)
LARGE_CHUNK = 8192
#: CAPTURE_LEVELS for the `gateway-metadata` arm: every audience at `metadata`.
METADATA = json.dumps({"default": "metadata"})


def say(text: str) -> None:
    print(text, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------- processes
def start_simulator(workdir: Path) -> Server:
    port = free_port()
    # 200 content chunks (an answer long enough that every chunk has text), the middle one 8 KiB.
    return start(
        "simulator",
        [
            sys.executable,
            "-m",
            "devhost.simulator",
            "--port",
            str(port),
            "--no-log",
            "--stream-chunks",
            "200",
            "--completion-tokens",
            "400",
            "--large-chunk-bytes",
            str(LARGE_CHUNK),
        ],
        port,
        workdir,
        {"PYTHONPATH": str(ROOT)},
    )


def gateway_settings(
    workdir: Path, name: str, simulator_url: str, backends: int, extra: dict[str, str] | None = None
) -> Path:
    """A Core Tools settings file: the simulator as backend(s), one local key, usage injection on."""
    items = [
        {
            "name": "sim-primary",
            "endpoint": simulator_url,
            "auth": {"type": "api_key", "value": SIM_KEY},
            "deployments": ["*"],
            "priority": 1,
        }
    ]
    items += [
        {
            "name": f"sim-spare-{i}",
            "endpoint": simulator_url,
            "auth": {"type": "api_key", "value": SIM_KEY},
            "deployments": ["*"],
            "priority": 2,
        }
        for i in range(1, backends)
    ]
    values = {
        "GATEWAY_BACKENDS": json.dumps(items),
        "LOCAL_SUBSCRIPTIONS": json.dumps({GATEWAY_KEY: {"id": "bench", "name": "Bench", "product": "bench"}}),
        "SQLITE_PATH": str(workdir / f"{name}.db"),
        "CAPTURE_OUTBOX_DIR": str(workdir / f"{name}-outbox"),
        "INJECT_STREAM_USAGE": "true",
        **(extra or {}),
    }
    path = workdir / f"{name}.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    return path


def start_gateway(
    workdir: Path, name: str, simulator_url: str, backends: int = 1, extra: dict[str, str] | None = None
) -> Server:
    # The proxy alone, as deployed: the parser runs on its own instances in Azure (bench/gateway_app.py).
    return start_devhost(name, gateway_settings(workdir, name, simulator_url, backends, extra), workdir)


def cpu_seconds(server: Server) -> float:
    """User + system CPU time of the server's process tree so far (from /proc)."""
    total = 0.0
    for pid in process_tree(server.proc.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def emulation_seconds(server: Server) -> float | None:
    """CPU the dev host has spent as the Functions host so far (`/_devhost/cpu`); None for a server
    that is no dev host (the simulator, LiteLLM)."""
    try:
        answer = httpx.get(server.url + "/_devhost/cpu", timeout=5)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    return float(answer.json()["emulation_cpu_s"])


def start_bare(workdir: Path, simulator_url: str) -> Server:
    """The floor arm: `bench/bare_app.py` on the same dev host and Functions runtime as the gateway."""
    return start_devhost("bare", gateway_settings(workdir, "bare", simulator_url, 1), workdir, app="bench.bare_app")


# ------------------------------------------------------------------------------------- load
def drive(
    workdir: Path,
    url: str,
    key: str,
    workload: str,
    concurrency: int,
    requests: int,
    warmup: int,
    expected: dict[str, Any],
    time_limit: float,
    extra_headers: dict[str, str] | None = None,
    wait: bool = True,
) -> Any:
    spec = {
        "url": url + PATH,
        "headers": {"api-key": key, "content-type": "application/json", **(extra_headers or {})},
        "body": BODIES[workload],
        "stream": workload == "stream",
        "concurrency": concurrency,
        "requests": requests,
        "warmup": warmup,
        "time_limit": time_limit,
        "expected": expected,
    }
    path = workdir / f"spec-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", str(path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    if not wait:
        return proc
    return finish(proc)


def finish(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode})")
    return json.loads(out)


def reference(simulator_url: str) -> dict[str, dict[str, Any]]:
    """The expected answers, from one direct call per workload (the simulator is deterministic)."""
    out = {}
    with httpx.Client(base_url=simulator_url, headers={"api-key": SIM_KEY, "content-type": "application/json"}) as c:
        stream = expected_from_stream(c.post(PATH, content=BODIES["stream"]).content)
        chat = expected_from_chat(c.post(PATH, content=BODIES["chat"]).content)
    if len(stream.large_piece.encode()) < LARGE_CHUNK or stream.content_events < 190:
        raise RuntimeError(f"the simulator's stream has the wrong shape ({stream.content_events} content events)")
    for name, exp in (("stream", stream), ("chat", chat)):
        out[name] = {"text": exp.text, "content_events": exp.content_events, "large_piece": exp.large_piece}
    return out


# ------------------------------------------------------------------------------------- phases
def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One load-generator result from several rounds of the same cell."""
    reasons: dict[str, int] = {}
    for part in parts:
        for reason, count in part["error_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    return {
        "sent": sum(p["sent"] for p in parts),
        "ok": sum(p["ok"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "error_reasons": reasons,
        "stopped_by_time_limit": any(p["stopped_by_time_limit"] for p in parts),
        "wall_s": sum(p["wall_s"] for p in parts),
        "ttfb_ms": [v for p in parts for v in p["ttfb_ms"]],
        "total_ms": [v for p in parts for v in p["total_ms"]],
    }


def interleaved(
    workdir: Path,
    arms: dict[str, tuple[Server, str]],
    workload: str,
    conc: int,
    expected: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """Each arm's share of a cell, sent in rounds that alternate the arms (in a rotating order), so
    that the machine's background load falls on every arm alike. Only the first round warms up."""
    parts: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    cpu: dict[str, float] = {arm: 0.0 for arm in arms}
    emulation: dict[str, float | None] = {arm: 0.0 for arm in arms}
    names = list(arms)
    rounds = max(1, min(args.rounds, args.requests // max(conc, 1)))
    for r in range(rounds):
        count = args.requests // rounds + (1 if r < args.requests % rounds else 0)
        for arm in names[r % len(names) :] + names[: r % len(names)]:
            server, key = arms[arm]
            emulated = emulation_seconds(server)
            before = cpu_seconds(server)
            parts[arm].append(
                drive(
                    workdir,
                    server.url,
                    key,
                    workload,
                    conc,
                    count,
                    max(8, conc) if r == 0 else 0,
                    expected[workload],
                    args.time_limit / rounds,
                )
            )
            cpu[arm] += cpu_seconds(server) - before
            now = emulation_seconds(server)
            spent = emulation[arm]
            emulation[arm] = None if (spent is None or now is None or emulated is None) else spent + now - emulated
    merged = {arm: merge(p) for arm, p in parts.items()}
    for arm, result in merged.items():
        # Warm-up requests are served too: CPU per request counts every request the arm served.
        served = result["sent"] + max(8, conc)
        result["cpu_us_per_request"] = round(cpu[arm] * 1e6 / served) if served else None
        spent = emulation[arm]
        result["emulation_us_per_request"] = round(spent * 1e6 / served) if served and spent is not None else None
    return merged


def matrix(
    workdir: Path, arms: dict[str, tuple[Server, str]], expected: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    cells = []
    for workload in ("chat", "stream"):
        for conc in args.concurrency:
            raw = interleaved(workdir, arms, workload, conc, expected, args)
            direct = report.summarize(raw["direct"])
            for arm, (server, _) in arms.items():
                stats = report.summarize(raw[arm])
                cell = {
                    "workload": workload,
                    "concurrency": conc,
                    "arm": arm,
                    "stats": stats,
                    "rss_kb": server.rss_kb(),
                    "cpu_us_per_request": raw[arm].get("cpu_us_per_request"),
                    "emulation_us_per_request": raw[arm].get("emulation_us_per_request"),
                }
                if arm != "direct":
                    cell["added"] = report.added(stats, direct)
                cells.append(cell)
                say(
                    f"  {workload:6s} c={conc:<3d} {arm:8s} {stats['rps']:7.0f} req/s  errors {stats['errors']:3d}  "
                    f"TTFB p50 {stats['ttfb_ms']['p50']:.2f} p99 {stats['ttfb_ms']['p99']:.2f}  "
                    f"total p50 {stats['total_ms']['p50']:.2f} p99 {stats['total_ms']['p99']:.2f} ms"
                    f"  CPU {cell['cpu_us_per_request']} µs/req"
                    + (f"  {stats['error_reasons']}" if stats["errors"] else "")
                )
    return cells


def routing(
    workdir: Path, one: Server, three: Server, expected: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Streamed chat through one backend vs three (two spares at lower priority), interleaved."""
    rows = []
    configs = {"1 backend": (one, GATEWAY_KEY), "3 backends": (three, GATEWAY_KEY)}
    for conc in (1, 32):
        raw = interleaved(workdir, configs, "stream", conc, expected, args)
        rows += [{"concurrency": conc, "config": label, "stats": report.summarize(raw[label])} for label in configs]
    return rows


def memory(workdir: Path, simulator: Server, expected: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """RSS growth of a fresh gateway per concurrent slow stream, beyond the bodies it captures.

    64 streams of 200 chunks at 20 ms per chunk (about 4 s each) run at once. While they stream
    (between 25% and 75% of their nominal duration) each capture holds the share of the stream that
    has arrived, estimated from the elapsed time; the highest RSS in that window, minus idle, per
    stream, minus that share, is the growth per concurrent stream. The peak including the end of the
    streams (every capture serialized and stored at once) is reported beside it.
    """
    with httpx.Client(base_url=simulator.url, headers={"api-key": SIM_KEY, "content-type": "application/json"}) as c:
        body_bytes = len(c.post(PATH, content=BODIES["stream"]).content)  # what each stream's capture holds
    request_bytes = len(BODIES["stream"])
    gw = start_gateway(workdir, "gateway-memory", simulator.url)
    streams, per_chunk_ms, chunks = 64, 20, 200
    duration = per_chunk_ms * chunks / 1000
    try:
        drive(workdir, gw.url, GATEWAY_KEY, "stream", 1, 16, 0, expected["stream"], args.time_limit)
        time.sleep(1.0)
        idle = gw.rss_kb()
        proc = drive(
            workdir,
            gw.url,
            GATEWAY_KEY,
            "stream",
            streams,
            streams,
            0,
            expected["stream"],
            args.time_limit,
            {"x-sim-token-delay-ms": str(per_chunk_ms)},
            wait=False,
        )
        t0 = time.monotonic()
        samples: list[tuple[float, int]] = []
        while proc.poll() is None:
            samples.append((time.monotonic() - t0, gw.rss_kb()))
            time.sleep(0.02)
        result = finish(proc)
    finally:
        gw.stop()
    # The load generator needs a moment to start: streams begin about when RSS first moves.
    begin = next((t for t, rss in samples if rss > idle + 1024), 0.0)
    window = [(t, rss) for t, rss in samples if begin + 0.25 * duration <= t <= begin + 0.75 * duration]
    t_mid, mid = max(window, key=lambda s: s[1]) if window else (begin, idle)
    share = min(1.0, max(0.0, (t_mid - begin) / duration))
    peak = max((rss for _, rss in samples), default=idle)
    per_stream_kb = (mid - idle) / streams
    return {
        "streams": streams,
        "chunk_delay_ms": per_chunk_ms,
        "idle_rss_kb": idle,
        "streaming_rss_kb": mid,
        "peak_rss_kb": peak,
        "per_stream_kb": per_stream_kb,
        "captured_share": round(share, 2),
        "per_stream_with_end_burst_kb": (peak - idle) / streams,
        "errors": result["errors"],
        "stream_bytes": body_bytes,
        "request_bytes": request_bytes,
        "per_stream_beyond_bodies_kb": per_stream_kb - (share * body_bytes + request_bytes) / 1024,
    }


CS_KEY = "bench-content-safety-key"
CS_LATENCY_MS = 20


def enforcement(workdir: Path, simulator: Server, expected: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Streamed chat through two gateways that differ only in the product's mode (`monitor` vs
    `enforce`), the fake Content Safety server answering in 20 ms; plus the transformer-level bench."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.enforcement", "--concurrency", "1", "32"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    result: dict[str, Any] = {"transformer_level": out.stdout.strip() or out.stderr.strip()[-2000:], "rows": []}
    handler = (ROOT / "proxy" / "handler.py").read_text()
    result["wired_in_proxy"] = "StreamSafety" in handler or "proxy.streams.enforcement" in handler
    if not result["wired_in_proxy"]:
        return result
    port = free_port()
    fake = start(
        "content-safety",
        [
            sys.executable,
            "-m",
            "testing.fakes.content_safety",
            "--port",
            str(port),
            "--latency-ms",
            str(CS_LATENCY_MS),
            "--key",
            CS_KEY,
        ],
        port,
        workdir,
        {"PYTHONPATH": str(ROOT)},
    )
    gateways: list[Server] = []
    try:
        arms = {}
        for mode in ("monitor", "enforce"):
            gw = start_gateway(
                workdir,
                f"gateway-{mode}",
                simulator.url,
                extra={
                    "CONTENT_SAFETY_ENDPOINT": fake.url,
                    "CONTENT_SAFETY_KEY": CS_KEY,
                    "CONTENT_SAFETY_MODES": json.dumps({"bench": mode}),
                },
            )
            gateways.append(gw)
            arms[mode] = (gw, GATEWAY_KEY)
        sub = argparse.Namespace(**{**vars(args), "requests": min(args.requests, 150)})
        for conc in (1, 32):
            raw = interleaved(workdir, arms, "stream", conc, expected, sub)
            monitor, enforce_ = report.summarize(raw["monitor"]), report.summarize(raw["enforce"])
            result["rows"].append(
                {"concurrency": conc, "monitor": monitor, "enforce": enforce_, "added": report.added(enforce_, monitor)}
            )
            say(
                f"  c={conc:<3d} enforce adds TTFB p50 {result['rows'][-1]['added']['ttfb_ms']['p50']:+.1f} ms, "
                f"total p50 {result['rows'][-1]['added']['total_ms']['p50']:+.1f} ms "
                f"(errors {monitor['errors']} / {enforce_['errors']})"
            )
    finally:
        for server in (*gateways, fake):
            server.stop()
    return result


def parser_throughput() -> list[dict[str, Any]]:
    cmd = [sys.executable, "-m", "bench.parser_throughput", "--seconds", "3", "--json"]
    out = subprocess.run(
        cmd,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        preexec_fn=lambda: os.sched_setaffinity(0, {0}),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- targets
def _cell(cells: list[dict[str, Any]], workload: str, conc: int, arm: str) -> dict[str, Any] | None:
    return next((c for c in cells if (c["workload"], c["concurrency"], c["arm"]) == (workload, conc, arm)), None)


def targets(
    cells: list[dict[str, Any]], mem: dict[str, Any] | None, parser: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The proxy's latency targets, each with the measured value and whether it is met."""
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float, higher_is_better: bool, unit: str) -> None:
        met = None if value is None else (value >= goal if higher_is_better else value <= goal)
        rows.append(
            {
                "target": name,
                "value": value,
                "goal": goal,
                "unit": unit,
                "comparison": ">=" if higher_is_better else "<=",
                "met": met,
            }
        )

    for workload in ("chat", "stream"):
        gw, bare = _cell(cells, workload, 32, "gateway"), _cell(cells, workload, 32, "bare")
        ratio = None
        if gw and bare and gw.get("cpu_us_per_request") and bare.get("cpu_us_per_request"):
            ratio = gw["cpu_us_per_request"] / bare["cpu_us_per_request"]
        add(f"gateway/bare CPU per request, {workload}, c=32", ratio, 2.0, False, "×")
    gw = _cell(cells, "stream", 1, "gateway")
    add("added TTFB, stream, p50 at c=1", gw and gw["added"]["ttfb_ms"]["p50"], 1.0, False, "ms")
    gw = _cell(cells, "stream", 32, "gateway")
    add("added TTFB, stream, p99 at c=32", gw and gw["added"]["ttfb_ms"]["p99"], 15.0, False, "ms")
    for workload in ("chat", "stream"):
        gw, d = _cell(cells, workload, 32, "gateway"), _cell(cells, workload, 32, "direct")
        add(
            f"gateway/direct req/s, {workload}, c=32",
            gw and d and gw["stats"]["rps"] / d["stats"]["rps"],
            0.5,
            True,
            "×",
        )
    for conc in (32, 64):
        for workload in ("chat", "stream"):
            gw, lt = _cell(cells, workload, conc, "gateway"), _cell(cells, workload, conc, "litellm")
            if not (gw and lt):
                continue
            add(f"gateway/LiteLLM req/s, {workload}, c={conc}", gw["stats"]["rps"] / lt["stats"]["rps"], 3.0, True, "×")
            ours, theirs = gw["added"]["total_ms"]["p99"], lt["added"]["total_ms"]["p99"]
            ratio = ours / theirs if theirs and theirs > 0 else None
            add(f"gateway/LiteLLM added total p99, {workload}, c={conc}", ratio, 1 / 3, False, "×")
    if mem:
        add("RSS growth per concurrent stream beyond bodies", mem["per_stream_beyond_bodies_kb"], 100.0, False, "KB")
    goals = {"stream_1000_chunks_tool_calls": 300.0, "small_non_stream_chat": 3000.0}
    for p in parser:
        if p["case"] in goals:
            add(f"parser {p['case']} (one core)", p["exchanges_per_cpu_s"], goals[p["case"]], True, "exchanges/s")
    return rows


#: A production answer, for sizing: about 500 events over about 10 s (the bench's stream has 200).
REAL_STREAM_EVENTS, REAL_STREAM_SECONDS = 500, 10.0


def sizing(cells: list[dict[str, Any]], mem: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """Concurrent streams one Flex Consumption instance holds at under 50% CPU, from the gateway's
    CPU per stream (c=32, host emulation taken out: Azure's host is its own process) and its memory
    per stream when all end at once. One Python worker runs one event loop, so one core serves the
    app whatever the instance size; a 4096 MB instance's second vCPU is left to the Functions host's
    HTTP hop, TLS and the parser."""
    gw = _cell(cells, "stream", 32, "gateway")
    if not gw or not gw.get("cpu_us_per_request"):
        return None
    app_us = gw["cpu_us_per_request"] - (gw.get("emulation_us_per_request") or 0)
    per_stream_second = app_us / 1e6 * (REAL_STREAM_EVENTS / 200) / REAL_STREAM_SECONDS
    by_cpu = int(0.5 / per_stream_second)
    rows = []
    for memory_mb in (2048, 4096):
        row: dict[str, Any] = {"instance_mb": memory_mb, "app_cpu_us_per_stream": app_us, "streams_by_cpu": by_cpu}
        if mem:
            budget_kb = memory_mb * 1024 / 2 - mem["idle_rss_kb"]
            row["streams_by_memory"] = int(budget_kb / mem["per_stream_with_end_burst_kb"])
            row["streams"] = min(by_cpu, row["streams_by_memory"])
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------- output
def git_commit() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("+uncommitted" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(run: dict[str, Any]) -> str:
    env = run["environment"]
    lines = [
        "# Benchmark: direct to the AOAI simulator vs this gateway vs LiteLLM's proxy",
        "",
        f"- date: {env['date']}; gateway commit {env['gateway_commit']}; LiteLLM {env['litellm'] or 'not run'}",
        f"- machine: {env['cpus']} CPUs ({env['cpu_model']}), Python {env['python']}, {env['platform']}",
        f"- load average (1/5/15 min) at start {env['load_start']}, at end {env['load_end']}"
        " (other work on the machine makes the numbers noisier)",
        f"- {run['settings']['requests']} requests per cell and arm after {run['settings']['warmup']}, same for every arm, "
        f"sent in {run['settings']['rounds']} rounds that alternate the arms; "
        "streamed chat: 200 content events, multibyte text, one 8 KiB chunk; every response checked "
        "(an incomplete or wrong answer is an error)",
        "",
        "## Latency and throughput",
        "",
        report.matrix_table(run["matrix"]),
        "",
    ]
    cpu_rows = [c for c in run["matrix"] if c.get("cpu_us_per_request")]
    if cpu_rows:
        lines += [
            "## CPU per request (user + system time of the arm's process tree while it served the cell)",
            "",
            "`bare` is `bench/bare_app.py`: a passthrough on the same dev host, Functions runtime, front door and "
            "key check as the gateway, and nothing else (no routing, capture, injection, redaction or records); "
            "`direct` is the simulator's own cost. The dev host's host emulation and the runtime are in both "
            "`bare` and `gateway`, so `gateway − bare` is the gateway's own work.",
            "",
            "In Azure the Functions host is another process; here the dev host plays it on the app's own thread. "
            "Its part of each request (routing, the key check APIM makes, the invocation message) is timed with the "
            "thread's CPU clock (`devhost/runtime/emulation.py`) and shown in brackets: the app's process in Azure "
            "spends the arm's figure minus it. `gateway (metadata)` is the same gateway at capture level `metadata` "
            "(no bodies kept; the record is still computed from the whole exchange).",
            "",
            "| workload | conc. | direct (simulator) µs | bare µs (host emulation) | gateway µs (host emulation) "
            "| gateway − bare µs | gateway / bare | gateway (metadata) µs | metadata / bare |",
            "|---|---|---|---|---|---|---|---|---|",
        ]

        def cpu(cell: dict[str, Any]) -> str:
            emulated = cell.get("emulation_us_per_request")
            return f"{cell['cpu_us_per_request']}" + (f" ({emulated})" if emulated is not None else "")

        for workload in ("chat", "stream"):
            for conc in run["settings"]["concurrency"]:
                d, b, g, m = (
                    _cell(run["matrix"], workload, conc, arm)
                    for arm in ("direct", "bare", "gateway", "gateway-metadata")
                )
                if not (b and g and b.get("cpu_us_per_request") and g.get("cpu_us_per_request")):
                    continue
                meta = m.get("cpu_us_per_request") if m else None
                lines.append(
                    f"| {workload} | {conc} | {d and d.get('cpu_us_per_request')} | {cpu(b)} | {cpu(g)} | "
                    f"{g['cpu_us_per_request'] - b['cpu_us_per_request']} | "
                    f"{g['cpu_us_per_request'] / b['cpu_us_per_request']:.2f} | "
                    + (f"{cpu(m)} | {meta / b['cpu_us_per_request']:.2f} |" if m and meta else "– | – |")
                )
        lines.append("")
        runtime_rows = []
        for workload in ("chat", "stream"):
            for conc in run["settings"]["concurrency"]:
                g, i = (_cell(run["matrix"], workload, conc, arm) for arm in ("gateway", "gateway-inprocess"))
                if g and i and g.get("cpu_us_per_request") and i.get("cpu_us_per_request"):
                    runtime_rows.append((workload, conc, g, i))
        if runtime_rows:
            lines += [
                "The Functions runtime's own cost, for comparison: the same gateway called in-process by the dev "
                "host (`python -m devhost serve --direct`, `gateway-inprocess`), without azure-functions-runtime "
                "and its FastAPI app in the path. Azure runs the runtime path; the targets are for it. The runtime's "
                "cost is per request (the invocation message, its web app's routing and middleware), not per "
                "event, so for a stream it is within the noise of the two figures and can come out negative.",
                "",
                "| workload | conc. | gateway µs | gateway in-process µs | the runtime's part µs | "
                "gateway req/s | in-process req/s |",
                "|---|---|---|---|---|---|---|",
            ]
            for workload, conc, g, i in runtime_rows:
                lines.append(
                    f"| {workload} | {conc} | {g['cpu_us_per_request']} | {i['cpu_us_per_request']} | "
                    f"{g['cpu_us_per_request'] - i['cpu_us_per_request']} | {g['stats']['rps']:.0f} | "
                    f"{i['stats']['rps']:.0f} |"
                )
            lines.append("")
    gcr = run.get("gc")
    if gcr:
        per = gcr["per_10k"]
        lines += [
            "## Garbage collections in the gateway process",
            "",
            f"Over {gcr['requests']} timed requests (warm-ups aside), per 10,000 requests: "
            + "; ".join(
                f"generation {gen}: {v['count']} collections, longest {v['longest_ms']} ms" for gen, v in per.items()
            )
            + ". The heap is collected once and frozen when the app has been imported, before any request (`proxy/gc_policy.py`).",
            "",
        ]
    peaks = run.get("peak_rss_kb") or {}
    if peaks:
        lines += ["Peak RSS over the run: " + ", ".join(f"{k} {v / 1024:.0f} MiB" for k, v in peaks.items()), ""]
    if run.get("targets"):
        lines += ["## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
        for t in run["targets"]:
            value = "–" if t["value"] is None else f"{t['value']:.2f} {t['unit']}"
            met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
            if t["met"] and t["unit"] != "KB" and t["value"] is not None and t["value"] < 0:
                met = "yes, but negative: the arm's tail was shorter than direct's, i.e. within noise"
            lines.append(f"| {t['target']} | {value} | {t['comparison']} {t['goal']:.2f} {t['unit']} | {met} |")
        lines.append("")
    if run.get("sizing"):
        lines += [
            "## Sizing a Flex Consumption instance (docs/deploy.md)",
            "",
            f"Concurrent streams one instance holds at under 50% CPU and under half its memory: a production answer "
            f"of about {REAL_STREAM_EVENTS} events over {REAL_STREAM_SECONDS:.0f} s costs "
            f"{REAL_STREAM_EVENTS / 200:.1f} times the bench's 200-event stream (the gateway's CPU at c=32 without "
            "the host emulation, since Azure's host is its own process) every 10 s; memory is the peak per stream "
            "when all end at once. One Python worker runs one event loop, so the app uses one core on either "
            "size; the second vCPU of 4096 MB is left to the Functions host's HTTP hop, TLS and the parser. "
            "Not measured here: the Functions host's own CPU per request, TLS to AOAI.",
            "",
            "| instance | app CPU per bench stream µs | streams at 50% of one core | streams in half the memory | holds |",
            "|---|---|---|---|---|",
        ]
        for row in run["sizing"]:
            lines.append(
                f"| {row['instance_mb']} MB | {row['app_cpu_us_per_stream']} | {row['streams_by_cpu']} | "
                f"{row.get('streams_by_memory', '–')} | {row.get('streams', '–')} |"
            )
        lines.append("")
    if run.get("routing"):
        lines += [
            "## Routing overhead (streamed chat through the gateway)",
            "",
            "| conc. | backends | req/s | errors | TTFB p50 / p99 ms | total p50 / p99 ms |",
            "|---|---|---|---|---|---|",
        ]
        for r in run["routing"]:
            s = r["stats"]
            lines.append(
                f"| {r['concurrency']} | {r['config']} | {s['rps']:.0f} | {s['errors']} | "
                f"{s['ttfb_ms']['p50']:.2f} / {s['ttfb_ms']['p99']:.2f} | "
                f"{s['total_ms']['p50']:.2f} / {s['total_ms']['p99']:.2f} |"
            )
        lines.append("")
    mem = run.get("memory")
    if mem:
        lines += [
            "## Memory per concurrent stream",
            "",
            f"A fresh gateway, {mem['streams']} concurrent streams at {mem['chunk_delay_ms']} ms per chunk: RSS idle "
            f"{mem['idle_rss_kb'] / 1024:.1f} MiB, {mem['streaming_rss_kb'] / 1024:.1f} MiB while streaming: "
            f"{mem['per_stream_kb']:.0f} KB per stream, of which about "
            f"{(mem['captured_share'] * mem['stream_bytes'] + mem['request_bytes']) / 1024:.0f} KB is the captured "
            f"body so far ({mem['captured_share']:.0%} of a {mem['stream_bytes'] / 1024:.0f} KB stream, and the request): "
            f"**{mem['per_stream_beyond_bodies_kb']:.0f} KB beyond the bodies**. Peak when all streams end at once "
            f"(each exchange serialized and stored): {mem['peak_rss_kb'] / 1024:.1f} MiB, "
            f"{mem['per_stream_with_end_burst_kb']:.0f} KB per stream ({mem['errors']} errors).",
            "",
        ]
    if run.get("parser"):
        lines += [
            "## Parser throughput (one core, stored JSON to validated record)",
            "",
            "| case | exchanges per CPU-second | ms per exchange | exchange size |",
            "|---|---|---|---|",
        ]
        for p in run["parser"]:
            lines.append(
                f"| {p['case']} | {p['exchanges_per_cpu_s']:.0f} | {p['ms_per_exchange']:.3f} | {p['bytes']} B |"
            )
        lines.append("")
    enf = run.get("enforcement")
    if enf:
        lines += ["## Content-safety enforcement (`enforce` vs `monitor`, fake analyser answering in 20 ms)", ""]
        if not enf["wired_in_proxy"]:
            lines += ["Not yet measurable through the gateway: the proxy does not wire enforcement yet.", ""]
        if enf.get("rows"):
            lines += [
                "Streamed chat through two gateways that differ only in the product's mode; every response "
                "checked (enforcement must not cut a clean answer). TTFB is the first body byte, Azure's "
                "prompt-annotation frame, which carries no text; the text is held until its window is cleared, "
                "which the total shows.",
                "",
                "| conc. | mode | req/s | errors | TTFB p50 / p99 ms | total p50 / p99 ms |",
                "|---|---|---|---|---|---|",
            ]
            for r in enf["rows"]:
                for mode in ("monitor", "enforce"):
                    st = r[mode]
                    lines.append(
                        f"| {r['concurrency']} | {mode} | {st['rps']:.0f} | {st['errors']} | "
                        f"{st['ttfb_ms']['p50']:.1f} / {st['ttfb_ms']['p99']:.1f} | "
                        f"{st['total_ms']['p50']:.1f} / {st['total_ms']['p99']:.1f} |"
                    )
                a = r["added"]
                lines.append(
                    f"| {r['concurrency']} | **enforce − monitor** | | | {a['ttfb_ms']['p50']:+.1f} / "
                    f"{a['ttfb_ms']['p99']:+.1f} | {a['total_ms']['p50']:+.1f} / {a['total_ms']['p99']:+.1f} |"
                )
            lines.append("")
        lines += [
            "The enforcer alone (`python -m bench.enforcement`: a synthetic stream of 300 chunks every 5 ms, "
            "no HTTP hops):",
            "",
            "```",
            enf["transformer_level"],
            "```",
            "",
        ]
    hits = run.get("cache_hit")
    if hits:
        lines += [
            "## Response cache hit path (`python -m bench.cache_hit`: in process, SQLite store, capture included)",
            "",
            "| request | p50 ms | p99 ms | CPU µs per hit |",
            "|---|---:|---:|---:|",
        ]
        for name, numbers in hits.items():
            if "p50_ms" in numbers:
                lines.append(f"| {name} | {numbers['p50_ms']} | {numbers['p99_ms']} | {numbers['cpu_us_per_hit']} |")
        lines.append("")
    if run.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in run["notes"]] + [""]
    return "\n".join(lines)


def cache_hit() -> dict[str, Any]:
    """The response cache's hit path, in its own process (`python -m bench.cache_hit --json`)."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.cache_hit", "--json"], capture_output=True, text=True, timeout=600, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def gc_report(path: Path, run: dict[str, Any]) -> dict[str, Any] | None:
    """The gateway process's garbage collections over its life, per 10,000 requests it served."""
    try:
        stats = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    served = sum(c["stats"]["sent"] for c in run.get("matrix", []) if c["arm"] == "gateway")
    served += sum(r["stats"]["sent"] for r in run.get("routing", []) if r["config"] == "1 backend")
    per = 10_000 / served if served else 0.0
    return {
        "requests": served,
        "per_10k": {
            gen: {"count": round(v["count"] * per, 1), "longest_ms": v["longest_ms"]} for gen, v in stats.items()
        },
        "raw": stats,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("chaos", "throttle"):  # `python -m bench chaos|throttle [...]`: their own runs
        from importlib import import_module

        return int(import_module(f"bench.{argv[0]}").main(argv[1:]))
    ap = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.splitlines()[0],
        epilog="Also: python -m bench chaos (chaos soak), python -m bench throttle (throttle amplification).",
    )
    ap.add_argument("--requests", type=int, default=300, help="timed requests per cell (default 300)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=list(CONCURRENCY))
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per cell and arm at most (default 60)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per cell, alternating the arms (default 3)")
    ap.add_argument("--no-peer", action="store_true", help="skip LiteLLM")
    ap.add_argument("--skip", nargs="*", default=[], choices=["routing", "memory", "enforcement", "parser", "cache"])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="directory for latest.md / latest.json")
    ap.add_argument("--render", action="store_true", help="only rewrite latest.md from latest.json")
    args = ap.parse_args(argv)
    if args.render:
        out = Path(args.out)
        (out / "latest.md").write_text(markdown(json.loads((out / "latest.json").read_text())))
        return 0
    started = time.monotonic()
    env = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gateway_commit": git_commit(),
        "litellm": None,
        "load_start": loadavg(),
    }
    say(f"bench: {env['cpus']} CPUs, Python {env['python']}, load {env['load_start']}")
    peer_python = None if args.no_peer else peer.ensure_venv(say)
    if peer_python:
        env["litellm"] = peer.version(peer_python)
    notes = [
        "From concurrency 8 up, the three processes of an arm (load generator, proxy, simulator) compete for two "
        "cores, so latency there is mostly queueing for CPU: compare throughput and the peer, and read an added "
        "percentile as what a saturated proxy costs, not as the proxy's own work per request.",
        "The gateway process runs the proxy function only (`bench/gateway_app.py`), as in Azure where the parser "
        "runs on its own instances; exchanges are still captured, stored in SQLite and announced.",
        "All arms call the same Azure path and body with an `api-key` header. LiteLLM re-encodes the stream: it drops "
        "Azure's prompt-annotation frame and rewrites each chunk; the checks compare what a client reads (content "
        "events, text, the 8 KiB chunk, finish reason, [DONE]), so this is not counted as an error.",
    ]
    run: dict[str, Any] = {
        "environment": env,
        "settings": {
            "requests": args.requests,
            "concurrency": args.concurrency,
            "warmup": "max(8, concurrency) untimed requests",
            "rounds": args.rounds,
            "time_limit_s": args.time_limit,
        },
        "notes": notes,
    }
    with tempfile.TemporaryDirectory(prefix="aoai-bench-") as tmp:
        workdir = Path(tmp)
        servers: list[Server] = []
        try:
            sim = start_simulator(workdir)
            servers.append(sim)
            expected = reference(sim.url)
            gc_stats = workdir / "gateway-gc.json"
            gateway = start_gateway(workdir, "gateway", sim.url, extra={"BENCH_GC_STATS": str(gc_stats)})
            servers.append(gateway)
            bare = start_bare(workdir, sim.url)
            servers.append(bare)
            # The same gateway keeping no bodies (capture level `metadata`, docs/privacy.md): the
            # record is still computed from the whole exchange, before the bodies are dropped.
            metadata = start_gateway(workdir, "gateway-metadata", sim.url, extra={"CAPTURE_LEVELS": METADATA})
            servers.append(metadata)
            # For comparison only: the same gateway called in-process by the dev host (`--direct`), not
            # through the Functions runtime Azure runs; the difference is the runtime's own cost.
            inprocess = start_devhost(
                "gateway-inprocess", gateway_settings(workdir, "gateway-inprocess", sim.url, 1), workdir, direct=True
            )
            servers.append(inprocess)
            arms: dict[str, tuple[Server, str]] = {
                "direct": (sim, SIM_KEY),
                "bare": (bare, GATEWAY_KEY),
                "gateway": (gateway, GATEWAY_KEY),
                "gateway-metadata": (metadata, GATEWAY_KEY),
                "gateway-inprocess": (inprocess, GATEWAY_KEY),
            }
            if peer_python:
                litellm = peer.start_peer(peer_python, free_port(), workdir, sim.url, DEPLOYMENT, SIM_KEY)
                servers.append(litellm)
                arms["litellm"] = (litellm, peer.MASTER_KEY)
            say("latency and throughput (workload, concurrency, arm):")
            run["matrix"] = matrix(workdir, arms, expected, args)
            run["peak_rss_kb"] = {name: server.peak_rss_kb() for name, (server, _) in arms.items()}
            bare.stop()
            metadata.stop()
            inprocess.stop()
            if "routing" not in args.skip:
                say("routing overhead: one backend vs three")
                three = start_gateway(workdir, "gateway-3-backends", sim.url, backends=3)
                servers.append(three)
                run["routing"] = routing(workdir, gateway, three, expected, args)
                three.stop()
            if "memory" not in args.skip:
                say("memory per concurrent stream")
                run["memory"] = memory(workdir, sim, expected, args)
            if "enforcement" not in args.skip:
                say("content-safety enforcement: enforce vs monitor")
                run["enforcement"] = enforcement(workdir, sim, expected, args)
        finally:
            for server in reversed(servers):
                server.stop()
        # How much of the bench's own traffic the parser would have to estimate, and why.
        run["estimated_records"] = exchange_census(workdir / "gateway.db")
        say(f"estimated records of the gateway arm: {run['estimated_records']}")
        run["gc"] = gc_report(gc_stats, run)
    run["parser"] = [] if "parser" in args.skip else parser_throughput()
    if "cache" not in args.skip:
        say("response cache: the hit path")
        run["cache_hit"] = cache_hit()
    run["targets"] = targets(run["matrix"], run.get("memory"), run["parser"])
    run["sizing"] = sizing(run["matrix"], run.get("memory"))
    env["load_end"] = loadavg()
    env["duration_s"] = round(time.monotonic() - started)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(run, indent=1, ensure_ascii=False))
    (out / "latest.md").write_text(markdown(run))
    say(markdown(run))
    say(f"wrote {out / 'latest.md'} and latest.json in {env['duration_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
