"""CPU per request of the gateway served through azure-functions-runtime vs called in-process.

    python -m bench.runtime_cost [--requests 3000] [--concurrency 8] [--rounds 3]

Two dev hosts on loopback in front of one simulator: `python -m devhost` (the runtime indexes,
loads and invokes the functions; its HTTP v2 web app serves the request) and `python -m devhost
--direct` (the functions called in-process, the comparison arm). Non-stream chat; the CPU time of
each gateway process (user + system, from /proc) divided by the requests it served, arms
alternated per round. CPU per request is the stable figure on a shared machine; req/s is not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.runtime_soak import _load
from bench.servers import Server, free_port, start
from devhost.simulator import SimulatorConfig
from devhost.simulator import run_in_thread as run_simulator

ROOT = Path(__file__).resolve().parent.parent
KEY = "soak-key"


def cpu_seconds(server: Server) -> float:
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _gateway(name: str, direct: bool, sim_url: str, workdir: Path) -> Server:
    port = free_port()
    settings = workdir / f"{name}.settings.json"
    settings.write_text(
        json.dumps(
            {
                "Values": {
                    "GATEWAY_BACKENDS": json.dumps(
                        [
                            {
                                "name": "sim",
                                "endpoint": sim_url,
                                "auth": {"type": "api_key", "setting": "SIM_KEY"},
                                "deployments": ["*"],
                            }
                        ]
                    ),
                    "SIM_KEY": "sim-key",
                    "LOG_STORE": "sqlite",
                    "SQLITE_PATH": str(workdir / f"{name}.db"),
                    "EVENT_CHANNEL": "local",
                    "EVENT_HUB_NAME": "exchanges",
                    "EVENT_HUB_CONSUMER_GROUP": "$Default",
                    "CAPTURE_OUTBOX_DIR": str(workdir / "outbox"),
                    "LOCAL_SUBSCRIPTIONS": json.dumps({KEY: {"id": "bench", "name": "Bench", "product": "standard"}}),
                }
            }
        )
    )
    argv = [sys.executable, "-m", "devhost", "serve", "--port", str(port), "--settings", str(settings)] + (
        ["--direct"] if direct else []
    )
    return start(name, argv, port, workdir, {"PYTHONPATH": str(ROOT)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sim = run_simulator(SimulatorConfig(api_key="sim-key", completion_tokens=8))
    results: dict[str, list[float]] = {"runtime": [], "direct": []}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {
            "runtime": _gateway("runtime", False, sim.url, Path(tmp)),
            "direct": _gateway("direct", True, sim.url, Path(tmp)),
        }
        try:
            for server in servers.values():
                asyncio.run(_load(server.url, 500, args.concurrency))  # warm-up
            for _ in range(args.rounds):
                for name, server in servers.items():
                    before = cpu_seconds(server)
                    failures = asyncio.run(_load(server.url, args.requests, args.concurrency))
                    assert failures == 0, f"{name}: {failures} failed requests"
                    results[name].append((cpu_seconds(server) - before) / args.requests * 1e6)
        finally:
            for server in servers.values():
                server.stop()
            sim.stop()
    runtime, direct = (statistics.median(results[k]) for k in ("runtime", "direct"))
    print(
        f"CPU µs per request (median of {args.rounds}, load average {os.getloadavg()[0]:.1f}): "
        f"through the runtime {runtime:.0f}, direct {direct:.0f}, the runtime adds {runtime - direct:+.0f} ({runtime / direct:.2f}x)"
    )


if __name__ == "__main__":
    main()
