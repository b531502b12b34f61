"""GenAI-convention spans and metrics through the dev host (proxy → capture → parser), caught by
in-memory span and metric exporters: a streamed chat, an embedding, a Responses call, a
failed-over call and a blocked (429) call."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import function_app
from devhost.simulator import SimulatorConfig
from shared.telemetry import ids, setup
from shared.telemetry.spans import GenAITelemetry
from tests.devhost_harness import DevHostGateway, dev_host

CLIENT_KEY = "sk-team-otel-CLIENT-5252"
UPSTREAM_KEY = "upstream-otel-SECRET-5353"
TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        ids.install(tracer_provider)  # as setup.configure does
        self.reader = InMemoryMetricReader()
        meter_provider = MeterProvider(metric_readers=[self.reader])
        # The running dev host's backends (the gateway fixture comes first in each test's arguments).
        self.telemetry = GenAITelemetry(
            tracer_provider.get_tracer("test"),
            meter_provider.get_meter("test"),
            endpoints=setup.backend_endpoints(os.environ.get("GATEWAY_BACKENDS", "")),
        )

    def for_trace(self, trace_id: str) -> list[Any]:
        return [s for s in self.spans.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id]

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        out.extend(metric.data.data_points)
        return out


class Gateway(DevHostGateway):
    def post(self, path: str, body: dict[str, Any], trace_id: str, **headers: str) -> httpx.Response:
        parent = f"00-{trace_id}-b7ad6b7169203331-01"
        r = httpx.post(
            f"{self.url}{path}",
            json=body,
            timeout=30,
            headers={"api-key": CLIENT_KEY, "traceparent": parent, **headers},
        )
        self.settle()
        return r


@pytest.fixture
def otel():
    o = Otel()
    setup.install(o.telemetry)
    yield o
    setup.install(None)


def _trace(n: int) -> str:
    return f"{n:032x}"


def _split(spans):
    (server,) = [s for s in spans if s.kind == SpanKind.SERVER]
    clients = sorted((s for s in spans if s.kind == SpanKind.CLIENT), key=lambda s: s.attributes["gateway.attempt"])
    return server, clients


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with dev_host(
        tmp_path_factory.mktemp("otel"),
        {CLIENT_KEY: {"id": "team-otel", "name": "Team OTel", "product": "gold"}},
        {"sim": SimulatorConfig(api_key=UPSTREAM_KEY)},
        env={"INJECT_STREAM_USAGE": "true"},
        gateway=Gateway,
    ) as gateway:
        yield gateway


CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def test_streamed_chat(gw, otel):
    r = gw.post(
        CHAT,
        {
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": 50,
            "temperature": 0.5,
            "top_p": 0.9,
        },
        _trace(1),
    )
    assert r.status_code == 200
    record = gw.call(function_app.ports().records.get(r.headers["x-gateway-request-id"]))
    assert record["trace_id"] == _trace(1)
    server, (client,) = _split(otel.for_trace(_trace(1)))
    assert server.parent.span_id == 0xB7AD6B7169203331 and server.parent.is_remote  # continues the caller's trace
    assert client.parent.span_id == server.context.span_id
    # AOAI was told this very span is its parent (the exchange keeps the id the attempt sent upstream).
    exchange = gw.call(function_app.ports().exchanges.load(r.headers["x-gateway-request-id"]))
    assert f"{client.context.span_id:016x}" == exchange.attempts[0].span_id
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "azure.ai.openai"
    assert a["gen_ai.request.model"] == "gpt-4o" and a["gen_ai.response.model"] == record["model"]
    assert (
        a["gen_ai.request.max_tokens"] == 50
        and a["gen_ai.request.temperature"] == 0.5
        and a["gen_ai.request.top_p"] == 0.9
    )
    assert a["gen_ai.response.id"].startswith("chatcmpl-")
    assert list(a["gen_ai.response.finish_reasons"]) == record["finish_reasons"]
    assert a["gen_ai.usage.input_tokens"] == record["prompt_tokens"] > 0
    assert a["gen_ai.usage.output_tokens"] == record["completion_tokens"] > 0
    assert a["gateway.subscription_id"] == "team-otel" and a["gateway.product"] == "gold"
    assert a["gateway.backend"] == "sim" and a["gateway.attempts"] == 1 and a["gateway.usage_source"] == "service"
    assert a["gateway.gateway_overhead_ms"] == float(r.headers["x-gateway-overhead-ms"])
    assert "error.type" not in a and server.status.status_code != StatusCode.ERROR
    c = client.attributes
    assert c["server.address"] == "127.0.0.1" and c["server.port"] == int(gw.sim.url.rsplit(":", 1)[1].strip("/"))
    assert c["gateway.attempt.outcome"] == "served" and c["gen_ai.usage.output_tokens"] == record["completion_tokens"]
    assert server.start_time <= client.start_time <= client.end_time <= server.end_time
    # no message content unless it is switched on
    assert not [e for s in (server, client) for e in s.events]
    tokens = {p.attributes["gen_ai.token.type"]: p for p in otel.points("gen_ai.client.token.usage")}
    assert tokens["input"].sum == record["prompt_tokens"] and tokens["output"].sum == record["completion_tokens"]
    assert otel.points("gen_ai.client.operation.duration")[0].count == 1
    (ttfc,) = otel.points("gen_ai.client.operation.time_to_first_chunk")
    assert ttfc.sum == pytest.approx(record["ttft_ms"] / 1000)
    assert otel.points("gen_ai.client.operation.time_per_output_chunk")[0].count == 1
    assert otel.points("gateway.request.overhead")[0].sum == pytest.approx(record["gateway_overhead_ms"] / 1000)


def test_embedding(gw, otel):
    r = gw.post(
        "/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21",
        {"input": ["one", "two"], "encoding_format": "float"},
        _trace(2),
    )
    assert r.status_code == 200
    server, (client,) = _split(otel.for_trace(_trace(2)))
    a = server.attributes
    assert a["gen_ai.operation.name"] == "embeddings" and a["gen_ai.usage.input_tokens"] > 0
    assert "gen_ai.usage.output_tokens" not in a and list(a["gen_ai.request.encoding_formats"]) == ["float"]
    assert server.name == "embeddings text-embedding-3-small"
    assert {p.attributes["gen_ai.token.type"] for p in otel.points("gen_ai.client.token.usage")} == {"input"}
    assert not otel.points("gen_ai.client.operation.time_to_first_chunk")  # not a stream


def test_responses(gw, otel):
    r = gw.post(
        "/openai/v1/responses", {"model": "gpt-4o", "input": "Tell me a story", "max_output_tokens": 40}, _trace(3)
    )
    assert r.status_code == 200
    server, (client,) = _split(otel.for_trace(_trace(3)))
    a = server.attributes
    assert a["gen_ai.operation.name"] == "chat" and a["gateway.api"] == "responses"
    assert a["gen_ai.request.max_tokens"] == 40 and a["gen_ai.response.id"] == r.json()["id"]
    assert a["gen_ai.usage.input_tokens"] == r.json()["usage"]["input_tokens"]
    assert a["gen_ai.usage.output_tokens"] == r.json()["usage"]["output_tokens"]


def test_content_is_an_opt_in_event(gw, otel):
    otel.telemetry.capture_content = True
    gw.post(CHAT, {"messages": [{"role": "user", "content": "secret plans"}]}, _trace(4))
    server, _ = _split(otel.for_trace(_trace(4)))
    (event,) = server.events
    assert event.name == "gen_ai.client.inference.operation.details"
    assert "secret plans" in event.attributes["gen_ai.input.messages"]


@pytest.mark.parametrize(("level", "events"), [("full", 1), ("redacted", 0), ("metadata", 0), ("none", 0)])
def test_content_events_only_at_capture_level_full(level, events):
    from shared.normalize.usage import normalize
    from tests.test_telemetry_otlp import _exchange

    o = Otel()
    o.telemetry.capture_content = True
    exchange = _exchange()
    record, details = normalize(exchange)
    record["capture_level"] = level
    o.telemetry.observe(exchange, record, details)
    (server,) = [s for s in o.spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(server.events) == events
