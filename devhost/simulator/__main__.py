"""`python -m devhost.simulator`: serve the AOAI simulator on loopback until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from .config import SimulatorConfig
from .server import serve


def parse_args(argv: list[str] | None = None) -> tuple[SimulatorConfig, str, int, bool]:
    p = argparse.ArgumentParser(prog="python -m devhost.simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token")
    p.add_argument("--token-delay-ms", type=float, default=0.0, help="delay per streamed chunk")
    p.add_argument("--region", default="swedencentral", help="x-ms-region header")
    p.add_argument("--api-key", default=None, help="required key (default: any non-empty key)")
    p.add_argument("--throttle-rate", type=float, default=0.0, help="fraction of requests answered 429")
    p.add_argument("--retry-after-ms", type=int, default=1000)
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction of connections cut mid-response")
    p.add_argument("--fail-status", type=int, action="append", default=[], help="status to fail with (repeatable)")
    p.add_argument("--fail-rate", type=float, default=1.0, help="fraction of requests failed with --fail-status")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deployment", action="append", default=None, help="served deployment (repeatable; default any)")
    p.add_argument("--model", action="append", default=[], metavar="DEPLOYMENT=MODEL", help="model version map")
    p.add_argument("--completion-tokens", type=int, default=60)
    p.add_argument("--stream-chunks", type=int, default=12)
    p.add_argument("--no-log", action="store_true", help="do not keep requests in memory")
    p.add_argument("--no-uvloop", action="store_true")
    a = p.parse_args(argv)
    config = SimulatorConfig(
        ttft_ms=a.ttft_ms, token_delay_ms=a.token_delay_ms, region=a.region, api_key=a.api_key,
        throttle_rate=a.throttle_rate, retry_after_ms=a.retry_after_ms, drop_rate=a.drop_rate,
        fail_statuses=tuple(a.fail_status), fail_rate=a.fail_rate, seed=a.seed, deployments=a.deployment,
        models=dict(m.split("=", 1) for m in a.model), completion_tokens=a.completion_tokens,
        stream_chunks=a.stream_chunks, log_requests=not a.no_log,
    )
    return config, a.host, a.port, not a.no_uvloop


async def _main(config: SimulatorConfig, host: str, port: int) -> None:
    async with serve(config, host, port) as sim:
        print(f"AOAI simulator listening on {sim.url} (any api-key{'' if config.api_key is None else ' but the configured one is refused'})"
              if config.api_key is None else f"AOAI simulator listening on {sim.url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    config, host, port, use_uvloop = parse_args(argv)
    if config.deployments is None:
        pass
    run = asyncio.run
    if use_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            run = uvloop.run
    # Log requests only when asked to keep them: a long-running demo server would grow forever.
    with contextlib.suppress(KeyboardInterrupt):
        run(_main(config, host, port))


if __name__ == "__main__":
    main()
