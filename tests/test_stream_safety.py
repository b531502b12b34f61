"""Which streams the proxy enforces (`proxy.streams.safety.StreamSafety`), and the analyser's lifetime."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from proxy.handler import build_proxy
from proxy.recorder import ExchangeRecorder
from proxy.streams.safety import StreamSafety
from shared.errors import ConfigurationError
from shared.exchange import Identity
from shared.normalize.apis import classify
from shared.safety.client import AzureContentSafety
from shared.safety.config import SafetyConfig
from shared.settings import Settings

ENFORCING = SafetyConfig(endpoint="http://127.0.0.1:9", key="k", modes={"default": "monitor", "kids": "enforce"})


def call(product: str, path: str = "/openai/deployments/gpt-4o/chat/completions"):
    route = classify(path)
    assert route is not None
    return SimpleNamespace(route=route, recorder=ExchangeRecorder("rid", Identity(product=product)))


def response(status: int = 200, content_type: str = "text/event-stream"):
    return SimpleNamespace(status=status, content_type=content_type, close=lambda: None)


async def upstream():
    yield b"data: [DONE]\n\n"


async def test_monitor_returns_the_very_same_iterator_and_builds_no_client():
    safety = StreamSafety(ENFORCING)
    stream = upstream()
    assert safety.wrap(call("standard"), response(), stream) is stream  # no extra layer, no per-chunk work
    assert safety._analyser is None
    await safety.aclose()


@pytest.mark.parametrize(
    "config",
    [
        SafetyConfig(modes={"kids": "enforce"}),  # no endpoint: off for everyone
        SafetyConfig(endpoint="http://127.0.0.1:9", modes={"default": "monitor"}),  # nobody enforces
    ],
)
async def test_inactive_configurations_never_enforce(config):
    safety = StreamSafety(config)
    assert not safety.active
    stream = upstream()
    assert safety.wrap(call("kids"), response(), stream) is stream


@pytest.mark.parametrize(
    "path, resp",
    [
        ("/openai/deployments/emb/embeddings", response()),  # no text stream to hold back
        ("/openai/deployments/gpt-4o/chat/completions", response(content_type="application/json")),  # not streamed
        ("/openai/deployments/gpt-4o/chat/completions", response(status=429, content_type="application/json")),
    ],
)
async def test_only_successful_text_streams_are_enforced(path, resp):
    safety = StreamSafety(ENFORCING)
    c, stream = call("kids", path), upstream()
    assert safety.wrap(c, resp, stream) is stream
    assert c.recorder.enforcement is None


async def test_enforcing_product_gets_enforce_and_one_shared_client_closed_on_aclose():
    safety = StreamSafety(ENFORCING)
    c = call("kids")
    stream = upstream()
    wrapped = safety.wrap(c, response(), stream)
    assert wrapped is not stream
    # Until the stream reports its end, the exchange says it was not seen through.
    assert c.recorder.enforcement["action"] == "aborted"
    client = safety.analyser()
    assert isinstance(client, AzureContentSafety) and safety.analyser() is client
    session = safety._session
    await wrapped.aclose()
    await safety.aclose()
    assert session is not None and session.closed and safety._analyser is None


def test_wrong_settings_fail_when_read_not_per_request():
    with pytest.raises(ConfigurationError, match="CONTENT_SAFETY_MODES"):
        Settings(content_safety_endpoint="http://127.0.0.1:9", content_safety_modes_json='{"kids": "block"}')
