"""CPU cost of telemetry per request: `python -m bench.telemetry_cost`.

The proxy does no telemetry work on its hot path except `x-gateway-overhead-ms` (one subtraction
and a format); the spans and metrics are emitted by the parser from each new record. This measures
both in process CPU time (time.process_time), per request:
- the overhead header, in the proxy;
- `observe` with telemetry off (nothing installed: the parser's hook returns at once);
- `observe` with telemetry on: real SDK tracer and meter providers whose spans go to a batch
  processor with an exporter that drops them (export cost is off-thread in production too).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from proxy.telemetry import overhead_header
from shared.exchange import Attempt, CapturedRequest, CapturedResponse, Exchange, Timings
from shared.normalize.usage import normalize
from shared.telemetry import setup
from shared.telemetry.spans import GenAITelemetry


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _exchange() -> Exchange:
    body = {
        "id": "chatcmpl-1",
        "model": "gpt-4o-2024-08-06",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
    }
    return Exchange(
        request_id="rid",
        request=CapturedRequest(
            "POST",
            "/openai/deployments/gpt-4o/chat/completions",
            {"api-version": "2024-10-21"},
            {
                "content-type": "application/json",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            },
            {"messages": [{"role": "user", "content": "hi"}], "temperature": 0.2, "max_tokens": 40},
            "json",
            90,
        ),
        timings=Timings("2026-12-01T10:00:00.000Z", 120.0, 130.0, 1.5),
        response=CapturedResponse(200, {"content-type": "application/json"}, body, "json", 200),
        backend="east",
        attempts=[Attempt("east", 500, 40.0, "server_error"), Attempt("west", 200, 70.0, "served")],
    )


def _cpu_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 200)):
        fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e6


def main(n: int = 20_000) -> dict[str, float]:
    exchange = _exchange()
    record, details = normalize(exchange)
    attempts = exchange.attempts
    results = {"proxy overhead header": _cpu_us(lambda: overhead_header(131.2, attempts), n * 5)}
    setup.install(None)
    results["parser hook, telemetry off"] = _cpu_us(lambda: setup.observe(exchange, record, details), n * 5)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop(), max_queue_size=65536))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    setup.install(
        GenAITelemetry(
            tracer_provider.get_tracer("bench"),
            meter_provider.get_meter("bench"),
            endpoints={"east": "https://east.openai.azure.com", "west": "https://west.openai.azure.com"},
        )
    )
    try:
        results["parser hook, telemetry on (3 spans, 4 metric points)"] = _cpu_us(
            lambda: setup.observe(exchange, record, details), n
        )
    finally:
        setup.install(None)
        tracer_provider.shutdown()
    for name, us in results.items():
        print(f"{name:55s} {us:8.2f} µs CPU per request")
    return results


if __name__ == "__main__":
    main()
