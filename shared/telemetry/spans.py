"""Spans and metrics for one proxied call, emitted once its usage record exists (in the parser).

Where spans are finished: the proxy knows timings and backends, the parser knows tokens and cost.
Both are in the stored exchange, so the parser emits the whole trace segment at once, with the
proxy's measured times as explicit start/end timestamps: one SERVER span for the gateway request
(parented to the caller's `traceparent`, so APIM → gateway → AOAI is one trace) and one CLIENT
span per upstream attempt, with the span id the proxy already named as AOAI's parent in that
attempt's `traceparent` (`shared/telemetry/ids.py`). The proxy's hot path does no telemetry work
beyond drawing that id.

Attempt start times are reconstructed: attempts run one after another and the served (or last)
one ends when the proxy got its response head, so each attempt ends where the next began.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.metrics import Histogram, Meter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer

from shared.exchange import Exchange
from shared.telemetry import genai, ids

SCOPE = "aoai-gateway"
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: Finer buckets for the gateway's own time (milliseconds matter here).
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class GenAITelemetry:
    """Emits the spans and metrics of one exchange + record through the given tracer and meter."""

    def __init__(
        self, tracer: Tracer, meter: Meter, *, capture_content: bool = False, endpoints: Mapping[str, str] | None = None
    ) -> None:
        self.tracer = tracer
        self.capture_content = capture_content
        #: backend name -> endpoint URL, for `server.address`/`server.port` of client spans.
        self.endpoints = dict(endpoints or {})
        self.tokens: Histogram = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self.duration: Histogram = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.first_chunk: Histogram = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed answer.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.per_chunk: Histogram = meter.create_histogram(
            "gen_ai.client.operation.time_per_output_chunk",
            unit="s",
            description="Time per output token after the first, for streamed answers.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.overhead: Histogram = meter.create_histogram(
            "gateway.request.overhead",
            unit="s",
            description="Time the gateway added before the first byte (x-gateway-overhead-ms).",
            explicit_bucket_boundaries_advisory=list(OVERHEAD_BUCKETS),
        )

    # ------------------------------------------------------------------------------------------
    def observe(self, exchange: Exchange, record: Mapping[str, Any], details: Mapping[str, Any]) -> None:
        request = _mapping(details.get("request"))
        response = _mapping(details.get("response"))
        common = genai.common_attributes(record)
        start_ns = _epoch_ns(exchange.timings.received_at)
        end_ns = start_ns + _ns(exchange.timings.last_byte_ms or 0.0)
        answered = genai.response_attributes(record, response)
        server_attrs = {
            **common,
            **genai.request_attributes(request),
            **answered,
            **genai.gateway_attributes(record),
            "http.request.method": exchange.request.method,
            "http.response.status_code": int(record.get("status_code") or 0),
            "url.path": exchange.request.path,
        }
        parent = _parent_context(record.get("trace_id"), exchange.request.headers)
        name = f"{common['gen_ai.operation.name']} {record.get('deployment') or ''}".strip()
        server = self.tracer.start_span(
            name, context=parent, kind=SpanKind.SERVER, attributes=server_attrs, start_time=start_ns
        )
        if "error.type" in common:
            server.set_status(Status(StatusCode.ERROR, common["error.type"]))
        # Content only where the audience keeps bodies at all (capture level `full`), and opted in.
        if self.capture_content and record.get("capture_level", "full") == "full":
            _content_events(server, request, response, end_ns)
        self._attempt_spans(exchange, common, answered, request, server, start_ns)
        server.end(end_time=end_ns)
        self._metrics(exchange, record, common)

    def _attempt_spans(
        self,
        exchange: Exchange,
        common: dict[str, Any],
        answered: dict[str, Any],
        request: Mapping[str, Any],
        server: trace.Span,
        start_ns: int,
    ) -> None:
        attempts = exchange.attempts
        head_ms = exchange.timings.upstream_first_byte_ms or exchange.timings.last_byte_ms or 0.0
        ends: list[float] = []
        end = head_ms
        for attempt in reversed(attempts):
            ends.append(end)
            end = max(0.0, end - attempt.duration_ms)
        ends.reverse()
        ctx = trace.set_span_in_context(server)
        last = exchange.timings.last_byte_ms or head_ms
        for index, (attempt, attempt_end) in enumerate(zip(attempts, ends, strict=True)):
            served = attempt.outcome == "served"
            attrs: dict[str, Any] = {
                "gen_ai.operation.name": common["gen_ai.operation.name"],
                "gen_ai.provider.name": genai.PROVIDER,
                **genai.request_attributes(request),
                "gateway.backend": attempt.backend,
                "gateway.attempt": index + 1,
                "gateway.attempt.outcome": attempt.outcome,
            }
            if "gen_ai.request.model" in common:
                attrs["gen_ai.request.model"] = common["gen_ai.request.model"]
            address = _server_address(self.endpoints.get(attempt.backend))
            attrs.update(address)
            # Azure Monitor's exporter names a dependency's type from the older `gen_ai.system` and
            # its target from `peer.service`; without them the AOAI call shows as type "N/A", no target.
            attrs["gen_ai.system"] = genai.PROVIDER
            if address:
                attrs["peer.service"] = address["server.address"]
            if attempt.status is not None:
                attrs["http.response.status_code"] = attempt.status
            if served:
                attrs.update({k: v for k, v in common.items() if k.startswith("gen_ai.response")})
                attrs.update(answered)
            if served:
                error = common.get("error.type")
            else:  # why the proxy moved on: its outcome ("throttled", "timeout", ...) or the status
                error = attempt.outcome if attempt.outcome != "served" else str(attempt.status)
            if error:
                attrs["error.type"] = error
            name = f"{common['gen_ai.operation.name']} {common.get('gen_ai.request.model', '')}".strip()
            with ids.preset_span_id(attempt.span_id):  # the id AOAI was told is its parent
                span = self.tracer.start_span(
                    name,
                    context=ctx,
                    kind=SpanKind.CLIENT,
                    attributes=attrs,
                    start_time=start_ns + _ns(attempt_end - attempt.duration_ms),
                )
            if error:
                span.set_status(Status(StatusCode.ERROR, error))
            # The served attempt lasts until its body ended; a failed one until the proxy moved on.
            span.end(end_time=start_ns + _ns(last if served else attempt_end))

    def _metrics(self, exchange: Exchange, record: Mapping[str, Any], common: dict[str, Any]) -> None:
        attrs = {
            k: v
            for k, v in common.items()
            if k
            in (
                "gen_ai.operation.name",
                "gen_ai.provider.name",
                "gen_ai.request.model",
                "gen_ai.response.model",
                "error.type",
            )
        }
        if record.get("backend"):
            attrs.update(_server_address(self.endpoints.get(record["backend"])))
        latency = record.get("latency_ms")
        if isinstance(latency, (int, float)):
            self.duration.record(latency / 1000, attrs)
        if record.get("usage_source") != "none":
            self.tokens.record(int(record.get("prompt_tokens") or 0), {**attrs, "gen_ai.token.type": "input"})
            if common["gen_ai.operation.name"] != "embeddings":
                self.tokens.record(int(record.get("completion_tokens") or 0), {**attrs, "gen_ai.token.type": "output"})
        ttft = record.get("ttft_ms")
        if record.get("stream") and "error.type" not in attrs and isinstance(ttft, (int, float)):
            self.first_chunk.record(ttft / 1000, attrs)
            output = int(record.get("completion_tokens") or 0)
            if output > 1 and isinstance(latency, (int, float)) and latency >= ttft:
                self.per_chunk.record((latency - ttft) / 1000 / (output - 1), attrs)
        overhead = record.get("gateway_overhead_ms")
        if isinstance(overhead, (int, float)):
            self.overhead.record(overhead / 1000, {k: attrs[k] for k in ("gen_ai.operation.name",) if k in attrs})


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


def _epoch_ns(received_at: str) -> int:
    return int(datetime.fromisoformat(received_at.replace("Z", "+00:00")).timestamp() * 1_000_000_000)


def _server_address(endpoint: str | None) -> dict[str, Any]:
    if not endpoint:
        return {}
    parts = urlsplit(endpoint)
    if not parts.hostname:
        return {}
    return {"server.address": parts.hostname, "server.port": parts.port or (443 if parts.scheme == "https" else 80)}


def _parent_context(trace_id: Any, headers: Any) -> Any:
    """The caller's span as parent (from `traceparent`), or None to start a fresh trace."""
    if not isinstance(trace_id, str) or not isinstance(headers, Mapping):
        return None
    parts = str(headers.get("traceparent", "")).strip().split("-")
    try:
        span_id, flags = int(parts[2], 16), int(parts[3][:2], 16)
    except (IndexError, ValueError):
        return None
    ctx = SpanContext(int(trace_id, 16), span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def _content_events(span: trace.Span, request: Mapping[str, Any], response: Mapping[str, Any], at_ns: int) -> None:
    """Opt-in message content, as the conventions' `gen_ai.client.inference.operation.details` event."""
    import orjson  # noqa: PLC0415

    attributes: dict[str, Any] = {}
    messages = request.get("messages") if request.get("messages") is not None else request.get("input")
    if messages is not None:
        attributes["gen_ai.input.messages"] = orjson.dumps(messages).decode()
    output = response.get("choices") if response.get("choices") is not None else response.get("output")
    if output is not None:
        attributes["gen_ai.output.messages"] = orjson.dumps(output).decode()
    if attributes:
        span.add_event("gen_ai.client.inference.operation.details", attributes, timestamp=at_ns)
