"""Run in a child process by tests/test_telemetry_fanout.py: the production wiring with both Azure
Monitor and OTLP configured (the SDK's global providers can be set once per process), one record
observed and emitted, everything flushed. Prints nothing; the receivers in the parent check it all."""

from __future__ import annotations

import asyncio
import sys

from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider

from shared.normalize.usage import normalize
from shared.settings import Settings
from shared.telemetry import setup
from shared.wiring import build_ports
from tests.test_telemetry_otlp import _exchange


async def main(appinsights: str, otlp: str, data_dir: str) -> None:
    settings = Settings.from_env(
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": (
                f"InstrumentationKey=00000000-0000-0000-0000-00000000f00d;IngestionEndpoint={appinsights}/"
            ),
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
            "GATEWAY_BACKENDS": '[{"name": "east", "endpoint": "https://east.openai.azure.com", "deployments": ["*"]}]',
            "SQLITE_PATH": f"{data_dir}/gateway.db",
        }
    )
    ports = build_ports(settings)  # configures Azure Monitor, then the GenAI telemetry on top of it
    try:
        exchange = _exchange()
        record, details = normalize(exchange)
        setup.observe(exchange, record, details)
        await ports.sink.emit(record)
    finally:
        await ports.close()
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    metrics.get_meter_provider().force_flush()  # type: ignore[attr-defined]
    get_logger_provider().force_flush()  # type: ignore[attr-defined]


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
