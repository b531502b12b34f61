"""The OTLP pipeline end to end: `configure` with OTEL_EXPORTER_OTLP_ENDPOINT sends spans and
metrics over OTLP/HTTP to a small receiver in this test, which decodes the protobuf export requests
with opentelemetry-proto."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import metrics, trace
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from shared.exchange import Attempt, CapturedRequest, CapturedResponse, Exchange, Timings
from shared.normalize.usage import normalize
from shared.settings import Settings
from shared.telemetry import setup


class Receiver(BaseHTTPRequestHandler):
    traces: list[ExportTraceServiceRequest] = []
    metrics: list[ExportMetricsServiceRequest] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        assert self.headers["content-type"] == "application/x-protobuf"
        if self.path == "/v1/traces":
            Receiver.traces.append(ExportTraceServiceRequest.FromString(body))
        elif self.path == "/v1/metrics":
            Receiver.metrics.append(ExportMetricsServiceRequest.FromString(body))
        self.send_response(200 if self.path in ("/v1/traces", "/v1/metrics") else 404)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Receiver.traces, Receiver.metrics = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _exchange() -> Exchange:
    body = {
        "id": "chatcmpl-otlp",
        "model": "gpt-4o-2024-08-06",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    return Exchange(
        request_id="rid-otlp",
        request=CapturedRequest(
            "POST",
            "/openai/deployments/gpt-4o/chat/completions",
            {"api-version": "2024-10-21"},
            {"content-type": "application/json"},
            {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2},
            "json",
            60,
        ),
        timings=Timings(
            received_at="2026-12-01T10:00:00.000Z",
            upstream_first_byte_ms=120.0,
            last_byte_ms=130.0,
            gateway_overhead_ms=1.5,
        ),
        response=CapturedResponse(200, {"content-type": "application/json"}, body, "json", 200),
        backend="east",
        attempts=[Attempt("east", 200, 118.0, "served")],
    )


def test_spans_and_metrics_reach_an_otlp_receiver(receiver, monkeypatch):
    # The SDK's global providers can be set once per process; start from a clean slate for this test.
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", trace.Once())
    monkeypatch.setattr(metrics._internal, "_METER_PROVIDER", None)
    monkeypatch.setattr(metrics._internal, "_METER_PROVIDER_SET_ONCE", metrics._internal.Once())
    settings = Settings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver,
            "GATEWAY_BACKENDS": '[{"name": "east", "endpoint": "https://east.openai.azure.com", "deployments": ["*"]}]',
        }
    )
    setup.install(None)
    telemetry = setup.configure(settings)
    try:
        assert telemetry is not None
        exchange = _exchange()
        record, details = normalize(exchange)
        setup.observe(exchange, record, details)
        trace.get_tracer_provider().force_flush()
        metrics.get_meter_provider().force_flush()
    finally:
        setup.install(None)
        trace.get_tracer_provider().shutdown()
        metrics.get_meter_provider().shutdown()
    spans = [s for req in Receiver.traces for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    by_kind = {s.kind: s for s in spans}
    assert len(spans) == 2
    server = {a.key: a.value for a in by_kind[2].attributes}  # SPAN_KIND_SERVER
    client = {a.key: a.value for a in by_kind[3].attributes}  # SPAN_KIND_CLIENT
    assert server["gen_ai.provider.name"].string_value == "azure.ai.openai"
    assert server["gen_ai.response.id"].string_value == "chatcmpl-otlp"
    assert server["gen_ai.usage.input_tokens"].int_value == 9 and server["gen_ai.usage.output_tokens"].int_value == 3
    assert server["gen_ai.request.temperature"].double_value == 0.2
    assert client["server.address"].string_value == "east.openai.azure.com" and client["server.port"].int_value == 443
    assert by_kind[3].parent_span_id == by_kind[2].span_id
    names = {
        m.name for req in Receiver.metrics for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "gateway.request.overhead"} <= names


def test_telemetry_is_off_without_a_destination():
    setup.install(None)
    assert setup.configure(Settings.from_env({})) is None and setup.current() is None
