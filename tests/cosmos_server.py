"""The Cosmos DB for NoSQL server the tests run: npm `@vercel/cosmosdb-server` on loopback.

A third-party implementation of the Cosmos DB REST protocol that the real `azure-cosmos` SDK talks
to over HTTPS (self-signed certificate). It supports databases, containers, item CRUD and SQL
queries; it has no transactional batch and does not enforce the 2 MB item limit or throttle, so
those stay with the strict double in tests/test_cosmos_adapter.py. `make test` installs it
(`make servers`: npm ci in testing/servers).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "testing" / "servers" / "node_modules" / ".bin" / "cosmosdb-server"
#: The server accepts any well-formed master key; this is the public emulator key.
KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def cosmos_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`https://127.0.0.1:<port>` of a running server, stopped after the session."""
    if not BINARY.exists() or shutil.which("node") is None:
        pytest.skip("cosmosdb-server is not installed: run `make servers` (make test does it)")
    port = _free_port()
    log = tmp_path_factory.mktemp("cosmos") / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(BINARY), "--host", "127.0.0.1", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert time.monotonic() < deadline, "cosmosdb-server did not listen: " + log.read_text()
            time.sleep(0.05)
        yield f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        process.kill()
