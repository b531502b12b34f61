"""App settings the gateway reads, in one place.

Every name here appears in local.settings.sample.json and in the Function App settings that
bicep writes (a test keeps the three in step). Values come from the environment, as the Functions
host and `python -m devhost` provide them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ConfigurationError


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True, slots=True)
class Settings:
    #: JSON list of backends (see proxy/routing/backends.py).
    backends_json: str = "[]"
    #: "sqlite" (embedded, default) or "cosmos".
    log_store: str = "sqlite"
    sqlite_path: Path = Path(".gateway/gateway.db")
    cosmos_endpoint: str | None = None
    cosmos_database: str = "gateway"
    cosmos_exchanges_container: str = "exchanges"
    cosmos_records_container: str = "records"
    cosmos_deadletters_container: str = "deadletters"
    cosmos_affinity_container: str = "affinity"
    cosmos_owners_container: str = "owners"
    exchange_ttl_seconds: int = 7 * 24 * 3600
    #: "local" (in-process queue, default) or "eventhub".
    event_channel: str = "local"
    #: Identity-based Event Hubs connection: the fully qualified namespace.
    eventhub_namespace: str | None = None
    eventhub_name: str = "exchanges"
    eventhub_consumer_group: str = "$Default"
    appinsights_connection_string: str | None = None
    #: True when the Functions Python worker configures Azure Monitor itself (then the app must not).
    appinsights_worker_telemetry: bool = False
    #: The logger the Azure Monitor log handler sits on ("" = root); usage events are logged under it.
    appinsights_logger_name: str = ""
    #: OTLP collector (HTTP/protobuf) that also receives the gateway's spans and metrics.
    otel_exporter_otlp_endpoint: str | None = None
    #: Print spans and metrics on the console (`python -m devhost --otel console`).
    otel_console: bool = False
    #: Message content on spans as the GenAI conventions' opt-in event (off: prompts are sensitive).
    genai_capture_content: bool = False
    #: Add stream_options.include_usage upstream when the client did not ask (and hide the chunk).
    inject_stream_usage: bool = True
    max_request_body_bytes: int = 26_214_400
    #: Seconds a client has to send its whole request body (408 past it; slow-loris bodies).
    request_body_timeout_seconds: float = 120.0
    #: Bytes of request headers forwarded upstream (431 past it); the dev host bounds a request's head with it too.
    max_request_header_bytes: int = 32_768
    #: Dev host only (the Functions front end bounds these in Azure): seconds to send a request's
    #: head, and open connections served at once (503 past it).
    devhost_header_timeout_seconds: float = 10.0
    devhost_max_connections: int = 1000
    #: Upstream (AOAI) timeouts in seconds: TCP/TLS connect; response headers (for a non-streamed
    #: call that is the whole generation); silence between two reads of a body; the whole call.
    upstream_connect_timeout: float = 10.0
    upstream_first_byte_timeout: float = 230.0
    upstream_idle_timeout: float = 120.0
    upstream_total_timeout: float = 1800.0
    #: Pooled keep-alive connections per backend host.
    upstream_max_connections: int = 256
    #: Where exchanges go when the log store stays down ("" = the system temp dir).
    capture_outbox_dir: str = ""
    #: Dev host only: JSON object, api-key value -> {"id", "name", "product"}.
    local_subscriptions_json: str = ""
    #: Routing (proxy/routing/policy.py): upstream attempts per request, counting the first.
    max_attempts: int = 3
    #: No new attempt starts once this many seconds have passed since the first one.
    retry_deadline_seconds: float = 30.0
    #: Health failures (5xx, connection errors, timeouts) within the window that open a circuit.
    circuit_failures: int = 5
    circuit_window_seconds: float = 30.0
    #: How long an open circuit keeps a backend out before one trial request may probe it.
    circuit_cooldown_seconds: float = 30.0
    #: How long a Responses API response id stays pinned to the backend that created it.
    responses_affinity_ttl_seconds: int = 30 * 24 * 3600
    #: Parser: events of one batch handled at the same time (each may wait on Content Safety).
    parser_max_concurrency: int = 8
    #: JSON object deployment -> {"model", "type"} for pricing (see shared/pricing/deployments.py).
    deployment_models_json: str = "{}"
    # Content safety (shared/safety/config.py parses and checks these). Off unless the endpoint is set.
    content_safety_endpoint: str | None = None
    #: Name of the setting that holds the Content Safety key (a Key Vault reference); else CONTENT_SAFETY_KEY.
    content_safety_key_setting: str | None = None
    content_safety_key: str | None = field(default=None, repr=False)
    content_safety_analyze_prompt: bool = False
    content_safety_prompt_shields: bool = False
    #: JSON: product -> {category: severity}; "default" for all products.
    content_safety_thresholds_json: str = "{}"
    #: Comma-separated blocklist names.
    content_safety_blocklists: str = ""
    content_safety_halt_on_blocklist_hit: bool = False
    content_safety_output_type: str = "FourSeverityLevels"
    content_safety_window_chars: int = 10_000
    content_safety_window_overlap: int = 200
    content_safety_stream_window_chars: int = 1000
    content_safety_stream_window_overlap: int = 100
    #: JSON: product -> "monitor" | "enforce"; "default" for all products.
    content_safety_modes_json: str = "{}"
    #: JSON: product -> "open" | "closed" (what an analyser failure does to an enforced stream).
    content_safety_fail_modes_json: str = "{}"
    content_safety_max_retries: int = 3
    content_safety_retry_backoff_seconds: float = 0.5
    content_safety_max_retry_after_seconds: float = 10.0
    content_safety_timeout_seconds: float = 10.0
    content_safety_max_concurrency: int = 4
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            backends_json=env.get("GATEWAY_BACKENDS") or "[]",
            log_store=(env.get("LOG_STORE") or "sqlite").lower(),
            sqlite_path=Path(env.get("SQLITE_PATH") or ".gateway/gateway.db"),
            cosmos_endpoint=env.get("COSMOS_ENDPOINT") or None,
            cosmos_database=env.get("COSMOS_DATABASE") or "gateway",
            cosmos_exchanges_container=env.get("COSMOS_EXCHANGES_CONTAINER") or "exchanges",
            cosmos_records_container=env.get("COSMOS_RECORDS_CONTAINER") or "records",
            cosmos_deadletters_container=env.get("COSMOS_DEADLETTERS_CONTAINER") or "deadletters",
            cosmos_affinity_container=env.get("COSMOS_AFFINITY_CONTAINER") or "affinity",
            cosmos_owners_container=env.get("COSMOS_OWNERS_CONTAINER") or "owners",
            exchange_ttl_seconds=_int(env, "EXCHANGE_TTL_SECONDS", 7 * 24 * 3600),
            event_channel=(env.get("EVENT_CHANNEL") or "local").lower(),
            eventhub_namespace=env.get("EventHubConnection__fullyQualifiedNamespace") or None,
            eventhub_name=env.get("EVENT_HUB_NAME") or "exchanges",
            eventhub_consumer_group=env.get("EVENT_HUB_CONSUMER_GROUP") or "$Default",
            appinsights_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or None,
            appinsights_worker_telemetry=_bool(env.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"), False),
            appinsights_logger_name=env.get("PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME") or "",
            otel_exporter_otlp_endpoint=env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            otel_console=_bool(env.get("GATEWAY_OTEL_CONSOLE"), False),
            genai_capture_content=_bool(env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"), False),
            inject_stream_usage=_bool(env.get("INJECT_STREAM_USAGE"), True),
            max_request_body_bytes=_int(env, "MAX_REQUEST_BODY_BYTES", 26_214_400),
            request_body_timeout_seconds=_float(env, "REQUEST_BODY_TIMEOUT_SECONDS", 120.0),
            max_request_header_bytes=_int(env, "MAX_REQUEST_HEADER_BYTES", 32_768),
            devhost_header_timeout_seconds=_float(env, "DEVHOST_HEADER_TIMEOUT_SECONDS", 10.0),
            devhost_max_connections=_int(env, "DEVHOST_MAX_CONNECTIONS", 1000),
            upstream_connect_timeout=_float(env, "UPSTREAM_CONNECT_TIMEOUT_SECONDS", 10.0),
            upstream_first_byte_timeout=_float(env, "UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS", 230.0),
            upstream_idle_timeout=_float(env, "UPSTREAM_IDLE_TIMEOUT_SECONDS", 120.0),
            upstream_total_timeout=_float(env, "UPSTREAM_TOTAL_TIMEOUT_SECONDS", 1800.0),
            upstream_max_connections=_int(env, "UPSTREAM_MAX_CONNECTIONS", 256),
            capture_outbox_dir=env.get("CAPTURE_OUTBOX_DIR") or "",
            local_subscriptions_json=env.get("LOCAL_SUBSCRIPTIONS") or "",
            max_attempts=_int(env, "GATEWAY_MAX_ATTEMPTS", 3),
            retry_deadline_seconds=_float(env, "GATEWAY_RETRY_DEADLINE_SECONDS", 30.0),
            circuit_failures=_int(env, "GATEWAY_CIRCUIT_FAILURES", 5),
            circuit_window_seconds=_float(env, "GATEWAY_CIRCUIT_WINDOW_SECONDS", 30.0),
            circuit_cooldown_seconds=_float(env, "GATEWAY_CIRCUIT_COOLDOWN_SECONDS", 30.0),
            responses_affinity_ttl_seconds=_int(env, "RESPONSES_AFFINITY_TTL_SECONDS", 30 * 24 * 3600),
            parser_max_concurrency=_int(env, "PARSER_MAX_CONCURRENCY", 8),
            deployment_models_json=env.get("DEPLOYMENT_MODELS") or "{}",
            content_safety_endpoint=env.get("CONTENT_SAFETY_ENDPOINT") or None,
            content_safety_key_setting=env.get("CONTENT_SAFETY_KEY_SETTING") or None,
            content_safety_key=env.get("CONTENT_SAFETY_KEY") or None,
            content_safety_analyze_prompt=_bool(env.get("CONTENT_SAFETY_ANALYZE_PROMPT"), False),
            content_safety_prompt_shields=_bool(env.get("CONTENT_SAFETY_PROMPT_SHIELDS"), False),
            content_safety_thresholds_json=env.get("CONTENT_SAFETY_THRESHOLDS") or "{}",
            content_safety_blocklists=env.get("CONTENT_SAFETY_BLOCKLISTS") or "",
            content_safety_halt_on_blocklist_hit=_bool(env.get("CONTENT_SAFETY_HALT_ON_BLOCKLIST_HIT"), False),
            content_safety_output_type=env.get("CONTENT_SAFETY_OUTPUT_TYPE") or "FourSeverityLevels",
            content_safety_window_chars=_int(env, "CONTENT_SAFETY_WINDOW_CHARS", 10_000),
            content_safety_window_overlap=_int(env, "CONTENT_SAFETY_WINDOW_OVERLAP", 200),
            content_safety_stream_window_chars=_int(env, "CONTENT_SAFETY_STREAM_WINDOW_CHARS", 1000),
            content_safety_stream_window_overlap=_int(env, "CONTENT_SAFETY_STREAM_WINDOW_OVERLAP", 100),
            content_safety_modes_json=env.get("CONTENT_SAFETY_MODES") or "{}",
            content_safety_fail_modes_json=env.get("CONTENT_SAFETY_FAIL_MODES") or "{}",
            content_safety_max_retries=_int(env, "CONTENT_SAFETY_MAX_RETRIES", 3),
            content_safety_retry_backoff_seconds=_float(env, "CONTENT_SAFETY_RETRY_BACKOFF_SECONDS", 0.5),
            content_safety_max_retry_after_seconds=_float(env, "CONTENT_SAFETY_MAX_RETRY_AFTER_SECONDS", 10.0),
            content_safety_timeout_seconds=_float(env, "CONTENT_SAFETY_TIMEOUT_SECONDS", 10.0),
            content_safety_max_concurrency=_int(env, "CONTENT_SAFETY_MAX_CONCURRENCY", 4),
            extra=env,
        )
