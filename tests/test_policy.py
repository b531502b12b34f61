import json
from pathlib import Path

import pytest

from proxy.routing.policy import RoutingPolicy
from shared.errors import ConfigurationError
from shared.settings import Settings

ROUTING_SETTINGS = [
    "GATEWAY_MAX_ATTEMPTS",
    "GATEWAY_RETRY_DEADLINE_SECONDS",
    "GATEWAY_CIRCUIT_FAILURES",
    "GATEWAY_CIRCUIT_WINDOW_SECONDS",
    "GATEWAY_CIRCUIT_COOLDOWN_SECONDS",
    "RESPONSES_AFFINITY_TTL_SECONDS",
]


def test_defaults():
    policy = RoutingPolicy.from_settings(Settings.from_env({}))
    assert policy == RoutingPolicy()
    assert (policy.max_attempts, policy.deadline_seconds, policy.circuit_failures) == (3, 30.0, 5)
    assert policy.affinity_ttl_seconds == 30 * 24 * 3600


def test_reads_every_routing_setting():
    env = dict(zip(ROUTING_SETTINGS, ["5", "12.5", "2", "8", "45", "3600"], strict=False))
    policy = RoutingPolicy.from_settings(Settings.from_env(env))
    assert policy == RoutingPolicy(
        max_attempts=5,
        deadline_seconds=12.5,
        circuit_failures=2,
        circuit_window_seconds=8,
        circuit_cooldown_seconds=45,
        affinity_ttl_seconds=3600,
    )


def test_routing_settings_are_in_the_sample_settings_file():
    values = json.loads((Path(__file__).parents[1] / "local.settings.sample.json").read_text())["Values"]
    policy = RoutingPolicy.from_settings(Settings.from_env(values))
    assert all(name in values for name in ROUTING_SETTINGS)
    assert policy == RoutingPolicy()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("GATEWAY_MAX_ATTEMPTS", "0", "GATEWAY_MAX_ATTEMPTS"),
        ("GATEWAY_MAX_ATTEMPTS", "x", "must be an integer"),
        ("GATEWAY_RETRY_DEADLINE_SECONDS", "soon", "must be a number"),
        ("GATEWAY_CIRCUIT_FAILURES", "0", "GATEWAY_CIRCUIT_FAILURES"),
    ],
)
def test_bad_values_fail_naming_the_setting(name, value, message):
    with pytest.raises(ConfigurationError, match=message):
        RoutingPolicy.from_settings(Settings.from_env({name: value}))
