import random
from collections import Counter
from email.utils import formatdate

import orjson
import pytest

from proxy.routing.outcomes import Outcome
from proxy.routing.policy import RoutingPolicy
from proxy.routing.pool import BackendPool
from tests.routing_fakes import FakeClock, backends

POLICY = RoutingPolicy(circuit_failures=3, circuit_window_seconds=10, circuit_cooldown_seconds=30)


def make_pool(*specs, policy=POLICY, seed=7):
    clock = FakeClock()
    pool = BackendPool(backends(*specs), policy=policy, clock=clock, wall_clock=clock.wall, rng=random.Random(seed))
    return pool, clock


def names(plan):
    return [b.name for b in plan]


def test_priority_order_is_kept():
    pool, _ = make_pool(
        {"name": "spill", "priority": 3}, {"name": "ptu", "priority": 1}, {"name": "paygo", "priority": 2, "weight": 50}
    )
    assert all(names(pool.plan("gpt-4o")) == ["ptu", "paygo", "spill"] for _ in range(200))


@pytest.mark.parametrize("weights", [(3, 1), (1, 2, 7), (1, 1, 1, 1)])
def test_weights_hold_within_a_priority_over_10000_plans(weights):
    specs = [{"name": f"b{i}", "weight": w} for i, w in enumerate(weights)]
    specs.append({"name": "later", "priority": 2, "weight": 1000})
    pool, _ = make_pool(*specs)
    first = Counter()
    for _ in range(10_000):
        plan = names(pool.plan("gpt-4o"))
        assert plan[-1] == "later" and sorted(plan[:-1]) == sorted(s["name"] for s in specs[:-1])
        first[plan[0]] += 1
    total = sum(weights)
    for i, w in enumerate(weights):
        assert first[f"b{i}"] / 10_000 == pytest.approx(w / total, abs=0.015)


def test_second_place_follows_weights_too():
    pool, _ = make_pool({"name": "a", "weight": 8}, {"name": "b", "weight": 1}, {"name": "c", "weight": 1})
    second = Counter(names(pool.plan("gpt-4o"))[1] for _ in range(10_000))
    # P(second = a) = P(b first) * 8/9 + P(c first) * 8/9 = 0.2 * 8/9
    assert second["a"] / 10_000 == pytest.approx(0.2 * 8 / 9, abs=0.015)


def test_only_backends_serving_the_deployment():
    pool, _ = make_pool(
        {"name": "a"},
        {"name": "b", "deployments": ["other"]},
        {"name": "c", "deployments": [], "deployment_map": {"gpt-4o": "gpt-4o-eu"}},
    )
    assert sorted(names(pool.plan("gpt-4o"))) == ["a", "c"]
    assert pool.plan("unknown") == [] and pool.retry_after("unknown") is None


THROTTLE_FORMS = [
    ({"retry-after-ms": "1500"}, 1.5),
    # AOAI sends both; the whole-second form is rounded up, so the precise one decides.
    ({"retry-after": "1", "retry-after-ms": "200"}, 0.2),
    ({"retry-after": "7"}, 7.0),
    ("http-date", 42.0),
    ({"x-ratelimit-reset-requests": "1s"}, 1.0),
    ({"x-ratelimit-reset-tokens": "6m0s"}, 360.0),
    ({"x-ratelimit-reset-tokens": "2.5"}, 2.5),
    ({}, 5.0),  # no header: the policy's default
]


@pytest.mark.parametrize(("headers", "seconds"), THROTTLE_FORMS)
def test_a_429_cools_the_backend_down_exactly_as_long_as_it_says(headers, seconds):
    pool, clock = make_pool({"name": "a"}, {"name": "b", "priority": 2})
    if headers == "http-date":
        headers = {"retry-after": formatdate(clock.wall() + seconds, usegmt=True)}
    a = pool.backend("a")
    pool.record(a, Outcome.answered(429, headers), deployment="gpt-4o")
    clock.advance(seconds - 0.01)
    assert names(pool.plan("gpt-4o")) == ["b"]
    assert pool.free_in(a, "gpt-4o") == pytest.approx(0.01)
    clock.advance(0.01)
    assert names(pool.plan("gpt-4o")) == ["a", "b"]


def test_cooldown_is_per_deployment_and_a_429_is_not_a_health_failure():
    pool, clock = make_pool({"name": "a", "deployments": ["gpt-4o", "gpt-35"]})
    a = pool.backend("a")
    for _ in range(10):
        pool.record(a, Outcome.answered(429, {"retry-after": "10"}), deployment="gpt-4o")
    assert pool.plan("gpt-4o") == [] and names(pool.plan("gpt-35")) == ["a"]
    state = pool.snapshot()["a"]
    assert state["state"] == "cooling_down" and state["recent_failures"] == 0
    assert list(state["cooling_down"]) == ["gpt-4o"]


