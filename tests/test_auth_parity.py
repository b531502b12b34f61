"""The dev host accepts a subscription key in the same places as APIM (policies/fragments/gateway-bearer.xml,
the API's `api-key` header and query parameter): the official OpenAI client on the v1 surface, which sends
only `Authorization: Bearer <key>`, the Azure client's `api-key` header, and `?api-key=`."""

from __future__ import annotations

import httpx
import openai
import pytest

from devhost.simulator import SimulatorConfig
from devhost.subscriptions import authorize, parse_subscriptions
from shared.errors import Unauthorized
from tests.devhost_harness import dev_host

CLIENT_KEY = "client-key-parity"
UPSTREAM_KEY = "upstream-key-parity"
SUBS = {CLIENT_KEY: {"id": "team-a", "name": "Team A", "product": "standard"}}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def test_query_key_is_accepted_and_header_wins():
    subs = parse_subscriptions('{"k1": {"id": "a"}, "k2": {"id": "b"}}')
    got = dict(authorize(subs, [], None, "api-version=v1&api-key=k1"))
    assert got["x-gateway-subscription-id"] == "a"
    got = dict(authorize(subs, [("api-key", "k2")], None, "api-key=k1"))
    assert got["x-gateway-subscription-id"] == "b"
    got = dict(authorize(subs, [("authorization", "Bearer k2")], None, "api-key=k1"))
    assert got["x-gateway-subscription-id"] == "a"
    with pytest.raises(Unauthorized):
        authorize(subs, [], None, "api-key=nope")
    with pytest.raises(Unauthorized):
        authorize(subs, [], None, "api-key=")


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with dev_host(tmp_path_factory.mktemp("auth"), SUBS, {"sim": SimulatorConfig(api_key=UPSTREAM_KEY)}) as gateway:
        yield gateway


def test_openai_client_with_bearer_key_on_v1(gw):
    client = openai.OpenAI(base_url=f"{gw.url}/openai/v1", api_key=CLIENT_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(**CHAT)
    assert raw.http_response.status_code == 200
    logged = gw.sim.requests[-1]
    headers = {k.lower(): v for k, v in logged.headers.items()}
    assert CLIENT_KEY not in str(headers) and headers.get("api-key") == UPSTREAM_KEY


def test_query_api_key_on_both_surfaces(gw):
    for url in (
        f"{gw.url}/openai/v1/chat/completions?api-key={CLIENT_KEY}",
        f"{gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21&api-key={CLIENT_KEY}",
    ):
        r = httpx.post(url, json=CHAT, timeout=10)
        assert r.status_code == 200, r.text
        logged = gw.sim.requests[-1]
        assert "api-key" not in logged.query and CLIENT_KEY not in str(logged.query)
        gw.settle()
        exchange = gw.exchange(r.headers["x-gateway-request-id"])
        assert CLIENT_KEY.encode() not in exchange.to_json()


def test_wrong_or_missing_key_is_401(gw):
    assert httpx.post(f"{gw.url}/openai/v1/chat/completions?api-key=wrong", json=CHAT).status_code == 401
    assert (
        httpx.post(
            f"{gw.url}/openai/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer wrong"}
        ).status_code
        == 401
    )
    assert httpx.post(f"{gw.url}/openai/v1/chat/completions", json=CHAT).status_code == 401


def test_the_host_emulation_counts_its_cpu_for_requests_it_lets_through_only(gw):
    """`/_devhost/cpu` (devhost/runtime/emulation.py): the CPU the dev host spends as the Functions
    host, for the bench to report apart from the app's; a request the key check refuses never
    reaches the app and is not counted."""
    before = httpx.get(f"{gw.url}/_devhost/cpu", timeout=10).json()
    assert httpx.post(f"{gw.url}/openai/v1/chat/completions?api-key=wrong", json=CHAT, timeout=10).status_code == 401
    for _ in range(3):
        r = httpx.post(f"{gw.url}/openai/v1/chat/completions", json=CHAT, headers={"api-key": CLIENT_KEY}, timeout=10)
        assert r.status_code == 200, r.text
    after = httpx.get(f"{gw.url}/_devhost/cpu", timeout=10).json()
    assert after["requests"] - before["requests"] == 3
    spent = after["emulation_cpu_s"] - before["emulation_cpu_s"]
    assert 0 < spent < 0.5, spent  # the host's part of three requests: microseconds, not the requests' whole
    gw.settle()
