"""Which telemetry pipeline this process uses, decided once at start-up.

- Azure Monitor: when APPLICATIONINSIGHTS_CONNECTION_STRING is set (or the Functions worker
  configured it), the distro's global tracer and meter providers carry the spans and metrics
  (requests, dependencies and customMetrics in Application Insights).
- OTLP: when OTEL_EXPORTER_OTLP_ENDPOINT is set, spans and metrics also go to that collector
  (OTLP over HTTP/protobuf; the exporter reads the standard OTEL_EXPORTER_OTLP_* variables).
- Console: GATEWAY_OTEL_CONSOLE=true prints them (what `python -m devhost --otel console` sets).

With none of these, nothing is installed and `observe` returns at once (telemetry off costs one
attribute check per record, in the parser; the proxy never does telemetry work).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from shared.errors import ConfigurationError
from shared.exchange import Exchange
from shared.settings import Settings, parse_json
from shared.telemetry import genai, ids
from shared.telemetry.spans import SCOPE, GenAITelemetry

log = logging.getLogger(__name__)

_current: GenAITelemetry | None = None


def install(telemetry: GenAITelemetry | None) -> None:
    """Use `telemetry` for every record from now on (None turns it off)."""
    global _current
    _current = telemetry


def current() -> GenAITelemetry | None:
    return _current


def observe(exchange: Exchange, record: Mapping[str, Any], details: Mapping[str, Any]) -> None:
    """The parser's hook: spans and metrics for one new record; never fails the record."""
    telemetry = _current
    if telemetry is None:
        return
    try:
        telemetry.observe(exchange, record, details)
    except Exception:  # telemetry is a copy; the record is already stored
        log.exception("telemetry for %s failed", record.get("request_id"))


def backend_endpoints(backends_json: str) -> dict[str, str]:
    """Backend name -> endpoint (the `server.address` of spans), from GATEWAY_BACKENDS' declared shape."""
    try:
        return {entry.name: entry.endpoint for entry in parse_json("GATEWAY_BACKENDS", backends_json)}
    except ConfigurationError:  # the app refuses these at start-up; telemetry never fails because of them
        return {}


def enabled(settings: Settings) -> bool:
    return bool(
        settings.appinsights_connection_string
        or settings.appinsights_worker_telemetry
        or settings.otel_exporter_otlp_endpoint
        or settings.otel_console
    )


def configure(settings: Settings) -> GenAITelemetry | None:
    """Install the pipeline the settings ask for (once per process); None when telemetry is off."""
    if _current is not None:
        return _current
    if not enabled(settings):
        return None
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracer_provider: Any = trace.get_tracer_provider()
    meter_provider: Any = metrics.get_meter_provider()
    if settings.otel_exporter_otlp_endpoint or settings.otel_console:
        readers: list[Any] = []
        if not isinstance(tracer_provider, TracerProvider):  # Azure Monitor absent: our own providers
            resource = Resource.create({"service.name": settings.extra.get("OTEL_SERVICE_NAME") or "aoai-gateway"})
            tracer_provider = TracerProvider(resource=resource)
            trace.set_tracer_provider(tracer_provider)
            own_meters = True
        else:
            resource, own_meters = None, False
        if settings.otel_exporter_otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/")
            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics")))
        if settings.otel_console:
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        if own_meters:
            meter_provider = MeterProvider(resource=resource, metric_readers=readers)
            metrics.set_meter_provider(meter_provider)
        elif readers:  # Azure Monitor owns the global meter provider; ours feeds the extra readers
            meter_provider = _Fanout(meter_provider, MeterProvider(metric_readers=readers))
    ids.install(tracer_provider)  # before get_tracer: client spans keep the ids the proxy sent upstream
    telemetry = GenAITelemetry(
        tracer_provider.get_tracer(SCOPE, schema_url=genai.SEMCONV_SCHEMA_URL),
        meter_provider.get_meter(SCOPE, schema_url=genai.SEMCONV_SCHEMA_URL),
        capture_content=settings.genai_capture_content,
        endpoints=backend_endpoints(settings.backends_json),
    )
    install(telemetry)
    return telemetry


class _Fanout:
    """Meters from two providers behind one `get_meter` (Azure Monitor plus OTLP/console)."""

    def __init__(self, *providers: Any) -> None:
        self.providers = providers

    def get_meter(self, name: str, schema_url: str | None = None) -> Any:
        return _FanoutMeter([p.get_meter(name, schema_url=schema_url) for p in self.providers])


class _FanoutMeter:
    def __init__(self, meters: list[Any]) -> None:
        self.meters = meters

    def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
        return _FanoutHistogram([m.create_histogram(*args, **kwargs) for m in self.meters])


class _FanoutHistogram:
    def __init__(self, histograms: list[Any]) -> None:
        self.histograms = histograms

    def record(self, value: float, attributes: Mapping[str, Any] | None = None) -> None:
        for histogram in self.histograms:
            histogram.record(value, attributes)
