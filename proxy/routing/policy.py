"""The routing policy: how hard the gateway tries, and when it stops sending traffic to a backend."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ConfigurationError
from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    #: Upstream attempts per client request, the first included.
    max_attempts: int = 3
    #: No new attempt starts once this many seconds have passed since the first one started. An
    #: attempt in flight is bounded by the upstream timeouts, not by this: a long non-stream
    #: completion sends its headers only when it is done.
    deadline_seconds: float = 30.0
    #: Health failures within `circuit_window_seconds` that open a backend's circuit.
    circuit_failures: int = 5
    circuit_window_seconds: float = 30.0
    #: How long an open circuit keeps a backend out before one trial request may probe it.
    circuit_cooldown_seconds: float = 30.0
    #: Cooldown after a 429 that names no retry time (AOAI normally sends `retry-after`).
    default_throttle_seconds: float = 5.0
    #: How long a Responses API response id stays pinned to its backend (AOAI keeps them 30 days).
    affinity_ttl_seconds: int = 30 * 24 * 3600

    def __post_init__(self) -> None:
        checks = {
            "GATEWAY_MAX_ATTEMPTS": self.max_attempts >= 1,
            "GATEWAY_RETRY_DEADLINE_SECONDS": self.deadline_seconds > 0,
            "GATEWAY_CIRCUIT_FAILURES": self.circuit_failures >= 1,
            "GATEWAY_CIRCUIT_WINDOW_SECONDS": self.circuit_window_seconds > 0,
            "GATEWAY_CIRCUIT_COOLDOWN_SECONDS": self.circuit_cooldown_seconds >= 0,
            "RESPONSES_AFFINITY_TTL_SECONDS": self.affinity_ttl_seconds >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigurationError(f"routing settings out of range: {', '.join(bad)}")

    @classmethod
    def from_settings(cls, settings: Settings) -> RoutingPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            deadline_seconds=settings.retry_deadline_seconds,
            circuit_failures=settings.circuit_failures,
            circuit_window_seconds=settings.circuit_window_seconds,
            circuit_cooldown_seconds=settings.circuit_cooldown_seconds,
            affinity_ttl_seconds=settings.responses_affinity_ttl_seconds,
        )
