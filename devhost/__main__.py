"""`python -m devhost [serve] [--host H] [--port P] [--settings FILE]`: run the gateway locally.

Subcommands: `serve` (the default), `records`, `report` and `dashboard` (devhost/commands.py), `erase`
and `purge` (devhost/privacy_commands.py), `budgets` (devhost/budgets_command.py) and `smoke`
(devhost/smoke.py).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devhost import budgets_command, commands, privacy_commands, smoke
from devhost.dashboard_app import DASHBOARD_PATH, DashboardApp
from devhost.host import DevHost, load_settings_file, server_config
from devhost.request_log import print_requests
from devhost.runtime.host import RuntimeDevHost
from devhost.startup import (
    LOCAL_KEY_FILE,
    check_configuration,
    check_port,
    local_key,
    misspelling_warnings,
    read_settings_file,
)
from devhost.subscriptions import parse_subscriptions
from proxy.credentials import quiet_azure_sdk_logs
from proxy.routing.backends import parse_backends
from shared.errors import ConfigurationError

SIMULATOR_KEY = "simulator-key"
SIMULATOR_TOKEN_DELAY_MS = 15


def _start_simulator() -> str | None:
    """Start the AOAI simulator on a free loopback port; its URL, or None when it is not available."""
    try:
        from devhost.simulator import SimulatorConfig, run_in_thread
    except ImportError:
        return None
    # Paced like a deployment (a token chunk every 15 ms), so a stream is seen arriving event by event,
    # as `python -m devhost smoke` checks.
    handle = run_in_thread(SimulatorConfig(token_delay_ms=SIMULATOR_TOKEN_DELAY_MS))
    return handle.url


def _example(url: str, key: str) -> str:
    return f"""
    from openai import AzureOpenAI
    client = AzureOpenAI(api_key="{key}", azure_endpoint="{url}", api_version="2024-10-21")
    reply = client.chat.completions.create(model="gpt-4o", messages=[{{"role": "user", "content": "Hello"}}])
    print(reply.choices[0].message.content)

    curl {url}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21 \\
      -H "api-key: {key}" -H "content-type: application/json" \\
      -d '{{"messages": [{{"role": "user", "content": "Hello"}}], "stream": true}}'"""


def serve(args: argparse.Namespace) -> int:
    check_port(args.host, args.port)  # before anything is printed: a busy port is the whole message
    settings_file = Path(args.settings)
    applied = load_settings_file(settings_file)
    warnings = misspelling_warnings(settings_file, read_settings_file(settings_file)) if settings_file.is_file() else []
    configured = check_configuration(os.environ)
    say = lambda text: print(text, flush=True)  # noqa: E731 - start-up banner for a person
    say(f"settings: {args.settings}" + ("" if applied else " (not found: defaults)"))
    for warning in warnings:
        print(warning, file=sys.stderr, flush=True)
    _apply_otel_flag(args.otel, say)
    if not parse_backends(configured.backends_json):
        sim = _start_simulator()
        if sim is None:
            say(
                "No backend configured (GATEWAY_BACKENDS) and the AOAI simulator is not installed: "
                "requests will get 404 DeploymentNotFound."
            )
        else:
            os.environ["GATEWAY_BACKENDS"] = json.dumps(
                [
                    {
                        "name": "simulator",
                        "endpoint": sim,
                        "auth": {"type": "api_key", "value": SIMULATOR_KEY},
                        "deployments": ["*"],
                    }
                ]
            )
            say(f"No backend configured (GATEWAY_BACKENDS): using the local AOAI SIMULATOR at {sim}, not Azure OpenAI.")
    settings = check_configuration(os.environ)
    db_path = settings.sqlite_path
    os.environ["SQLITE_PATH"] = str(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    subscriptions = parse_subscriptions(settings.local_subscriptions_json)
    if not subscriptions:
        key, made = local_key(db_path.parent, new=args.new_key)
        os.environ["LOCAL_SUBSCRIPTIONS"] = json.dumps({key: {"id": "local", "name": "Local", "product": "local"}})
        subscriptions = parse_subscriptions(os.environ["LOCAL_SUBSCRIPTIONS"])
        kept = db_path.parent / LOCAL_KEY_FILE
        say(
            f"No LOCAL_SUBSCRIPTIONS configured: {'created a local key' if made else 'using the local key'} "
            f"kept in {kept} (--new-key makes another)."
        )

    sys.path.insert(0, str(Path.cwd()))
    # The dashboard reads the SQLite records, which exist only with the embedded log store.
    local_records = settings.log_store == "sqlite"
    mounts = {DASHBOARD_PATH: DashboardApp(db_path)} if local_records else {}
    url = f"http://{args.host}:{args.port}"
    host_app: Any
    if args.direct:
        module = importlib.import_module(args.app)
        host_app = DevHost(module, subscriptions, mounts=mounts)
        say(f"\nGateway: {url}  (routes: {', '.join(sorted({'/' + r.template for r in host_app.routes}))})")
        say("Functions called in-process by the dev host (--direct: not through azure-functions-runtime)")
    else:
        spec = importlib.util.find_spec(args.app)
        if spec is None or spec.origin is None:
            raise SystemExit(f"devhost: no module {args.app!r} (--app) on the path")
        script = Path(spec.origin)
        os.environ["PYTHON_SCRIPT_FILE_NAME"] = script.name  # the runtime imports it from its folder
        host_app = RuntimeDevHost(script.parent, subscriptions, mounts=mounts)
        say(
            f"\nGateway: {url}  (functions indexed, loaded and invoked by azure-functions-runtime {_runtime_version()})"
        )
    if local_records:
        say(f"Exchanges and usage records stored in SQLite: {db_path}")
        say(f"Dashboard: {url}{DASHBOARD_PATH}  (loopback only; also: python -m devhost records | report | dashboard)")
    for key, sub in subscriptions.items():
        say(f"Key: {key}  -> subscription {sub.id!r} ({sub.name}, product {sub.product})")
    say("Example (OpenAI SDK):" + _example(url, next(iter(subscriptions))) + "\n")

    print_requests()  # one line per request: status, deployment, time, tokens (errors in red)
    import uvicorn

    uvicorn.Server(server_config(host_app, args.host, args.port, log_level=args.log_level)).run()
    return 0


def _runtime_version() -> str:
    from azure_functions_runtime.version import VERSION

    return str(VERSION)


#: Subcommand name -> (help, add arguments, run).
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7071, help="port (default 7071, as func start)")
    parser.add_argument(
        "--new-key",
        action="store_true",
        help="replace the stored local client key (used when LOCAL_SUBSCRIPTIONS is empty) with a new one",
    )
    parser.add_argument("--settings", default="local.settings.json", help="Core Tools settings file to load")
    parser.add_argument("--app", default="function_app", help="module that defines the FunctionApp `app`")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level")
    parser.add_argument(
        "--direct",
        action="store_true",
        help="call the functions in-process instead of through azure-functions-runtime (comparison arm)",
    )
    parser.add_argument(
        "--otel",
        default=None,
        metavar="console|URL",
        help="GenAI spans and metrics: 'console' prints them, a URL (http://127.0.0.1:4318) "
        "sends them to that OTLP/HTTP endpoint (see docs/telemetry.md)",
    )


def _apply_otel_flag(value: str | None, say: Callable[[str], None]) -> None:
    """`--otel` sets the same settings an operator would (GATEWAY_OTEL_CONSOLE / OTEL_EXPORTER_OTLP_ENDPOINT)."""
    if not value:
        return
    if value == "console":
        os.environ["GATEWAY_OTEL_CONSOLE"] = "true"
        say("telemetry: GenAI spans and metrics printed on the console")
    elif value.startswith(("http://", "https://")):
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = value
        say(f"telemetry: GenAI spans and metrics sent to the OTLP endpoint {value}")
    else:
        raise SystemExit(f"--otel must be 'console' or an http(s) OTLP endpoint URL, got {value!r}")


COMMANDS["serve"] = ("run the gateway (the default)", _serve_arguments, serve)
COMMANDS["records"] = (
    "print the usage records (a table, or JSON lines with --json)",
    commands.records_arguments,
    commands.records_command,
)
COMMANDS["report"] = (
    "print totals by subscription, deployment and day",
    commands.report_arguments,
    commands.report_command,
)
COMMANDS["exchanges"] = (
    "stored exchanges: `exchanges export --since ... [--subscription ...]` writes JSON lines for replay",
    commands.exchanges_arguments,
    commands.exchanges_command,
)
COMMANDS["dashboard"] = (
    "serve the local dashboard over the usage records",
    commands.dashboard_arguments,
    commands.dashboard_command,
)
COMMANDS["erase"] = (
    "erase a user's or a subscription's data: exchanges removed, records anonymized",
    privacy_commands.erase_arguments,
    privacy_commands.erase_command,
)
COMMANDS["purge"] = (
    "delete what is past its retention (RETENTION) now",
    privacy_commands.purge_arguments,
    privacy_commands.purge_command,
)
COMMANDS["budgets"] = (
    "print every budget: spend, reservations in flight, remaining and reset time",
    budgets_command.budgets_arguments,
    budgets_command.budgets_command,
)
COMMANDS["smoke"] = (
    "check a deployment end to end (chat, stream, embedding, headers, 401, usage records)",
    smoke.arguments,
    smoke.command,
)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m devhost", description="Run the AOAI gateway locally.")
    sub = parser.add_subparsers(dest="command")
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text))
    if not argv or argv[0] not in COMMANDS and argv[0] not in {"-h", "--help"}:
        argv.insert(0, "serve")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_azure_sdk_logs()
    try:
        return COMMANDS[args.command][2](args)
    except ConfigurationError as exc:  # one line that says what to change, no traceback
        print(exc, file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
