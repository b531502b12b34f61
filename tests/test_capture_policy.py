"""CAPTURE_LEVELS and RETENTION: parsing, one-line errors naming the setting, and precedence
(a subscription's entry over its product's, unlisted audiences get the default)."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.privacy.policy import DAY, FOREVER, CapturePolicy, Retention, RetentionPolicy


def test_a_subscription_entry_wins_over_its_product_and_unlisted_audiences_get_full() -> None:
    policy = CapturePolicy.parse('{"standard": "redacted", "subscription:team-hr": "metadata", "vault": "none"}')
    assert policy.level_for("standard", "team-a").value == "redacted"
    assert policy.level_for("standard", "team-a").rule == "standard"
    hr = policy.level_for("standard", "team-hr")
    assert (hr.value, hr.rule) == ("metadata", "subscription:team-hr")
    assert policy.level_for("vault", "x").value == "none"
    other = policy.level_for("premium", "team-b")
    assert (other.value, other.rule) == ("full", "default")
    assert CapturePolicy.parse("").level_for("standard", "a").value == "full"
    assert CapturePolicy.parse('{"default": "metadata"}').level_for("standard", "a").value == "metadata"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{", "CAPTURE_LEVELS is not valid JSON"),
        ('["full"]', "CAPTURE_LEVELS must be a JSON object"),
        ('{"standard": "partial"}', "CAPTURE_LEVELS['standard'] must be one of full, redacted, metadata, none"),
        ('{"subscription:": "none"}', "CAPTURE_LEVELS has an empty audience key"),
    ],
)
def test_a_bad_capture_levels_setting_is_one_line_naming_it(raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        CapturePolicy.parse(raw)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_retention_per_product_over_the_defaults() -> None:
    policy = RetentionPolicy.parse(
        '{"standard": {"exchanges_days": 30, "records_days": 400}, "subscription:team-hr": {"exchanges_days": 1},'
        ' "default": {"records_days": 730}}',
        exchange_ttl_seconds=7 * DAY,
    )
    assert policy.for_audience("standard", "team-a") == Retention(30 * DAY, 400 * DAY)
    assert policy.for_audience("standard", "team-hr") == Retention(1 * DAY, 730 * DAY)
    assert policy.for_audience("premium", "x") == Retention(7 * DAY, 730 * DAY)
    plain = RetentionPolicy.parse("", exchange_ttl_seconds=3600)
    assert plain.for_audience("any", "x") == Retention(3600, FOREVER)
    # Details hold content: they go with the exchange, or with the record when that is sooner.
    assert Retention(30 * DAY, 400 * DAY).details_seconds == 30 * DAY
    assert Retention(FOREVER, 10 * DAY).details_seconds == 10 * DAY
    assert Retention(7 * DAY, FOREVER).details_seconds == 7 * DAY


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"standard": 30}', "RETENTION['standard'] must be an object with exchanges_days and/or records_days"),
        ('{"standard": {"exchange_days": 30}}', "RETENTION['standard'] must be an object"),
        (
            '{"standard": {"records_days": 0}}',
            "RETENTION['standard'].records_days must be a positive number of days or -1",
        ),
        ('{"standard": {"records_days": "400"}}', "RETENTION['standard'].records_days must be a positive number"),
    ],
)
def test_a_bad_retention_setting_is_one_line_naming_it(raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RetentionPolicy.parse(raw)
    assert str(info.value).startswith(message)
