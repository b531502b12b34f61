"""Shared fakes for routing tests: a settable clock and backends built from GATEWAY_BACKENDS JSON."""

from __future__ import annotations

import orjson

from proxy.routing.backends import Backend, parse_backends

WALL_START = 1_800_000_000.0


class FakeClock:
    """Monotonic and wall clock in one: tests move time on explicitly."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_START + (self.now - 1000.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


def backends(*specs: dict) -> tuple[Backend, ...]:
    items = [
        {
            "endpoint": f"https://{s['name']}.openai.azure.com",
            "auth": {"type": "api_key", "value": "secret-key"},
            "deployments": ["gpt-4o"],
            **s,
        }
        for s in specs
    ]
    return parse_backends(orjson.dumps(items).decode())
