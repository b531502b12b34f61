"""The simulator answers mistakes as Azure OpenAI does: unknown deployments, missing or unknown
api-versions, stream usage a deployment or version does not support, and rate limits per deployment."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncAzureOpenAI

from devhost.simulator import SimulatorConfig, serve
from devhost.simulator.__main__ import parse_args
from devhost.simulator.catalog import DEFAULT_DEPLOYMENTS, Deployment, version_at_least

CHAT = {"messages": [{"role": "user", "content": "Hi"}]}
KEY = {"api-key": "k"}


async def _post(url: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as session, session.post(url + path, json=body or CHAT, headers=KEY) as r:
        text = await r.text()
        return (
            r.status,
            {k.lower(): v for k, v in r.headers.items()},
            json.loads(text) if r.content_type == "application/json" else text,
        )


@pytest.fixture
async def sim() -> AsyncIterator[str]:
    async with serve(SimulatorConfig()) as handle:
        yield handle.url


def _client(url: str, version: str = "2024-10-21") -> AsyncAzureOpenAI:
    return AsyncAzureOpenAI(azure_endpoint=url, api_key="k", api_version=version, max_retries=0)


async def test_an_unknown_deployment_is_deployment_not_found(sim: str) -> None:
    status, _, body = await _post(sim, "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21")
    assert status == 404
    assert body == {
        "error": {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist. If you created the deployment within "
            "the last 5 minutes, please wait a moment and try again.",
        }
    }
    with pytest.raises(openai.NotFoundError) as err:
        await _client(sim).chat.completions.create(model="gpt-4o-mni", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "DeploymentNotFound"


async def test_the_v1_surface_checks_the_model_as_a_deployment(sim: str) -> None:
    status, _, body = await _post(sim, "/openai/v1/chat/completions", {**CHAT, "model": "gpt-4o-typo"})
    assert (status, body["error"]["code"]) == (404, "DeploymentNotFound")
    status, _, _ = await _post(sim, "/openai/v1/chat/completions", {**CHAT, "model": "gpt-4o"})
    assert status == 200


async def test_a_missing_api_version_is_resource_not_found(sim: str) -> None:
    status, _, body = await _post(sim, "/openai/deployments/gpt-4o/chat/completions")
    assert (status, body) == (404, {"error": {"code": "404", "message": "Resource not found"}})


@pytest.mark.parametrize("version", ["2024-13-45", "2024-10-21-preview", "latest", "2023-03-15"])
async def test_an_unsupported_api_version_is_refused(sim: str, version: str) -> None:
    status, _, body = await _post(sim, f"/openai/deployments/gpt-4o/chat/completions?api-version={version}")
    assert (status, body) == (400, {"error": {"code": "BadRequest", "message": "API version not supported"}})


async def test_the_v1_surface_needs_no_api_version_and_refuses_a_dated_one(sim: str) -> None:
    for query in ("", "?api-version=preview", "?api-version=latest"):
        status, _, _ = await _post(sim, "/openai/v1/chat/completions" + query, {**CHAT, "model": "gpt-4o"})
        assert status == 200, query
    status, _, body = await _post(
        sim, "/openai/v1/chat/completions?api-version=2024-10-21", {**CHAT, "model": "gpt-4o"}
    )
    assert (status, body["error"]["message"]) == (400, "API version not supported")


async def test_stream_options_need_an_api_version_that_knows_them(sim: str) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    status, _, error = await _post(sim, "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01", body)
    assert status == 400
    assert error == {
        "error": {
            "code": None,
            "message": "Unrecognized request argument supplied: stream_options",
            "param": None,
            "type": "invalid_request_error",
        }
    }
    stream = await _client(sim).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}], stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].choices == []


async def test_a_deployment_without_stream_usage_refuses_stream_options() -> None:
    config = SimulatorConfig(deployments={"legacy": Deployment("gpt-35-turbo", "0613", stream_usage=False)})
    async with serve(config) as handle:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        status, _, error = await _post(
            handle.url, "/openai/deployments/legacy/chat/completions?api-version=2024-10-21", body
        )
        assert (status, error["error"]["message"]) == (400, "Unrecognized request argument supplied: stream_options")
        status, _, _ = await _post(
            handle.url, "/openai/deployments/legacy/chat/completions?api-version=2024-10-21", {**CHAT, "stream": True}
        )
        assert status == 200


async def test_each_deployment_reports_its_model_and_version() -> None:
    config = SimulatorConfig(
        deployments={"prod": Deployment("gpt-4o", "2024-11-20"), "emb": Deployment("text-embedding-3-large", "1")}
    )
    async with serve(config) as handle:
        client = _client(handle.url)
        reply = await client.chat.completions.create(model="prod", messages=[{"role": "user", "content": "x"}])
        assert reply.model == "gpt-4o-2024-11-20"
        emb = await client.embeddings.create(model="emb", input="x")
        assert emb.model == "text-embedding-3-large" and len(emb.data[0].embedding) == 3072
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])


async def test_a_requests_per_minute_limit_gives_aoai_429s() -> None:
    config = SimulatorConfig(deployments={"small": Deployment("gpt-4o-mini", "2024-07-18", requests_per_minute=2)})
    async with serve(config) as handle:
        path = "/openai/deployments/small/chat/completions?api-version=2024-10-21"
        first, second = await _post(handle.url, path), await _post(handle.url, path)
        assert (first[0], second[0]) == (200, 200)
        assert first[1]["x-ratelimit-limit-requests"] == "2"
        assert (first[1]["x-ratelimit-remaining-requests"], second[1]["x-ratelimit-remaining-requests"]) == ("1", "0")
        status, headers, body = await _post(handle.url, path)
        assert status == 429
        seconds = int(headers["retry-after"])
        assert 1 <= seconds <= 60 and 0 < int(headers["retry-after-ms"]) <= 60_000
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert body["error"]["code"] == "429"
        assert body["error"]["message"] == (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded "
            f"call rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds. Please go "
            "here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."
        )
        with pytest.raises(openai.RateLimitError):
            await _client(handle.url).chat.completions.create(
                model="small", messages=[{"role": "user", "content": "x"}]
            )
        # The limit is per deployment.
        assert handle.requests[-1].status == 429


async def test_a_tokens_per_minute_limit_counts_what_was_spent() -> None:
    config = SimulatorConfig(
        deployments={
            "tpm": Deployment("gpt-4o", "2024-08-06", tokens_per_minute=50),
            "free": Deployment("gpt-4o", "2024-08-06"),
        }
    )
    async with serve(config) as handle:
        path = "/openai/deployments/{}/chat/completions?api-version=2024-10-21"
        status, headers, body = await _post(handle.url, path.format("tpm"))
        assert status == 200 and headers["x-ratelimit-limit-tokens"] == "50"
        spent = body["usage"]["total_tokens"]
        assert spent > 50 and headers["x-ratelimit-remaining-tokens"] == "0"
        status, headers, body = await _post(handle.url, path.format("tpm"))
        assert status == 429 and "exceeded token rate limit" in body["error"]["message"]
        assert headers["retry-after-ms"]
        status, _, _ = await _post(handle.url, path.format("free"))
        assert status == 200


async def test_the_default_catalogue_serves_the_usual_models_only(sim: str) -> None:
    for name in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "text-embedding-3-small", "gpt-35-turbo-instruct"):
        assert name in DEFAULT_DEPLOYMENTS
    async with aiohttp.ClientSession() as session, session.get(sim + "/openai/v1/models", headers=KEY) as r:
        listed = {m["id"] for m in (await r.json())["data"]}
    assert "gpt-4o-2024-08-06" in listed and "text-embedding-3-small" in listed


async def test_any_deployment_is_served_only_when_asked() -> None:
    async with serve(SimulatorConfig(deployments=None)) as handle:
        status, _, body = await _post(
            handle.url, "/openai/deployments/whatever-name/chat/completions?api-version=2024-10-21"
        )
        assert status == 200 and body["model"] == "gpt-4o-2024-08-06"


def test_the_command_line_names_deployments_or_serves_any() -> None:
    config = parse_args(["--deployment", "a", "--deployment", "b"])[0]
    assert list(config.deployments or ()) == ["a", "b"]
    assert parse_args(["--any-deployment"])[0].deployments is None
    assert parse_args([])[0].deployments == DEFAULT_DEPLOYMENTS


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [
        ("2024-10-21", "2024-09-01-preview", True),
        ("2024-09-01-preview", "2024-09-01-preview", True),
        ("2024-08-01-preview", "2024-09-01-preview", False),
        ("2024-06-01", "2024-09-01-preview", False),
        (None, "2024-09-01-preview", False),
    ],
)
def test_api_versions_order_by_date(version: str | None, minimum: str, expected: bool) -> None:
    assert version_at_least(version, minimum) is expected
