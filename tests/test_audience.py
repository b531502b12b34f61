"""Per-audience policy, pure: one precedence rule, the AUDIENCE_POLICIES setting checked at start-up,
operations, batch input lines, list filtering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from proxy.audience import batch_models, filter_list
from shared.audience import (
    OPEN,
    AudiencePolicy,
    AudienceTable,
    CachePolicy,
    Resolved,
    operation_of,
    parse_policies,
    resolve,
)
from shared.errors import BadRequest, ConfigurationError
from shared.settings import Settings
from shared.wiring import build_ports

ROOT = Path(__file__).resolve().parents[1]


def test_subscription_wins_over_product_which_wins_over_default():
    table = {"standard": "redacted", "subscription:team-hr": "metadata"}
    assert resolve(table, product="standard", subscription_id="team-hr", default="full") == Resolved(
        "metadata", "subscription:team-hr"
    )
    assert resolve(table, product="standard", subscription_id="team-x", default="full") == Resolved(
        "redacted", "standard"
    )
    assert resolve(table, product="premium", subscription_id=None, default="full") == Resolved("full", "default")
    # A product that happens to be named like a subscription key does not shadow it.
    assert resolve({"team-hr": 1}, product=None, subscription_id="team-hr", default=0).rule == "default"


def test_the_issue_example_parses():
    policies = parse_policies(
        '{"standard": {"deployments": ["gpt-4o", "text-embedding-*"], "cache": {"ttl_seconds": 600}},'
        ' "subscription:team-lab": {"deployments": ["*"]}}'
    )
    standard = policies["standard"]
    assert standard.allows_deployment("gpt-4o") and standard.allows_deployment("text-embedding-3-small")
    assert not standard.allows_deployment("gpt-4o-mini") and not standard.allows_deployment("GPT-4O")
    assert standard.cache == CachePolicy(ttl_seconds=600)
    assert (
        policies["subscription:team-lab"].allows_deployment("anything")
        and policies["subscription:team-lab"].cache is None
    )
    assert parse_policies("") == {} and OPEN.allows_deployment("x") and OPEN.allows_operation("batch")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{", "AUDIENCE_POLICIES is not valid JSON"),
        ("[]", "AUDIENCE_POLICIES must be a JSON object"),
        ('{"std": []}', "AUDIENCE_POLICIES['std'] must be an object"),
        ('{"std": {"deployment": ["x"]}}', "AUDIENCE_POLICIES['std'] has unknown fields: deployment"),
        ('{"std": {"deployments": "gpt-4o"}}', "AUDIENCE_POLICIES['std'].deployments must be a list"),
        (
            '{"std": {"operations": ["chat", "fine_tuning"]}}',
            "AUDIENCE_POLICIES['std'].operations: unknown fine_tuning",
        ),
        ('{"std": {"cache": {"ttl_seconds": 0}}}', "AUDIENCE_POLICIES['std'].cache.ttl_seconds must be a positive"),
        ('{"std": {"cache": {"ttl_seconds": 60, "shared": "yes"}}}', "AUDIENCE_POLICIES['std'].cache.shared must be"),
        ('{"std": {"cache": {"ttl_seconds": 60, "max_entry_bytes": 5000000}}}', "max_entry_bytes must be between"),
        ('{"subscription:": {}}', "AUDIENCE_POLICIES: an empty key"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line_naming_it(raw, message):
    with pytest.raises(ConfigurationError) as refused:
        parse_policies(raw)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_cache_is_refused_where_the_capture_level_forbids_bodies():
    policies = json.dumps(
        {"standard": {"cache": {"ttl_seconds": 60}}, "subscription:hr": {"cache": {"ttl_seconds": 60}}}
    )
    AudienceTable.from_settings(policies, '{"standard": "redacted"}')  # bodies kept: allowed
    for levels, key in (
        ('{"standard": "metadata"}', "standard"),
        ('{"subscription:hr": "none"}', "subscription:hr"),
        ('{"default": "metadata"}', "standard"),
    ):
        with pytest.raises(ConfigurationError) as refused:
            AudienceTable.from_settings(policies, levels)
        text = str(refused.value)
        assert text.startswith(f"AUDIENCE_POLICIES['{key}'].cache is not allowed") and "CAPTURE_LEVELS" in text
        assert "\n" not in text
    # At request time, a subscription whose own level forbids bodies bypasses its product's cache.
    table = AudienceTable.from_settings(
        json.dumps({"standard": {"cache": {"ttl_seconds": 60}}}), '{"subscription:hr": "none"}'
    )
    assert table.capture_level("standard", "hr") == "none" and table.capture_level("standard", "x") == "full"


def test_start_up_refuses_a_bad_setting(tmp_path):
    env = {"AUDIENCE_POLICIES": '{"standard": {"deployments": "gpt-4o"}}', "SQLITE_PATH": str(tmp_path / "db")}
    with pytest.raises(ConfigurationError, match="AUDIENCE_POLICIES"):
        build_ports(Settings.from_env(env))
    done = subprocess.run(
        [sys.executable, "-c", "import function_app"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "AUDIENCE_POLICIES": '{"standard": {"cache": {"ttl_seconds": 60}}}',
            "CAPTURE_LEVELS": '{"standard": "metadata"}',
        },
    )
    assert done.returncode != 0
    assert "AUDIENCE_POLICIES['standard'].cache is not allowed" in done.stderr


@pytest.mark.parametrize(
    ("api", "path", "operation"),
    [
        ("chat.completions", "/openai/deployments/x/chat/completions", "chat"),
        ("completions", "/openai/v1/completions", "chat"),
        ("embeddings", "/openai/v1/embeddings", "embeddings"),
        ("audio.speech", "/openai/deployments/tts/audio/speech", "audio"),
        ("responses", "/openai/responses/resp_1", "responses"),
        ("other", "/openai/batches/batch_1/cancel", "batch"),
        ("other", "/openai/v1/files", "files"),
        ("other", "/openai/models", "models"),
        ("other", "/openai/deployments", "models"),
        ("other", "/openai/v1/vector_stores", None),
    ],
)
def test_operations(api, path, operation):
    assert operation_of(api, path) == operation


def _multipart(purpose: str, content: bytes) -> tuple[bytes, str]:
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_batch_models_reads_every_line_of_a_batch_upload_only():
    lines = b'{"custom_id": "1", "body": {"model": "gpt-4o"}}\n\n{"custom_id": "2", "body": {"model": "gpt-4.1"}}\n'
    assert batch_models(*_multipart("batch", lines)) == ["gpt-4o", "gpt-4.1"]
    assert batch_models(*_multipart("assistants", lines)) == []
    assert batch_models(b"{}", "application/json") == []
    with pytest.raises(BadRequest, match="Line 2"):
        batch_models(*_multipart("batch", b'{"body": {"model": "a"}}\nnot json\n'))


def test_lists_keep_only_allowed_entries():
    policy = AudiencePolicy(deployments=("gpt-4o", "text-embedding-*"))
    body = orjson.dumps(
        {
            "object": "list",
            "data": [
                {"id": "gpt-4o-2024-08-06"},
                {"id": "gpt-4o-mini-2024-07-18"},
                {"id": "text-embedding-3-small"},
                {"id": "gpt-4.1"},
            ],
        }
    )
    kept = orjson.loads(filter_list(body, policy))
    assert [d["id"] for d in kept["data"]] == ["gpt-4o-2024-08-06", "text-embedding-3-small"]
    assert kept["object"] == "list"
    assert filter_list(b"not json", policy) == b"not json"


def test_bicep_gives_template_created_deployments_prompt_shields_per_mode():
    from tests.iac_tools import BICEP_DIR, parse_bicep

    (parsed,) = parse_bicep([BICEP_DIR / "modules" / "openai.bicep"]).values()
    assert parsed["ok"], parsed.get("error")
    resources = parsed["json"]["resources"]
    policies = resources["shieldPolicies"]
    assert policies["type"] == "Microsoft.CognitiveServices/accounts/raiPolicies"
    assert policies["config"]["loop_type"]["detail"]["array_name"] == "shieldModes"
    config = policies["config"]["config"]
    assert config["name"] == "gateway-shields-${mode}"
    shields = config["properties"]["contentFilters"]["function"]["parameters"]["arg_3"]
    assert {(f["name"], f["source"], f["enabled"]) for f in shields} == {
        ("Jailbreak", "Prompt", True),
        ("Indirect Attack", "Prompt", True),
    }
    for f in shields:  # blocking exactly in block mode
        assert f["blocking"]["operator"]["operands"] == {"operand_1": "mode", "operand_2": "block"}
    text = (BICEP_DIR / "modules" / "openai.bicep").read_text()
    assert "raiPolicyName: 'gateway-shields-${d.?promptShields ?? promptShieldsMode}'" in text
    assert "'block'\n  'annotate'" in text
