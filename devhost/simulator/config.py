"""The simulator's settings: latency, faults, auth and the deployments it pretends to serve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .catalog import DEFAULT_DEPLOYMENTS, Deployment


@dataclass(slots=True)
class SimulatorConfig:
    """Everything that shapes the simulator's answers. Per-request `x-sim-*` headers override some."""

    #: Delay before the first token (streams: before the response headers; non-stream: added once).
    ttft_ms: float = 0.0
    #: Delay per streamed content chunk (non-stream requests wait the same total before answering).
    token_delay_ms: float = 0.0
    #: Sent as `x-ms-region`.
    region: str = "swedencentral"
    #: None: any non-empty `api-key` or `Authorization: Bearer` passes; else it must equal this.
    api_key: str | None = None
    #: Fraction of requests answered 429 (with retry-after / retry-after-ms).
    throttle_rate: float = 0.0
    #: Seconds advertised in retry-after on 429 (retry-after-ms carries the same in ms).
    retry_after_ms: int = 1000
    #: Fraction of requests whose connection is cut mid-response (streams: halfway through).
    drop_rate: float = 0.0
    #: Statuses to fail with (e.g. (500, 503)); `fail_rate` of requests get one of them, in turn.
    fail_statuses: Sequence[int] = ()
    #: Fraction of requests answered with one of `fail_statuses` (only when that is non-empty).
    fail_rate: float = 1.0
    #: Seeds ids and the fault dice, so a run with the same requests in the same order repeats exactly.
    seed: int = 0
    #: The deployments served, by name (`Deployment`: model, version, stream usage, enforced limits), or bare
    #: names (models guessed from them); any other name gets 404 DeploymentNotFound. None serves any name.
    deployments: Mapping[str, Deployment] | Sequence[str] | None = field(
        default_factory=lambda: dict(DEFAULT_DEPLOYMENTS)
    )
    #: Deployment -> model version reported in `model` (default: guessed from the deployment name).
    models: Mapping[str, str] = field(default_factory=dict)
    #: Approximate length of a generated answer, in tokens (capped by max_tokens in the request).
    completion_tokens: int = 60
    #: Number of content chunks a stream is cut into (x-sim-chunks overrides).
    stream_chunks: int = 12
    #: Grow the middle content chunk of a streamed chat answer to at least this many bytes (0: off; x-sim-large-chunk overrides).
    large_chunk_bytes: int = 0
    #: Stream chat like a deployment with the asynchronous content filter (x-sim-async-filter overrides).
    async_filter: bool = False
    #: Keep every request and response in `handle.requests` (benchmarks turn this off).
    log_requests: bool = True
    #: Advertised per-deployment limits for the x-ratelimit-* headers (a 60 s window is simulated).
    ratelimit_requests: int = 1000
    ratelimit_tokens: int = 1_000_000
