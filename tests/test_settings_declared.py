"""Every setting is declared once (shared/settings.py); the docs, the sample and validation follow from it."""

import json
import re
from pathlib import Path

import pytest

from shared import settings_docs
from shared.errors import ConfigurationError
from shared.settings import DECLARATIONS, PositiveInt, Settings, misspelled, parse_json, setting

ROOT = Path(__file__).resolve().parents[1]


def test_the_settings_page_is_generated_from_the_declarations():
    current = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert current == settings_docs.page(current), "run `python -m shared.settings_docs`"


def test_the_sample_settings_file_is_generated_from_the_declarations():
    current = (ROOT / "local.settings.sample.json").read_text(encoding="utf-8")
    assert current == settings_docs.sample(), "run `python -m shared.settings_docs`"


def test_every_sample_value_is_valid():
    values = json.loads(settings_docs.sample())["Values"]
    assert Settings.from_env(values).max_attempts == Settings().max_attempts


def test_each_declaration_is_complete_and_unique():
    names = [d.name for d in DECLARATIONS]
    assert len(names) == len(set(names))
    for d in DECLARATIONS:
        assert d.meaning and d.type, d.name
        assert d.scope in {"app", "devhost", "host"}, d.name
    assert [d.name for d in DECLARATIONS if d.secret] == [
        "CAPTURE_SPILL_CONNECTION_STRING",
        "CONTENT_SAFETY_KEY",
        "PII_LANGUAGE_KEY",
    ]
    assert {d.name for d in DECLARATIONS if d.scope == "devhost"} == {
        "LOCAL_SUBSCRIPTIONS",
        "DEVHOST_HEADER_TIMEOUT_SECONDS",
        "DEVHOST_MAX_CONNECTIONS",
    }


def test_settings_are_read_from_any_mapping_with_empty_meaning_default():
    s = Settings.from_env({"GATEWAY_MAX_ATTEMPTS": "4", "LOG_STORE": "SQLITE", "UPSTREAM_IDLE_TIMEOUT_SECONDS": ""})
    assert (s.max_attempts, s.log_store, s.upstream_idle_timeout) == (4, "sqlite", Settings().upstream_idle_timeout)
    assert s.extra["GATEWAY_MAX_ATTEMPTS"] == "4"
    assert Settings(max_attempts=2).max_attempts == 2


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEWAY_MAX_ATTEMPTS": "0"}, "GATEWAY_MAX_ATTEMPTS: must be >= 1, got '0'"),
        ({"GATEWAY_MAX_ATTEMPTS": "x"}, "GATEWAY_MAX_ATTEMPTS: must be an integer, got 'x'"),
        ({"INJECT_STREAM_USAGE": "maybe"}, "INJECT_STREAM_USAGE: must be true or false, got 'maybe'"),
        ({"LOG_STORE": "postgres"}, "LOG_STORE: must be one of 'sqlite' or 'cosmos', got 'postgres'"),
        (
            {"EXCHANGE_TTL_SECONDS": "0"},
            "EXCHANGE_TTL_SECONDS: must be a positive number of seconds, or -1 for never, got '0'",
        ),
        ({"LOCAL_SUBSCRIPTIONS": '{"k": {"name": "no id"}}'}, "LOCAL_SUBSCRIPTIONS['k']['id']: is required"),
        ({"DEPLOYMENT_MODELS": '{"d": "gpt-4o"}'}, "DEPLOYMENT_MODELS['d']: must be an object, got 'gpt-4o'"),
        (
            {"DEPLOYMENT_MODELS": '{"d": {"modle": "gpt-4o"}}'},
            "DEPLOYMENT_MODELS['d']: unknown key 'modle' (did you mean 'model'?)",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting(env, message):
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(env)
    assert str(caught.value) == message


def test_a_secret_value_is_never_shown():
    class WithSecret(Settings):
        pin: PositiveInt = setting(1, "TEST_PIN", "a secret number", secret=True)

    with pytest.raises(ConfigurationError) as caught:
        WithSecret.from_env({"TEST_PIN": "s3cret"})
    assert str(caught.value) == "TEST_PIN: must be an integer"
    assert "s3cret" not in repr(Settings.from_env({"CONTENT_SAFETY_KEY": "s3cret"}))


def test_json_settings_parse_to_their_declared_shape():
    (backend,) = parse_json("GATEWAY_BACKENDS", '[{"name": "a", "endpoint": "https://a", "deployments": ["*"]}]')
    assert backend.auth.type == "managed_identity" and backend.weight == 1
    assert parse_json("DEPLOYMENT_MODELS", "") == {}


def test_misspelled_setting_names_get_the_closest_declared_one():
    names = ["GATEWAY_BACKEND", "GATEWAY_MAX_ATTEMPT", "AOAI_EASTUS_KEY", "LOG_STORE"]
    assert misspelled(names) == [
        ("GATEWAY_BACKEND", "GATEWAY_BACKENDS"),
        ("GATEWAY_MAX_ATTEMPT", "GATEWAY_MAX_ATTEMPTS"),
    ]


#: "`NAME` ... (default X)" in prose: the default a page states beside a setting's name.
_PROSE_DEFAULT = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`[^`.;]{0,60}?\bdefault[: ]+`?([\w./$-]+?)`?[),;\s]")


def test_defaults_stated_in_the_prose_are_the_declared_ones():
    declared = {d.name: d.default for d in DECLARATIONS}
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    stated = [
        (page.name, name, value)
        for page in pages
        for name, value in _PROSE_DEFAULT.findall(page.read_text(encoding="utf-8"))
        if name in declared
    ]
    assert stated, "the pattern still finds the defaults the pages state"
    assert [(page, name, value) for page, name, value in stated if value != declared[name]] == []


def test_a_backends_key_is_never_echoed_in_a_message():
    raw = (
        '[{"name": "a", "endpoint": "https://a", "deployments": ["*"], "auth": {"type": "api_key", "value": 12345678}}]'
    )
    with pytest.raises(ConfigurationError) as caught:
        parse_json("GATEWAY_BACKENDS", raw)
    assert str(caught.value) == "GATEWAY_BACKENDS[0] ('a'): 'auth.value' must be a string"
