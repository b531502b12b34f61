"""function_app.py through the real Functions Python runtime (azure-functions-runtime, Python 3.13).

Each test runs the runtime in its own process (`python -m devhost.runtime`), as the Functions host
runs its worker: the runtime keeps its registry in module globals and indexes the app once. Nothing
here is a double: the runtime's loader, function registry, binding converters, HTTP coordinator and
the FastAPI extension's web server are the installed packages pinned in requirements.txt.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.servers import free_port
from devhost.simulator import SimulatorConfig, SimulatorHandle
from devhost.simulator import run_in_thread as run_simulator
from tests.test_bicep_settings import bicep_settings  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent
KEY = "runtime-test-key"
CHAT = "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"


def _index(app_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "devhost.runtime", "index", "--app-dir", str(app_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def indexed() -> dict[str, Any]:
    done = _index(ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return {f["name"]: f for f in json.loads(done.stdout.strip().splitlines()[-1])["functions"]}


def _trigger(function: dict[str, Any]) -> dict[str, Any]:
    return next(b for b in function["bindings"] if b["type"].endswith("Trigger"))


# ------------------------------------------------------------------------------------ indexing
def test_the_runtime_indexes_and_loads_every_function(indexed: dict[str, Any]) -> None:
    assert set(indexed) == {"openai_proxy", "health", "parser", "reconcile"}
    assert _trigger(indexed["reconcile"]) == {
        "direction": "IN",
        "type": "timerTrigger",
        "name": "timer",
        "schedule": "0 */5 * * * *",
        "runOnStartup": False,
        "useMonitor": True,
    }
    proxy = _trigger(indexed["openai_proxy"])
    assert (proxy["route"], sorted(proxy["methods"]), proxy["authLevel"]) == (
        "openai/{*path}",
        ["DELETE", "GET", "POST"],
        "FUNCTION",
    )
    assert {"direction": "OUT", "type": "http", "name": "$return"} in indexed["openai_proxy"]["bindings"]
    parser = _trigger(indexed["parser"])
    assert parser == {
        "direction": "IN",
        "type": "eventHubTrigger",
        "name": "events",
        "connection": "EventHubConnection",
        "eventHubName": "%EVENT_HUB_NAME%",
        "cardinality": "MANY",
        "consumerGroup": "%EVENT_HUB_CONSUMER_GROUP%",
    }


def test_the_runtime_refuses_a_pep_585_binding_annotation(tmp_path: Path) -> None:
    source = (ROOT / "function_app.py").read_text()
    assert "typing.List[func.EventHubEvent]" in source
    (tmp_path / "function_app.py").write_text(
        source.replace("typing.List[func.EventHubEvent]", "list[func.EventHubEvent]")
    )
    done = _index(tmp_path)
    assert done.returncode == 1
    assert "cannot load the parser function: binding events has invalid non-type annotation" in done.stderr


def test_the_runtime_refuses_a_duplicate_function_name(tmp_path: Path) -> None:
    source = (ROOT / "function_app.py").read_text()
    (tmp_path / "function_app.py").write_text(source.replace("async def health(", "async def openai_proxy("))
    done = _index(tmp_path)
    assert done.returncode == 1 and "does not have a unique function name" in done.stderr


def _settings_named(function: dict[str, Any]) -> set[str]:
    trigger = _trigger(function)
    named = {m for value in trigger.values() if isinstance(value, str) for m in re.findall(r"%([^%]+)%", value)}
    return named | ({trigger["connection"]} if "connection" in trigger else set())


def _provides(settings: set[str], name: str) -> bool:
    """An identity-based connection `X` is set as `X__fullyQualifiedNamespace` (or `X__...`)."""
    return name in settings or any(s.startswith(name + "__") for s in settings)


def test_every_setting_a_binding_names_is_provided_locally_and_by_bicep(
    indexed: dict[str, Any],
    bicep_settings: dict[str, Any],  # noqa: F811
) -> None:
    sample = set(json.loads((ROOT / "local.settings.sample.json").read_text())["Values"])
    named = set().union(*(_settings_named(f) for f in indexed.values()))
    assert named == {"EVENT_HUB_NAME", "EVENT_HUB_CONSUMER_GROUP", "EventHubConnection"}
    assert [n for n in sorted(named) if not _provides(sample, n)] == [], "missing from local.settings.sample.json"
    assert [n for n in sorted(named) if not _provides(set(bicep_settings), n)] == [], (
        "missing from bicep's app settings"
    )


def test_host_json_routes_functions_without_a_prefix(indexed: dict[str, Any]) -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensions"]["http"]["routePrefix"] == ""  # APIM and the docs call /openai/... directly


# ------------------------------------------------------------------------------------ serving
class Served:
    def __init__(self, url: str, sim: SimulatorHandle, db: Path, process: subprocess.Popen[bytes]) -> None:
        self.url, self.sim, self.db, self.process = url, sim, db, process

    def records(self) -> dict[str, dict[str, Any]]:
        if not self.db.exists():
            return {}
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            return {rid: json.loads(rec) for rid, rec in conn.execute("SELECT request_id, record FROM records")}

    def deadletters(self) -> list[tuple[str, str]]:
        with contextlib.closing(sqlite3.connect(self.db)) as conn:
            return list(conn.execute("SELECT key, reason FROM deadletters"))

    def wait_for(self, predicate: Any, what: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(sqlite3.OperationalError):
                if value := predicate():
                    return value
            time.sleep(0.05)
        raise AssertionError(f"{what} never happened; server output:\n{self.output()}")

    def output(self) -> str:
        return ""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("runtime")
    sim = run_simulator(SimulatorConfig(api_key="sim-key", token_delay_ms=40, stream_chunks=12))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_BACKENDS": json.dumps(
            [
                {
                    "name": "sim",
                    "endpoint": sim.url,
                    "auth": {"type": "api_key", "setting": "SIM_KEY"},
                    "deployments": ["*"],
                }
            ]
        ),
        "SIM_KEY": "sim-key",
        "LOG_STORE": "sqlite",
        "SQLITE_PATH": str(tmp / "gateway.db"),
        "CAPTURE_OUTBOX_DIR": str(tmp / "outbox"),
        "EVENT_CHANNEL": "local",
        "EVENT_HUB_NAME": "exchanges",
        "EVENT_HUB_CONSUMER_GROUP": "$Default",
        "LOCAL_SUBSCRIPTIONS": json.dumps({KEY: {"id": "team-rt", "name": "Runtime", "product": "standard"}}),
    }
    log = open(tmp / "serve.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "devhost.runtime", "serve", "--over-http", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    s = Served(url, sim, tmp / "gateway.db", process)
    s.output = lambda: (tmp / "serve.log").read_text(errors="replace")[-4000:]  # type: ignore[method-assign]
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, s.output()
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(url + "/_runtime/stats", timeout=1)
                break
            assert time.monotonic() < deadline, s.output()
            time.sleep(0.1)
        yield s
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(20)
        process.kill()
        log.close()
        sim.stop()


def _chat(stream: bool, content: str = "Count to twelve.") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "stream": stream}


def test_a_streamed_chat_reaches_the_client_event_by_event_through_the_runtime(served: Served) -> None:
    crid = "rt-stream-1"
    arrivals: list[tuple[float, bytes]] = []
    with httpx.stream(
        "POST",
        served.url + CHAT,
        json=_chat(True),
        timeout=30,
        headers={"api-key": KEY, "x-ms-client-request-id": crid},
    ) as answer:
        assert answer.status_code == 200, answer.read()
        assert answer.headers["content-type"].startswith("text/event-stream")
        rid = answer.headers["x-gateway-request-id"]
        for chunk in answer.iter_raw():
            arrivals.append((time.monotonic(), chunk))
            if len(arrivals) == 1:
                logged = next(r for r in served.sim.requests if r.headers.get("x-ms-client-request-id") == crid)
                assert not logged.finished, "the first event arrived only after the upstream had finished"
    body = b"".join(c for _, c in arrivals)
    logged = next(r for r in served.sim.requests if r.headers.get("x-ms-client-request-id") == crid)
    assert body.endswith(b"data: [DONE]\n\n") and body.count(b"data: ") >= 12
    assert arrivals[-1][0] - arrivals[0][0] > 0.2, "12 chunks 40 ms apart arrived in one burst"
    assert b'"usage":{' not in body and b'"usage":{' in logged.response  # injected upstream, hidden here
    record = served.wait_for(lambda: served.records().get(rid), "the stream's usage record")
    assert record["usage_source"] == "service" and record["subscription_id"] == "team-rt"


def test_a_client_that_leaves_mid_stream_cancels_the_upstream_call(served: Served) -> None:
    crid = "rt-leave-1"
    with httpx.stream(
        "POST",
        served.url + CHAT,
        json=_chat(True),
        timeout=30,
        headers={"api-key": KEY, "x-ms-client-request-id": crid, "x-sim-chunks": "200"},
    ) as answer:
        assert answer.status_code == 200
        next(answer.iter_raw())
    logged = served.wait_for(
        lambda: next(
            (
                r
                for r in served.sim.requests
                if r.headers.get("x-ms-client-request-id") == crid and r.client_disconnected
            ),
            None,
        ),
        "the upstream call's cancellation",
    )
    assert logged.response.count(b"data: ") < 200


def test_errors_and_non_stream_answers_come_back_in_aoai_format(served: Served) -> None:
    ok = httpx.post(served.url + CHAT, json=_chat(False), headers={"api-key": KEY}, timeout=30)
    assert ok.status_code == 200 and ok.json()["object"] == "chat.completion"
    unknown = httpx.post(served.url + CHAT, json=_chat(False), headers={"api-key": "wrong"}, timeout=30)
    assert unknown.status_code == 401 and unknown.json()["error"]["code"]
    bad = httpx.post(
        served.url + CHAT,
        content=b"{not json",
        headers={"api-key": KEY, "content-type": "application/json"},
        timeout=30,
    )
    assert bad.headers["content-type"].startswith("application/json"), bad.text
    assert "error" in bad.json()


def test_the_runtime_keeps_no_entry_per_http_invocation(served: Served) -> None:
    for _ in range(50):
        httpx.post(served.url + CHAT, json=_chat(False), headers={"api-key": KEY}, timeout=30).raise_for_status()
    assert httpx.get(served.url + "/_runtime/stats").json()["context_references"] == 0


def test_the_leak_fix_still_fits_the_runtime() -> None:
    """Fails loudly when azure-functions-runtime changes the internals proxy/runtime_leak.py patches."""
    from azure_functions_runtime import http_v2

    from proxy.runtime_leak import release_http_invocations

    assert release_http_invocations() is True
    coordinator = http_v2.HttpCoordinator()
    coordinator.set_http_request("inv-1", object())
    coordinator._pop_http_request("inv-1")
    coordinator.set_http_response("inv-1", object())
    assert "inv-1" in coordinator._context_references
    coordinator._pop_http_response("inv-1")
    assert "inv-1" not in coordinator._context_references


# ------------------------------------------------------------------------------------ event hub
def test_an_event_hub_batch_with_a_poison_event_goes_through_the_runtime(tmp_path: Path) -> None:
    """One stored exchange and one id that names nothing, in one batch (cardinality many)."""
    db = tmp_path / "gateway.db"
    script = f"""
