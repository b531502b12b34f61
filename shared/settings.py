"""Every app setting, declared once: name, type, default, meaning, secret or not, where it applies.

`Settings` is a pydantic-settings model. Each field is one setting (`setting(...)` below), and
everything else comes from these declarations: `Settings.from_env` reads and validates them (a bad
value stops start-up with one line naming the setting), `DECLARATIONS` lists them for tools and
tests, `python -m shared.settings_docs` writes docs/settings.md and local.settings.sample.json
from them (a test fails when either drifts). JSON-valued settings name their shape
(shared/setting_shapes.py) and their consumers parse them with `parse_json`.

Adding a setting is one field here (then run `python -m shared.settings_docs`). The module is long
because it is the one list of every setting, a field of a few lines each; splitting it would
scatter what this module exists to keep in one place.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import orjson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from shared import setting_shapes as shapes
from shared.errors import ConfigurationError
from shared.setting_errors import adapter, describe, json_problem

Scope = Literal["app", "devhost", "host"]
#: Where a setting applies, as the documentation says it.
SCOPES: dict[str, str] = {
    "app": "function app",
    "devhost": "dev host only",
    "host": "Functions host / worker",
}


def setting(
    default: Any,
    name: str,
    meaning: str,
    *,
    secret: bool = False,
    scope: Scope = "app",
    sample: str | None = None,
    **constraints: Any,
) -> Any:
    """One setting: its app-setting `name`, default, one-line meaning and constraints (`ge=1`...).

    `sample` is the value local.settings.sample.json shows when it is not the default.
    """
    extra: dict[str, Any] = {"secret": secret, "scope": scope}
    if sample is not None:
        extra["sample"] = sample
    return Field(default, alias=name, description=meaning, json_schema_extra=extra, repr=not secret, **constraints)


@dataclass(frozen=True, slots=True)
class JsonText:
    """Marks a text setting that holds JSON of `shape` (checked when the settings are read)."""

    shape: Any


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _ttl(value: int) -> int:
    if value <= 0 and value != -1:
        raise ValueError("must be a positive number of seconds, or -1 for never")
    return value


LogStore = Annotated[Literal["sqlite", "cosmos"], BeforeValidator(_lower)]
EventChannelKind = Annotated[Literal["local", "eventhub"], BeforeValidator(_lower)]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]


def _check_json(shape: Any, text: str) -> str:
    problem = json_problem(shape, text)
    if problem is not None:
        raise ValueError(problem)
    return text


class Settings(BaseSettings):
    """The gateway's settings; `Settings.from_env()` in the app, `Settings(field=...)` in tests."""

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,  # an empty app setting means "the default", as the sample file has them
        frozen=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    # --- telemetry ---------------------------------------------------------------------------
    appinsights_connection_string: str | None = setting(
        None,
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "App Insights: one AOAIUsage custom event per request (empty: records only in the log store)",
    )
    appinsights_worker_telemetry: bool = setting(
        False,
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
        "true when the Functions worker configures Azure Monitor itself (then the app does not)",
    )
    appinsights_logger_name: str = setting(
        "",
        "PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME",
        "logger the Azure Monitor handler sits on (empty: root); usage events are logged under it",
    )
    otel_exporter_otlp_endpoint: str | None = setting(
        None,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTLP/HTTP collector (e.g. http://127.0.0.1:4318) that also receives the GenAI spans and metrics",
    )
    otel_console: bool = setting(
        False, "GATEWAY_OTEL_CONSOLE", "print the GenAI spans and metrics on the console (devhost --otel console)"
    )
    otel_traces_sampler: str | None = setting(
        None,
        "OTEL_TRACES_SAMPLER",
        "trace sampler for Azure Monitor (unset: every span kept; docs/telemetry.md)",
        scope="host",
    )
    genai_capture_content: bool = setting(
        False,
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
        "message content on spans as the GenAI opt-in event (off: prompts are sensitive)",
    )

    # --- backends and the proxy --------------------------------------------------------------
    backends_json: Annotated[str, JsonText(shapes.Backends)] = setting(
        "[]",
        "GATEWAY_BACKENDS",
        "JSON list of AOAI accounts: name, endpoint, auth (managed_identity, or api_key with 'setting'), "
        "deployments, priority, weight, deployment_map (docs/routing.md)",
        sample='[{"name": "aoai-eastus", "endpoint": "https://<your-resource>.openai.azure.com", '
        '"auth": {"type": "managed_identity"}, "deployments": ["*"]}]',
    )
    inject_stream_usage: bool = setting(
        True,
        "INJECT_STREAM_USAGE",
        "ask AOAI for the usage chunk on streams (and hide it from clients that did not ask)",
    )
    max_request_body_bytes: PositiveInt = setting(26_214_400, "MAX_REQUEST_BODY_BYTES", "larger request bodies get 413")
    request_body_timeout_seconds: PositiveFloat = setting(
        120.0, "REQUEST_BODY_TIMEOUT_SECONDS", "seconds a client has to send its whole request body (408 past it)"
    )
    max_request_header_bytes: PositiveInt = setting(
        32_768, "MAX_REQUEST_HEADER_BYTES", "bytes of request headers forwarded upstream (431 past it)"
    )
    upstream_connect_timeout: PositiveFloat = setting(
        10.0, "UPSTREAM_CONNECT_TIMEOUT_SECONDS", "TCP/TLS connect to a backend"
    )
    upstream_first_byte_timeout: PositiveFloat = setting(
        230.0,
        "UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS",
        "time to the response headers (a non-streamed call's whole generation; Azure ends HTTP triggers near 230 s)",
    )
    upstream_idle_timeout: PositiveFloat = setting(
        120.0, "UPSTREAM_IDLE_TIMEOUT_SECONDS", "longest silence between two reads of a streamed body"
    )
    upstream_total_timeout: PositiveFloat = setting(
        1800.0, "UPSTREAM_TOTAL_TIMEOUT_SECONDS", "hard cap on one upstream call"
    )
    upstream_max_connections: PositiveInt = setting(
        256, "UPSTREAM_MAX_CONNECTIONS", "pooled keep-alive connections per backend host"
    )
    capture_outbox_dir: str = setting(
        "",
        "CAPTURE_OUTBOX_DIR",
        "where exchanges are spilled as JSON files when the log store stays down and no spill store takes "
        "them; stored and announced again as soon as the store is back (empty: the system temp dir)",
        sample=".gateway/outbox",
    )
    capture_spill_blob_url: str = setting(
        "",
        "CAPTURE_SPILL_BLOB_URL",
        "blob endpoint (https://<account>.blob.core.windows.net/) of the spill store for exchanges the log "
        "store could not take, reached by identity: durable off the instance, drained by any instance "
        "(empty: no spill store)",
    )
    capture_spill_connection_string: str = setting(
        "",
        "CAPTURE_SPILL_CONNECTION_STRING",
        "the spill store by connection string instead (Azurite: UseDevelopmentStorage=true); local runs",
        secret=True,
    )
    capture_spill_container: str = setting(
        "capture-spill", "CAPTURE_SPILL_CONTAINER", "blob container of the spill store"
    )

    # --- routing -----------------------------------------------------------------------------
    max_attempts: PositiveInt = setting(
        3,
        "GATEWAY_MAX_ATTEMPTS",
        "upstream attempts per request, the first included (failover on 429, 5xx, DeploymentNotFound, "
        "connection errors, timeouts)",
    )
    retry_deadline_seconds: PositiveFloat = setting(
        30.0, "GATEWAY_RETRY_DEADLINE_SECONDS", "no new failover attempt starts after this many seconds"
    )
    circuit_failures: PositiveInt = setting(
        5,
        "GATEWAY_CIRCUIT_FAILURES",
        "health failures (5xx, connection errors, timeouts) within the window that open a backend's circuit",
    )
    circuit_window_seconds: PositiveFloat = setting(30.0, "GATEWAY_CIRCUIT_WINDOW_SECONDS", "circuit breaker window")
    circuit_cooldown_seconds: NonNegativeFloat = setting(
        30.0,
        "GATEWAY_CIRCUIT_COOLDOWN_SECONDS",
        "how long an open circuit keeps a backend out before one trial request may probe it",
    )
    responses_affinity_ttl_seconds: PositiveInt = setting(
        30 * 24 * 3600,
        "RESPONSES_AFFINITY_TTL_SECONDS",
        "how long a Responses API response id stays pinned to the backend that created it (AOAI keeps them 30 days)",
    )

    # --- stores and the event channel ---------------------------------------------------------
    log_store: LogStore = setting(
        "sqlite",
        "LOG_STORE",
        "exchange, record, dead-letter and affinity stores: sqlite (embedded) or cosmos (needs COSMOS_ENDPOINT)",
    )
    sqlite_path: Path = setting(Path(".gateway/gateway.db"), "SQLITE_PATH", "the SQLite file of LOG_STORE=sqlite")
    cosmos_endpoint: str | None = setting(
        None, "COSMOS_ENDPOINT", "Cosmos DB account endpoint (identity-based, data-plane RBAC)"
    )
    cosmos_database: str = setting("gateway", "COSMOS_DATABASE", "Cosmos DB database")
    cosmos_exchanges_container: str = setting("exchanges", "COSMOS_EXCHANGES_CONTAINER", "exchanges container")
    cosmos_records_container: str = setting("records", "COSMOS_RECORDS_CONTAINER", "usage records container")
    cosmos_deadletters_container: str = setting("deadletters", "COSMOS_DEADLETTERS_CONTAINER", "dead letters container")
    cosmos_affinity_container: str = setting(
        "affinity", "COSMOS_AFFINITY_CONTAINER", "Responses API affinity (response id -> backend) container"
    )
    cosmos_cache_container: str = setting("cache", "COSMOS_CACHE_CONTAINER", "response cache container (per-item TTL)")
    cosmos_owners_container: str = setting(
        "owners", "COSMOS_OWNERS_CONTAINER", "owners of stored objects (responses, files, batches) by subscription"
    )
    cosmos_budgets_container: str = setting(
        "budgets", "COSMOS_BUDGETS_CONTAINER", "budget ledgers container (one item per budget and period)"
    )
    exchange_ttl_seconds: Annotated[int, AfterValidator(_ttl)] = setting(
        7 * 24 * 3600, "EXCHANGE_TTL_SECONDS", "how long stored exchanges are kept (-1: forever)"
    )
    event_channel: EventChannelKind = setting(
        "local",
        "EVENT_CHANNEL",
        "local (in-process queue, dev host) or eventhub (needs EventHubConnection__fullyQualifiedNamespace)",
    )
    eventhub_namespace: str | None = setting(
        None,
        "EventHubConnection__fullyQualifiedNamespace",
        "Event Hubs namespace (<namespace>.servicebus.windows.net), identity-based, for the producer and the trigger",
    )
    eventhub_name: str = setting("exchanges", "EVENT_HUB_NAME", "event hub the proxy sends to and the parser reads")
    eventhub_consumer_group: str = setting("$Default", "EVENT_HUB_CONSUMER_GROUP", "the parser's consumer group")

    # --- parser ------------------------------------------------------------------------------
    parser_exchange_budget_seconds: PositiveFloat = setting(
        30.0,
        "PARSER_EXCHANGE_BUDGET_SECONDS",
        "wall-clock budget of the parser per exchange; past it the record says parse_error and the exchange "
        "is dead-lettered once",
    )
    parser_max_exchange_bytes: PositiveInt = setting(
        64_000_000,
        "PARSER_MAX_EXCHANGE_BYTES",
        "stored bytes (bodies, event stream) the parser consolidates per exchange; beyond: a record with "
        "parse_error, dead-lettered once",
    )
    reconcile_after_seconds: int = setting(
        300,
        "RECONCILE_AFTER_SECONDS",
        "stored exchanges older than this with no record and no final dead letter are announced again "
        "(the reconcile timer function, every 5 minutes)",
        ge=0,
    )
    reconcile_lookback_seconds: PositiveInt = setting(
        3600,
        "RECONCILE_LOOKBACK_SECONDS",
        "how far back the reconciler looks (each run reads the exchanges stored in the window)",
    )
    parser_max_concurrency: PositiveInt = setting(
        8,
        "PARSER_MAX_CONCURRENCY",
        "events of one batch the parser handles at the same time (times CONTENT_SAFETY_MAX_CONCURRENCY: "
        "the peak of concurrent Content Safety calls per instance)",
    )
    deployment_models_json: Annotated[str, JsonText(shapes.DeploymentModels)] = setting(
        "{}",
        "DEPLOYMENT_MODELS",
        "deployment -> {model, type: global|data_zone|regional|provisioned} for cost; "
        "unmapped: the model AOAI reports, type global",
        sample='{"gpt-4o": {"model": "gpt-4o-2024-08-06", "type": "global"}}',
    )

    # --- content safety (shared/safety/config.py checks them together) --------------------------
    content_safety_endpoint: str | None = setting(
        None,
        "CONTENT_SAFETY_ENDPOINT",
        "Azure AI Content Safety endpoint (https://NAME.cognitiveservices.azure.com); empty: content safety off",
    )
    content_safety_key_setting: str | None = setting(
        None,
        "CONTENT_SAFETY_KEY_SETTING",
        "name of the setting that holds the Content Safety key (e.g. a Key Vault reference)",
    )
    content_safety_key: str | None = setting(
        None, "CONTENT_SAFETY_KEY", "Content Safety key; both key settings empty: managed identity", secret=True
    )
    content_safety_analyze_prompt: bool = setting(False, "CONTENT_SAFETY_ANALYZE_PROMPT", "also analyse the prompt")
    content_safety_prompt_shields: bool = setting(
        False, "CONTENT_SAFETY_PROMPT_SHIELDS", "Prompt Shields on the prompt"
    )
    content_safety_thresholds_json: Annotated[str, JsonText(shapes.Thresholds)] = setting(
        "{}",
        "CONTENT_SAFETY_THRESHOLDS",
        "product -> {category: severity} at or above which a record is flagged; 'default' for all products",
        sample='{"default": {"Hate": 4, "SelfHarm": 4, "Sexual": 4, "Violence": 4}}',
    )
    content_safety_blocklists: str = setting("", "CONTENT_SAFETY_BLOCKLISTS", "comma-separated blocklist names")
    content_safety_halt_on_blocklist_hit: bool = setting(
        False, "CONTENT_SAFETY_HALT_ON_BLOCKLIST_HIT", "stop analysing at the first blocklist hit"
    )
    content_safety_output_type: Literal["FourSeverityLevels", "EightSeverityLevels"] = setting(
        "FourSeverityLevels", "CONTENT_SAFETY_OUTPUT_TYPE", "severity scale"
    )
    content_safety_window_chars: PositiveInt = setting(
        10_000, "CONTENT_SAFETY_WINDOW_CHARS", "post-hoc analysis window (the service's maximum: 10000)"
    )
    content_safety_window_overlap: Annotated[int, Field(ge=0)] = setting(
        200, "CONTENT_SAFETY_WINDOW_OVERLAP", "characters each post-hoc window repeats"
    )
    content_safety_stream_window_chars: PositiveInt = setting(
        1000, "CONTENT_SAFETY_STREAM_WINDOW_CHARS", "hold-back window of enforce mode"
    )
    content_safety_stream_window_overlap: Annotated[int, Field(ge=0)] = setting(
        100, "CONTENT_SAFETY_STREAM_WINDOW_OVERLAP", "characters each hold-back window repeats"
    )
    content_safety_modes_json: Annotated[str, JsonText(shapes.Modes)] = setting(
        "{}",
        "CONTENT_SAFETY_MODES",
        "product -> monitor (nothing changes on the wire) or enforce (streams held back per window)",
        sample='{"default": "monitor"}',
    )
    content_safety_fail_modes_json: Annotated[str, JsonText(shapes.FailModes)] = setting(
        "{}",
        "CONTENT_SAFETY_FAIL_MODES",
        "product -> open (release text when the analyser fails) or closed (end the stream with content_filter)",
        sample='{"default": "open"}',
    )
    content_safety_max_retries: Annotated[int, Field(ge=0)] = setting(
        3, "CONTENT_SAFETY_MAX_RETRIES", "retries of one Content Safety call"
    )
    content_safety_retry_backoff_seconds: NonNegativeFloat = setting(
        0.5, "CONTENT_SAFETY_RETRY_BACKOFF_SECONDS", "first retry backoff, doubled per retry"
    )
    content_safety_max_retry_after_seconds: NonNegativeFloat = setting(
        10.0, "CONTENT_SAFETY_MAX_RETRY_AFTER_SECONDS", "longest retry-after honoured"
    )
    content_safety_timeout_seconds: PositiveFloat = setting(
        10.0, "CONTENT_SAFETY_TIMEOUT_SECONDS", "timeout of one Content Safety call"
    )
    content_safety_max_concurrency: PositiveInt = setting(
        4, "CONTENT_SAFETY_MAX_CONCURRENCY", "Content Safety calls of one record or stream at the same time"
    )

    # --- audiences ---------------------------------------------------------------------------
    budgets_json: Annotated[str, JsonText(list[dict[str, Any]])] = setting(
        "[]",
        "BUDGETS",
        "dollar budgets and token quotas: [{name, scope, amount|tokens, period, soft_percent, action...}] (docs/budgets.md)",
    )
    budget_teams_json: Annotated[str, JsonText(dict[str, list[str]])] = setting(
        "{}", "BUDGET_TEAMS", "team name -> subscription ids, for `team:<name>` budget scopes (docs/budgets.md)"
    )
    budget_sqlite_path: str = setting(
        "", "BUDGET_SQLITE_PATH", "SQLite file of the budget ledgers with LOG_STORE=sqlite (empty: SQLITE_PATH)"
    )
    capture_levels_json: Annotated[str, JsonText(dict[str, Literal["full", "redacted", "metadata", "none"]])] = setting(
        "{}",
        "CAPTURE_LEVELS",
        "APIM product or `subscription:<id>` -> capture level full | redacted | metadata | none (docs/privacy.md)",
    )
    retention_json: Annotated[str, JsonText(dict[str, Any])] = setting(
        "{}",
        "RETENTION",
        "APIM product or `subscription:<id>` -> {exchanges_days, records_days} (docs/privacy.md)",
    )
    pii_language_endpoint: str | None = setting(
        None,
        "PII_LANGUAGE_ENDPOINT",
        "Azure AI Language endpoint for the second PII stage at `redacted` (off when unset)",
    )
    pii_language_key: str | None = setting(
        None, "PII_LANGUAGE_KEY", "key of that Language resource (managed identity when unset)", secret=True
    )
    audience_policies_json: Annotated[str, JsonText(dict[str, Any])] = setting(
        "{}",
        "AUDIENCE_POLICIES",
        "APIM product or `subscription:<id>` -> deployment allow-list and response cache (docs/audience.md)",
    )

    # --- dev host ----------------------------------------------------------------------------
    devhost_header_timeout_seconds: PositiveFloat = setting(
        10.0,
        "DEVHOST_HEADER_TIMEOUT_SECONDS",
        "seconds to send a request's head (the dev host's front end)",
        scope="devhost",
    )
    devhost_max_connections: PositiveInt = setting(
        1000, "DEVHOST_MAX_CONNECTIONS", "open connections served at once (503 past it)", scope="devhost"
    )
    local_subscriptions_json: Annotated[str, JsonText(shapes.Subscriptions)] = setting(
        "{}",
        "LOCAL_SUBSCRIPTIONS",
        "api-key value -> {id, name, product}, checked as APIM would (empty: one local key, kept in .gateway/)",
        scope="devhost",
        sample='{"key-team-a": {"id": "team-a", "name": "Team A", "product": "standard"}}',
    )

    _env: Mapping[str, str] = PrivateAttr(default_factory=dict)

    @field_validator("*", mode="after")
    @classmethod
    def _json_shape(cls, value: Any, info: ValidationInfo) -> Any:
        """A JSON-valued setting must hold its declared shape (`JsonText`)."""
        field = cls.model_fields.get(info.field_name or "")
        shape = next((m.shape for m in field.metadata if isinstance(m, JsonText)), None) if field else None
        return value if shape is None else _check_json(shape, value)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigurationError(describe(exc, type(self))) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """`Settings(...)` is its arguments over the defaults; only `from_env` reads an environment."""
        return (init_settings,)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The settings in `env` (default: the process environment); ConfigurationError names a bad one."""
        env = os.environ if env is None else env
        settings = cls(_build_sources=((_MappingSource(cls, env),), {}))
        settings._env = env
        return settings

    @property
    def extra(self) -> Mapping[str, str]:
        """The whole environment the settings came from (settings named by other settings live there)."""
        return self._env


class _MappingSource(EnvSettingsSource):
    """The environment source over any mapping (tests pass plain dicts)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._mapping = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k: v for k, v in self._mapping.items() if v != ""}

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        return value  # JSON-valued settings stay text: their shape checks them


