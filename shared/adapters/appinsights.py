"""The Azure usage sink: one Application Insights custom event `AOAIUsage` per usage record.

Sent through azure-monitor-opentelemetry: a log record carrying `microsoft.custom_event.name`
becomes a `customEvents` row; its other attributes become `customDimensions`, and
`microsoft.custom_measurements` becomes `customMeasurements`. The exporter would silently cut any
value to 8,192 characters, so longer fields are left out whole (and named in `omitted_fields`):
a truncated value would look complete in a report. Bodies never come here; they stay in the
log store beside the record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace

from shared.ports import UsageRecord
from shared.settings import Settings

EVENT_NAME = "AOAIUsage"
USAGE_LOGGER = "gateway.usage"
#: Application Insights keeps at most this many characters of a property value.
MAX_PROPERTY_CHARS = 8192
EVENT_NAME_ATTRIBUTE = "microsoft.custom_event.name"
MEASUREMENTS_ATTRIBUTE = "microsoft.custom_measurements"

_log = logging.getLogger(__name__)
#: Names `logging` keeps for itself: a record field with one of these names would clash with them.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def usage_logger_name(handler_logger: str) -> str:
    """The usage logger, placed under the logger that carries the Azure Monitor handler."""
    if not handler_logger or USAGE_LOGGER == handler_logger or USAGE_LOGGER.startswith(handler_logger + "."):
        return USAGE_LOGGER
    return f"{handler_logger}.{USAGE_LOGGER}"


#: Numbers besides token counts and latencies that reports sum.
_NUMBERS = frozenset({"cost", "cost_avoided", "audio_seconds", "input_characters"})


def is_measurement(name: str, value: Any) -> bool:
    """Token counts, latencies, cost and audio units: summed and charted in reports, so sent as numbers too."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return name.endswith("_tokens") or name.endswith("_ms") or name in _NUMBERS


def _dimension(value: Any) -> str:
    # One text form for every type: JSON (true/false, 12, 1.5, ["stop"], {...}); strings as they are.
    return value if isinstance(value, str) else orjson.dumps(value).decode("utf-8")


def event_attributes(record: Mapping[str, Any]) -> dict[str, str]:
    """The log record attributes for one usage record: event name, dimensions, measurements."""
    attributes: dict[str, str] = {EVENT_NAME_ATTRIBUTE: EVENT_NAME}
    measurements: dict[str, float] = {}
    omitted: list[str] = []
    for name, value in record.items():
        if value is None:
            continue
        if is_measurement(name, value):
            measurements[name] = value
        text = _dimension(value)
        if len(text) > MAX_PROPERTY_CHARS:
            omitted.append(name)
            continue
        attributes[f"usage_{name}" if name in _RESERVED else name] = text
    if measurements:
        attributes[MEASUREMENTS_ATTRIBUTE] = orjson.dumps(measurements).decode("utf-8")
    if omitted:
        attributes["omitted_fields"] = ",".join(omitted)
    return attributes


class AppInsightsUsageSink:
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(USAGE_LOGGER)
        # Loggers default to WARNING; the event is logged at INFO and must reach the exporter.
        if not self.logger.isEnabledFor(logging.INFO):
            self.logger.setLevel(logging.INFO)

    @classmethod
    def for_settings(cls, settings: Settings) -> AppInsightsUsageSink:
        return cls(logging.getLogger(usage_logger_name(settings.appinsights_logger_name)))

    async def emit(self, record: UsageRecord) -> None:
        attributes = event_attributes(record)
        if "omitted_fields" in attributes:
            _log.warning(
                "usage record %s: fields over %d characters left out of the AOAIUsage event: %s",
                record.get("request_id"),
                MAX_PROPERTY_CHARS,
                attributes["omitted_fields"],
            )
        with _unsampled_trace_detached():
            self.logger.info(EVENT_NAME, extra=attributes)

    async def close(self) -> None:
        return None


@contextmanager
def _unsampled_trace_detached() -> Iterator[None]:
    """Log outside the current span when that span was sampled out.

    With trace-based sampling for logs on, the exporter drops logs tied to an unsampled trace;
    usage records are an audit trail and must never be sampled, so in that case they give up the
    correlation instead. Sampled (or absent) traces keep it.
    """
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid or span_context.trace_flags.sampled:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(trace.INVALID_SPAN))
    try:
        yield
    finally:
        otel_context.detach(token)


def configure_azure_monitor_once(settings: Settings) -> bool:
    """Set up the Azure Monitor distro for this process unless someone already did.

    In Azure, PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true makes the Functions worker configure
    it (configuring again would send everything twice). Returns True when this call configured it.
    """
    if settings.appinsights_worker_telemetry or not settings.appinsights_connection_string:
        return False
    from opentelemetry._logs import get_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider

    if isinstance(get_logger_provider(), LoggerProvider):
        return False  # an SDK logger provider is already installed (the worker, or an earlier call)
    from azure.monitor.opentelemetry import configure_azure_monitor

    # The distro's default sampler is a rate limit (5 traces/s) that decides span by span: a gateway
    # sends far more, and a CLIENT span dropped while its SERVER span is kept breaks the trace. Keep
    # every span unless the operator chose a sampler (OTEL_TRACES_SAMPLER, docs/telemetry.md).
    sampling: dict[str, float] = {} if settings.otel_traces_sampler else {"sampling_ratio": 1.0}
    configure_azure_monitor(
        **sampling,
        connection_string=settings.appinsights_connection_string,
        logger_name=settings.appinsights_logger_name,
        # Logs are never sampled by trace (the default; stated because usage events are audit data).
        enable_trace_based_sampling_for_logs=False,
    )
    return True
