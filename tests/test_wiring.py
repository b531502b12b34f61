import logging

import pytest

from shared.adapters.local_channel import LocalEventChannel
from shared.adapters.log_sink import LogUsageSink
from shared.adapters.sqlite import SqliteExchangeStore, SqliteRecordStore
from shared.errors import ConfigurationError
from shared.ports import Ports
from shared.settings import Settings
from shared.wiring import build_ports


async def test_defaults_are_sqlite_local_queue_and_log_sink(tmp_path):
    settings = Settings.from_env({"SQLITE_PATH": str(tmp_path / "g.db")})
    ports = build_ports(settings)
    assert isinstance(ports, Ports)
    assert isinstance(ports.exchanges, SqliteExchangeStore)
    assert isinstance(ports.records, SqliteRecordStore)
    assert isinstance(ports.channel, LocalEventChannel)
    assert isinstance(ports.sink, LogUsageSink)
    # The stores share one database file.
    assert await ports.records.add({"request_id": "r", "timestamp": "2026-11-27T00:00:00Z"}, {}) is True
    await ports.deadletters.put("k", "why", "p")
    await ports.affinity.remember("resp", "b", 60)
    assert await ports.affinity.lookup("resp") == "b"
    await ports.close()
    assert (tmp_path / "g.db").exists()
    with pytest.raises(RuntimeError):
        await ports.records.get("r")
    await ports.close()  # closing twice is harmless


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LOG_STORE": "cosmos"}, "COSMOS_ENDPOINT"),
        ({"EVENT_CHANNEL": "eventhub"}, "EventHubConnection__fullyQualifiedNamespace"),
        ({"LOG_STORE": "postgres"}, "LOG_STORE"),
        ({"EVENT_CHANNEL": "kafka"}, "EVENT_CHANNEL"),
        ({"EXCHANGE_TTL_SECONDS": "0"}, "EXCHANGE_TTL_SECONDS"),
    ],
)
def test_missing_or_bad_settings_are_named(env, names):
    with pytest.raises(ConfigurationError, match=names):
        build_ports(Settings.from_env(env))


async def test_log_sink_writes_one_json_line_at_debug(caplog):
    sink = LogUsageSink()
    with caplog.at_level(logging.DEBUG, logger="gateway.usage"):
        await sink.emit({"request_id": "r", "prompt_tokens": 3})
    lines = [r for r in caplog.records if r.name == "gateway.usage"]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert lines[0].getMessage() == '{"prompt_tokens":3,"request_id":"r"}'


async def test_azure_settings_pick_cosmos_event_hubs_and_app_insights_without_io():
    from shared.adapters.appinsights import AppInsightsUsageSink
    from shared.adapters.cosmos import CosmosExchangeStore, CosmosRecordStore
    from shared.adapters.eventhub import EventHubChannel

    settings = Settings.from_env(
        {
            "LOG_STORE": "cosmos",
            "COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/",
            "EVENT_CHANNEL": "eventhub",
            "EventHubConnection__fullyQualifiedNamespace": "ns.servicebus.windows.net",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
            # As in Azure: the Functions worker owns the Azure Monitor set-up.
            "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
        }
    )
    ports = build_ports(settings)
    assert isinstance(ports.exchanges, CosmosExchangeStore)
    assert isinstance(ports.records, CosmosRecordStore)
    assert isinstance(ports.channel, EventHubChannel)
    assert isinstance(ports.sink, AppInsightsUsageSink)
    assert ports.sink.logger.name == "gateway.usage" and ports.sink.logger.isEnabledFor(logging.INFO)
    await ports.close()


async def test_close_runs_every_closer_and_reports_the_first_failure(tmp_path):
    ports = build_ports(Settings.from_env({"SQLITE_PATH": str(tmp_path / "g.db")}))
    closed = []

    async def failing():
        raise OSError("boom")

    async def ok():
        closed.append("ok")

    ports._closers = [ok, failing]
    with pytest.raises(OSError):
        await ports.close()
    assert closed == ["ok"]


async def test_content_safety_client_is_wired_once_and_closed_with_the_ports(tmp_path):
    from shared.safety.client import AzureContentSafety

    off = build_ports(Settings.from_env({"SQLITE_PATH": str(tmp_path / "a.db")}))
    assert off.safety is None
    await off.close()
    on = build_ports(
        Settings.from_env(
            {
                "SQLITE_PATH": str(tmp_path / "b.db"),
                "CONTENT_SAFETY_ENDPOINT": "http://127.0.0.1:9",
                "CONTENT_SAFETY_KEY": "k",
            }
        )
    )
    assert isinstance(on.safety, AzureContentSafety)
    closed = []
    real_close = on.safety.close

    async def close():
        closed.append(True)
        await real_close()

    on.safety.close = close
    on._closers = [close if c == real_close else c for c in on._closers]
    await on.close()
    assert closed == [True]


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PARSER_MAX_CONCURRENCY": "0"}, "PARSER_MAX_CONCURRENCY"),
        ({"DEPLOYMENT_MODELS": "[1]"}, "DEPLOYMENT_MODELS"),
        ({"CONTENT_SAFETY_THRESHOLDS": '{"default": {"Gore": 2}}'}, "CONTENT_SAFETY_THRESHOLDS"),
    ],
)
def test_parser_settings_are_checked_before_anything_opens(env, name):
    with pytest.raises(ConfigurationError, match=name):
        build_ports(Settings.from_env(env))
