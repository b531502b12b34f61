import pytest

from proxy.routing.backends import parse_backends, serving
from shared.errors import ConfigurationError


def test_parses_backends_with_defaults_and_maps():
    backends = parse_backends(
        '[{"name": "a", "endpoint": "https://a.openai.azure.com/", "auth": {"type": "managed_identity"}, "deployments": ["gpt-4o"]},'
        ' {"name": "b", "endpoint": "https://b.openai.azure.com", "auth": {"type": "api_key", "setting": "B_KEY"},'
        '  "deployments": [], "deployment_map": {"gpt-4o": "gpt-4o-prod"}, "priority": 2, "weight": 3}]'
    )
    a, b = backends
    assert a.endpoint == "https://a.openai.azure.com" and a.priority == 1 and a.weight == 1
    assert b.serves("gpt-4o") and b.upstream_deployment("gpt-4o") == "gpt-4o-prod"
    assert b.auth.api_key({"B_KEY": "k"}) == "k"
    assert [x.name for x in serving(backends, "gpt-4o")] == ["a", "b"]
    assert serving(backends, "other") == []


def test_wildcard_serves_every_deployment():
    (b,) = parse_backends(
        '[{"name": "a", "endpoint": "http://127.0.0.1:1", "auth": {"type": "api_key", "value": "x"}, "deployments": ["*"]}]'
    )
    assert b.serves("anything") and b.serves(None)
    assert "x" not in repr(b)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('[{"name": "a", "endpoint": "ftp://x", "deployments": ["*"]}]', r"GATEWAY_BACKENDS\[0\] \('a'\): 'endpoint'"),
        ('[{"name": "a", "endpoint": "https://x", "deployments": ["*"], "auth": {"type": "magic"}}]', "auth type"),
        ('[{"name": "a", "endpoint": "https://x", "deployments": ["*"], "weight": 0}]', "'weight'"),
        ('[{"endpoint": "https://x", "deployments": ["*"]}]', "'name' is required"),
        ('[{"name": "a", "endpoint": "https://x"}]', "serves no deployment"),
        ("{", "not valid JSON"),
    ],
)
def test_invalid_configuration_names_the_bad_entry(raw, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_backends(raw)
