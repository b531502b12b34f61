from email.utils import formatdate

import pytest

from proxy.routing.throttling import parse_duration, parse_retry_after, throttle_seconds

NOW = 1_800_000_000.0  # a fixed wall-clock time


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("1h2m3.5s", 3723.5),
        ("20ms", 0.02),
        ("0s", 0.0),
        ("17", 17.0),
        ("0.5", 0.5),
        (" 2s ", 2.0),
    ],
)
def test_parses_aoai_reset_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5 s", "1x", "s", "-3", "1s garbage", "nan", "inf"])
def test_unreadable_durations_are_none(text):
    assert parse_duration(text) is None


def test_retry_after_as_seconds_and_as_http_date():
    assert parse_retry_after("7", NOW) == 7.0
    assert parse_retry_after(formatdate(NOW + 42, usegmt=True), NOW) == pytest.approx(42.0)
    assert parse_retry_after(formatdate(NOW - 10, usegmt=True), NOW) == 0.0
    assert parse_retry_after("not a date", NOW) is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),  # milliseconds are the precise one
        ({"Retry-After": "9"}, 9.0),  # any header case
        ({"retry-after": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"x-ratelimit-reset-requests": "1s"}, 1.0),
        ({"x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"x-ratelimit-reset-tokens": "12"}, 12.0),
        # The exhausted limit says which reset applies...
        (
            {
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-reset-tokens": "6m0s",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-remaining-tokens": "900",
            },
            1.0,
        ),
        (
            {
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-reset-tokens": "6m0s",
                "x-ratelimit-remaining-requests": "3",
                "x-ratelimit-remaining-tokens": "0",
            },
            360.0,
        ),
        # ...and when unknown, the later one wins so a throttled backend is not called early.
        ({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}, 360.0),
        ({"retry-after-ms": "bogus", "retry-after": "3"}, 3.0),
    ],
)
def test_throttle_seconds_from_each_header_form(headers, seconds):
    assert throttle_seconds(headers, NOW) == pytest.approx(seconds)


def test_no_throttle_header_is_none():
    assert throttle_seconds({"content-type": "application/json"}, NOW) is None
    assert throttle_seconds([("Retry-After", "4")], NOW) == 4.0