def test_a_later_shorter_retry_after_does_not_shorten_a_cooldown():
    pool, clock = make_pool({"name": "a"})
    a = pool.backend("a")
    pool.record(a, Outcome.answered(429, {"retry-after": "10"}), deployment="gpt-4o")
    pool.record(a, Outcome.answered(429, {"retry-after": "1"}), deployment="gpt-4o")
    clock.advance(9.9)
    assert pool.plan("gpt-4o") == []


def test_retry_after_when_everyone_cools_down():
    pool, clock = make_pool({"name": "a"}, {"name": "b"}, {"name": "c", "priority": 2})
    pool.record(pool.backend("a"), Outcome.answered(429, {"retry-after": "20"}), deployment="gpt-4o")
    pool.record(pool.backend("b"), Outcome.answered(429, {"retry-after-ms": "3500"}), deployment="gpt-4o")
    assert pool.retry_after("gpt-4o") is None  # c is still free
    pool.record(pool.backend("c"), Outcome.answered(429, {"x-ratelimit-reset-requests": "6s"}), deployment="gpt-4o")
    assert pool.plan("gpt-4o") == []
    assert pool.retry_after("gpt-4o") == pytest.approx(3.5)
    clock.advance(3.5)
    assert pool.retry_after("gpt-4o") is None and names(pool.plan("gpt-4o")) == ["b"]


def test_retry_after_counts_open_circuits_too():
    pool, clock = make_pool({"name": "a"}, {"name": "b"})
    for _ in range(3):
        pool.record(pool.backend("a"), Outcome.failed("connect_error"))
    pool.record(pool.backend("b"), Outcome.answered(429, {"retry-after": "60"}), deployment="gpt-4o")
    assert pool.retry_after("gpt-4o") == pytest.approx(30.0)


def test_circuit_opens_after_n_failures_within_the_window():
    pool, clock = make_pool({"name": "a"}, {"name": "b", "priority": 2})
    a = pool.backend("a")
    pool.record(a, Outcome.answered(500, {}))
    pool.record(a, Outcome.failed("timeout"))
    assert names(pool.plan("gpt-4o")) == ["a", "b"]
    clock.advance(10.5)  # both fall out of the 10 s window
    pool.record(a, Outcome.answered(503, {}))
    assert names(pool.plan("gpt-4o")) == ["a", "b"]
    pool.record(a, Outcome.failed("connect_error"))
    pool.record(a, Outcome.answered(502, {}))
    assert names(pool.plan("gpt-4o")) == ["b"]
    state = pool.snapshot()["a"]
    assert state["state"] == "circuit_open" and state["until"] == "2027-01-15T08:00:40.500Z"


def test_success_resets_the_failure_count():
    pool, _ = make_pool({"name": "a"})
    a = pool.backend("a")
    for status in (500, 504, 200, 500, 502):
        pool.record(a, Outcome.answered(status, {}))
    assert names(pool.plan("gpt-4o")) == ["a"] and pool.snapshot()["a"]["recent_failures"] == 2


def _trip(pool, clock, name="a"):
    for _ in range(3):
        pool.record(pool.backend(name), Outcome.answered(500, {}))
    clock.advance(30)


def test_half_open_admits_exactly_one_trial_and_success_closes_it():
    pool, clock = make_pool({"name": "a"}, {"name": "b", "priority": 2})
    a = pool.backend("a")
    _trip(pool, clock)
    assert pool.snapshot()["a"]["state"] == "half_open"
    assert names(pool.plan("gpt-4o")) == ["a", "b"]
    trial = pool.acquire(a, "gpt-4o")
    assert trial is not None and trial.trial
    assert pool.acquire(a, "gpt-4o") is None  # one trial at a time
    assert names(pool.plan("gpt-4o")) == ["b"]
    assert pool.snapshot()["a"]["trial_in_flight"] is True
    pool.finish(trial, Outcome.answered(200, {}))
    assert pool.snapshot()["a"]["state"] == "healthy"
    lease = pool.acquire(a, "gpt-4o")
    assert lease is not None and not lease.trial
    assert pool.acquire(a, "gpt-4o") is not None  # closed: no limit on concurrent attempts


