"""Trace context: the caller's `traceparent` reaches AOAI unchanged and its trace id is in the record."""

from __future__ import annotations

import pytest

from devhost.simulator import SimulatorConfig, serve
from shared.normalize.usage import normalize
from shared.telemetry.tracecontext import trace_id_from
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


async def test_traceparent_is_forwarded_upstream_and_recorded():
    async with serve(SimulatorConfig()) as sim:
        proxy, ports, client = _proxy(sim.url)
        r = await client.post(CHAT, json=BODY, headers={"traceparent": TRACEPARENT, "tracestate": "apim=1"})
        assert r.status_code == 200
        upstream = {k.lower(): v for k, v in sim.requests[-1].headers.items()}
        assert upstream["traceparent"] == TRACEPARENT and upstream["tracestate"] == "apim=1"
        await proxy.capture.drain()
        record, _ = normalize(await ports.exchanges.load(ports.channel.published[0]))
        assert record["trace_id"] == TRACE
        await proxy.aclose()


async def test_no_traceparent_no_trace_id():
    async with serve(SimulatorConfig()) as sim:
        proxy, ports, client = _proxy(sim.url)
        await client.post(CHAT, json=BODY)
        await proxy.capture.drain()
        record, _ = normalize(await ports.exchanges.load(ports.channel.published[0]))
        assert record["trace_id"] is None
        await proxy.aclose()
