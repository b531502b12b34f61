"""Upstream credentials: api keys from settings, managed-identity tokens cached and refreshed ahead."""

import asyncio
from types import SimpleNamespace

import pytest

from proxy.backends import parse_backends
from proxy.credentials import Credentials
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
    creds = Credentials({}, credential_factory=lambda auth: fakes.append(FakeCredential(clock)) or fakes[-1], clock=clock)
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