def test_a_failed_trial_reopens_the_circuit_for_another_cooldown():
    pool, clock = make_pool({"name": "a"})
    a = pool.backend("a")
    _trip(pool, clock)
    trial = pool.acquire(a, "gpt-4o")
    clock.advance(2)
    pool.finish(trial, Outcome.failed("timeout"))
    assert pool.plan("gpt-4o") == [] and pool.retry_after("gpt-4o") == pytest.approx(30.0)
    clock.advance(30)
    assert pool.acquire(a, "gpt-4o").trial


def test_an_abandoned_trial_frees_the_slot_without_judging():
    pool, clock = make_pool({"name": "a"})
    a = pool.backend("a")
    _trip(pool, clock)
    pool.abandon(pool.acquire(a, "gpt-4o"))
    assert pool.snapshot()["a"]["state"] == "half_open"
    assert pool.acquire(a, "gpt-4o").trial


def test_a_429_on_the_trial_closes_the_circuit_and_cools_down():
    pool, clock = make_pool({"name": "a"})
    a = pool.backend("a")
    _trip(pool, clock)
    pool.finish(pool.acquire(a, "gpt-4o"), Outcome.answered(429, {"retry-after": "4"}))
    assert pool.snapshot()["a"]["state"] == "cooling_down"
    clock.advance(4)
    assert pool.snapshot()["a"]["state"] == "healthy"


def test_while_half_open_with_a_trial_running_retry_after_is_short():
    pool, clock = make_pool({"name": "a"})
    _trip(pool, clock)
    pool.acquire(pool.backend("a"), "gpt-4o")
    assert pool.retry_after("gpt-4o") == pytest.approx(1.0)


def test_pinned_backend_gets_the_request_even_while_cooling_down():
    pool, clock = make_pool({"name": "a"}, {"name": "b"}, {"name": "c", "deployments": ["other"]})
    a = pool.backend("a")
    pool.record(a, Outcome.answered(429, {"retry-after": "30"}), deployment="gpt-4o")
    _trip(pool, clock, "b")
    clock.advance(-30)  # b is open, not half-open
    assert names(pool.plan("gpt-4o", pinned="a")) == ["a"]
    assert names(pool.plan("gpt-4o", pinned="b")) == ["b"]
    assert pool.acquire(a, "gpt-4o", pinned=True) is not None
    assert pool.acquire(a, "gpt-4o") is None
    # Unknown or not configured for the deployment: normal selection.
    assert pool.plan("gpt-4o", pinned="gone") == []
    assert names(pool.plan("gpt-4o", pinned="c")) == []
    assert names(pool.plan(None, pinned="c")) == ["c"]


def test_snapshot_shows_state_and_no_secrets():
    pool, clock = make_pool(
        {"name": "a", "endpoint": "https://user:pw@a.openai.azure.com/some/path?sig=abc&api-key=k"},
        {"name": "b", "weight": 3, "priority": 2, "deployments": [], "deployment_map": {"gpt-4o": "gpt-4o-eu"}},
    )
    pool.record(pool.backend("b"), Outcome.answered(429, {"retry-after": "2"}), deployment="gpt-4o")
    snap = pool.snapshot()
    assert snap["a"] == {
        "state": "healthy",
        "until": None,
        "cooling_down": {},
        "recent_failures": 0,
        "trial_in_flight": False,
        "priority": 1,
        "weight": 1,
        "deployments": ["gpt-4o"],
        "deployment_map": {},
        "endpoint": "https://a.openai.azure.com",
        "auth": "api_key",
    }
    assert snap["b"]["state"] == "cooling_down" and snap["b"]["until"] == "2027-01-15T08:00:02.000Z"
    assert snap["b"]["deployments"] == ["gpt-4o"] and snap["b"]["weight"] == 3
    text = orjson.dumps(snap).decode()
    for secret in ("secret-key", "pw", "sig=", "api-key", "?"):
        assert secret not in text


def test_pool_from_settings():
    from shared.errors import ConfigurationError
    from shared.settings import Settings

    env = {
        "GATEWAY_BACKENDS": '[{"name": "a", "endpoint": "https://a.openai.azure.com", "deployments": ["*"]}]',
        "GATEWAY_MAX_ATTEMPTS": "4",
    }
    pool = BackendPool.from_settings(Settings.from_env(env))
    assert [b.name for b in pool.backends] == ["a"] and pool.policy.max_attempts == 4
    with pytest.raises(ConfigurationError, match=r"GATEWAY_BACKENDS\[0\]"):
        BackendPool.from_settings(
            Settings.from_env({"GATEWAY_BACKENDS": '[{"name": "a", "endpoint": "nope", "deployments": ["*"]}]'})
        )
