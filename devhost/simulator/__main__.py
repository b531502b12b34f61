"""`python -m devhost.simulator`: serve the AOAI simulator on loopback until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from .catalog import DEFAULT_DEPLOYMENTS
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
    p.add_argument(
        "--deployment",
        action="append",
        default=None,
        help="served deployment (repeatable; default: the usual models, see devhost/simulator/catalog.py)",
    )
    p.add_argument(
        "--any-deployment", action="store_true", help="serve any deployment name (no 404 DeploymentNotFound)"
    )
    p.add_argument("--model", action="append", default=[], metavar="DEPLOYMENT=MODEL", help="model version map")
    p.add_argument("--completion-tokens", type=int, default=60)
    p.add_argument("--stream-chunks", type=int, default=12)
    p.add_argument("--large-chunk-bytes", type=int, default=0, help="grow the middle chat chunk to this many bytes")
    p.add_argument("--async-filter", action="store_true", help="stream with the asynchronous content filter")
    # A standalone server has nobody to read its request log, so it keeps none unless asked.
    p.add_argument("--log", dest="log", action="store_true", default=False, help="keep requests in memory")
    p.add_argument("--no-log", dest="log", action="store_false", help="keep no request log (the default here)")
    p.add_argument("--no-uvloop", action="store_true")
    a = p.parse_args(argv)
    config = SimulatorConfig(
        ttft_ms=a.ttft_ms,
        token_delay_ms=a.token_delay_ms,
        region=a.region,
        api_key=a.api_key,
        throttle_rate=a.throttle_rate,
        retry_after_ms=a.retry_after_ms,
        drop_rate=a.drop_rate,
        fail_statuses=tuple(a.fail_status),
        fail_rate=a.fail_rate,
        seed=a.seed,
        deployments=None if a.any_deployment else (a.deployment or dict(DEFAULT_DEPLOYMENTS)),
        models=dict(m.split("=", 1) for m in a.model),
        completion_tokens=a.completion_tokens,
        stream_chunks=a.stream_chunks,
        log_requests=a.log,
        async_filter=a.async_filter,
        large_chunk_bytes=a.large_chunk_bytes,
    )
    return config, a.host, a.port, not a.no_uvloop


async def _main(config: SimulatorConfig, host: str, port: int) -> None:
    async with serve(config, host, port) as sim:
        key = "any non-empty api-key" if config.api_key is None else "the configured --api-key"
        print(f"AOAI simulator listening on {sim.url} (accepts {key})", flush=True)
        print(f"  try: AzureOpenAI(azure_endpoint={sim.url!r}, api_key='x', api_version='2024-10-21')", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    config, host, port, use_uvloop = parse_args(argv)
    run: Callable[..., Any] = asyncio.run
    if use_uvloop:
        with contextlib.suppress(ImportError):
            import uvloop

            run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        run(_main(config, host, port))


if __name__ == "__main__":
    main()
