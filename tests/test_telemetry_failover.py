"""GenAI-convention spans for a failed-over call and a blocked (429) call, through a dev host with two
backends in priority order (caught by in-memory exporters, see tests/test_telemetry_genai.py)."""

from __future__ import annotations

import pytest
from opentelemetry.trace import StatusCode

from devhost.simulator import SimulatorConfig
from tests.devhost_harness import dev_host
from tests.test_telemetry_genai import CHAT, CLIENT_KEY, UPSTREAM_KEY, Gateway, _split, _trace, otel  # noqa: F401


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two backends in priority order: `east` always fails with 500 (or throttles), `west` serves."""
    with dev_host(
        tmp_path_factory.mktemp("otel-fo"),
        {CLIENT_KEY: {"id": "team-otel", "name": "Team OTel", "product": "gold"}},
        {
            "east": SimulatorConfig(api_key=UPSTREAM_KEY, fail_statuses=(500,), deployments=["gpt-4o"]),
            "west": SimulatorConfig(api_key=UPSTREAM_KEY, throttle_rate=0.0),
        },
        backend_options={"east": {"priority": 1}, "west": {"priority": 2}},
        gateway=Gateway,
    ) as gateway:
        yield gateway


def test_failed_over_call(pair, otel):
    r = pair.post(CHAT, {"messages": [{"role": "user", "content": "hi"}]}, _trace(5))
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
    server, (first, second) = _split(otel.for_trace(_trace(5)))
    assert server.attributes["gateway.attempts"] == 2 and server.attributes["gateway.backend"] == "west"
    assert first.attributes["gateway.backend"] == "east" and first.attributes["error.type"] == "server_error"
    assert first.attributes["http.response.status_code"] == 500 and first.status.status_code == StatusCode.ERROR
    assert second.attributes["gateway.backend"] == "west" and "error.type" not in second.attributes
    assert first.end_time <= second.start_time
    assert "error.type" not in server.attributes


def test_blocked_429_call(pair, otel):
    # the simulator's x-sim-status reaches both backends: every one throttles, the 429 passes through
    r = pair.post(
        CHAT.replace("gpt-4o", "gpt-4o-mini"),
        {"messages": [{"role": "user", "content": "hi"}]},
        _trace(6),
        **{"x-sim-status": "429"},
    )
    assert r.status_code == 429
    server, clients = _split(otel.for_trace(_trace(6)))
    assert server.attributes["error.type"] and server.status.status_code == StatusCode.ERROR
    assert server.attributes["http.response.status_code"] == 429
    assert all(c.attributes["error.type"] for c in clients) and clients
    assert "gen_ai.usage.input_tokens" not in server.attributes or server.attributes["gateway.usage_source"] != "none"
    (duration,) = otel.points("gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == server.attributes["error.type"]
