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
