"""The App Insights sink through a real OpenTelemetry logging pipeline and the real Azure Monitor
exporter's conversion to telemetry envelopes (no network: an in-memory exporter catches the logs)."""

import logging
import uuid

import pytest
from azure.monitor.opentelemetry.exporter.export.logs._exporter import _convert_log_to_envelope
from azure.monitor.opentelemetry.exporter.export.logs._processor import _AzureBatchLogRecordProcessor
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

import shared.adapters.appinsights as appinsights
from shared.adapters.appinsights import AppInsightsUsageSink, configure_azure_monitor_once, usage_logger_name
from shared.settings import Settings

RECORD = {
    "request_id": "rid-1",
    "timestamp": "2026-11-27T04:00:00.000Z",
    "subscription_id": "team-a",
    "user_id": None,
    "stream": True,
    "status_code": 200,
    "prompt_tokens": 12,
    "completion_tokens": 30,
    "total_tokens": 42,
    "cached_tokens": 0,
    "latency_ms": 812.5,
    "ttft_ms": 95.25,
    "finish_reasons": ["stop"],
    "content_filter": {"prompt": {"hate": {"filtered": False, "severity": "safe"}}},
    "cost": 0.0012,
}


def pipeline(processor_factory=SimpleLogRecordProcessor):
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    processor = processor_factory(exporter)
    provider.add_log_record_processor(processor)
    logger = logging.getLogger(f"test.usage.{uuid.uuid4().hex}")
    logger.addHandler(LoggingHandler(logger_provider=provider))
    logger.propagate = False
    return logger, exporter, processor


def envelopes(exporter):
    return [_convert_log_to_envelope(log) for log in exporter.get_finished_logs()]


async def test_one_custom_event_with_dimensions_and_measurements():
    logger, exporter, _ = pipeline()
    assert logger.getEffectiveLevel() == logging.WARNING  # what a fresh logger inherits
    sink = AppInsightsUsageSink(logger)
    await sink.emit(RECORD)
    (envelope,) = envelopes(exporter)
    assert envelope.name == "Microsoft.ApplicationInsights.Event"
    data = envelope.data.base_data
    assert data.name == "AOAIUsage"
    props = data.properties
    assert props["request_id"] == "rid-1"
    assert props["stream"] == "true"
    assert props["status_code"] == "200"
    assert props["prompt_tokens"] == "12"
    assert props["finish_reasons"] == '["stop"]'
    assert props["content_filter"] == '{"prompt":{"hate":{"filtered":false,"severity":"safe"}}}'
    assert "user_id" not in props  # None values are left out
    assert "microsoft.custom_event.name" not in props and "microsoft.custom_measurements" not in props
    assert data.measurements == {
        "prompt_tokens": 12.0,
        "completion_tokens": 30.0,
        "total_tokens": 42.0,
        "cached_tokens": 0.0,
        "latency_ms": 812.5,
        "ttft_ms": 95.25,
        "cost": 0.0012,
    }


async def test_fields_longer_than_the_property_limit_are_left_out_not_truncated(caplog):
    logger, exporter, _ = pipeline()
    long_text = "x" * 8193
    record = {**RECORD, "user_agent": long_text, "parse_error": "y" * 8192}
    with caplog.at_level(logging.WARNING, logger="shared.adapters.appinsights"):
        await AppInsightsUsageSink(logger).emit(record)
    props = envelopes(exporter)[0].data.base_data.properties
    assert "user_agent" not in props
    assert props["parse_error"] == "y" * 8192  # exactly at the limit is kept whole
    assert props["omitted_fields"] == "user_agent"
    assert all(len(v) <= 8192 for v in props.values())
    assert any("user_agent" in r.getMessage() and long_text not in r.getMessage() for r in caplog.records)


async def test_events_survive_trace_based_log_sampling_of_an_unsampled_trace():
    logger, exporter, processor = pipeline(
        lambda exp: _AzureBatchLogRecordProcessor(exp, {"enable_trace_based_sampling_for_logs": True})
    )
    sink = AppInsightsUsageSink(logger)
    unsampled = TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")
    sampled = TracerProvider(sampler=ALWAYS_ON).get_tracer("t")
    with unsampled.start_as_current_span("invocation"):
        await sink.emit({**RECORD, "request_id": "unsampled"})
        logger.info("an ordinary log in the unsampled trace")
    with sampled.start_as_current_span("invocation") as span:
        await sink.emit({**RECORD, "request_id": "sampled"})
        trace_id = span.get_span_context().trace_id
    processor.force_flush()
    logs = {
        log.log_record.attributes.get("request_id", log.log_record.body): log.log_record
        for log in exporter.get_finished_logs()
    }
    # The ordinary log was dropped by sampling; the usage event was not.
    assert set(logs) == {"unsampled", "sampled"}
    assert logs["sampled"].trace_id == trace_id  # correlation kept when the trace is sampled
    processor.shutdown()


def test_the_usage_logger_sits_under_the_handlers_logger():
    assert usage_logger_name("") == "gateway.usage"
    assert usage_logger_name("gateway") == "gateway.usage"
    assert usage_logger_name("myapp") == "myapp.gateway.usage"


def test_distro_is_configured_only_when_the_worker_does_not(monkeypatch):
    calls = []
    monkeypatch.setattr("azure.monitor.opentelemetry.configure_azure_monitor", lambda **kw: calls.append(kw))
    conn = "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    worker = Settings.from_env(
        {"APPLICATIONINSIGHTS_CONNECTION_STRING": conn, "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true"}
    )
    assert configure_azure_monitor_once(worker) is False
    assert configure_azure_monitor_once(Settings.from_env({})) is False
    local = Settings.from_env(
        {"APPLICATIONINSIGHTS_CONNECTION_STRING": conn, "PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME": "gw"}
    )
    assert configure_azure_monitor_once(local) is True
    # every span kept (the distro's default rate limit drops spans one by one), logs never sampled
    assert calls == [
        {
            "sampling_ratio": 1.0,
            "connection_string": conn,
            "logger_name": "gw",
            "enable_trace_based_sampling_for_logs": False,
        }
    ]
    calls.clear()
    chosen = Settings.from_env(
        {"APPLICATIONINSIGHTS_CONNECTION_STRING": conn, "OTEL_TRACES_SAMPLER": "microsoft.rate_limited"}
    )
    monkeypatch.setattr("opentelemetry._logs.get_logger_provider", lambda: None)
    assert configure_azure_monitor_once(chosen) is True
    assert "sampling_ratio" not in calls[0]  # the operator's sampler (read by the distro) stands
