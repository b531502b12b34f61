"""Added latency of routing: a gateway with one backend vs the same gateway with a three-backend pool.

    .venv/bin/python -m bench.routing_overhead [--requests 300] [--warmup 30]

Starts one AOAI simulator and two dev hosts as separate processes on loopback. Dev host "single"
has one backend; dev host "pool" has three (priorities 1, 1, 2 with weights 1 and 3 and a
`deployment_map`, all pointing at the same simulator so the upstream is identical): every request
through it goes through plan, weighted order, lease, failover bookkeeping and the per-backend
deployment mapping. Streamed chat completions are sent one at a time, alternating between the
two, and the p50/p90/p99 time to first byte and to last byte are reported with the difference.
Not a test: speed targets live here, never in timed tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from bench.quick_proxy import KEY, measure, print_table
from bench.servers import ROOT, Server, free_port, start


def _settings(tmp: Path, name: str, backends: list[dict]) -> Path:
    path = tmp / f"{name}.settings.json"
    path.write_text(
        json.dumps(
            {
                "Values": {
                    "GATEWAY_BACKENDS": json.dumps(backends),
                    "LOCAL_SUBSCRIPTIONS": json.dumps({KEY: {"id": "bench", "name": "Bench", "product": "bench"}}),
                    "SQLITE_PATH": str(tmp / f"{name}.db"),
                    "CAPTURE_OUTBOX_DIR": str(tmp / f"{name}-outbox"),
                }
            }
        )
    )
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args()
    py = sys.executable
    sim_port = free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    auth = {"type": "api_key", "value": "sim"}
    single = [{"name": "only", "endpoint": sim, "auth": auth, "deployments": ["gpt-4o"]}]
    pool = [
        {"name": "ptu-a", "endpoint": sim, "auth": auth, "deployments": ["gpt-4o"], "priority": 1, "weight": 1},
        {
            "name": "ptu-b",
            "endpoint": sim,
            "auth": auth,
            "deployment_map": {"gpt-4o": "gpt-4o-b"},
            "priority": 1,
            "weight": 3,
        },
        {"name": "paygo", "endpoint": sim, "auth": auth, "deployments": ["gpt-4o"], "priority": 2},
    ]
    servers: list[Server] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {"PYTHONPATH": str(ROOT)}
        try:
            servers.append(
                start(
                    "simulator",
                    [py, "-m", "devhost.simulator", "--port", str(sim_port), "--no-log"],
                    sim_port,
                    tmp,
                    env,
                )
            )
            for name, backends in (("single", single), ("pool", pool)):
                port = free_port()
                servers.append(
                    start(
                        name,
                        [py, "-m", "devhost", "--port", str(port), "--settings", str(_settings(tmp, name, backends))],
                        port,
                        tmp,
                        env,
                    )
                )
            single_s, pool_s = asyncio.run(measure([s.url for s in servers[1:]], args.requests, args.warmup))
        finally:
            for server in servers:
                server.stop()
    print_table(
        args.requests, args.warmup, ("single backend", single_s), ("three-backend pool", pool_s), "pool - single"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
