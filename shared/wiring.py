"""Builds the ports from app settings: the one place that picks Azure or embedded adapters.

    ports = build_ports(Settings.from_env())
    ...
    await ports.close()

The caller (function_app.py, the dev host, a test) holds the built ports; nothing here is global.
Azure SDK modules are imported only when a setting asks for them, so the embedded set starts fast.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigurationError
from shared.ports import (
    AffinityStore,
    BudgetStore,
    DeadLetterStore,
    EventChannel,
    ExchangeStore,
    OwnershipStore,
    Ports,
    RecordStore,
    ResponseCache,
    SpillStore,
    UsageSink,
)
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.budgets.keeper import BudgetKeeper
    from shared.safety.client import AzureContentSafety


Closer = Callable[[], Awaitable[None]]


class WiredPorts(Ports):
    """Ports plus what must be closed when the app stops (clients, connections, credential)."""

    __slots__ = ("_closers",)

    def __init__(self, *, closers: list[Closer], **ports: object) -> None:
        super().__init__(**ports)  # type: ignore[arg-type]
        self._closers = closers

    async def close(self) -> None:
        """Close everything in reverse build order: sink and channel first, then stores, then the credential.

        Every closer runs even when one fails; the first failure is raised at the end.
        """
        closers, self._closers = self._closers, []
        first_error: BaseException | None = None
        for closer in reversed(closers):
            try:
                await closer()
            except Exception as exc:  # noqa: BLE001 - keep closing the rest
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    async def __aenter__(self) -> WiredPorts:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def check_settings(settings: Settings) -> None:
    """Raise ConfigurationError naming the setting when the chosen adapters lack what they need.

    Each setting's own type and range is checked where it is declared (shared/settings.py); here
    only what depends on several settings.
    """
    if settings.log_store == "cosmos" and not settings.cosmos_endpoint:
        raise ConfigurationError("LOG_STORE=cosmos needs COSMOS_ENDPOINT (https://<account>.documents.azure.com:443/)")
    if settings.event_channel == "eventhub" and not settings.eventhub_namespace:
        raise ConfigurationError(
            "EVENT_CHANNEL=eventhub needs EventHubConnection__fullyQualifiedNamespace (<namespace>.servicebus.windows.net)"
        )
    from shared.budgets.config import parse_budget_book
    from shared.pricing.deployments import parse_deployment_models
    from shared.safety.config import SafetyConfig

    parse_budget_book(settings.budgets_json, settings.budget_teams_json)
    parse_deployment_models(settings.deployment_models_json)
    from shared.privacy.policy import CapturePolicy, RetentionPolicy

    CapturePolicy.parse(settings.capture_levels_json)
    RetentionPolicy.parse(settings.retention_json, settings.exchange_ttl_seconds)
    SafetyConfig.from_settings(settings)
    from shared.audience import AudienceTable

    AudienceTable.from_settings(settings.audience_policies_json, settings.extra.get("CAPTURE_LEVELS"))


def build_content_safety(settings: Settings) -> AzureContentSafety | None:
    """The Content Safety client when CONTENT_SAFETY_ENDPOINT is set, else None (analysis off).

    No I/O here: the client's aiohttp session opens on the first call, in the running event loop,
    and is reused for every call after; `await client.close()` closes it (and a managed-identity
    credential the client created). Raises ConfigurationError for invalid CONTENT_SAFETY_* settings.
    """
    from shared.safety.config import SafetyConfig

    config = SafetyConfig.from_settings(settings)
    if not config.enabled:
        return None
    from shared.safety.client import AzureContentSafety

    return AzureContentSafety.from_config(config)


def build_budgets(
    settings: Settings, azure_credential: Callable[[], Any], closers: list[Closer]
) -> BudgetKeeper | None:
    """The budget keeper over the shared ledger store (Cosmos DB container, or the SQLite file at
    BUDGET_SQLITE_PATH, default SQLITE_PATH), or None when BUDGETS is empty. No I/O here."""
    from shared.budgets.config import parse_budget_book
    from shared.budgets.keeper import BudgetKeeper

    book = parse_budget_book(settings.budgets_json, settings.budget_teams_json)
    if not book:
        return None
    store: BudgetStore
    if settings.log_store == "cosmos":
        from shared.adapters.cosmos_budgets import open_cosmos_budget_store

        store = open_cosmos_budget_store(settings, azure_credential())
    else:
        from shared.adapters.sqlite_budgets import SqliteBudgetStore

        store = SqliteBudgetStore(settings.budget_sqlite_path or settings.sqlite_path)
    closers.append(store.close)
    return BudgetKeeper.from_settings(settings, book, store)


def build_spill_store(settings: Settings, credential: Callable[[], Any]) -> SpillStore | None:
    """The spill store (Azure Blob) when CAPTURE_SPILL_CONNECTION_STRING or CAPTURE_SPILL_BLOB_URL
    is set, else None. No I/O: the container is created on first use."""
    if not (settings.capture_spill_connection_string or settings.capture_spill_blob_url):
        return None
    from shared.adapters.blob_spill import BlobSpillStore

    if settings.capture_spill_connection_string:
        return BlobSpillStore.from_connection_string(
            settings.capture_spill_connection_string, settings.capture_spill_container
        )
    return BlobSpillStore.from_account_url(
        settings.capture_spill_blob_url, settings.capture_spill_container, credential()
    )


def build_ports(settings: Settings) -> WiredPorts:
    """One adapter per port, chosen by LOG_STORE, EVENT_CHANNEL, APPLICATIONINSIGHTS_CONNECTION_STRING
    and CONTENT_SAFETY_ENDPOINT (the `safety` analyser; None when it is not set).

    Construction does no I/O: connections open on first use, so this is safe at import time of
    function_app.py. Raises ConfigurationError for missing or invalid settings.
    """
    check_settings(settings)
    closers: list[Closer] = []
    credential = None

    def azure_credential():  # one DefaultAzureCredential for Cosmos DB and Event Hubs
        nonlocal credential
        if credential is None:
            from azure.identity.aio import DefaultAzureCredential

            credential = DefaultAzureCredential()
            closers.append(credential.close)
        return credential

    exchanges: ExchangeStore
    records: RecordStore
    deadletters: DeadLetterStore
    affinity: AffinityStore
    cache: ResponseCache
    owners: OwnershipStore
    channel: EventChannel
    sink: UsageSink
    if settings.log_store == "cosmos":
        from shared.adapters.cosmos import open_cosmos_stores

        stores = open_cosmos_stores(settings, azure_credential())
        closers.append(stores.close)
        exchanges, records, deadletters, affinity = (
            stores.exchanges,
            stores.records,
            stores.deadletters,
            stores.affinity,
        )
        assert stores.cache is not None  # open_cosmos_stores always builds it
        cache = stores.cache
        owners = stores.owners
    else:
        from shared.adapters.sqlite import (
            SqliteAffinityStore,
            SqliteDatabase,
            SqliteDeadLetterStore,
            SqliteExchangeStore,
            SqliteOwnershipStore,
            SqliteRecordStore,
            SqliteResponseCache,
        )

        db = SqliteDatabase(settings.sqlite_path)
        closers.append(db.close)
        from shared.privacy.policy import RetentionPolicy

        retention = RetentionPolicy.parse(settings.retention_json, settings.exchange_ttl_seconds)
        exchanges, records = SqliteExchangeStore(db, retention=retention), SqliteRecordStore(db)
        deadletters, affinity = SqliteDeadLetterStore(db), SqliteAffinityStore(db)
        cache = SqliteResponseCache(db)
        owners = SqliteOwnershipStore(db)

    if settings.event_channel == "eventhub":
        from shared.adapters.eventhub import EventHubChannel

        channel = EventHubChannel.create(settings.eventhub_namespace or "", settings.eventhub_name, azure_credential())
    else:
        from shared.adapters.local_channel import LocalEventChannel

        channel = LocalEventChannel()
    closers.append(channel.close)

    if settings.appinsights_connection_string:
        from shared.adapters.appinsights import AppInsightsUsageSink, configure_azure_monitor_once

        configure_azure_monitor_once(settings)
        sink = AppInsightsUsageSink.for_settings(settings)
    else:
        from shared.adapters.log_sink import LogUsageSink

        sink = LogUsageSink()
    closers.append(sink.close)

    from shared.telemetry.setup import configure as configure_telemetry

    configure_telemetry(settings)  # after Azure Monitor, whose providers it then uses
    safety = build_content_safety(settings)
    if safety is not None:
        closers.append(safety.close)
    spill = build_spill_store(settings, azure_credential)
    if spill is not None:
        closers.append(spill.close)

    budgets = build_budgets(settings, azure_credential, closers)

    return WiredPorts(
        closers=closers,
        exchanges=exchanges,
        channel=channel,
        records=records,
        sink=sink,
        deadletters=deadletters,
        affinity=affinity,
        owners=owners,
        safety=safety,
        cache=cache,
        budgets=budgets,
        spill=spill,
    )
