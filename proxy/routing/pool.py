"""The backend pool: which AOAI account to try next for a deployment, given each one's health.

Per backend it keeps two independent kinds of state:

- **Throttle cooldown** (per deployment, since AOAI quotas are per deployment): a 429 keeps the
  backend out for that deployment until its `retry-after-ms` / `retry-after` /
  `x-ratelimit-reset-*` time has passed. A 429 is not a health failure.
- **Circuit breaker** (per backend): `circuit_failures` health failures (500/502/503/504,
  connection errors, timeouts) within `circuit_window_seconds` open the circuit for
  `circuit_cooldown_seconds`; then it is half-open and admits one trial request at a time, whose
  outcome closes the circuit (any answer that is not a health failure) or reopens it. Any such
  answer also clears the failure count.

The pool does no I/O and never awaits, so one event loop can share it without locks (it is not
thread-safe). Time comes from an injected monotonic clock, randomness from an injected `Random`.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, Literal
from urllib.parse import urlsplit

from proxy.routing.backends import Backend, parse_backends
from proxy.routing.outcomes import Outcome
from proxy.routing.policy import RoutingPolicy
from proxy.routing.throttling import throttle_seconds
from shared.settings import Settings

Circuit = Literal["closed", "open", "half_open"]
State = Literal["healthy", "cooling_down", "circuit_open", "half_open"]

#: When the only way in is a half-open circuit whose trial is still running, nobody knows when it
#: will be free; tell the client to come back after this long.
TRIAL_WAIT_SECONDS = 1.0


@dataclass(slots=True)
class _Health:
    #: Monotonic time until which a 429 keeps the backend out, per deployment (None: every deployment).
    throttled_until: dict[str | None, float] = field(default_factory=dict)
    #: Monotonic times of recent health failures, oldest first.
    failures: deque[float] = field(default_factory=deque)
    circuit: Circuit = "closed"
    open_until: float = 0.0
    trial_in_flight: bool = False


@dataclass(frozen=True, slots=True)
class Lease:
    """Permission to send one attempt to a backend; hand it back with `finish` or `abandon`."""

    backend: Backend
    deployment: str | None
    #: This attempt is the half-open circuit's single trial request.
    trial: bool = False


class BackendPool:
    def __init__(
        self,
        backends: Iterable[Backend],
        *,
        policy: RoutingPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.backends: tuple[Backend, ...] = tuple(backends)
        self.policy = policy or RoutingPolicy()
        self.clock = clock
        self._wall = wall_clock
        self._rng = rng or random.Random()
        self._by_name = {b.name: b for b in self.backends}
        self._health = {b.name: _Health() for b in self.backends}

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> BackendPool:
        """The app's pool: `GATEWAY_BACKENDS` and the routing settings (fails naming a bad entry)."""
        return cls(parse_backends(settings.backends_json), policy=RoutingPolicy.from_settings(settings), **kwargs)

    # -- selection ---------------------------------------------------------------------------

    def backend(self, name: str) -> Backend | None:
        return self._by_name.get(name)

    def serving(self, deployment: str | None) -> list[Backend]:
        """Backends configured for the deployment, whatever their health (empty: answer 404)."""
        return [b for b in self.backends if b.serves(deployment)]

    def plan(self, deployment: str | None, *, pinned: str | None = None) -> list[Backend]:
        """Backends to try, in order: by priority (lowest number first), weighted random within one.

        Backends cooling down from a 429 for this deployment, with an open circuit, or half-open
        with their trial already running are left out. `pinned` (Responses API affinity) names the
        backend that holds the response: when it is configured for the deployment it is the whole
        plan, even while cooling down or tripped, because no other account has that response;
        otherwise normal selection applies.
        """
        pinned_backend = self.pinned(pinned, deployment)
        if pinned_backend is not None:
            return [pinned_backend]
        now = self.clock()
        eligible = [b for b in self.serving(deployment) if self._admits(b, deployment, now)]
        eligible.sort(key=lambda b: b.priority)
        ordered: list[Backend] = []
        for _, group in groupby(eligible, key=lambda b: b.priority):
            ordered.extend(self._weighted_order(list(group)))
        return ordered

    def retry_after(self, deployment: str | None) -> float | None:
        """Seconds until the first backend for the deployment is free, when none is free now.

        None when some backend can take the request now, or when none is configured for it. Open
        circuits count like cooldowns: the client is told when to come back either way.
        """
        candidates = self.serving(deployment)
        if not candidates:
            return None
        now = self.clock()
        if any(self._admits(b, deployment, now) for b in candidates):
            return None
        return max(0.0, min(self._free_at(b, deployment, now) for b in candidates) - now)

    def pinned(self, name: str | None, deployment: str | None) -> Backend | None:
        """The affinity backend when it is configured for the deployment, else None (normal selection)."""
        backend = self._by_name.get(name) if name else None
        if backend is None or (deployment is not None and not backend.serves(deployment)):
            return None
        return backend

    def free_in(self, backend: Backend, deployment: str | None) -> float:
        """Seconds until `backend` may take a request for the deployment (0: now)."""
        now = self.clock()
        if self._admits(backend, deployment, now):
            return 0.0
        return max(0.0, self._free_at(backend, deployment, now) - now)

    def acquire(self, backend: Backend, deployment: str | None, *, pinned: bool = False) -> Lease | None:
        """Claim one attempt on `backend` now, or None when it stopped being eligible since `plan`.

        A half-open backend gives out a single trial lease until that trial is finished. A pinned
        attempt always goes ahead (and is the trial if one is due).
        """
        now = self.clock()
        health = self._health[backend.name]
        self._refresh(health, now)
        due_trial = health.circuit == "half_open" and not health.trial_in_flight
        if not pinned and not self._admits(backend, deployment, now):
            return None
        if due_trial:
            health.trial_in_flight = True
        return Lease(backend=backend, deployment=deployment, trial=due_trial)

    # -- feedback ----------------------------------------------------------------------------

    def finish(self, lease: Lease, outcome: Outcome) -> None:
        self.record(lease.backend, outcome, deployment=lease.deployment, trial=lease.trial)

    def abandon(self, lease: Lease) -> None:
        """The attempt ended without a verdict (the client went away): free the trial slot only."""
        if lease.trial:
            self._health[lease.backend.name].trial_in_flight = False

    def record(self, backend: Backend, outcome: Outcome, *, deployment: str | None = None, trial: bool = False) -> None:
        """Update the backend's state from one attempt's outcome."""
        now = self.clock()
        health = self._health[backend.name]
        if trial:
            health.trial_in_flight = False
        self._refresh(health, now)
        if outcome.is_health_failure:
            self._fail(health, now)
            return
        if outcome.is_throttle:
            delay = throttle_seconds(outcome.headers, self._wall())
            until = now + (self.policy.default_throttle_seconds if delay is None else delay)
            health.throttled_until[deployment] = max(until, health.throttled_until.get(deployment, 0.0))
            # The account answered, so it is reachable; a busy account is not a broken one.
            if health.circuit == "half_open":
                health.circuit = "closed"
            return
        health.failures.clear()
        health.circuit = "closed"

    # -- reporting ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each backend's routing state for `GET /health`: no keys, no query strings."""
        now, wall = self.clock(), self._wall()

        def iso(at: float) -> str:
            when = datetime.fromtimestamp(wall + (at - now), tz=UTC)
            return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")

        out: dict[str, dict[str, Any]] = {}
        for b in self.backends:
            health = self._health[b.name]
            self._refresh(health, now)
            throttles = {k: t for k, t in health.throttled_until.items() if t > now}
            state: State
            until: str | None = None
            if health.circuit == "open":
                state, until = "circuit_open", iso(health.open_until)
            elif health.circuit == "half_open":
                state = "half_open"
            elif throttles:
                state, until = "cooling_down", iso(max(throttles.values()))
            else:
                state = "healthy"
            out[b.name] = {
                "state": state,
                "until": until,
                "cooling_down": {
                    ("*" if k is None else k): iso(t) for k, t in sorted(throttles.items(), key=lambda kv: kv[0] or "")
                },
                "recent_failures": len(health.failures),
                "trial_in_flight": health.trial_in_flight,
                "priority": b.priority,
                "weight": b.weight,
                "deployments": sorted(b.deployments | set(b.deployment_map)),
                "deployment_map": dict(b.deployment_map),
                "endpoint": _public_endpoint(b.endpoint),
                "auth": b.auth.type,
            }
        return out

    # -- internals ---------------------------------------------------------------------------

    def _refresh(self, health: _Health, now: float) -> None:
        if health.circuit == "open" and now >= health.open_until:
            health.circuit = "half_open"
        cutoff = now - self.policy.circuit_window_seconds
        while health.failures and health.failures[0] <= cutoff:
            health.failures.popleft()
        for key in [k for k, t in health.throttled_until.items() if t <= now]:
            del health.throttled_until[key]

    def _throttled_until(self, health: _Health, deployment: str | None) -> float:
        return max(health.throttled_until.get(None, 0.0), health.throttled_until.get(deployment, 0.0))

    def _admits(self, backend: Backend, deployment: str | None, now: float) -> bool:
        health = self._health[backend.name]
        self._refresh(health, now)
        if health.circuit == "open" or (health.circuit == "half_open" and health.trial_in_flight):
            return False
        return self._throttled_until(health, deployment) <= now

    def _free_at(self, backend: Backend, deployment: str | None, now: float) -> float:
        health = self._health[backend.name]
        at = self._throttled_until(health, deployment)
        if health.circuit == "open":
            at = max(at, health.open_until)
        elif health.circuit == "half_open" and health.trial_in_flight:
            at = max(at, now + TRIAL_WAIT_SECONDS)
        return at

    def _fail(self, health: _Health, now: float) -> None:
        if health.circuit == "open":
            return  # a pinned attempt failed on a tripped backend: it stays open, no longer
        if health.circuit == "half_open":
            self._open(health, now)
            return
        health.failures.append(now)
        if len(health.failures) >= self.policy.circuit_failures:
            self._open(health, now)

    def _open(self, health: _Health, now: float) -> None:
        health.circuit = "open"
        health.open_until = now + self.policy.circuit_cooldown_seconds
        health.failures.clear()

    def _weighted_order(self, group: list[Backend]) -> list[Backend]:
        """A weighted random permutation (Efraimidis-Spirakis): each pick is weight-proportional."""
        if len(group) < 2:
            return group
        keys = {b.name: self._rng.random() ** (1.0 / b.weight) for b in group}
        return sorted(group, key=lambda b: keys[b.name], reverse=True)


def _public_endpoint(endpoint: str) -> str:
    """Scheme and host only: no credentials in userinfo, no path, no query string."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
