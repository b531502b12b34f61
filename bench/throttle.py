"""Throttle amplification: how many client requests get a 429 when some backend answers are 429s.

    python -m bench throttle [--rate 50] [--seconds 20]

A 429 from AOAI keeps that backend out for its deployment as long as the answer asks
(`retry-after-ms`, else `retry-after`): meanwhile every request for the deployment gets the
gateway's own 429 (when no other backend serves it), however it would have fared. With requests
arriving at `rate` per second, a fraction `p` of upstream answers 429 and each asking for `R`
seconds, the backend is out a fraction `x = rate·p·R / (1 + rate·p·R)` of the time (a cooldown
of R after each 429; between cooldowns, 429s come every 1/(rate·p) seconds), so that fraction of
client requests gets a 429: the amplification is x / p.

Open loop (a request every 1/rate seconds, whatever the answers), one simulator as the only
backend with random 429s (`--throttle-rate`), the gateway as deployed (`bench/gateway_app.py`).
Random 429s are the worst case: a real AOAI 429 means the deployment's quota is spent, so the
calls the cooldown saves would have been refused anyway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.servers import ROOT, free_port, start, start_devhost

SIM_KEY = "simulator-key"
GATEWAY_KEY = "bench-subscription-key"
PATH = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
BODY = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode()
#: (fraction of upstream answers that are 429, milliseconds each asks for)
SCENARIOS = ((0.02, 1000), (0.06, 1000), (0.06, 200), (0.06, 50))


def predicted(rate: float, p: float, seconds: float) -> float:
    """Fraction of client requests that meet a cooldown (see the module docstring)."""
    load = rate * p * seconds
    return load / (1 + load)


async def _open_loop(url: str, rate: float, seconds: float) -> Counter[str]:
    counts: Counter[str] = Counter()

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(
                url + PATH, data=BODY, headers={"api-key": GATEWAY_KEY, "content-type": "application/json"}
            ) as r:
                await r.read()
                if r.status == 429:
                    own = r.headers.get("x-gateway-attempts") == "0"
                    counts["429 from the gateway (cooldown)" if own else "429 from the backend"] += 1
                else:
                    counts[str(r.status)] += 1
        except aiohttp.ClientError as exc:
            counts[type(exc).__name__] += 1

    async with aiohttp.ClientSession() as session:
        tasks = []
        start_at = time.monotonic()
        n = 0
        while (now := time.monotonic()) - start_at < seconds:
            due = start_at + n / rate
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(one(session)))
            n += 1
        await asyncio.gather(*tasks)
    return counts


def scenario(workdir: Path, p: float, retry_ms: int, rate: float, seconds: float) -> dict[str, Any]:
    sim_port = free_port()
    sim = start(
        f"sim-{p}-{retry_ms}",
        [
            sys.executable,
            "-m",
            "devhost.simulator",
            "--port",
            str(sim_port),
            "--no-log",
            "--throttle-rate",
            str(p),
            "--retry-after-ms",
            str(retry_ms),
            "--completion-tokens",
            "4",
            "--seed",
            "13",
        ],
        sim_port,
        workdir,
        {"PYTHONPATH": str(ROOT)},
    )
    name = f"gw-{p}-{retry_ms}"
    values = {
        "GATEWAY_BACKENDS": json.dumps(
            [{"name": "sim", "endpoint": sim.url, "auth": {"type": "api_key", "value": SIM_KEY}, "deployments": ["*"]}]
        ),
        "LOCAL_SUBSCRIPTIONS": json.dumps({GATEWAY_KEY: {"id": "bench", "name": "Bench", "product": "bench"}}),
        "SQLITE_PATH": str(workdir / f"{name}.db"),
        "CAPTURE_OUTBOX_DIR": str(workdir / f"{name}-outbox"),
    }
    settings = workdir / f"{name}.settings.json"
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    gateway = start_devhost(name, settings, workdir)
    try:
        counts = asyncio.run(_open_loop(gateway.url, rate, seconds))
    finally:
        gateway.stop()
        sim.stop()
    total = sum(counts.values())
    upstream = total - counts["429 from the gateway (cooldown)"]
    upstream_429 = counts["429 from the backend"]
    client_429 = counts["429 from the gateway (cooldown)"] + upstream_429
    return {
        "throttle_rate": p,
        "retry_after_ms": retry_ms,
        "rate_per_s": rate,
        "requests": total,
        "upstream_calls": upstream,
        "upstream_429_share": round(upstream_429 / max(1, upstream), 3),
        "client_429_share": round(client_429 / max(1, total), 3),
        "predicted_client_429_share": round(predicted(rate, p, retry_ms / 1000), 3),
        "amplification": round(client_429 / max(1, total) / p, 1),
        "answers": dict(counts),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| upstream 429 share (set / seen) | retry-after | requests/s | client 429 share | predicted | amplification |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['throttle_rate']:.0%} / {r['upstream_429_share']:.1%} | {r['retry_after_ms']} ms | "
            f"{r['rate_per_s']:g} | {r['client_429_share']:.1%} | {r['predicted_client_429_share']:.1%} | "
            f"{r['amplification']}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench throttle", description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second, open loop (default 50)")
    ap.add_argument("--seconds", type=float, default=20.0, help="per scenario (default 20)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aoai-throttle-") as tmp:
        rows = [scenario(Path(tmp), p, ms, args.rate, args.seconds) for p, ms in SCENARIOS]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "throttle.json").write_text(json.dumps(rows, indent=1))
    text = "# Throttle amplification\n\n" + markdown(rows)
    (out / "throttle.md").write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
