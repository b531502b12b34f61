"""What the Functions host indexes for the parser, read from the decorated app itself.

Like the host, each test imports function_app.py afresh and indexes it once (the SDK refuses to
index the same app object twice).
"""

import importlib.util
import json
from pathlib import Path

import pytest

APP_FILE = Path(__file__).resolve().parents[1] / "function_app.py"


@pytest.fixture
def module():
    spec = importlib.util.spec_from_file_location("function_app_indexed", APP_FILE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def parser_fn(module):
    (fn,) = [f for f in module.app.get_functions() if f.get_function_name() == "parser"]
    return fn


def test_parser_is_an_event_hub_trigger_with_batches_and_settings_driven_names(parser_fn):
    fn = parser_fn
    binding = json.loads(fn.get_function_json())["bindings"][0]
    assert binding["type"] == "eventHubTrigger" and binding["direction"] == "IN"
    assert binding["name"] == "events"
    assert binding["cardinality"] == "MANY"
    assert binding["eventHubName"] == "%EVENT_HUB_NAME%"
    assert binding["consumerGroup"] == "%EVENT_HUB_CONSUMER_GROUP%"
    # Identity-based: a connection *prefix* (EventHubConnection__fullyQualifiedNamespace), never a string.
    assert binding["connection"] == "EventHubConnection"
    assert not fn.is_http_function()


def test_parser_has_a_bounded_retry_policy(parser_fn):
    policy = parser_fn.get_settings_dict("retry_policy")
    assert policy["strategy"] == "exponential_backoff"
    assert 0 < int(policy["max_retry_count"]) <= 10


def test_settings_named_by_the_trigger_exist():
    values = json.loads((APP_FILE.parent / "local.settings.sample.json").read_text())["Values"]
    for name in ("EVENT_HUB_NAME", "EVENT_HUB_CONSUMER_GROUP", "EventHubConnection__fullyQualifiedNamespace"):
        assert name in values


async def test_the_trigger_hands_event_bodies_to_the_handler(module, parser_fn, monkeypatch):
    import azure.functions as func

    from testing.factories import exchange, text_stream
    from testing.memory import memory_ports

    ports = memory_ports()
    await ports.exchanges.save(
        exchange(request_id="fa-1", body={"messages": [], "stream": True}, sse_text=text_stream(["x"]))
    )
    monkeypatch.setattr(module, "ports", lambda: ports)
    user_function = parser_fn.get_user_function()
    await user_function([func.EventHubEvent(body=b"fa-1")])
    assert [r["request_id"] for r in ports.sink.emitted] == ["fa-1"]
