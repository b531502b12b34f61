"""What an audience (APIM product, overridable per subscription) gets: one precedence rule for every
per-audience setting, and the `AUDIENCE_POLICIES` setting (allow-lists and the response cache).

Precedence, the same for every table keyed by audience (capture level, allow-lists, cache):
`subscription:<id>` wins over the APIM product name, which wins over the default. The first
matching key wins whole: a subscription entry replaces its product's entry, it is not merged with
it. Budgets are the exception: they add up across scopes and do not use `resolve`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from shared.errors import ConfigurationError

T = TypeVar("T")

SETTING = "AUDIENCE_POLICIES"
SUBSCRIPTION_PREFIX = "subscription:"
DEFAULT_RULE = "default"

#: Operation names an allow-list may name, and the APIs (`shared.normalize.apis.ApiKind`) or
#: management collections behind them.
OPERATIONS: Mapping[str, frozenset[str]] = {
    "chat": frozenset({"chat.completions", "completions"}),
    "embeddings": frozenset({"embeddings"}),
    "images": frozenset({"images.generations"}),
    "audio": frozenset({"audio.transcriptions", "audio.translations", "audio.speech"}),
    "responses": frozenset({"responses"}),
    "batch": frozenset({"batches"}),
    "files": frozenset({"files"}),
    "models": frozenset({"models", "deployments"}),
}
#: Capture levels (the `CAPTURE_LEVELS` setting) that forbid storing bodies, and so a cache.
BODILESS_CAPTURE_LEVELS = frozenset({"metadata", "none"})


@dataclass(frozen=True)
class Resolved(Generic[T]):
    """A per-audience value and the key of the table entry it came from (`"default"` when none matched)."""

    value: T
    rule: str


def resolve(table: Mapping[str, T], *, product: str | None, subscription_id: str | None, default: T) -> Resolved[T]:
    """`subscription:<id>`, else the product name, else `default`."""
    if subscription_id:
        key = SUBSCRIPTION_PREFIX + subscription_id
        if key in table:
            return Resolved(table[key], key)
    if product and product in table:
        return Resolved(table[product], product)
    return Resolved(default, DEFAULT_RULE)


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The exact response cache for an audience: entries live `ttl_seconds`; `shared` lets every
    subscription of the product read the same entries (else each subscription has its own)."""

    ttl_seconds: int
    shared: bool = False
    #: Largest answer stored (bytes); bigger answers are served live and not stored.
    max_entry_bytes: int = 1_000_000


@dataclass(frozen=True, slots=True)
class AudiencePolicy:
    """One `AUDIENCE_POLICIES` entry. `deployments`/`operations` None: no restriction."""

    deployments: tuple[str, ...] | None = None
    operations: frozenset[str] | None = None
    cache: CachePolicy | None = None

    def allows_deployment(self, deployment: str) -> bool:
        if self.deployments is None:
            return True
        return any(fnmatch.fnmatchcase(deployment, pattern) for pattern in self.deployments)

    def allows_operation(self, operation: str | None) -> bool:
        return self.operations is None or operation is None or operation in self.operations


#: An audience with no entry: every deployment, every operation, no cache.
OPEN = AudiencePolicy()


def operation_of(api: str, path: str) -> str | None:
    """The allow-list operation of a request: from its API, else its management collection
    (`/openai/batches/...`, `/openai/v1/files`, `/openai/models`), else None (not restricted)."""
    for name, apis in OPERATIONS.items():
        if api in apis:
            return name
    segments = [s for s in path.split("/") if s and s not in ("openai", "v1")]
    if segments:
        for name, collections in OPERATIONS.items():
            if segments[0] in collections and not (segments[0] == "deployments" and len(segments) > 1):
                return name
    return None


def parse_policies(raw: str | None) -> dict[str, AudiencePolicy]:
    """`AUDIENCE_POLICIES` (a JSON object keyed by product name or `subscription:<id>`), checked whole.

    Raises ConfigurationError with one line naming the setting and the bad entry."""
    if raw is None or not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigurationError(f"{SETTING} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{SETTING} must be a JSON object keyed by product name or subscription:<id>")
    return {_key(key): _policy(key, entry) for key, entry in data.items()}


def _key(key: str) -> str:
    if not key.strip() or key == SUBSCRIPTION_PREFIX:
        raise ConfigurationError(f"{SETTING}: an empty key (use a product name or subscription:<id>)")
    return key


