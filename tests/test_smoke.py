"""`python -m devhost smoke`, run as a user runs it, against the dev host (the real Functions runtime,
the AOAI simulator, SQLite records), and against Azure when the environment names a deployment."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from devhost.simulator import SimulatorConfig
from devhost.smoke import AppInsightsRecords, CosmosRecords, Options, SqliteRecords, run_checks
from tests.cosmos_server import KEY, cosmos_endpoint  # noqa: F401 - fixture
from tests.devhost_harness import DevHostGateway, dev_host

ROOT = Path(__file__).resolve().parent.parent
CLIENT_KEY = "smoke-client-key"
SUBSCRIPTIONS = {CLIENT_KEY: {"id": "team-smoke", "name": "Smoke", "product": "standard"}}
CHECKS = [
    "chat",
    "chat stream",
    "chat stream usage",
    "embedding",
    "gateway headers",
    "wrong key -> 401",
    "usage records",
]
_LINE = re.compile(r"^(PASS|FAIL)  (.+?)\s+(\d+\.\d\d) s  (.*)$")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevHostGateway]:
    # A token delay, so the stream's events are apart in time as AOAI's are (12 chunks: about half a second).
    sim = SimulatorConfig(api_key="smoke-upstream-key", token_delay_ms=40)
    with dev_host(tmp_path_factory.mktemp("smoke"), SUBSCRIPTIONS, {"sim": sim}) as gateway:
        yield gateway


def smoke(
    *args: str, timeout: float = 90, env: dict[str, str] | None = None
) -> tuple[int, dict[str, tuple[str, float, str]], str]:
    """Run the command; (exit status, check -> (PASS|FAIL, seconds, detail), whole output)."""
    done = subprocess.run(
        [sys.executable, "-m", "devhost", "smoke", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    checks = {}
    for line in done.stdout.splitlines():
        m = _LINE.match(line)
        if m:
            checks[m.group(2)] = (m.group(1), float(m.group(3)), m.group(4))
    return done.returncode, checks, done.stdout + done.stderr


def test_smoke_passes_against_the_dev_host(gw: DevHostGateway) -> None:
    status, checks, output = smoke(
        "--endpoint", gw.url, "--key", CLIENT_KEY, "--deployment", "gpt-4o-mini", "--sqlite", str(gw.db)
    )
    assert status == 0, output
    assert list(checks) == CHECKS, output
    assert all(verdict == "PASS" for verdict, _, _ in checks.values()), output
    assert "backend sim, attempts 1" in checks["gateway headers"][2]
    assert "no usage chunk" in checks["chat stream"][2]
    assert "4 record(s)" in checks["usage records"][2]
    assert "smoke: 7/7 checks passed" in output
    # Its own requests became records, each found by the request id the gateway answered with.
    ids = re.findall(r"request ([0-9a-f-]{8,})", output)
    assert len(ids) == 4
    assert all(gw.emitted[rid] == 1 for rid in ids)


def test_smoke_fails_when_the_records_never_arrive(gw: DevHostGateway, tmp_path: Path) -> None:
    # A deployment whose parser writes nowhere the smoke can see: every request works, no record appears.
    status, checks, output = smoke(
        "--endpoint",
        gw.url,
        "--key",
        CLIENT_KEY,
        "--deployment",
        "gpt-4o-mini",
        "--sqlite",
        str(tmp_path / "elsewhere.db"),
        "--records-timeout",
        "1",
    )
    assert status == 1, output
    assert checks["usage records"][0] == "FAIL"
    assert "no record yet for" in checks["usage records"][2]
    assert [name for name, (verdict, _, _) in checks.items() if verdict == "FAIL"] == ["usage records"]
    assert "smoke: 6/7 checks passed" in output


def test_smoke_fails_on_a_deployment_the_backend_does_not_have(gw: DevHostGateway) -> None:
    status, checks, output = smoke(
        "--endpoint",
        gw.url,
        "--key",
        CLIENT_KEY,
        "--deployment",
        "gpt-4o-mini",
        "--embedding-deployment",
        "text-embeding-3-small",
        "--sqlite",
        str(gw.db),
    )
    assert status == 1, output
    assert checks["embedding"][0] == "FAIL"
    assert "HTTP 404 DeploymentNotFound" in checks["embedding"][2], output


def test_smoke_fails_when_nothing_answers(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    status, checks, output = smoke(
        "--endpoint",
        f"http://127.0.0.1:{port}",
        "--key",
        "k",
        "--sqlite",
        str(tmp_path / "none.db"),
        "--records-timeout",
        "1",
    )
    assert status == 1
    assert all(verdict == "FAIL" for verdict, _, _ in checks.values()), output
    assert "could not reach" in checks["chat"][2]


@pytest.mark.skipif(
    not (os.environ.get("SMOKE_ENDPOINT") and os.environ.get("SMOKE_KEY")),
    reason="live: set SMOKE_ENDPOINT and SMOKE_KEY (and SMOKE_COSMOS_ENDPOINT and/or "
    "SMOKE_APPINSIGHTS_APP_ID, with az login) to check a deployment",
)
def test_smoke_against_a_live_deployment() -> None:
    args = ["--endpoint", os.environ["SMOKE_ENDPOINT"], "--key", os.environ["SMOKE_KEY"]]
    if os.environ.get("SMOKE_DEPLOYMENT"):
        args += ["--deployment", os.environ["SMOKE_DEPLOYMENT"]]
    if os.environ.get("SMOKE_COSMOS_ENDPOINT"):
        args += ["--cosmos-endpoint", os.environ["SMOKE_COSMOS_ENDPOINT"]]
    if os.environ.get("SMOKE_APPINSIGHTS_APP_ID"):
        args += ["--appinsights-app-id", os.environ["SMOKE_APPINSIGHTS_APP_ID"], "--records-timeout", "50"]
    status, checks, output = smoke(*args, timeout=120)
    assert status == 0, output
    assert list(checks) == CHECKS


async def test_the_cosmos_source_finds_records_by_request_id(cosmos_endpoint: str) -> None:  # noqa: F811
    """The records container as the parser writes it (item id = request id, partition /requestId), read by
    the real azure-cosmos SDK from the npm Cosmos DB server."""
    async with CosmosClient(cosmos_endpoint, credential=KEY, connection_verify=False) as admin:
        db = await admin.create_database_if_not_exists("smoke")
        container = await db.create_container_if_not_exists("records", partition_key=PartitionKey("/requestId"))
        await container.upsert_item(
            {"id": "rid-1", "requestId": "rid-1", "kind": "record", "record": {"request_id": "rid-1"}}
        )
    source = CosmosRecords(cosmos_endpoint, "smoke", "records", credential=KEY, connection_verify=False)
    try:
        assert await source.found({"rid-1", "rid-2"}) == {"rid-1"}
        assert await source.found(set()) == set()
    finally:
        await source.close()
    assert source.name == "cosmos 127.0.0.1/smoke/records"


@pytest.mark.azure
@pytest.mark.skipif(not os.environ.get("SMOKE_COSMOS_ENDPOINT"), reason="live: set SMOKE_COSMOS_ENDPOINT (az login)")
async def test_the_cosmos_source_reads_a_live_account() -> None:
    source = CosmosRecords(os.environ["SMOKE_COSMOS_ENDPOINT"], "gateway", "records")
    try:
        assert await source.found({"no-such-request-id"}) == set()
    finally:
        await source.close()


@pytest.mark.azure
@pytest.mark.skipif(
    not os.environ.get("SMOKE_APPINSIGHTS_APP_ID"), reason="live: set SMOKE_APPINSIGHTS_APP_ID (az login)"
)
async def test_the_appinsights_source_queries_a_live_component() -> None:
    source = AppInsightsRecords(os.environ["SMOKE_APPINSIGHTS_APP_ID"])
    try:
        assert await source.found({"no-such-request-id"}) == set()
    finally:
        await source.close()


async def test_a_gateway_that_never_answers_fails_within_the_run_budget() -> None:
    """Each check gets what is left of the run's budget, not its own request timeout."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        await asyncio.sleep(3600)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lines: list[str] = []
    try:
        options = Options(
            endpoint=f"http://127.0.0.1:{port}",
            key="k",
            request_timeout=120,
            budget=2,
            records_timeout=1,
            sources=[SqliteRecords(Path("/nonexistent/gateway.db"))],
        )
        started = asyncio.get_running_loop().time()
        results = await run_checks(options, lines.append)
        elapsed = asyncio.get_running_loop().time() - started
    finally:
        server.close()
    assert not any(r.ok for r in results)
    assert results[0].detail == "no answer within the run's 2 s"
    assert elapsed < 60, "the 120 s request timeout did not decide"
    assert len(lines) == len(CHECKS) and all(line.startswith("FAIL") for line in lines)


