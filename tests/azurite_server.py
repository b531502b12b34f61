"""The Azure Storage server the tests run: npm `azurite` (Microsoft's emulator), blob service only,
on loopback with in-memory persistence. `make test` installs it (`make servers`)."""

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
BINARY = ROOT / "testing" / "servers" / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's documented development account (public, not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def azurite_connection_string(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Connection string of a running azurite blob service, stopped after the session."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the azurite tests need Node.js 20+")
    if not BINARY.exists():
        pytest.skip("azurite is not installed: run `make servers` (make test does it)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    log = workdir / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(BINARY), "--blobHost", "127.0.0.1", "--blobPort", str(port),
             "--inMemoryPersistence", "--skipApiVersionCheck", "--loose"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert time.monotonic() < deadline, "azurite did not listen: " + log.read_text()
            time.sleep(0.05)
        yield (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
               f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};")
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        process.kill()
