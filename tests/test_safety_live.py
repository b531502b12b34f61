"""Against a real Azure AI Content Safety resource, when CONTENT_SAFETY_LIVE_ENDPOINT names one."""

import os

import aiohttp
import pytest

from shared.safety.analysis import analyze
from shared.safety.client import AzureContentSafety
from shared.safety.config import SafetyConfig
from shared.settings import Settings

ENDPOINT = os.environ.get("CONTENT_SAFETY_LIVE_ENDPOINT")
pytestmark = [pytest.mark.azure, pytest.mark.skipif(not ENDPOINT, reason="CONTENT_SAFETY_LIVE_ENDPOINT not set")]


async def test_live_analysis_and_prompt_shields():
    env = {
        "CONTENT_SAFETY_ENDPOINT": ENDPOINT,
        "CONTENT_SAFETY_PROMPT_SHIELDS": "true",
        "CONTENT_SAFETY_ANALYZE_PROMPT": "true",
    }
    if os.environ.get("CONTENT_SAFETY_LIVE_KEY"):
        env["CONTENT_SAFETY_KEY"] = os.environ["CONTENT_SAFETY_LIVE_KEY"]  # else managed identity / az login
    config = SafetyConfig.from_settings(Settings.from_env(env))
    async with aiohttp.ClientSession() as session:
        client = AzureContentSafety.from_config(config, session)
        try:
            safety = await analyze(
                "What is the capital of France?", "Paris. " * 3000, product="live", config=config, client=client
            )
        finally:
            await client.close()
    assert safety["status"] == "ok", safety
    assert safety["prompt_attack"] is False
    assert set(safety["completion"]) == {"Hate", "SelfHarm", "Sexual", "Violence"}