import asyncio, sys
from datetime import UTC, datetime
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from devhost.runtime.worker import EventData, FunctionsWorker
from testing.factories import exchange as make_exchange

async def main():
    worker = FunctionsWorker(Path({str(ROOT)!r}))
    await worker.start()
    import function_app
    exchange = make_exchange(request_id="rt-eh-good", body={{"messages": [{{"role": "user", "content": "hi"}}]}}, response_body={{"id": "c1", "object": "chat.completion", "model": "gpt-4o-2024-08-06", "choices": [{{"index": 0, "message": {{"role": "assistant", "content": "Hello"}}, "finish_reason": "stop"}}], "usage": {{"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9}}}})
    await function_app.ports().exchanges.save(exchange)
    (parser,) = worker.by_trigger("eventHubTrigger")
    now = datetime.now(UTC)
    events = [EventData(b"rt-eh-good", 1, 100, now, "p"), EventData(b"rt-eh-poison", 2, 200, now, None)]
    result = await worker.invoke_event_hub(parser, events)
    print("STATUS", result.result.status, result.result.exception.message)
    await function_app.shutdown()

asyncio.run(main())
"""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LOG_STORE": "sqlite",
        "SQLITE_PATH": str(db),
        "EVENT_CHANNEL": "local",
        "EVENT_HUB_NAME": "exchanges",
        "EVENT_HUB_CONSUMER_GROUP": "$Default",
        "CAPTURE_OUTBOX_DIR": str(tmp_path / "outbox"),
        "GATEWAY_BACKENDS": json.dumps(
            [
                {
                    "name": "sim",
                    "endpoint": "http://127.0.0.1:9",
                    "auth": {"type": "managed_identity"},
                    "deployments": ["*"],
                }
            ]
        ),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert "STATUS 1 " in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        records = {rid for (rid,) in conn.execute("SELECT request_id FROM records")}
        dead = list(conn.execute("SELECT key, reason FROM deadletters"))
    assert records == {"rt-eh-good"}
    assert [key for key, _ in dead] == ["rt-eh-poison"], dead
