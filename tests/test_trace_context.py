"""Trace context: AOAI gets the caller's trace with the attempt's own span as parent, and the record
keeps the trace id."""

from __future__ import annotations

import pytest

from devhost.simulator import SimulatorConfig, serve
from shared.normalize.usage import normalize
from shared.telemetry.tracecontext import child_traceparent, trace_id_from
from tests.test_gateway_overhead import BODY, CHAT, _proxy

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (TRACEPARENT, TRACE),
        (f"  {TRACEPARENT} ", TRACE),
        (f"01-{TRACE}-00f067aa0ba902b7-01-extra", TRACE),  # a later version may add fields
        (f"00-{TRACE}-00f067aa0ba902b7-01-extra", None),  # version 00 may not
        (f"ff-{TRACE}-00f067aa0ba902b7-01", None),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", None),
        (f"00-{TRACE}-" + "0" * 16 + "-01", None),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", None),
        ("garbage", None),
        ("", None),
        (None, None),
    ],
)
def test_trace_id_from_traceparent(header, expected):
    assert trace_id_from(header) == expected


async def test_the_attempt_continues_the_trace_upstream_and_the_record_keeps_it():
    async with serve(SimulatorConfig()) as sim:
        proxy, ports, client = _proxy(sim.url)
        r = await client.post(CHAT, json=BODY, headers={"traceparent": TRACEPARENT, "tracestate": "apim=1"})
        assert r.status_code == 200
        upstream = {k.lower(): v for k, v in sim.requests[-1].headers.items()}
        version, trace, parent, flags = upstream["traceparent"].split("-")
        assert (version, trace, flags) == ("00", TRACE, "01") and upstream["tracestate"] == "apim=1"
        assert parent != "00f067aa0ba902b7" and parent != "0" * 16  # the attempt's own span, not the caller's
        await proxy.capture.drain()
        exchange = await ports.exchanges.load(ports.channel.published[0])
        assert [a.span_id for a in exchange.attempts] == [parent]  # the parser's CLIENT span gets this id
        record, _ = normalize(exchange)
        assert record["trace_id"] == TRACE
        await proxy.aclose()


def test_child_traceparent():
    header, span_id = child_traceparent(TRACEPARENT)
    assert header == f"00-{TRACE}-{span_id}-01" and len(span_id) == 16 and span_id != "00f067aa0ba902b7"
    assert child_traceparent(f"00-{TRACE}-00f067aa0ba902b7-00")[0].endswith("-00")  # sampling flag kept
    assert child_traceparent("garbage") is None and child_traceparent(None) is None


async def test_no_traceparent_no_trace_id():
    async with serve(SimulatorConfig()) as sim:
        proxy, ports, client = _proxy(sim.url)
        await client.post(CHAT, json=BODY)
        assert "traceparent" not in {k.lower() for k in sim.requests[-1].headers}
        await proxy.capture.drain()
        exchange = await ports.exchanges.load(ports.channel.published[0])
        assert [a.span_id for a in exchange.attempts] == [None]
        record, _ = normalize(exchange)
        assert record["trace_id"] is None
        await proxy.aclose()