# ------------------------------------------------------------------------------- declarations
@dataclass(frozen=True, slots=True)
class Declaration:
    """One setting as tools and documentation see it."""

    name: str
    #: The `Settings` attribute, or None for a setting only the Functions host reads.
    field: str | None
    type: str
    #: The default as an app-setting value ("" when unset).
    default: str
    meaning: str
    secret: bool
    scope: Scope
    #: The value local.settings.sample.json shows (None: not in the sample).
    sample: str | None


#: Settings the Functions host or Python worker reads, not the app (listed so the sample and the
#: documentation are complete, and so a misspelling of them is caught too).
HOST_SETTINGS: tuple[Declaration, ...] = (
    Declaration(
        "FUNCTIONS_WORKER_RUNTIME",
        None,
        "text",
        "",
        "the worker language (Flex Consumption takes it from functionAppConfig.runtime and rejects the setting)",
        False,
        "host",
        "python",
    ),
    Declaration(
        "AzureWebJobsStorage",
        None,
        "text",
        "",
        "host storage (keys, leases, checkpoints); locally Azurite",
        False,
        "host",
        "UseDevelopmentStorage=true",
    ),
    Declaration(
        "AzureWebJobsStorage__accountName", None, "text", "", "identity-based host storage (Azure)", False, "host", None
    ),
    Declaration(
        "PYTHON_ENABLE_INIT_INDEXING",
        None,
        "text",
        "",
        "worker indexing at init (HTTP streams on Python 3.12 and older)",
        False,
        "host",
        "1",
    ),
)


