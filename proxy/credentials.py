"""Upstream credentials: the api-key header, or a managed-identity bearer token cached ahead of expiry.

Tokens come from azure-identity's `DefaultAzureCredential` (aio). One token per (identity, tenant,
scope) is cached; when it nears expiry a background refresh replaces it while the old one is still used,
so after warm-up no request waits for Entra ID.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from proxy.routing.backends import Backend, BackendAuth
from shared.redaction import remember_secret

log = logging.getLogger(__name__)

#: Refresh in the background when the token has less than this left...
REFRESH_AHEAD_SECONDS = 600.0
#: ...and block for a new one only when it has less than this left.
MIN_VALID_SECONDS = 60.0

CredentialFactory = Callable[[BackendAuth], Any]

#: Loggers whose INFO is a dump per HTTP call (credential probes, SDK requests and their headers).
NOISY_LOGGERS = ("azure", "azure.identity", "azure.core.pipeline.policies.http_logging_policy")


def quiet_azure_sdk_logs(level: int = logging.WARNING) -> None:
    """Keep the Azure SDKs' per-call INFO lines out of the terminal and the log store.

    A laptop's DefaultAzureCredential probes several credentials, each logging its request headers;
    `Credentials` says in one line which one answered instead.
    """
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _default_credential(auth: BackendAuth) -> Any:
    from azure.identity.aio import DefaultAzureCredential

    kwargs: dict[str, Any] = {}
    if auth.client_id:
        kwargs["managed_identity_client_id"] = auth.client_id
    if auth.tenant_id:
        kwargs["additionally_allowed_tenants"] = [auth.tenant_id]
    return DefaultAzureCredential(**kwargs)


def credential_name(credential: Any) -> str:
    """Which credential of a chain (DefaultAzureCredential) answered, e.g. `AzureCliCredential`.

    The chain remembers the one that succeeded; the SDK's own per-probe lines stay at WARNING.
    """
    used = getattr(credential, "_successful_credential", None) or credential
    return type(used).__name__


class _CachedToken:
    __slots__ = ("credential", "scope", "tenant_id", "token", "expires_on", "refreshing", "lock", "announced")

    def __init__(self, credential: Any, scope: str, tenant_id: str | None) -> None:
        self.credential = credential
        self.scope = scope
        self.tenant_id = tenant_id
        self.token: str | None = None
        self.expires_on = 0.0
        self.refreshing: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.announced = False


def _token_key(auth: BackendAuth) -> tuple[str | None, str | None, str]:
    return (auth.client_id, auth.tenant_id, auth.scope)


class Credentials:
    """Headers that authenticate the gateway to a backend."""

    def __init__(
        self,
        env: Mapping[str, str],
        credential_factory: CredentialFactory = _default_credential,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._env = env
        self._factory = credential_factory
        self._clock = clock
        #: One cached token per (user-assigned identity, tenant, scope): backends that share all
        #: three share a token; any difference gets its own.
        self._tokens: dict[tuple[str | None, str | None, str], _CachedToken] = {}

    async def headers_for(self, backend: Backend) -> dict[str, str]:
        auth = backend.auth
        if auth.type == "api_key":
            key = auth.api_key(self._env)
            remember_secret(key)  # a backend echoing it back is redacted in the stored exchange
            return {"api-key": key}
        return {"Authorization": f"Bearer {await self._token(auth)}"}

    async def warm(self, backends: tuple[Backend, ...]) -> None:
        """Fetch every managed-identity token once, so the first requests do not wait."""
        wanted = {_token_key(b.auth): b.auth for b in backends if b.auth.type == "managed_identity"}
        results = await asyncio.gather(*(self._token(a) for a in wanted.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                log.warning("managed identity token warm-up failed: %s", type(result).__name__)

    async def close(self) -> None:
        for entry in self._tokens.values():
            if entry.refreshing:
                entry.refreshing.cancel()
            close = getattr(entry.credential, "close", None)
            if close is not None:
                await close()
        self._tokens.clear()

    async def _token(self, auth: BackendAuth) -> str:
        key = _token_key(auth)
        entry = self._tokens.get(key)
        if entry is None:
            entry = self._tokens[key] = _CachedToken(self._factory(auth), auth.scope, auth.tenant_id)
        left = entry.expires_on - self._clock()
        if entry.token is not None and left > MIN_VALID_SECONDS:
            if left < REFRESH_AHEAD_SECONDS and entry.refreshing is None:
                entry.refreshing = asyncio.create_task(self._refresh_in_background(entry))
            return entry.token
        async with entry.lock:
            if entry.token is None or entry.expires_on - self._clock() <= MIN_VALID_SECONDS:
                await self._fetch(entry)
            assert entry.token is not None
            return entry.token

    async def _fetch(self, entry: _CachedToken) -> None:
        # A tenant other than the identity's home tenant must be named on each token request
        # (DefaultAzureCredential allows it via `additionally_allowed_tenants`).
        if entry.tenant_id:
            access = await entry.credential.get_token(entry.scope, tenant_id=entry.tenant_id)
        else:
            access = await entry.credential.get_token(entry.scope)
        entry.token, entry.expires_on = access.token, float(access.expires_on)
        if not entry.announced:
            entry.announced = True
            log.info("managed identity: token for %s from %s", entry.scope, credential_name(entry.credential))

    async def _refresh_in_background(self, entry: _CachedToken) -> None:
        try:
            async with entry.lock:
                await self._fetch(entry)
        except Exception as exc:  # the current token is still valid; the next request retries
            log.warning("managed identity token refresh failed: %s", type(exc).__name__)
        finally:
            entry.refreshing = None
