"""Local subscription keys in the dev host: the APIM front door, locally."""

import pytest

from devhost.subscriptions import authorize, key_from, new_local_key, parse_subscriptions
from shared.errors import ConfigurationError, Unauthorized

SUBS = parse_subscriptions('{"key-a": {"id": "team-a", "name": "Team A", "product": "standard"}, "key-b": {"id": "b"}}')


def test_parse_fills_defaults():
    assert SUBS["key-a"].name == "Team A" and SUBS["key-b"].name == "b" and SUBS["key-b"].product == "standard"
    assert parse_subscriptions("") == {}


@pytest.mark.parametrize("raw", ["{", "[]", '{"k": {"name": "no id"}}', '{"": {"id": "x"}}'])
def test_parse_rejects_bad_config(raw):
    with pytest.raises(ConfigurationError, match="LOCAL_SUBSCRIPTIONS"):
        parse_subscriptions(raw)


def test_key_from_api_key_or_bearer():
    assert key_from([("Api-Key", "k1")]) == "k1"
    assert key_from([("authorization", "Bearer k2")]) == "k2"
    assert key_from([("authorization", "Basic x")]) is None
    assert key_from([]) is None


def test_authorize_sets_identity_and_drops_client_supplied_gateway_headers():
    headers = authorize(
        SUBS,
        [("api-key", "key-a"), ("x-gateway-subscription-id", "forged"), ("X-Gateway-Product", "premium")],
        "10.0.0.1",
    )
    d = dict(headers)
    assert d["x-gateway-subscription-id"] == "team-a" and d["x-gateway-product"] == "standard"
    assert d["x-gateway-subscription-name"] == "Team A" and d["x-gateway-client-ip"] == "10.0.0.1"
    assert len(d["x-gateway-request-id"]) == 36
    assert ("X-Gateway-Product", "premium") not in headers and ("x-gateway-subscription-id", "forged") not in headers


@pytest.mark.parametrize("headers", [[], [("api-key", "nope")], [("authorization", "Bearer nope")]])
def test_missing_or_unknown_key_is_401(headers):
    with pytest.raises(Unauthorized) as err:
        authorize(SUBS, headers, None)
    assert err.value.status == 401 and "subscription key" in err.value.message


def test_new_local_keys_are_unique():
    assert new_local_key() != new_local_key()
