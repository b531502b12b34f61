"""Backend configuration: the AOAI accounts behind the gateway, parsed from `GATEWAY_BACKENDS`.

Each item: {"name", "endpoint", "auth": {"type": "managed_identity"} | {"type": "api_key", "setting":
NAME} | {"type": "api_key", "value": KEY}, "deployments": [...] or ["*"], optional "priority" (lower
first, default 1), "weight" (share within a priority, default 1) and "deployment_map" (public name
-> the account's deployment name)}. Invalid configuration fails at start-up, naming the bad entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from shared import setting_shapes as shapes
from shared.errors import ConfigurationError
from shared.settings import Settings, parse_json

AuthType = Literal["managed_identity", "api_key"]
COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


@dataclass(frozen=True, slots=True)
class BackendAuth:
    type: AuthType
    #: For api_key: the app setting that holds the key (a Key Vault reference resolves like any setting).
    setting: str | None = None
    value: str | None = field(default=None, repr=False)
    #: For managed_identity: optional user-assigned identity client id and tenant.
    client_id: str | None = None
    tenant_id: str | None = None
    scope: str = COGNITIVE_SERVICES_SCOPE

    def api_key(self, env: Mapping[str, str]) -> str:
        if self.value:
            return self.value
        key = env.get(self.setting or "")
        if not key:
            raise ConfigurationError(f"app setting {self.setting!r} holds no API key")
        return key


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    endpoint: str
    auth: BackendAuth
    deployments: frozenset[str]
    priority: int = 1
    weight: int = 1
    deployment_map: Mapping[str, str] = field(default_factory=dict)

    @property
    def serves_all(self) -> bool:
        return "*" in self.deployments

    def serves(self, deployment: str | None) -> bool:
        if deployment is None:
            return self.serves_all
        return self.serves_all or deployment in self.deployments or deployment in self.deployment_map

    def upstream_deployment(self, deployment: str) -> str:
        """The account's own name for a public deployment name."""
        return self.deployment_map.get(deployment, deployment)


def _backend(entry: shapes.BackendEntry) -> Backend:
    auth = entry.auth
    if isinstance(auth, shapes.ApiKeyAuth):
        backend_auth = BackendAuth(type="api_key", setting=auth.setting, value=auth.value)
    else:
        backend_auth = BackendAuth(
            type="managed_identity",
            client_id=auth.client_id,
            tenant_id=auth.tenant_id,
            scope=auth.scope or COGNITIVE_SERVICES_SCOPE,
        )
    return Backend(
        name=entry.name,
        endpoint=entry.endpoint.rstrip("/"),
        auth=backend_auth,
        deployments=frozenset(entry.deployments),
        priority=entry.priority,
        weight=entry.weight,
        deployment_map=dict(entry.deployment_map),
    )


def parse_backends(raw: str) -> tuple[Backend, ...]:
    """Parse the `GATEWAY_BACKENDS` JSON (its shape: shared/setting_shapes.py); raises
    ConfigurationError naming the bad entry."""
    backends = tuple(_backend(entry) for entry in parse_json("GATEWAY_BACKENDS", raw))
    names = [b.name for b in backends]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigurationError(f"GATEWAY_BACKENDS: duplicate backend names {dupes}")
    return backends


#: Endpoint hosts that are a sample's placeholder, not an account (`<your-resource>`, YOUR-ACCOUNT, example).
_PLACEHOLDER = re.compile(r"[<>{}]|your[-_]?(resource|account)|(^|\.)example(\.|$)", re.IGNORECASE)


def unusable(backends: tuple[Backend, ...], env: Mapping[str, str]) -> str | None:
    """Why the configured backends cannot serve a request, in one line, or None.

    Checked at start-up: a sample's placeholder endpoint or an api_key backend whose `setting` is
    not set would otherwise make every call a 502 with the cause only in the log.
    """
    for index, backend in enumerate(backends):
        label = f"GATEWAY_BACKENDS[{index}] ({backend.name!r})"
        host = urlsplit(backend.endpoint).hostname or ""
        if _PLACEHOLDER.search(urlsplit(backend.endpoint).netloc) or _PLACEHOLDER.search(host):
            return f"{label}: endpoint {backend.endpoint} is a placeholder: set your Azure OpenAI account's endpoint"
        auth = backend.auth
        if auth.type == "api_key" and not auth.value and not env.get(auth.setting or ""):
            return f"{label}: auth.setting {auth.setting!r} names an app setting that is not set"
    return None


def check_backends(settings: Settings) -> tuple[Backend, ...]:
    """The configured backends, or ConfigurationError (one line) when they could not serve a request."""
    backends = parse_backends(settings.backends_json)
    problem = unusable(backends, settings.extra)
    if problem is not None:
        raise ConfigurationError(problem)
    return backends


def serving(backends: tuple[Backend, ...], deployment: str | None) -> list[Backend]:
    """The backends that serve a deployment, in configuration order."""
    return [b for b in backends if b.serves(deployment)]