def _type_label(info: FieldInfo) -> str:
    for meta in info.metadata:
        if isinstance(meta, JsonText):
            return "JSON"
    annotation = info.annotation
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) is Literal:
        return " \\| ".join(str(a) for a in get_args(annotation))
    base = args[0] if args and get_origin(annotation) is not None else annotation
    if get_origin(base) is Literal:
        return " \\| ".join(str(a) for a in get_args(base))
    labels: dict[Any, str] = {int: "integer", float: "number", bool: "boolean", Path: "path", str: "text"}
    bounds = [
        f"{sign} {_as_value(getattr(meta, attr))}"
        for meta in info.metadata
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
        if getattr(meta, attr, None) is not None
    ]
    return " ".join([labels.get(base, str(base)), *bounds])


def _as_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _declarations() -> tuple[Declaration, ...]:
    found = []
    for field_name, info in Settings.model_fields.items():
        extra: dict[str, Any] = info.json_schema_extra or {}  # type: ignore[assignment]
        default = _as_value(info.default)
        found.append(
            Declaration(
                name=info.alias or field_name,
                field=field_name,
                type=_type_label(info),
                default=default,
                meaning=info.description or "",
                secret=bool(extra.get("secret")),
                scope=extra.get("scope", "app"),
                sample=extra.get("sample", default),
            )
        )
    return HOST_SETTINGS + tuple(found)


