import pytest

from proxy.routing.backends import parse_backends, serving, unusable
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
        (
            '[{"name": "a", "endpoint": "ftp://x", "deployments": ["*"]}]',
            "GATEWAY_BACKENDS[0] ('a'): 'endpoint' must be an http(s) URL, got 'ftp://x'",
        ),
        (
            '[{"name": "a", "endpoint": "https://x", "deployments": ["*"], "auth": {"type": "magic"}}]',
            "GATEWAY_BACKENDS[0] ('a'): 'auth.type' must be one of 'managed_identity', 'api_key', got 'magic'",
        ),
        (
            '[{"name": "a", "endpoint": "https://x", "deployments": ["*"], "weight": 0}]',
            "GATEWAY_BACKENDS[0] ('a'): 'weight' must be >= 1, got 0",
        ),
        ('[{"endpoint": "https://x", "deployments": ["*"]}]', "GATEWAY_BACKENDS[0]: 'name' is required"),
        (
            '[{"name": "a", "endpoint": "https://x"}]',
            "GATEWAY_BACKENDS[0] ('a'): serves no deployment: list 'deployments' (or [\"*\"]) or a 'deployment_map'",
        ),
        ("{", "GATEWAY_BACKENDS: not valid JSON: unexpected end of data: line 1 column 2 (char 1)"),
        # A misspelt key inside an entry is an error naming the closest known key.
        (
            '[{"name": "a", "endpont": "https://x", "deployments": ["*"]}]',
            "GATEWAY_BACKENDS[0] ('a'): unknown key 'endpont' (did you mean 'endpoint'?)",
        ),
        (
            '[{"name": "a", "endpoint": "https://x", "deployments": ["*"], "auth": {"type": "api_key", "settings": "K"}}]',
            "GATEWAY_BACKENDS[0] ('a'): 'auth' unknown key 'settings' (did you mean 'setting'?)",
        ),
    ],
)
def test_invalid_configuration_names_the_bad_entry(raw, message):
    with pytest.raises(ConfigurationError) as caught:
        parse_backends(raw)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("endpoint", "env", "message"),
    [
        (
            "https://<your-resource>.openai.azure.com",
            {},
            "GATEWAY_BACKENDS[0] ('east'): endpoint https://<your-resource>.openai.azure.com is a placeholder: "
            "set your Azure OpenAI account's endpoint",
        ),
        (
            "https://example.openai.azure.com",
            {},
            "GATEWAY_BACKENDS[0] ('east'): endpoint https://example.openai.azure.com is a placeholder: "
            "set your Azure OpenAI account's endpoint",
        ),
        (
            "https://east.openai.azure.com",
            {},
            "GATEWAY_BACKENDS[0] ('east'): auth.setting 'AOAI_EAST_KEY' names an app setting that is not set",
        ),
        ("https://east.openai.azure.com", {"AOAI_EAST_KEY": "k"}, None),
    ],
)
def test_backends_that_cannot_serve_are_refused_at_start_up(endpoint, env, message):
    backends = parse_backends(
        f'[{{"name": "east", "endpoint": "{endpoint}", "auth": {{"type": "api_key", "setting": "AOAI_EAST_KEY"}},'
        ' "deployments": ["*"]}]'
    )
    assert unusable(backends, env) == message
