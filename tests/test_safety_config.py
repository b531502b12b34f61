import json
import re
from pathlib import Path

import pytest

from shared.errors import ConfigurationError
from shared.safety.config import SafetyConfig
from shared.settings import Settings


def config(**env):
    return SafetyConfig.from_settings(Settings.from_env(env))


def test_defaults_are_off_and_monitor():
    c = config()
    assert not c.enabled and c.key is None
    assert c.stream_policy("any").mode == "monitor"
    assert c.thresholds_for("any") == {"Hate": 4, "SelfHarm": 4, "Sexual": 4, "Violence": 4}
    assert (c.window_chars, c.window_overlap, c.stream_window_chars, c.stream_window_overlap) == (
        10_000,
        200,
        1000,
        100,
    )


def test_per_product_thresholds_modes_and_fail_modes_fall_back_to_default():
    c = config(
        CONTENT_SAFETY_ENDPOINT="https://cs.example",
        CONTENT_SAFETY_THRESHOLDS='{"default": {"Hate": 2}, "kids": {"Violence": 2}}',
        CONTENT_SAFETY_MODES='{"kids": "enforce"}',
        CONTENT_SAFETY_FAIL_MODES='{"default": "open", "kids": "closed"}',
        CONTENT_SAFETY_STREAM_WINDOW_CHARS="500",
        CONTENT_SAFETY_STREAM_WINDOW_OVERLAP="50",
    )
    assert c.thresholds_for("kids") == {"Hate": 2, "SelfHarm": 4, "Sexual": 4, "Violence": 2}
    assert c.thresholds_for("adults") == {"Hate": 2, "SelfHarm": 4, "Sexual": 4, "Violence": 4}
    kids, adults = c.stream_policy("kids"), c.stream_policy("adults")
    assert (kids.mode, kids.fail, kids.window_chars, kids.overlap_chars) == ("enforce", "closed", 500, 50)
    assert (adults.mode, adults.fail) == ("monitor", "open")


def test_enforce_needs_an_endpoint():
    assert config(CONTENT_SAFETY_MODES='{"default": "enforce"}').stream_policy("x").mode == "monitor"


@pytest.mark.parametrize(
    "env,message",
    [
        ({"CONTENT_SAFETY_THRESHOLDS": "{nope"}, "not valid JSON"),
        (
            {"CONTENT_SAFETY_THRESHOLDS": '{"default": {"Spam": 2}}'},
            "CONTENT_SAFETY_THRESHOLDS['default']: key 'Spam' must be one of 'Hate', 'SelfHarm', 'Sexual' or 'Violence'",
        ),
        (
            {"CONTENT_SAFETY_THRESHOLDS": '{"default": {"Hate": 9}}'},
            "CONTENT_SAFETY_THRESHOLDS['default']['Hate']: must be <= 7, got 9",
        ),
        (
            {"CONTENT_SAFETY_MODES": '{"default": "block"}'},
            "CONTENT_SAFETY_MODES['default']: must be one of 'monitor' or 'enforce', got 'block'",
        ),
        ({"CONTENT_SAFETY_FAIL_MODES": '["open"]'}, "CONTENT_SAFETY_FAIL_MODES: must be an object"),
        ({"CONTENT_SAFETY_WINDOW_CHARS": "20000"}, "CONTENT_SAFETY_WINDOW_CHARS"),
        ({"CONTENT_SAFETY_STREAM_WINDOW_OVERLAP": "1000"}, "CONTENT_SAFETY_STREAM_WINDOW"),
        ({"CONTENT_SAFETY_OUTPUT_TYPE": "Three"}, "CONTENT_SAFETY_OUTPUT_TYPE"),
        ({"CONTENT_SAFETY_KEY_SETTING": "MISSING_SETTING"}, "MISSING_SETTING"),
        ({"CONTENT_SAFETY_MAX_RETRIES": "many"}, "CONTENT_SAFETY_MAX_RETRIES"),
    ],
)
def test_bad_settings_name_the_setting(env, message):
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        config(**env)


def test_every_content_safety_setting_is_in_the_sample():
    read = set(re.findall(r'"(CONTENT_SAFETY_[A-Z_]+)"', Path("shared/settings.py").read_text()))
    sample = json.loads(Path("local.settings.sample.json").read_text())["Values"]
    assert read and read <= set(sample)
