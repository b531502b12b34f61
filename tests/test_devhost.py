"""The dev host's own parts: settings loading, route templates, and the in-process Event Hub pump."""

import asyncio
import json
from types import SimpleNamespace

import azure.functions as func
import httpx

from devhost.__main__ import main
from devhost.host import DevHost, compile_route, event_hub_functions, http_routes, load_settings_file
from shared.adapters.local_channel import LocalEventChannel
from testing.memory import memory_ports


def test_settings_file_values_go_to_the_environment_without_overriding(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"A": "file", "B": "file"}}))
    env = {"A": "shell"}
    assert load_settings_file(path, env) == {"B": "file"}
    assert env == {"A": "shell", "B": "file"}
    assert load_settings_file(tmp_path / "missing.json", env) == {}


def test_route_templates():
    rx = compile_route("openai/{*path}")
    assert rx.match("/openai/deployments/x/chat/completions")["path"] == "deployments/x/chat/completions"
    assert rx.match("/openai/")["path"] == ""
    assert rx.match("/other/x") is None
    one = compile_route("items/{id:int}/parts/{name}")
    assert one.match("/items/7/parts/a").groupdict() == {"id": "7", "name": "a"}
    assert one.match("/items/7/parts/a/b") is None


def _app_with_event_hub(seen):
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="hello/{name}", methods=["GET"])
    async def hello(req):
        from starlette.responses import PlainTextResponse

        return PlainTextResponse(f"hi {req.path_params['name']} {req.headers.get('x-gateway-subscription-id')}")

    @app.event_hub_message_trigger(
        arg_name="events", event_hub_name="exchanges", connection="EventHubConnection", cardinality="many"
    )
    async def parse(events: list[func.EventHubEvent]):
        seen.append([e.get_body().decode() for e in events])

    return app


def test_routes_and_triggers_are_read_from_the_app():
    app = _app_with_event_hub([])
    (route,) = http_routes(app)
    assert route.template == "hello/{name}" and route.methods == {"GET"} and route.arg_name == "req"
    (eh,) = event_hub_functions(app)
    assert eh.name == "parse" and eh.many and eh.arg_name == "events"


async def test_http_dispatch_and_event_hub_pump():
    seen: list[list[str]] = []
    ports = memory_ports()
    ports.channel = LocalEventChannel()
    closed = []

    async def drain():
        pass

    async def shutdown():
        closed.append(True)

    module = SimpleNamespace(app=_app_with_event_hub(seen), ports=lambda: ports, drain=drain, shutdown=shutdown)
    from devhost.subscriptions import parse_subscriptions

    host = DevHost(module, parse_subscriptions('{"k": {"id": "team-k"}}'))
    await host.startup()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://dev") as client:
        r = await client.get("/hello/bob", headers={"api-key": "k"})
        assert r.text == "hi bob team-k"
        assert (await client.get("/hello/bob")).status_code == 401
        assert (await client.post("/hello/bob", headers={"api-key": "k"})).status_code == 405
        assert (await client.get("/nothing", headers={"api-key": "k"})).json()["error"]["code"] == "404"
    for rid in ("r1", "r2", "r3"):
        await ports.channel.publish(rid)
    await asyncio.wait_for(ports.channel.join(), 5)
    assert [rid for batch in seen for rid in batch] == ["r1", "r2", "r3"]
    await host.shutdown()
    assert closed == [True]


def test_cli_defaults_to_serve(monkeypatch):
    called = {}
    from devhost import __main__ as cli

    monkeypatch.setitem(
        cli.COMMANDS, "serve", (*cli.COMMANDS["serve"][:2], lambda args: called.setdefault("args", args) and 0)
    )
    assert main(["--port", "9999"]) == 0
    assert called["args"].command == "serve" and called["args"].port == 9999 and called["args"].host == "127.0.0.1"


async def test_the_direct_host_runs_timer_functions_on_their_schedule_and_on_demand():
    fired: list[bool] = []
    app = func.FunctionApp()

    @app.timer_trigger(arg_name="timer", schedule="*/1 * * * * *")
    async def tick(timer: func.TimerRequest) -> None:
        fired.append(timer.past_due)

    ports = memory_ports()
    ports.channel = LocalEventChannel()

    async def drain():
        pass

    host = DevHost(SimpleNamespace(app=app, ports=lambda: ports, drain=drain), None)
    assert [(name, interval) for name, interval, _ in host.timers] == [("tick", 1.0)]
    await host.run_timers()
    assert fired == [False]
    await host.startup()
    for _ in range(300):  # the schedule fires it again within about a second
        if len(fired) > 1:
            break
        await asyncio.sleep(0.01)
    await host.shutdown()
    assert len(fired) >= 2
