"""Azure Monitor and OTLP at once, through the production wiring: the Azure Monitor distro's own
exporter posts to a local ingestion endpoint (the connection string's `IngestionEndpoint`), the
OTLP exporter to a local collector, and both receive the same spans and metrics; the usage record
reaches the ingestion endpoint as the `AOAIUsage` custom event. Nothing is a double here but the
two receivers, which only record what they are sent. The pipeline runs in a child process because
OpenTelemetry's global providers can be set once per process."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parents[1]


class Ingestion(BaseHTTPRequestHandler):
    """Application Insights' track endpoint as far as the exporter sees it: accept every item."""

    envelopes: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        items = json.loads(body) if self.path == "/v2.1/track" else []
        Ingestion.envelopes.extend(items)
        answer = json.dumps({"itemsReceived": len(items), "itemsAccepted": len(items), "errors": []}).encode()
        self.send_response(200 if self.path == "/v2.1/track" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


class Collector(BaseHTTPRequestHandler):
    traces: list[ExportTraceServiceRequest] = []
    metrics: list[ExportMetricsServiceRequest] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        if self.path == "/v1/traces":
            Collector.traces.append(ExportTraceServiceRequest.FromString(body))
        elif self.path == "/v1/metrics":
            Collector.metrics.append(ExportMetricsServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _serve(handler) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    Ingestion.envelopes, Collector.traces, Collector.metrics = [], [], []
    ingestion, ingestion_url = _serve(Ingestion)
    collector, collector_url = _serve(Collector)
    env = {**os.environ, "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "PYTHONPATH": str(ROOT)}
    for name in (
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY",
    ):
        env.pop(name, None)
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "tests.telemetry_fanout_child",
                ingestion_url,
                collector_url,
                str(tmp_path_factory.mktemp("fanout")),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        ingestion.shutdown()
        collector.shutdown()
    assert done.returncode == 0, done.stderr[-3000:]
    return Ingestion.envelopes, Collector.traces, Collector.metrics


def _base(envelope: dict) -> tuple[str, dict]:
    data = envelope["data"]
    return data["baseType"], data["baseData"]


def test_application_insights_gets_the_server_and_client_spans(exported):
    envelopes, _, _ = exported
    by_type: dict[str, list[dict]] = {}
    for envelope in envelopes:
        kind, base = _base(envelope)
        by_type.setdefault(kind, []).append(base)
    requests = [r for r in by_type.get("RequestData", []) if r["properties"].get("gen_ai.provider.name")]
    dependencies = [d for d in by_type.get("RemoteDependencyData", []) if d["properties"].get("gen_ai.provider.name")]
    assert len(requests) == 1, by_type.keys()
    assert requests[0]["properties"]["gen_ai.response.id"] == "chatcmpl-otlp"
    assert len(dependencies) == 1
    # Application Map shows the AOAI account as the dependency's target, typed as a GenAI call.
    assert dependencies[0]["target"] == "east.openai.azure.com"
    assert dependencies[0]["type"] == "GenAI | azure.ai.openai"


def test_application_insights_gets_the_genai_metrics(exported):
    envelopes, _, _ = exported
    names = {m["name"] for e in envelopes if _base(e)[0] == "MetricData" for m in _base(e)[1]["metrics"]}
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration"} <= names


def test_application_insights_gets_the_usage_custom_event(exported):
    envelopes, _, _ = exported
    events = [_base(e)[1] for e in envelopes if _base(e)[0] == "EventData"]
    assert [e["name"] for e in events] == ["AOAIUsage"]
    assert events[0]["properties"]["request_id"] == "rid-otlp"
    assert events[0]["measurements"]["prompt_tokens"] == 9


def test_the_otlp_collector_gets_the_same_spans_and_metrics(exported):
    _, traces, metrics = exported
    spans = [s for req in traces for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
    gateway = [s for s in spans if any(a.key == "gen_ai.provider.name" for a in s.attributes)]
    assert sorted(s.kind for s in gateway) == [2, 3]  # one SERVER, one CLIENT
    names = {m.name for req in metrics for rm in req.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "gateway.request.overhead"} <= names
