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


@dataclass(frozen=True, slots=True)
class Settings:
    #: JSON list of backends (see proxy/backends.py).
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
    #: Add stream_options.include_usage upstream when the client did not ask (and hide the chunk).
    inject_stream_usage: bool = True
    max_request_body_bytes: int = 26_214_400
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
            exchange_ttl_seconds=_int(env, "EXCHANGE_TTL_SECONDS", 7 * 24 * 3600),
            event_channel=(env.get("EVENT_CHANNEL") or "local").lower(),
            eventhub_namespace=env.get("EventHubConnection__fullyQualifiedNamespace") or None,
            eventhub_name=env.get("EVENT_HUB_NAME") or "exchanges",
            eventhub_consumer_group=env.get("EVENT_HUB_CONSUMER_GROUP") or "$Default",
            appinsights_connection_string=env.get("APPLICATIONINSIGHTS_CONNECTION_STRING") or None,
            appinsights_worker_telemetry=_bool(env.get("PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"), False),
            appinsights_logger_name=env.get("PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME") or "",
            inject_stream_usage=_bool(env.get("INJECT_STREAM_USAGE"), True),
            max_request_body_bytes=_int(env, "MAX_REQUEST_BODY_BYTES", 26_214_400),
            extra=env,
        )
