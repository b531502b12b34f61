"""Backend configuration: the AOAI accounts behind the gateway, parsed from `GATEWAY_BACKENDS`.

Each item: {"name", "endpoint", "auth": {"type": "managed_identity"} | {"type": "api_key", "setting":
NAME} | {"type": "api_key", "value": KEY}, "deployments": [...] or ["*"], optional "priority" (lower
first, default 1), "weight" (share within a priority, default 1) and "deployment_map" (public name
-> the account's deployment name)}. Invalid configuration fails at start-up, naming the bad entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

from shared.errors import ConfigurationError

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


def _fail(index: int, item: Any, why: str) -> ConfigurationError:
    name = item.get("name") if isinstance(item, dict) else None
    label = f"GATEWAY_BACKENDS[{index}]" + (f" ({name!r})" if name else "")
    return ConfigurationError(f"{label}: {why}")


def _parse_auth(index: int, item: dict[str, Any]) -> BackendAuth:
    auth = item.get("auth", {"type": "managed_identity"})
    if not isinstance(auth, dict):
        raise _fail(index, item, "'auth' must be an object")
    kind = auth.get("type")
    if kind == "managed_identity":
        return BackendAuth(
            type="managed_identity",
            client_id=auth.get("client_id"),
            tenant_id=auth.get("tenant_id"),
            scope=auth.get("scope") or COGNITIVE_SERVICES_SCOPE,
        )
    if kind == "api_key":
        setting, value = auth.get("setting"), auth.get("value")
        if not (isinstance(setting, str) and setting) and not (isinstance(value, str) and value):
            raise _fail(index, item, "api_key auth needs 'setting' (name of the app setting) or 'value'")
        return BackendAuth(type="api_key", setting=setting, value=value)
    raise _fail(index, item, f"auth type must be 'managed_identity' or 'api_key', got {kind!r}")


def _positive_int(index: int, item: dict[str, Any], key: str, default: int, minimum: int) -> int:
    value = item.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _fail(index, item, f"'{key}' must be an integer >= {minimum}")
    return value


def parse_backend(index: int, item: Any) -> Backend:
    if not isinstance(item, dict):
        raise _fail(index, item, "each backend must be an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(index, item, "'name' is required")
    endpoint = item.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if not isinstance(endpoint, str) or parts is None or parts.scheme not in {"http", "https"} or not parts.netloc:
        raise _fail(index, item, f"'endpoint' must be an http(s) URL, got {endpoint!r}")
    deployments = item.get("deployments", [])
    if not isinstance(deployments, list) or not all(isinstance(d, str) and d for d in deployments):
        raise _fail(index, item, "'deployments' must be a list of names (or [\"*\"])")
    dmap = item.get("deployment_map", {})
    if not isinstance(dmap, dict) or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in dmap.items()):
        raise _fail(index, item, "'deployment_map' must map public names to deployment names")
    if not deployments and not dmap:
        raise _fail(index, item, "serves no deployment: list 'deployments' (or [\"*\"]) or a 'deployment_map'")
    return Backend(
        name=name,
        endpoint=endpoint.rstrip("/"),
        auth=_parse_auth(index, item),
        deployments=frozenset(deployments),
        priority=_positive_int(index, item, "priority", 1, 0),
        weight=_positive_int(index, item, "weight", 1, 1),
        deployment_map=dict(dmap),
    )


def parse_backends(raw: str) -> tuple[Backend, ...]:
    """Parse the `GATEWAY_BACKENDS` JSON; raises ConfigurationError naming the bad entry."""
    try:
        items = orjson.loads(raw or "[]")
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"GATEWAY_BACKENDS is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ConfigurationError("GATEWAY_BACKENDS must be a JSON list of backends")
    backends = tuple(parse_backend(i, item) for i, item in enumerate(items))
    names = [b.name for b in backends]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigurationError(f"GATEWAY_BACKENDS: duplicate backend names {dupes}")
    return backends


def serving(backends: tuple[Backend, ...], deployment: str | None) -> list[Backend]:
    """The backends that serve a deployment, in configuration order."""
    return [b for b in backends if b.serves(deployment)]
