"""Start and stop the npm protocol servers in testing/servers (installed by `make servers`)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

BIN = Path(__file__).resolve().parent.parent / "testing" / "servers" / "node_modules" / ".bin"


@contextlib.contextmanager
def npm_server(binary: str, argv: Callable[[int], list[str]], workdir: Path) -> Iterator[int]:
    """Run `binary` with `argv(port)` on a free loopback port; yields the port once it listens."""
    path = BIN / binary
    if shutil.which("node") is None:
        pytest.skip(f"node is not installed: the {binary} tests need Node.js 20+")
    if not path.exists():
        pytest.skip(f"{binary} is not installed: run `make servers` (make test does it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = workdir / f"{binary}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(path), *argv(port)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            assert time.monotonic() < deadline, f"{binary} did not listen: " + log.read_text()
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        process.kill()
