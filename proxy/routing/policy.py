"""The routing policy: how hard the gateway tries, and when it stops sending traffic to a backend."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings

#: The declared defaults (shared/settings.py): each routing default is written once, there.
_DEFAULTS = Settings()


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    """The routing settings as the pool uses them (ranges are checked where they are declared)."""

    #: Upstream attempts per client request, the first included.
    max_attempts: int = _DEFAULTS.max_attempts
    #: No new attempt starts once this many seconds have passed since the first one started. An
    #: attempt in flight is bounded by the upstream timeouts, not by this: a long non-stream
    #: completion sends its headers only when it is done.
    deadline_seconds: float = _DEFAULTS.retry_deadline_seconds
    #: Health failures within `circuit_window_seconds` that open a backend's circuit.
    circuit_failures: int = _DEFAULTS.circuit_failures
    circuit_window_seconds: float = _DEFAULTS.circuit_window_seconds
    #: How long an open circuit keeps a backend out before one trial request may probe it.
    circuit_cooldown_seconds: float = _DEFAULTS.circuit_cooldown_seconds
    #: Cooldown after a 429 that names no retry time (AOAI normally sends `retry-after`).
    default_throttle_seconds: float = 5.0
    #: How long a Responses API response id stays pinned to its backend (AOAI keeps them 30 days).
    affinity_ttl_seconds: int = _DEFAULTS.responses_affinity_ttl_seconds

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
