"""The app settings bicep writes for the function app are exactly the ones the code reads.

What the code reads: the `Values` of local.settings.sample.json, every name `Settings.from_env` looks up,
and every literal environment lookup in the app's packages. Local-only settings are excluded below, each
with its reason; Azure-only forms are listed with theirs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from shared.settings import DECLARATIONS
from tests.iac_tools import BICEP_DIR, ROOT, parse_bicep

FUNCTION_APP = BICEP_DIR / "modules" / "function-app.bicep"

#: In local.settings.sample.json but deliberately not written by bicep.
LOCAL_ONLY = {
    "OTEL_TRACES_SAMPLER": "optional: an operator sets it (with OTEL_TRACES_SAMPLER_ARG) to sample traces; unset keeps every span",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "optional: an operator adds it by hand to reach their own collector",
    "GATEWAY_OTEL_CONSOLE": "console telemetry is for the dev host",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "message content stays off in Azure unless added by hand",
    "AzureWebJobsStorage": "connection-string form for Azurite/local runs; Azure uses the identity form "
    "AzureWebJobsStorage__accountName (no storage keys)",
    "FUNCTIONS_WORKER_RUNTIME": "Flex Consumption rejects it as an app setting: the runtime is "
    "functionAppConfig.runtime (python 3.13), checked below",
    "SQLITE_PATH": "embedded store of the dev host; in Azure LOG_STORE is cosmos",
    "BUDGET_SQLITE_PATH": "embedded budget ledgers of the dev host; in Azure they are in COSMOS_BUDGETS_CONTAINER",
    "LOCAL_SUBSCRIPTIONS": "the dev host stands in for APIM; in Azure APIM sets the x-gateway-* identity headers",
    "DEVHOST_HEADER_TIMEOUT_SECONDS": "the dev host's server; in Azure the Functions front end reads request heads",
    "DEVHOST_MAX_CONNECTIONS": "the dev host's server; in Azure the Functions front end and scale-out bound connections",
    "CONTENT_SAFETY_KEY": "a secret: in Azure the function app reaches Content Safety with its managed identity "
    "(role Cognitive Services User); add it by hand (as a Key Vault reference) only if you must use a key",
    "PII_LANGUAGE_ENDPOINT": "optional second PII stage: an operator adds it with PII_LANGUAGE_KEY (a Key Vault "
    "reference) when they deploy an Azure AI Language resource",
    "PII_LANGUAGE_KEY": "a secret: added by hand as a Key Vault reference with PII_LANGUAGE_ENDPOINT",
    "CAPTURE_SPILL_CONNECTION_STRING": "connection-string form of the spill store for Azurite; Azure uses "
    "CAPTURE_SPILL_BLOB_URL with the app's identity (no storage keys)",
    "CONTENT_SAFETY_KEY_SETTING": "names the setting holding a Content Safety key; unused with managed identity",
}

#: Written by bicep although local.settings.sample.json has another form of them.
AZURE_ONLY = {
    "AzureWebJobsStorage__accountName": "identity-based form of AzureWebJobsStorage",
}

#: Set by the Functions platform itself, never by us; the code may read them.
PLATFORM_PROVIDED = {"WEBSITE_INSTANCE_ID", "WEBSITE_SITE_NAME", "WEBSITE_HOSTNAME", "CONTAINER_NAME"}

#: Values bicep must pin (Azure mode of the app).
AZURE_VALUES = {
    "LOG_STORE": "cosmos",
    "EVENT_CHANNEL": "eventhub",
    "PYTHON_ENABLE_INIT_INDEXING": "1",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "true",
}


def names_settings_reads() -> set[str]:
    """Every setting the app declares (shared/settings.py): the names `Settings.from_env` reads."""
    return {d.name for d in DECLARATIONS if d.field is not None}


_ENV_LOOKUP = re.compile(
    r"""(?:os\.environ\.get|os\.getenv|environ\.get|os\.environ\[|environ\[)\(?\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""
)


def names_code_looks_up() -> dict[str, str]:
    """Literal environment lookups outside shared/settings.py: name -> file."""
    found = {}
    for package in ("shared", "proxy", "parser", "function_app.py"):
        base = ROOT / package
        files = [base] if base.is_file() else sorted(base.rglob("*.py")) if base.is_dir() else []
        for path in files:
            for name in _ENV_LOOKUP.findall(path.read_text()):
                found[name] = str(path.relative_to(ROOT))
    return found


def sample_values() -> dict[str, str]:
    return json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]


def code_settings() -> set[str]:
    return set(sample_values()) | names_settings_reads()


@pytest.fixture(scope="module")
def bicep_settings() -> dict[str, Any]:
    result = parse_bicep([FUNCTION_APP])[FUNCTION_APP]
    assert result["ok"], result.get("error")
    site = result["json"]["resources"]["site"]["config"]
    entries = site["properties"]["siteConfig"]["appSettings"]
    return {entry["name"]: entry["value"] for entry in entries}


def test_settings_py_and_sample_agree() -> None:
    read = names_settings_reads()
    assert read, "Settings.from_env reads settings"
    assert read - set(sample_values()) == set(), "every setting the code reads is in local.settings.sample.json"


def test_every_literal_env_lookup_is_a_known_setting() -> None:
    unknown = {n: f for n, f in names_code_looks_up().items() if n not in code_settings() | PLATFORM_PROVIDED}
    assert unknown == {}, "add these to shared/settings.py and local.settings.sample.json"


def test_bicep_writes_exactly_the_settings_the_code_reads(bicep_settings: dict[str, Any]) -> None:
    expected = (code_settings() - set(LOCAL_ONLY)) | set(AZURE_ONLY)
    written = set(bicep_settings)
    assert sorted(expected - written) == [], "read by the code but not written by bicep"
    assert sorted(written - expected) == [], "written by bicep but read by nobody"


def test_exclusions_are_not_stale() -> None:
    assert set(LOCAL_ONLY) <= set(sample_values()), "an excluded setting no longer exists: drop the exclusion"


def test_bicep_pins_the_azure_mode(bicep_settings: dict[str, Any]) -> None:
    for name, value in AZURE_VALUES.items():
        assert bicep_settings[name] == value, name


def test_no_secret_or_connection_string_in_app_settings(bicep_settings: dict[str, Any]) -> None:
    for name, value in bicep_settings.items():
        text = json.dumps(value)
        assert "AccountKey=" not in text and "SharedAccessKey" not in text, name
        assert "listKeys" not in text, name


def test_settings_page_names_every_setting() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    missing = [name for name in sorted(code_settings() | set(AZURE_ONLY)) if f"`{name}`" not in page]
    assert missing == []


#: Tunables whose bicep default must equal the local sample value: setting -> (main.bicep param, key).
TUNABLE_DEFAULTS = {
    "GATEWAY_MAX_ATTEMPTS": ("routing", "maxAttempts"),
    "GATEWAY_RETRY_DEADLINE_SECONDS": ("routing", "retryDeadlineSeconds"),
    "GATEWAY_CIRCUIT_FAILURES": ("routing", "circuitFailures"),
    "GATEWAY_CIRCUIT_WINDOW_SECONDS": ("routing", "circuitWindowSeconds"),
    "GATEWAY_CIRCUIT_COOLDOWN_SECONDS": ("routing", "circuitCooldownSeconds"),
    "RESPONSES_AFFINITY_TTL_SECONDS": ("routing", "responsesAffinityTtlSeconds"),
    "CONTENT_SAFETY_THRESHOLDS": ("contentSafetyOptions", "thresholds"),
    "CONTENT_SAFETY_OUTPUT_TYPE": ("contentSafetyOptions", "outputType"),
    "CONTENT_SAFETY_WINDOW_CHARS": ("contentSafetyOptions", "windowChars"),
    "CONTENT_SAFETY_WINDOW_OVERLAP": ("contentSafetyOptions", "windowOverlap"),
    "CONTENT_SAFETY_STREAM_WINDOW_CHARS": ("contentSafetyOptions", "streamWindowChars"),
    "CONTENT_SAFETY_STREAM_WINDOW_OVERLAP": ("contentSafetyOptions", "streamWindowOverlap"),
    "CONTENT_SAFETY_MODES": ("contentSafetyOptions", "modes"),
    "CONTENT_SAFETY_FAIL_MODES": ("contentSafetyOptions", "failModes"),
    "CONTENT_SAFETY_MAX_RETRIES": ("contentSafetyOptions", "maxRetries"),
    "CONTENT_SAFETY_RETRY_BACKOFF_SECONDS": ("contentSafetyOptions", "retryBackoffSeconds"),
    "CONTENT_SAFETY_MAX_RETRY_AFTER_SECONDS": ("contentSafetyOptions", "maxRetryAfterSeconds"),
    "CONTENT_SAFETY_TIMEOUT_SECONDS": ("contentSafetyOptions", "timeoutSeconds"),
    "CONTENT_SAFETY_MAX_CONCURRENCY": ("contentSafetyOptions", "maxConcurrency"),
    "UPSTREAM_CONNECT_TIMEOUT_SECONDS": ("upstream", "connectTimeoutSeconds"),
    "UPSTREAM_FIRST_BYTE_TIMEOUT_SECONDS": ("upstream", "firstByteTimeoutSeconds"),
    "UPSTREAM_IDLE_TIMEOUT_SECONDS": ("upstream", "idleTimeoutSeconds"),
    "UPSTREAM_TOTAL_TIMEOUT_SECONDS": ("upstream", "totalTimeoutSeconds"),
    "UPSTREAM_MAX_CONNECTIONS": ("upstream", "maxConnections"),
    "EXCHANGE_TTL_SECONDS": ("exchangeTtlSeconds", None),
    "CAPTURE_LEVELS": ("captureLevels", None),
    "RETENTION": ("retention", None),
    "MAX_REQUEST_BODY_BYTES": ("maxRequestBodyBytes", None),
    "PARSER_MAX_CONCURRENCY": ("parserMaxConcurrency", None),
}


def _same(bicep_value: Any, sample_value: str) -> bool:
    if isinstance(bicep_value, (dict, list)):
        return bicep_value == json.loads(sample_value)
    try:
        return float(bicep_value) == float(sample_value)
    except (TypeError, ValueError):
        return str(bicep_value) == sample_value


def test_azure_defaults_match_the_local_sample() -> None:
    main = BICEP_DIR / "main.bicep"
    params = parse_bicep([main])[main]["json"]["parameters"]
    sample = sample_values()
    different = {}
    for setting, (param, key) in TUNABLE_DEFAULTS.items():
        if setting not in sample:
            continue  # the setting left the code; test_bicep_writes_exactly... reports it
        default = params[param]["default"]
        value = default if key is None else default[key]
        if not _same(value, sample[setting]):
            different[setting] = (value, sample[setting])
    assert different == {}
