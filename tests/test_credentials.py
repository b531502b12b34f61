"""Upstream credentials: api keys from settings, managed-identity tokens cached and refreshed ahead."""

import asyncio
from types import SimpleNamespace

import pytest

from proxy.credentials import Credentials
from proxy.routing.backends import parse_backends
from shared.errors import ConfigurationError

BACKENDS = parse_backends(
    '[{"name": "mi", "endpoint": "https://a.openai.azure.com", "auth": {"type": "managed_identity"}, "deployments": ["*"]},'
    ' {"name": "key", "endpoint": "https://b.openai.azure.com", "auth": {"type": "api_key", "setting": "B_KEY"}, "deployments": ["*"]}]'
)


class FakeCredential:
    def __init__(self, clock):
        self.clock, self.calls, self.closed = clock, 0, False

    async def get_token(self, scope):
        self.calls += 1
        return SimpleNamespace(token=f"tok{self.calls}", expires_on=self.clock() + 3600)

    async def close(self):
        self.closed = True


async def test_api_key_from_setting():
    creds = Credentials({"B_KEY": "secret"})
    assert await creds.headers_for(BACKENDS[1]) == {"api-key": "secret"}
    with pytest.raises(ConfigurationError, match="B_KEY"):
        await Credentials({}).headers_for(BACKENDS[1])


async def test_token_cached_then_refreshed_in_background_before_expiry():
    now = [1000.0]
    clock = lambda: now[0]  # noqa: E731
    fakes = []
    creds = Credentials(
        {}, credential_factory=lambda auth: fakes.append(FakeCredential(clock)) or fakes[-1], clock=clock
    )
    await creds.warm(BACKENDS)
    assert fakes[0].calls == 1
    assert await creds.headers_for(BACKENDS[0]) == {"Authorization": "Bearer tok1"}
    now[0] += 3600 - 300  # 5 minutes left: still served from cache, refreshed in the background
    assert await creds.headers_for(BACKENDS[0]) == {"Authorization": "Bearer tok1"}
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert fakes[0].calls == 2
    assert await creds.headers_for(BACKENDS[0]) == {"Authorization": "Bearer tok2"}
    now[0] += 3600  # expired: the request waits for a new token
    assert await creds.headers_for(BACKENDS[0]) == {"Authorization": "Bearer tok3"}
    await creds.close()
    assert fakes[0].closed


async def test_one_token_per_tenant_and_scope_named_on_each_request():
    backends = parse_backends(
        '[{"name": "home", "endpoint": "https://a.openai.azure.com", "auth": {"type": "managed_identity", "client_id": "c1"}, "deployments": ["*"]},'
        ' {"name": "home2", "endpoint": "https://b.openai.azure.com", "auth": {"type": "managed_identity", "client_id": "c1"}, "deployments": ["*"]},'
        ' {"name": "other", "endpoint": "https://c.openai.azure.com", "auth": {"type": "managed_identity", "client_id": "c1", "tenant_id": "t2"}, "deployments": ["*"]},'
        ' {"name": "scoped", "endpoint": "https://d.openai.azure.com", "auth": {"type": "managed_identity", "client_id": "c1", "scope": "api://x/.default"}, "deployments": ["*"]}]'
    )
    asked: list[tuple[str, str | None]] = []

    class TenantCredential:
        def __init__(self, auth):
            self.auth = auth

        async def get_token(self, scope, tenant_id=None):
            asked.append((scope, tenant_id))
            return SimpleNamespace(token=f"{scope}|{tenant_id}", expires_on=10_000.0)

    creds = Credentials({}, credential_factory=TenantCredential, clock=lambda: 1000.0)
    await creds.warm(backends)
    assert sorted(asked, key=str) == sorted(
        [
            ("https://cognitiveservices.azure.com/.default", None),
            ("https://cognitiveservices.azure.com/.default", "t2"),
            ("api://x/.default", None),
        ],
        key=str,
    )
    tokens = [(await creds.headers_for(b))["Authorization"] for b in backends]
    assert tokens[0] == tokens[1] != tokens[2] != tokens[3]
    assert tokens[2] == "Bearer https://cognitiveservices.azure.com/.default|t2"
    assert len(asked) == 3  # served from the cache after warm-up
    await creds.close()