#: Every setting, the app's and the host's: what the docs, the sample and the bicep checks read.
DECLARATIONS: tuple[Declaration, ...] = _declarations()
NAMES: frozenset[str] = frozenset(d.name for d in DECLARATIONS)


def json_shape(name: str) -> Any:
    """The declared shape of a JSON-valued setting, or None for any other setting."""
    declaration = next(d for d in DECLARATIONS if d.name == name)
    info = Settings.model_fields.get(declaration.field or "")
    return next((m.shape for m in info.metadata if isinstance(m, JsonText)), None) if info else None


def parse_json(name: str, text: str | None) -> Any:
    """A JSON-valued setting's value, checked against its declared shape (ConfigurationError names it)."""
    declaration = next(d for d in DECLARATIONS if d.name == name)
    shape = json_shape(name)
    text = text if text and text.strip() else declaration.default
    try:
        return adapter(shape).validate_python(orjson.loads(text))
    except (orjson.JSONDecodeError, ValidationError):
        raise ConfigurationError(f"{name}{json_problem(shape, text)}") from None


def misspelled(names: Iterable[str], also_known: Iterable[str] = ()) -> list[tuple[str, str]]:
    """(unknown name, the known setting it is probably a misspelling of), for names close to one.

    Names far from every setting are left alone: they are the user's own (an api_key backend's key).
    """
    known = NAMES | set(also_known)
    found = []
    for name in names:
        if name in known:
            continue
        match = difflib.get_close_matches(name, sorted(NAMES), n=1, cutoff=0.8)
        if match:
            found.append((name, match[0]))
    return found