def _policy(key: str, entry: Any) -> AudiencePolicy:
    where = f"{SETTING}[{key!r}]"
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{where} must be an object with deployments, operations and/or cache")
    unknown = set(entry) - {"deployments", "operations", "cache"}
    if unknown:
        raise ConfigurationError(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    deployments = entry.get("deployments")
    if deployments is not None and (
        not isinstance(deployments, list) or not all(isinstance(d, str) and d for d in deployments)
    ):
        raise ConfigurationError(f"{where}.deployments must be a list of deployment names or glob patterns")
    operations = entry.get("operations")
    if operations is not None:
        if not isinstance(operations, list) or not all(isinstance(o, str) for o in operations):
            raise ConfigurationError(f"{where}.operations must be a list of operation names")
        bad = sorted(set(operations) - set(OPERATIONS))
        if bad:
            raise ConfigurationError(f"{where}.operations: unknown {', '.join(bad)} (known: {', '.join(OPERATIONS)})")
    return AudiencePolicy(
        deployments=tuple(deployments) if deployments is not None else None,
        operations=frozenset(operations) if operations is not None else None,
        cache=_cache(where, entry.get("cache")),
    )


def _cache(where: str, cache: Any) -> CachePolicy | None:
    if cache is None or cache is False:
        return None
    if not isinstance(cache, dict):
        raise ConfigurationError(f"{where}.cache must be an object with ttl_seconds")
    unknown = set(cache) - {"ttl_seconds", "shared", "max_entry_bytes"}
    if unknown:
        raise ConfigurationError(f"{where}.cache has unknown fields: {', '.join(sorted(unknown))}")
    ttl = cache.get("ttl_seconds")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0:
        raise ConfigurationError(f"{where}.cache.ttl_seconds must be a positive whole number of seconds")
    shared = cache.get("shared", False)
    if not isinstance(shared, bool):
        raise ConfigurationError(f"{where}.cache.shared must be true or false")
    size = cache.get("max_entry_bytes", 1_000_000)
    # Cosmos DB items are limited to 2 MB, and an entry is stored as base64 (4/3 larger).
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 1_400_000:
        raise ConfigurationError(f"{where}.cache.max_entry_bytes must be between 1 and 1400000")
    return CachePolicy(ttl_seconds=ttl, shared=shared, max_entry_bytes=size)


def parse_capture_levels(raw: str | None) -> dict[str, str]:
    """`CAPTURE_LEVELS` read only for the cache check here (its owner validates it in full)."""
    if raw is None or not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def check_cache_capture(policies: Mapping[str, AudiencePolicy], capture_levels: Mapping[str, str]) -> None:
    """Refuse (one line) a cache for an audience whose capture level forbids storing bodies.

    A product entry is checked against the product's level; a `subscription:<id>` entry against that
    subscription's level, else the default. A subscription whose own level forbids bodies while only
    its product enables the cache is caught per request instead (the cache is bypassed)."""
    default_level = capture_levels.get(DEFAULT_RULE, "full")
    for key, policy in policies.items():
        if policy.cache is None:
            continue
        level = capture_levels.get(key, default_level)
        if level in BODILESS_CAPTURE_LEVELS:
            raise ConfigurationError(
                f"{SETTING}[{key!r}].cache is not allowed: CAPTURE_LEVELS gives {key!r} the level {level!r}, "
                "which forbids storing bodies"
            )


@dataclass(frozen=True, slots=True)
class AudienceTable:
    """The parsed `AUDIENCE_POLICIES` and the capture levels the cache must respect."""

    policies: Mapping[str, AudiencePolicy]
    capture_levels: Mapping[str, str]

    @classmethod
    def from_settings(cls, audience_policies: str | None, capture_levels: str | None) -> AudienceTable:
        policies = parse_policies(audience_policies)
        levels = parse_capture_levels(capture_levels)
        check_cache_capture(policies, levels)
        return cls(policies, levels)

    def policy_for(self, product: str | None, subscription_id: str | None) -> Resolved[AudiencePolicy]:
        return resolve(self.policies, product=product, subscription_id=subscription_id, default=OPEN)

    def capture_level(self, product: str | None, subscription_id: str | None) -> str:
        default = self.capture_levels.get(DEFAULT_RULE, "full")
        return resolve(self.capture_levels, product=product, subscription_id=subscription_id, default=default).value