def test_smoke_passes_against_make_run(tmp_path: Path) -> None:
    """`make run` as a new user has it (no settings file: the simulator, a fresh local key), then the smoke
    check with nothing but the endpoint, the printed key and the settings file that names SQLITE_PATH."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = tmp_path / "local.settings.json"
    settings.write_text(
        json.dumps(
            {"Values": {"SQLITE_PATH": str(tmp_path / "gateway.db"), "CAPTURE_OUTBOX_DIR": str(tmp_path / "outbox")}}
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GATEWAY_BACKENDS", "LOCAL_SUBSCRIPTIONS", "SQLITE_PATH", "LOG_STORE", "EVENT_CHANNEL")
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "devhost", "--port", str(port), "--settings", str(settings)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner: list[str] = []
        while not any(line.startswith("Example (OpenAI SDK)") for line in banner):
            line = proc.stdout.readline()
            assert line, "".join(banner)
            banner.append(line)
        key = next(line.split()[1] for line in banner if line.startswith("Key: "))
        for _ in range(400):  # the banner comes before uvicorn listens
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        status, checks, output = smoke(
            "--endpoint",
            f"http://127.0.0.1:{port}",
            "--key",
            key,
            "--deployment",
            "gpt-4o",
            "--settings",
            str(settings),
            env=env,  # not the SQLITE_PATH another test's dev host put in this process's environment
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert status == 0, output
    assert all(verdict == "PASS" for verdict, _, _ in checks.values()), output
    assert f"4 record(s) in sqlite {tmp_path / 'gateway.db'}" in checks["usage records"][2]
