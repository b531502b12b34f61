"""A new user's configuration mistakes end start-up with one line that says what to change.

The CLI cases run `python -m devhost` as a user would (a subprocess in a scratch folder) and check
the exact text on stderr and that nothing else was printed first.
"""

import io
import json
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from azure.core.credentials import AccessToken
from azure.identity.aio import ChainedTokenCredential

from devhost.request_log import print_requests, request_line
from devhost.startup import free_port_after, local_key, misspelling_warnings
from proxy.credentials import Credentials, quiet_azure_sdk_logs
from proxy.routing.backends import parse_backends
from shared.adapters.log_sink import LOGGER_NAME, LogUsageSink
from shared.settings import DECLARATIONS

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def devhost(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m devhost ARGS` in `tmp_path` with none of the app's settings inherited."""
    declared = {d.name for d in DECLARATIONS}
    env = {k: v for k, v in os.environ.items() if k not in declared and not k.startswith("AOAI_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "devhost", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_busy_port_is_the_only_thing_printed(tmp_path):
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        suggested = free_port_after("127.0.0.1", port)
        result = devhost(tmp_path, "--port", str(port))
    assert result.returncode == 2 and result.stdout == ""
    ours = " ".join(Path("/proc/self/cmdline").read_bytes().decode().split("\0")).split()
    holder = f"pid {os.getpid()} ({textwrap.shorten(' '.join(ours), 80, placeholder='...')})"
    assert result.stderr == (
        f"port {port} on 127.0.0.1 is already in use by {holder}: "
        f"stop that process or choose another with --port {suggested}\n"
    )
    assert not (tmp_path / ".gateway").exists(), "no key was made for a run that cannot start"


def test_a_settings_file_that_is_not_json_is_named_with_line_and_column(tmp_path):
    (tmp_path / "local.settings.json").write_text('{"Values": {\n  "LOG_STORE": "sqlite",\n  "X" 1}}')
    result = devhost(tmp_path, "--port", str(_free_port()))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "local.settings.json:3:7: unexpected character, expected ':' after key\n"


def test_the_samples_placeholder_endpoint_is_refused(tmp_path):
    shutil.copy(ROOT / "local.settings.sample.json", tmp_path / "local.settings.json")
    result = devhost(tmp_path, "--port", str(_free_port()))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "GATEWAY_BACKENDS[0] ('aoai-eastus'): endpoint https://<your-resource>.openai.azure.com is a placeholder: "
        "set your Azure OpenAI account's endpoint\n"
    )


def test_an_api_key_backend_whose_setting_is_not_set_is_refused(tmp_path):
    backends = [
        {
            "name": "eastus",
            "endpoint": "https://my-aoai.openai.azure.com",
            "auth": {"type": "api_key", "setting": "AOAI_EASTUS_KEY"},
            "deployments": ["*"],
        }
    ]
    settings = {"Values": {"GATEWAY_BACKENDS": json.dumps(backends)}}
    (tmp_path / "local.settings.json").write_text(json.dumps(settings))
    result = devhost(tmp_path, "--port", str(_free_port()))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        "GATEWAY_BACKENDS[0] ('eastus'): auth.setting 'AOAI_EASTUS_KEY' names an app setting that is not set\n"
    )


def test_a_bad_value_stops_start_up_in_one_line(tmp_path):
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"GATEWAY_MAX_ATTEMPTS": "three"}}))
    result = devhost(tmp_path, "--port", str(_free_port()))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "GATEWAY_MAX_ATTEMPTS: must be an integer, got 'three'\n"


def test_an_unknown_key_inside_a_backend_is_an_error(tmp_path):
    backends = [{"name": "eastus", "endpont": "https://my-aoai.openai.azure.com", "deployments": ["*"]}]
    (tmp_path / "local.settings.json").write_text(json.dumps({"Values": {"GATEWAY_BACKENDS": json.dumps(backends)}}))
    result = devhost(tmp_path, "--port", str(_free_port()))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "GATEWAY_BACKENDS[0] ('eastus'): unknown key 'endpont' (did you mean 'endpoint'?)\n"


def test_a_misspelt_setting_is_warned_with_the_closest_known_one():
    values = {
        "GATEWAY_BACKEND": "[]",
        "LOG_STORE": "sqlite",
        # The user's own names are left alone, also when a backend names one close to a setting.
        "AOAI_EASTUS_KEY": "k",
        "GATEWAY_BACKENDS_KEY": "k",
        "GATEWAY_BACKENDS": json.dumps(
            [
                {
                    "name": "a",
                    "endpoint": "https://a.openai.azure.com",
                    "auth": {"type": "api_key", "setting": "GATEWAY_BACKENDS_KEY"},
                    "deployments": ["*"],
                }
            ]
        ),
    }
    assert misspelling_warnings(Path("local.settings.json"), values) == [
        "warning: local.settings.json: unknown setting 'GATEWAY_BACKEND' (did you mean 'GATEWAY_BACKENDS'?)"
    ]


def test_the_local_key_stays_the_same_across_runs_until_a_new_one_is_asked_for(tmp_path):
    first, made = local_key(tmp_path / ".gateway")
    again, made_again = local_key(tmp_path / ".gateway")
    assert made and not made_again and again == first
    assert stat.S_IMODE((tmp_path / ".gateway" / "local-key").stat().st_mode) == 0o600
    renewed, made_new = local_key(tmp_path / ".gateway", new=True)
    assert made_new and renewed != first and local_key(tmp_path / ".gateway") == (renewed, False)


@pytest.fixture
def restored_loggers():
    names = [
        "azure",
        "azure.identity",
        "azure.core.pipeline.policies.http_logging_policy",
        LOGGER_NAME,
        "devhost.front_door",
    ]
    saved = {
        n: (logging.getLogger(n).level, logging.getLogger(n).propagate, list(logging.getLogger(n).handlers))
        for n in names
    }
    yield
    for name, (level, propagate, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers


class EntraDouble:
    """Stands in for Entra ID (not reachable here): a credential of the chain that answers."""

    async def get_token(self, *scopes, **kwargs):
        return AccessToken("token", 2**31)

    async def close(self):
        return None


async def test_managed_identity_says_once_which_credential_answered_and_the_sdk_stays_quiet(caplog, restored_loggers):
    quiet_azure_sdk_logs()
    caplog.set_level(logging.DEBUG)
    (backend,) = parse_backends('[{"name": "a", "endpoint": "https://a.openai.azure.com", "deployments": ["*"]}]')
    credentials = Credentials({}, credential_factory=lambda auth: ChainedTokenCredential(EntraDouble()))
    for _ in range(3):
        assert await credentials.headers_for(backend) == {"Authorization": "Bearer token"}
    await credentials.close()
    assert [r.name for r in caplog.records if r.name.startswith("azure")] == []
    assert [r.getMessage() for r in caplog.records] == [
        "managed identity: token for https://cognitiveservices.azure.com/.default from EntraDouble"
    ]


RECORD = {
    "status_code": 200,
    "deployment": "gpt-4o",
    "api": "chat.completions",
    "stream": True,
    "latency_ms": 812.4,
    "prompt_tokens": 12,
    "completion_tokens": 40,
    "total_tokens": 52,
    "usage_source": "service",
    "subscription_id": "team-a",
}


def test_one_concise_line_per_request_with_errors_highlighted():
    assert request_line(RECORD) == "200  gpt-4o  chat.completions  stream  812 ms  tokens 12+40=52  team-a"
    throttled = {**RECORD, "status_code": 429, "stream": False, "error_code": "429", "total_tokens": None}
    assert (
        request_line(throttled, color=True)
        == "\x1b[1m\x1b[31m429  gpt-4o  chat.completions  812 ms  team-a  error 429\x1b[0m"
    )
    assert request_line(throttled) == "429  gpt-4o  chat.completions  812 ms  team-a  error 429"


async def test_the_local_usage_sink_feeds_the_request_lines(restored_loggers):
    out = io.StringIO()
    print_requests(out)
    await LogUsageSink().emit(RECORD)
    assert out.getvalue() == "200  gpt-4o  chat.completions  stream  812 ms  tokens 12+40=52  team-a\n"


async def test_a_request_the_front_door_refuses_gets_its_line_too(restored_loggers):
    from devhost.host import HttpRoute, compile_route, front_door

    out = io.StringIO()
    print_requests(out)
    route = HttpRoute(
        "openai_proxy", "openai/{*path}", compile_route("openai/{*path}"), frozenset({"POST"}), "req", None
    )
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    path = "/openai/deployments/gpt-4o/chat/completions"
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [],
        "query_string": b"",
        "client": ("127.0.0.1", 1),
    }
    assert await front_door(scope, receive, send, mounts={}, routes=[route], subscriptions={}) is None
    assert sent[0]["status"] == 401
    assert out.getvalue() == f"401  gpt-4o  {path}  - ms  -  error 401\n"


def test_make_runs_terminal_shows_one_line_per_request_and_the_same_key_next_time(tmp_path):
    """`python -m devhost` as `make run` starts it (no settings file: the simulator), called twice."""
    import queue
    import re
    import threading
    import time

    import httpx

    def run_once() -> tuple[str, list[str]]:
        port = _free_port()
        declared = {d.name for d in DECLARATIONS}
        env = {k: v for k, v in os.environ.items() if k not in declared}
        env.update(PYTHONPATH=str(ROOT), NO_COLOR="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "devhost", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x.rstrip("\n")) for x in proc.stdout], daemon=True).start()

        def until(pattern: str) -> str:
            while True:
                line = lines.get(timeout=60)
                if re.fullmatch(pattern, line):
                    return line

        try:
            key = until(r"Key: \S+  -> .*").split()[1]
            url = f"http://127.0.0.1:{port}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
            body = {"messages": [{"role": "user", "content": "hi"}]}
            for _ in range(300):  # the banner is printed before the server listens
                try:
                    httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                    break
                except httpx.ConnectError:
                    time.sleep(0.1)
            assert httpx.post(url, json=body, headers={"api-key": key}, timeout=30).status_code == 200
            assert httpx.post(url, json=body, headers={"api-key": "wrong"}, timeout=30).status_code == 401
            # The refused request's line comes at once, the served one's when its record is made.
            wanted = [
                r"200  gpt-4o  chat\.completions  \d+ ms  tokens \d+\+\d+=\d+  local",
                r"401  gpt-4o  /openai/deployments/gpt-4o/chat/completions  - ms  -  error 401",
            ]
            seen = []
            while wanted:
                line = until("|".join(f"(?:{w})" for w in wanted))
                wanted = [w for w in wanted if not re.fullmatch(w, line)]
                seen.append(line)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        return key, seen

    first, _ = run_once()
    again, _ = run_once()
    assert again == first == (tmp_path / ".gateway" / "local-key").read_text().strip()
